"""DetectNet-style building detector: stride-16 inception backbone + coverage and box heads
on a grid of 16 or 8 pixel cells.

Backbone choice: NVIDIA's DetectNet (DIGITS) is GoogLeNet with pool4 removed, so the last two
inception stages (4a-4e, 5a-5b) run at stride 16. This model keeps that shape with two modern
changes: every conv is followed by BatchNormalization (Inception-v2 style; the 5x5 branch is
factorised into two 3x3 convs), and every inception block has a residual shortcut
(Inception-ResNet style, :func:`sn_tf.modeling.layers.inception_block`), which trains reliably
from scratch on multispectral input, where ImageNet weights do not apply. With ``width`` w:

================  ==========  =================================  ======================
stage             stride      layers                             channels (w = 32)
================  ==========  =================================  ======================
stem              2, 4        3x3/2 conv, 3x3 conv, 3x3/2 pool   32, 64
conv2             4           1x1 conv, 3x3 conv                 64, 192
stage3            8           3x3/2 pool, ``blocks[0]`` incept.  256
stage4            16          3x3/2 pool, ``blocks[1]`` incept.  512
================  ==========  =================================  ======================

(the defaults ``blocks=(2, 7)`` mirror GoogLeNet's 3a-3b and 4a-4e + 5a-5b.)

Two optional additions, both off by default (the DIGITS shape) and on in
``sn_tf/configs/detectnet.py`` (demo recipe, held-out F1 0.62 with both vs 0.57 without, for
~8 % more CPU per step):

- ``fine_features``: the stride-8 stage output goes through a 3x3/2 conv-BN-ReLU (``4 * width``
  channels) and is concatenated to the stride-16 features (a hypercolumn). Max pooling leaves
  little sub-cell position in the stride-16 map; box corners need it.
- ``head_convs``: that many 3x3 conv-BN-ReLU layers (``16 * width`` channels) shared by both
  heads, so the heads see the neighbouring cells (a 1x1 head only sees its own cell's features).

``cell_size`` (``sn_tf.input.cells``: pixels per output cell, 16 as DIGITS or 8): with 8 the heads
run on a stride-8 map (a feature-pyramid step): the stride-16 features go through a 1x1
conv-BN-ReLU (``4 * width`` channels), are upsampled x2 bilinearly and concatenated with the
stride-8 stage output (``8 * width``); with ``fine_features`` the stride-4 ``conv2`` output
joins through a 3x3/2 conv-BN-ReLU (``2 * width``), and the shared head convs have
``8 * width`` channels. Row-house units 16-27 px wide then span 2-3 cells instead of 1-1.7.

``aux_interior`` (training aid, off by default): an ``interior`` output of logits
``[B, H, W, 1]`` at full resolution, from a 1x1 conv-BN-ReLU (``2 * width``) over the stride-4
``conv2`` features concatenated with the x2-upsampled head features (stride 8), a 1x1 logit
conv and a x4 bilinear upsampling. Trained against the building cores (the pipeline's
``interior`` target, sdf > level, apart across shared walls) it makes the features that the
heads read see party walls; the polygon head never reads it.

Heads (1x1 convs, float32 under any mixed-precision policy), on the ``[B, H/S, W/S]`` grid
(S = ``cell_size``):

- ``coverage``: sigmoid probabilities ``[B, h, w, 1]``; the bias starts at
  ``logit(coverage_prior)`` so the initial coverage L2 loss is small on mostly empty grids.
- ``bbox``: corner offsets ``(x1 - cx, y1 - cy, x2 - cx, y2 - cy)`` in pixels ``[B, h, w, 4]``
  from the cell centre ``(cx, cy)``. The conv predicts
  ``offset / bbox_scale`` and a Rescaling layer multiplies back, and the conv bias starts at
  ``(-0.5, -0.5, 0.5, 0.5)``, so a fresh model proposes ``bbox_scale``-sized squares centred on
  each cell instead of degenerate points (cell centres: ``((j + 0.5) S, (i + 0.5) S)``).
- ``orient`` (only with ``oriented=True``): sigmoid ``[B, h, w, 3]`` = the gliding-vertex
  parameters ``(alpha, beta, r)`` of the building's rotated rectangle on the cell's box
  (``sn_tf.input.rects``: top vertex ``(x1 + alpha w, y1)``, right vertex ``(x2, y1 + beta h)``,
  obliquity r = rectangle area / box area; the polygon head uses the plain box where
  r >= its ``rect_gate``). Initially 0.5 each.

Input: float32 ``[B, H, W, num_bands]`` with H and W multiples of :data:`DETECTNET_STRIDE`
(the input multiple, 16 whatever the cell size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers

from sn_tf.input.cells import DEFAULT_CELL_SIZE, check_cell_size
from sn_tf.modeling.losses import BboxLoss, CoverageLoss, FootprintLoss, OrientLoss
from sn_tf.modeling.layers import (PerChannelConstant, check_int, check_positive_float,
                                   conv_bn_act, inception_block)
from sn_tf.utils import families

__all__ = ["DETECTNET_STRIDE", "build_detectnet", "detectnet_losses", "detectnet_metrics"]

#: Input multiple of DetectNet (its backbone's total downsampling): input H and W must be
#: multiples of it, whatever the output cell size (``sn_tf.input.cells``).
DETECTNET_STRIDE = families.DETECTNET.input_multiple


def _backbone(image, width: int, blocks: tuple[int, int]) -> dict:
    """GoogLeNet-like trunk without pool4: ``[B, H, W, C]`` -> {"conv2": stride 4, ``6 * width``
    channels; "stage3": stride 8, ``8 * width``; "stage4": stride 16, ``16 * width``}."""
    x = conv_bn_act(image, width, 3, strides=2, name="stem1")
    x = conv_bn_act(x, 2 * width, 3, name="stem2")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = conv_bn_act(x, 2 * width, 1, name="conv2_reduce")
    x = conv_bn_act(x, 6 * width, 3, name="conv2")
    conv2 = x
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    for block in range(blocks[0]):
        x = inception_block(x, 8 * width, name=f"incep3_{block}")
    stage3 = x
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    for block in range(blocks[1]):
        x = inception_block(x, 16 * width, name=f"incep4_{block}")
    return {"conv2": conv2, "stage3": stage3, "stage4": x}


def _cell_features(features: dict, width: int, cell_size: int, fine_features: bool):
    """The map the heads read, on the cell grid (module docstring): stride 16 with ``16 *
    width`` channels (``20 * width`` with ``fine_features``), or stride 8 with ``12 * width``
    (``14 * width``)."""
    if cell_size == 16:
        x = features["stage4"]
        if fine_features:
            fine = conv_bn_act(features["stage3"], 4 * width, 3, strides=2, name="fine3")
            x = layers.Concatenate(name="fine_concat")([x, fine])
        return x
    top = conv_bn_act(features["stage4"], 4 * width, 1, name="top16")
    top = layers.UpSampling2D(2, interpolation="bilinear", name="top16_up")(top)
    parts = [features["stage3"], top]
    if fine_features:
        parts.append(conv_bn_act(features["conv2"], 2 * width, 3, strides=2, name="fine2"))
    return layers.Concatenate(name="cell8_concat")(parts)


def _aux_interior(head_features, conv2, width: int, cell_size: int):
    """Full-resolution ``interior`` logits ``[B, H, W, 1]`` (float32) from the stride-4
    ``conv2`` features and the head features upsampled to stride 4 (module docstring)."""
    up = layers.UpSampling2D(cell_size // 4, interpolation="bilinear",
                             name="aux_up")(head_features)
    x = layers.Concatenate(name="aux_concat")([conv2, up])
    x = conv_bn_act(x, 2 * width, 1, name="aux_fuse")
    x = layers.Conv2D(1, 1, dtype="float32", name="aux_logits")(x)
    return layers.UpSampling2D(4, interpolation="bilinear", dtype="float32",
                               name="interior")(x)


def _heads(x, bbox_scale: float, coverage_prior: float, head_convs: int = 0,
           head_width: int = 0, oriented: bool = False) -> tuple[dict, object]:
    """Optional shared 3x3 convs, then float32 1x1 coverage and bbox heads (module docstring);
    also returns the features the 1x1 heads read."""
    for k in range(head_convs):
        x = conv_bn_act(x, head_width, 3, name=f"head{k}")
    prior_logit = math.log(coverage_prior / (1.0 - coverage_prior))
    coverage = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32",
                             bias_initializer=keras.initializers.Constant(prior_logit),
                             name="coverage")(x)
    bbox = layers.Conv2D(4, 1, dtype="float32",
                         kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                         bias_initializer=PerChannelConstant([-0.5, -0.5, 0.5, 0.5]),
                         name="bbox_unscaled")(x)
    bbox = layers.Rescaling(bbox_scale, dtype="float32", name="bbox")(bbox)
    heads = {"coverage": coverage, "bbox": bbox}
    if oriented:
        heads["orient"] = layers.Conv2D(
            3, 1, activation="sigmoid", dtype="float32",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="orient")(x)
    return heads, x


def build_detectnet(num_bands: int, *, width: int = 32, blocks: Sequence[int] = (2, 7),
                    bbox_scale: float = 32.0, coverage_prior: float = 0.1,
                    fine_features: bool = False, head_convs: int = 0,
                    oriented: bool = False, cell_size: int = DEFAULT_CELL_SIZE,
                    aux_interior: bool = False, name: str = "detectnet") -> keras.Model:
    """Build the DetectNet-style detector (input multiple 16, cells of ``cell_size`` pixels).

    Args:
        num_bands: input channels C (any number >= 1).
        width: base channel count; see the stage table in the module docstring (w >= 1).
        blocks: ``(n3, n4)`` inception blocks at stride 8 and at stride 16 (each >= 1).
        bbox_scale: pixels per unit of the raw box-head output; also the side of the square the
            initial model proposes around each cell.
        coverage_prior: initial coverage probability, in (0, 1).
        fine_features: concatenate finer features (downsampled x2: stride 8 for cells of 16,
            stride 4 for cells of 8) to the cell-grid map.
        head_convs: 3x3 conv-BN-ReLU layers before the 1x1 heads (>= 0).
        oriented: add the ``orient`` head (gliding-vertex parameters, module docstring).
        cell_size: pixels per output cell S, one of ``sn_tf.input.cells.CELL_SIZES`` (16, 8).
        aux_interior: add the full-resolution ``interior`` logits (a training aid, module
            docstring).
        name: model name.

    Returns:
        A ``keras.Model`` from float32 ``[B, H, W, C]`` (H, W multiples of 16) to
        ``{"coverage": [B, H/S, W/S, 1] probabilities, "bbox": [B, H/S, W/S, 4] pixels}``
        (and with ``oriented`` ``"orient": [B, H/S, W/S, 3]`` in [0, 1], with
        ``aux_interior`` ``"interior": [B, H, W, 1]`` logits), all float32.

    Raises:
        ValueError: naming the offending parameter when the configuration is invalid.
    """
    num_bands = check_int(num_bands, "num_bands", 1)
    width = check_int(width, "width", 1)
    try:
        blocks = tuple(blocks)
    except TypeError:
        raise ValueError(f"blocks must be a pair (stride-8 blocks, stride-16 blocks), "
                         f"got {blocks!r}") from None
    if len(blocks) != 2:
        raise ValueError(f"blocks must be a pair (stride-8 blocks, stride-16 blocks), got {blocks}")
    blocks = (check_int(blocks[0], "blocks[0]", 1), check_int(blocks[1], "blocks[1]", 1))
    bbox_scale = check_positive_float(bbox_scale, "bbox_scale")
    if not 0.0 < coverage_prior < 1.0:
        raise ValueError(f"coverage_prior must be in (0, 1), got {coverage_prior!r}")
    if not isinstance(fine_features, bool):
        raise ValueError(f"fine_features must be True or False, got {fine_features!r}")
    head_convs = check_int(head_convs, "head_convs", 0)
    if not isinstance(oriented, bool):
        raise ValueError(f"oriented must be True or False, got {oriented!r}")
    cell_size = check_cell_size(cell_size)
    if not isinstance(aux_interior, bool):
        raise ValueError(f"aux_interior must be True or False, got {aux_interior!r}")

    image = keras.Input(shape=(None, None, num_bands), name="image")
    features = _backbone(image, width, blocks)
    x = _cell_features(features, width, cell_size, fine_features)
    head_width = (16 if cell_size == 16 else 8) * width
    heads, head_features = _heads(x, bbox_scale, float(coverage_prior), head_convs,
                                  head_width, oriented)
    if aux_interior:
        heads["interior"] = _aux_interior(head_features, features["conv2"], width, cell_size)
    return keras.Model(image, heads, name=name)


# ---- training: losses and metrics (``sn_tf.modeling.losses_for`` / ``metrics_for``) --------
def detectnet_losses(*, coverage_weight: float, bbox_weight: float, count_norm: float,
                     orient_weight, obliquity_weight: float, flat_weight: float,
                     interior: bool, interior_jaccard_weight: float,
                     interior_loss_weight: float, **_fcn) -> dict:
    """DetectNet's losses keyed by output name (``losses_for`` documents them; the FCN's
    parameters are ignored)."""
    losses = {"coverage": CoverageLoss(weight=coverage_weight),
              "bbox": BboxLoss(weight=bbox_weight, count_norm=count_norm)}
    if orient_weight is not None:
        losses["orient"] = OrientLoss(weight=orient_weight, obliquity_weight=obliquity_weight,
                                      flat_weight=flat_weight)
    if interior:
        losses["interior"] = FootprintLoss(interior_jaccard_weight, weight=interior_loss_weight,
                                           name="interior_loss")
    return losses


def detectnet_metrics(*, contact: bool = False, interior: bool = False) -> dict:
    """Coverage IoU (probabilities > 0.5)."""
    return {"coverage": [keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.5,
                                                 name="iou")]}
