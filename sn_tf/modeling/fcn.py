"""Fully convolutional segmentation model with SharpMask-style top-down refinement.

Architecture (``width`` w, ``depth`` D, ``blocks`` n):

- Encoder: a full-resolution 3x3 conv-BN-ReLU stem (w channels, level 0), then for each level
  l = 1..D a stage of n ResNet basic blocks, the first with stride 2; level l has
  ``min(w * 2**l, 8 * w)`` channels and resolution ``H / 2**l``. Total stride ``2**D``.
- Top-down path (SharpMask, Pinheiro et al. 2016): a 1x1 conv-BN-ReLU turns the deepest encoder
  map into the first top-down map; for l = D-1..0 a refinement module reduces the level-l encoder
  map with a 3x3 conv, merges it with the x2-upsampled top-down map and fuses them with a 3x3
  conv (:func:`sn_tf.modeling.layers.refine_block`). Top-down maps at level l have
  ``max(c_l // 2, 8)`` channels (c_l = encoder channels at level l).
- Heads (1x1 convs at full resolution, computed in float32 under any mixed-precision policy):
  ``footprint`` logits ``[B, H, W, 1]``; ``sdf`` ``[B, H, W, 1]`` in pixels, predicted as
  ``sdf / sdf_scale`` and multiplied back inside the model (a Rescaling layer) so a freshly
  initialised model outputs sdf values of the right order of magnitude; with ``sdf_bins=K`` also
  ``sdf_bins`` logits ``[B, H, W, K]`` over the bins of
  :func:`sn_tf.modeling.losses.sdf_bin_edges`; with ``contact=True`` also ``contact`` logits
  ``[B, H, W, 1]``: pixels near two different buildings (the converter's contact layer), which
  the polygon head removes from the seeds so that touching buildings come apart.

Input: float32 ``[B, H, W, num_bands]`` (normalised by the pipeline) with H and W multiples of
:func:`fcn_stride` ``(depth)``; other sizes fail in the first refinement merge.
"""

from __future__ import annotations

import keras
from keras import layers

from sn_tf.modeling.losses import FootprintLoss, SdfBinsLoss, SdfLoss
from sn_tf.modeling.layers import (check_int, check_positive_float, conv_bn_act, refine_block,
                                   residual_block)

__all__ = ["MAX_DEPTH", "build_fcn", "fcn_losses", "fcn_metrics", "fcn_stride",
           "fcn_top_down_filters", "fcn_encoder_filters"]

#: Largest supported ``depth`` (stride 2**6 = 64).
MAX_DEPTH = 6


def fcn_stride(depth: int) -> int:
    """Total stride of :func:`build_fcn` with this ``depth``: input H and W must be multiples."""
    return 2 ** check_int(depth, "depth", 1, MAX_DEPTH)


def fcn_encoder_filters(width: int, depth: int) -> list[int]:
    """Encoder channels per level 0..depth: ``min(width * 2**l, 8 * width)``."""
    return [min(width * 2 ** level, 8 * width) for level in range(depth + 1)]


def fcn_top_down_filters(width: int, depth: int, fine_filters: int | None = None) -> list[int]:
    """Top-down (refinement) channels per level 0..depth: ``max(encoder_l // 2, 8)``, or
    ``fine_filters`` at level 0 (the full-resolution map the heads read) when given."""
    filters = [max(c // 2, 8) for c in fcn_encoder_filters(width, depth)]
    if fine_filters is not None:
        filters[0] = fine_filters
    return filters


def _encoder(image, width: int, depth: int, blocks: int) -> list:
    """Return the encoder feature maps of levels 0..depth (level l: ``[B, H/2**l, W/2**l, c_l]``)."""
    filters = fcn_encoder_filters(width, depth)
    x = conv_bn_act(image, filters[0], 3, name="stem")
    features = [x]
    for level in range(1, depth + 1):
        for block in range(blocks):
            x = residual_block(x, filters[level], strides=2 if block == 0 else 1,
                               name=f"enc{level}_block{block}")
        features.append(x)
    return features


def _top_down(features: list, width: int, depth: int, fine_filters: int | None = None):
    """SharpMask refinement from the deepest map back to level 0: ``[B, H, W, t_0]``."""
    filters = fcn_top_down_filters(width, depth, fine_filters)
    x = conv_bn_act(features[depth], filters[depth], 1, name=f"topdown{depth}")
    for level in range(depth - 1, -1, -1):
        x = refine_block(x, features[level], filters[level], name=f"refine{level}")
    return x


def _heads(x, sdf_bins: int | None, sdf_scale: float, contact: bool = False,
           interior: bool = False) -> dict:
    """Float32 1x1 heads on the full-resolution top-down map; see the module docstring."""
    outputs = {
        "footprint": layers.Conv2D(1, 1, dtype="float32", name="footprint")(x),
        "sdf": layers.Rescaling(sdf_scale, dtype="float32", name="sdf")(
            layers.Conv2D(1, 1, dtype="float32", name="sdf_unscaled")(x)),
    }
    if sdf_bins is not None:
        outputs["sdf_bins"] = layers.Conv2D(sdf_bins, 1, dtype="float32", name="sdf_bins")(x)
    if contact:
        outputs["contact"] = layers.Conv2D(1, 1, dtype="float32", name="contact")(x)
    if interior:
        outputs["interior"] = layers.Conv2D(1, 1, dtype="float32", name="interior")(x)
    return outputs


def build_fcn(num_bands: int, *, width: int = 32, depth: int = 4, blocks: int = 2,
              sdf_bins: int | None = None, sdf_scale: float = 8.0, contact: bool = False,
              interior: bool = False, fine_filters: int | None = None,
              name: str = "fcn") -> keras.Model:
    """Build the segmentation FCN (encoder + SharpMask top-down refinement).

    Args:
        num_bands: input channels C (any number >= 1).
        width: channels of the full-resolution stem; deeper levels double it up to ``8 * width``.
        depth: number of stride-2 levels; the model's stride is ``fcn_stride(depth) = 2**depth``.
        blocks: ResNet basic blocks per encoder level (the first one downsamples).
        sdf_bins: None, or the number K >= 2 of sdf bins for the extra ``sdf_bins`` head (use an
            even K so that a bin edge sits at 0 and the bins separate inside from outside).
        sdf_scale: the sdf head predicts ``sdf / sdf_scale`` (pixels); a value near the sdf
            truncation keeps the raw head output of order 1.
        contact: add the ``contact`` logits head.
        interior: add the ``interior`` logits head (building cores: sdf > a level).
        fine_filters: channels of the full-resolution top-down map the heads read (default
            ``max(width // 2, 8)``); shared walls are 1-2 px details decided there.
        name: model name.

    Returns:
        A ``keras.Model`` from float32 ``[B, H, W, C]`` (``H``, ``W`` multiples of the stride) to
        ``{"footprint": [B,H,W,1] logits, "sdf": [B,H,W,1] pixels}`` plus
        ``"sdf_bins": [B,H,W,K] logits`` when ``sdf_bins`` is set and ``"contact": [B,H,W,1]
        logits`` with ``contact``; all outputs float32.

    Raises:
        ValueError: naming the offending parameter when the configuration is invalid.
    """
    num_bands = check_int(num_bands, "num_bands", 1)
    width = check_int(width, "width", 1)
    depth = check_int(depth, "depth", 1, MAX_DEPTH)
    blocks = check_int(blocks, "blocks", 1)
    if sdf_bins is not None:
        sdf_bins = check_int(sdf_bins, "sdf_bins", 2)
    sdf_scale = check_positive_float(sdf_scale, "sdf_scale")
    for flag, value in (("contact", contact), ("interior", interior)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False, got {value!r}")

    image = keras.Input(shape=(None, None, num_bands), name="image")
    features = _encoder(image, width, depth, blocks)
    if fine_filters is not None:
        fine_filters = check_int(fine_filters, "fine_filters", 1)
    top = _top_down(features, width, depth, fine_filters)
    return keras.Model(image, _heads(top, sdf_bins, sdf_scale, contact, interior), name=name)


# ---- training: losses and metrics (``sn_tf.modeling.losses_for`` / ``metrics_for``) --------
def fcn_losses(*, jaccard_weight: float, sdf_truncation, sdf_delta: float, sdf_weight: float,
               sdf_bins, sdf_bins_weight: float, contact: bool, contact_jaccard_weight: float,
               contact_loss_weight: float, contact_pos_weight: float,
               contact_focal_gamma: float, interior: bool, interior_jaccard_weight: float,
               interior_loss_weight: float, interior_focal_gamma: float,
               **_detectnet) -> dict:
    """The FCN's losses keyed by output name (``losses_for`` documents them; DetectNet's
    parameters are ignored)."""
    losses = {"footprint": FootprintLoss(jaccard_weight),
              "sdf": SdfLoss(sdf_truncation, sdf_delta, weight=sdf_weight)}
    if sdf_bins is not None:
        if sdf_truncation is None:
            raise ValueError("sdf_bins needs sdf_truncation (the bins span [-T, T])")
        losses["sdf_bins"] = SdfBinsLoss(sdf_bins, sdf_truncation, weight=sdf_bins_weight)
    if contact:
        losses["contact"] = FootprintLoss(contact_jaccard_weight, weight=contact_loss_weight,
                                          pos_weight=contact_pos_weight,
                                          focal_gamma=contact_focal_gamma, name="contact_loss")
    if interior:
        losses["interior"] = FootprintLoss(interior_jaccard_weight, weight=interior_loss_weight,
                                           focal_gamma=interior_focal_gamma,
                                           name="interior_loss")
    return losses


def fcn_metrics(*, contact: bool = False, interior: bool = False) -> dict:
    """Footprint IoU (logits > 0) and sdf MAE (pixels); contact / interior IoU when present."""
    out = {"footprint": [keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.0,
                                                 name="iou")],
           "sdf": [keras.metrics.MeanAbsoluteError(name="mae")]}
    for name, wanted in (("contact", contact), ("interior", interior)):
        if wanted:
            out[name] = [keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.0,
                                                 name="iou")]
    return out
