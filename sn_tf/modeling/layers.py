"""Shared building blocks for the sn_tf models (Keras 3 functional API).

Every block is a function ``block(x, ..., name=...) -> y`` that wires standard Keras layers onto a
symbolic tensor, so models built from them serialise to ``.keras`` without custom layer classes.
The only custom object is :class:`PerChannelConstant`, a bias initialiser (registered under the
``sn_tf`` package) used by the DetectNet box head.

Conventions: tensors are channels-last ``[B, H, W, C]``; ``name`` is a unique prefix and every
layer a block creates is named ``f"{name}_<part>"``; spatial sizes must be even wherever a block
downsamples or upsamples by 2 (the models document their total stride). Intermediate tensors
follow the global dtype policy (e.g. bfloat16 under ``mixed_bfloat16``); the model heads, not these
blocks, cast outputs to float32.
"""

from __future__ import annotations

import contextlib

import math
import numbers
from collections.abc import Sequence

import keras
from keras import layers

__all__ = [
    "PerChannelConstant",
    "channels",
    "check_int",
    "check_positive_float",
    "conv_bn_act",
    "inception_block",
    "inception_split",
    "refine_block",
    "residual_block",
]


@keras.saving.register_keras_serializable(package="sn_tf")
class PerChannelConstant(keras.initializers.Initializer):
    """Initialises a 1-D variable (e.g. a conv bias) with one given value per channel.

    ``keras.initializers.Constant`` only accepts scalars; this one takes a sequence of floats of
    length equal to the variable's (single) dimension.
    """

    def __init__(self, values: Sequence[float]):
        self.values = [float(v) for v in values]

    def __call__(self, shape, dtype=None):
        """Return a tensor of ``shape == (len(values),)`` holding ``values``."""
        if tuple(shape) != (len(self.values),):
            raise ValueError(f"PerChannelConstant has {len(self.values)} values but the variable "
                             f"has shape {tuple(shape)}")
        return keras.ops.convert_to_tensor(self.values, dtype=dtype or "float32")

    def get_config(self):
        return {"values": list(self.values)}



# Moving-statistics momentum of every BatchNormalization. Keras' default 0.99 leaves
# 0.99**100 = 37 % of the initial (0, 1) statistics after 100 steps, so short CPU runs
# (the demo: ~100 steps) predict with statistics unlike training's; 0.9 converges in ~40
# steps and is as good for long runs.
BN_MOMENTUM = 0.9
_SYNC_BN = [False]


@contextlib.contextmanager
def synchronized_batchnorm(enabled: bool = True):
    """Models built inside use BatchNormalization(synchronized=enabled).

    With several replicas (MirroredStrategy, MultiWorkerMirroredStrategy) synchronized BN
    computes batch statistics over the global batch, so every replica updates the moving
    statistics identically (unsynchronized, workers that see different data end with
    different moving statistics). A single device ignores the setting.
    """
    saved = _SYNC_BN[0]
    _SYNC_BN[0] = enabled
    try:
        yield
    finally:
        _SYNC_BN[0] = saved

def channels(x) -> int:
    """Static channel count (last axis) of a symbolic tensor ``[B, H, W, C]``."""
    return int(x.shape[-1])


def conv_bn_act(x, filters: int, kernel_size: int = 3, *, strides: int = 1,
                activation: str | None = "relu", name: str):
    """Conv2D ('same' padding, no bias) -> BatchNormalization -> optional activation.

    ``x``: ``[B, H, W, C]``. Returns ``[B, H/strides, W/strides, filters]``
    (``ceil`` division; the models only feed sizes divisible by their stride).
    ``activation=None`` leaves the output linear (used before a residual addition).
    """
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, synchronized=_SYNC_BN[0],
                                  name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def _shortcut(x, filters: int, strides: int, *, name: str):
    """Identity when shapes already match, else a 1x1 (strided) conv-BN projection."""
    if strides == 1 and channels(x) == filters:
        return x
    return conv_bn_act(x, filters, 1, strides=strides, activation=None, name=f"{name}_proj")


def residual_block(x, filters: int, *, strides: int = 1, name: str):
    """ResNet basic block: two 3x3 conv-BN (the first strided) plus shortcut, then ReLU.

    ``x``: ``[B, H, W, C]`` -> ``[B, H/strides, W/strides, filters]``. The shortcut is the identity
    when shapes match, otherwise a strided 1x1 conv-BN projection.
    """
    shortcut = _shortcut(x, filters, strides, name=name)
    y = conv_bn_act(x, filters, 3, strides=strides, name=f"{name}_a")
    y = conv_bn_act(y, filters, 3, activation=None, name=f"{name}_b")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def inception_split(filters: int) -> tuple[int, int, int, int, int, int]:
    """Channel split of an inception block of ``filters`` output channels.

    Returns ``(b1, b3_reduce, b3, b5_reduce, b5, pool_proj)`` following GoogLeNet's inception-3a
    ratios (64 | 96->128 | 16->32 | 32 of 256): b1 = f/4, b3 = f/2 (reduce 3f/8), b5 = f/8
    (reduce f/16), pool_proj = the remainder (about f/8); every branch has at least 1 channel.
    """
    b1 = max(filters // 4, 1)
    b3 = max(filters // 2, 1)
    b5 = max(filters // 8, 1)
    pool = filters - b1 - b3 - b5
    if pool < 1:
        raise ValueError(f"inception block needs at least 4 output channels, got {filters}")
    return b1, max(3 * filters // 8, 1), b3, max(filters // 16, 1), b5, pool


def inception_block(x, filters: int, *, name: str):
    """Inception-v1 block with BN and a residual shortcut (an Inception-ResNet-style hybrid).

    Branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 (the factorised 5x5 of Inception-v2) |
    3x3 max-pool -> 1x1, channel split from :func:`inception_split`. Each branch ends in a linear
    conv-BN; the concatenation (``filters`` channels) is added to the shortcut (identity, or a 1x1
    conv-BN projection when the channel count changes) and passed through ReLU.
    ``x``: ``[B, H, W, C]`` -> ``[B, H, W, filters]``.
    """
    b1, b3r, b3, b5r, b5, bp = inception_split(filters)
    branch1 = conv_bn_act(x, b1, 1, activation=None, name=f"{name}_1x1")
    branch3 = conv_bn_act(x, b3r, 1, name=f"{name}_3x3r")
    branch3 = conv_bn_act(branch3, b3, 3, activation=None, name=f"{name}_3x3")
    branch5 = conv_bn_act(x, b5r, 1, name=f"{name}_5x5r")
    branch5 = conv_bn_act(branch5, b5, 3, name=f"{name}_5x5a")
    branch5 = conv_bn_act(branch5, b5, 3, activation=None, name=f"{name}_5x5b")
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    pooled = conv_bn_act(pooled, bp, 1, activation=None, name=f"{name}_poolproj")
    y = layers.Concatenate(name=f"{name}_concat")([branch1, branch3, branch5, pooled])
    y = layers.Add(name=f"{name}_add")([_shortcut(x, filters, 1, name=name), y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def refine_block(top_down, skip, filters: int, *, name: str):
    """SharpMask refinement module: merge an encoder skip map with the top-down map, go up x2.

    ``top_down``: ``[B, H/2, W/2, Ct]`` (the coarser top-down map); ``skip``: ``[B, H, W, Cs]``
    (the encoder feature map at the finer level). The skip map goes through a 3x3 conv-BN-ReLU
    to ``filters`` channels (SharpMask's skip-feature reduction), the top-down map is upsampled
    x2 bilinearly, the two are concatenated and fused by a 3x3 conv-BN-ReLU.
    Returns ``[B, H, W, filters]``.
    """
    skip = conv_bn_act(skip, filters, 3, name=f"{name}_skip")
    up = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(top_down)
    merged = layers.Concatenate(name=f"{name}_concat")([skip, up])
    return conv_bn_act(merged, filters, 3, name=f"{name}_fuse")


def check_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in ``[minimum, maximum]``, else ValueError.

    Booleans and non-integral floats are rejected; the message names the parameter.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    """Return ``value`` as a float if it is a finite number > 0, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
