"""Losses for the sn_tf models, matching the pipeline's targets contract (BUILD_NOTES.md, 1).

All classes are ``keras.losses.Loss`` subclasses registered under the ``sn_tf`` package, so a
compiled model saved as ``.keras`` reloads with its losses once this module is imported. Each
takes a ``weight`` that multiplies its value (so ``losses_for`` alone carries DetectNet's 1 : 2
coverage : bbox weighting; Keras reports the weighted value as ``<output>_loss``).

Segmentation (FCN) - per-pixel losses, values ``[B, H, W]``:

- :class:`FootprintLoss`: binary cross-entropy on the ``footprint`` logits (positives
  weighted ``pos_weight``, default 1, and with ``focal_gamma`` g > 0 each pixel's term
  multiplied by ``(1 - p_t)^g`` (focal loss, Lin et al. 2017; p_t = the probability given to
  the true class): the ``contact`` head's positives are ~0.1 % of the pixels and its hard
  negatives (roof ridges, which look like walls) are few too), plus optionally
  ``jaccard_weight * (1 - soft Jaccard)`` where the soft Jaccard index of each image is
  ``(sum p t + 1) / (sum (p + t - p t) + 1)`` over all its pixels (p = sigmoid(logits)); that
  per-image term is spread over the image's pixels, so it is weighted like any per-pixel loss.
- :class:`SdfLoss`: Huber loss (``delta`` pixels) on ``sdf - target``; with ``truncation`` T the
  target is clipped to [-T, T] (a no-op on pipeline targets) and the loss is divided by T.
- :class:`SdfBinsLoss`: sparse categorical cross-entropy of the ``sdf_bins`` logits against the
  bin of the sdf target (:func:`sdf_to_bins`). Its ``y_true`` is the sdf target itself: map
  the dataset through :func:`with_sdf_bins_target` to copy ``"sdf"`` to ``"sdf_bins"``.

  Reduction (default ``"mean_with_sample_weight"``): ``sum(w * loss) / sum(w)`` over every pixel
  of the batch, with w the sample weights ``[B, H, W, 1]`` (or ``[B, H, W]``) of that output
  (valid-region mask x boundary weight), or 1 without weights; a batch whose weights are all
  zero gives 0. Boundary weights therefore shift emphasis without changing the loss scale, and
  padded pixels (w = 0) count neither in the sum nor in the divisor.

DetectNet - per-cell losses, values ``[B, h, w]``, reduction ``"sum_over_batch_size"``, which
together give DIGITS' normalisation: the sum over all grid cells of the batch divided by the
batch size B (Caffe's EuclideanLoss / L1Loss divide by the batch size only). To achieve that
with Keras' mean over B*h*w elements, each per-cell value is multiplied by h*w. Per-cell sample
weights ``[B, h, w, 1]`` multiply the cell terms (e.g. a valid-region mask); per-image weights
must be given as ``[B, 1, 1, 1]``.

- :class:`CoverageLoss` (weight 1): ``0.5 * (p - t)^2`` per cell (Caffe EuclideanLoss).
- :class:`BboxLoss` (weight 2): ``sum_k |(pred_k - t_k) * s_k| * n`` over the 4 corner offsets,
  with ``t = y_true[..., 0:4]`` (pixels), ``s = y_true[..., 4:8]`` = (1/w, 1/h, 1/w, 1/h) of the
  owning box and ``n = y_true[..., 8]`` = 1 / (cells owned by that box); cells with ``n == 0``
  (no coverage) contribute nothing whatever the prediction. Per image this is the sum over boxes
  of the box's mean (over its cells) size-normalised L1 corner error, as in DIGITS' DetectNet
  (bbox_loss = L1(pred * coverage * size * obj, label * size * obj)).
  ``count_norm`` p (default 1, DIGITS) uses ``n ** p`` instead of ``n``: with p = 0 every covered
  cell weighs the same (size-normalised L1 per cell). Why it matters: with p = 1 a cell of a
  box owning k cells weighs 1/k, so per cell the weight falls as ~1/size^3 (size norm x 1/k,
  k ~ size^2); where the features cannot yet tell a small building from the middle of a large
  one, the loss-optimal answer is the small box. On the synthetic SpaceNet 2 demo (24 epochs)
  p = 1 predicted ~35 px boxes for every building (median predicted/true size 0.43 for 64-96
  px buildings); p = 0 halved the corner error (median 7.9 -> 4.7 px) and rectangle grouping
  of its cells works again. Measured again with the demo recipe (30 epochs, same grouping):
  median corner error 8.1 -> 4.2 px, predicted/true width 0.57 -> 0.88, held-out F1 0.41
  (jumping 0.23-0.47 between epochs) -> 0.56 (0.51-0.56 from epoch 12 on).
- :class:`OrientLoss` (oriented DetectNet): L1 on the gliding-vertex parameters
  (alpha, beta) of each covered cell's building where the targets' gliding weight is 1, plus
  ``obliquity_weight`` x L1 on its obliquity r where the obliquity weight is 1.

The sdf bin helpers (:func:`sdf_bin_edges`, :func:`sdf_bin_centers`, :func:`sdf_from_bin_logits`)
are plain numpy, for the polygon head; :func:`sdf_to_bins` is the ``keras.ops`` twin of
``np.digitize(sdf, sdf_bin_edges(K, T))``.
"""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from sn_tf.modeling.layers import check_int, check_positive_float

__all__ = [
    "BboxLoss",
    "CoverageLoss",
    "FootprintLoss",
    "OrientLoss",
    "SdfBinsLoss",
    "SdfLoss",
    "sdf_bin_centers",
    "sdf_bin_edges",
    "sdf_from_bin_logits",
    "sdf_to_bins",
    "with_sdf_bins_target",
]

_SEGMENTATION_REDUCTION = "mean_with_sample_weight"
_DETECTNET_REDUCTION = "sum_over_batch_size"
BBOX_TARGET_CHANNELS = 9
ORIENT_TARGET_CHANNELS = 5


# --------------------------------------------------------------------------- sdf bins (numpy)

def sdf_bin_edges(num_bins: int, truncation: float) -> np.ndarray:
    """Interior edges of ``num_bins`` equal bins over [-T, T]: float32 ``[num_bins - 1]``.

    Bin k (0-based) is ``[edge_{k-1}, edge_k)`` with ``edge_{-1} = -inf`` and
    ``edge_{K-1} = +inf``; edge k-1 = ``-T + k * 2T / K``. Values beyond +-T (the sdf is clipped
    there) fall in the outer bins. A value equal to an edge belongs to the upper bin
    (``np.digitize(..., right=False)``), so for even K the edge at 0 puts sdf == 0 (the boundary,
    which belongs to the footprint) in bin K/2, and ``bin >= K/2`` is exactly ``sdf >= 0``.
    """
    num_bins = check_int(num_bins, "num_bins", 2)
    truncation = check_positive_float(truncation, "truncation")
    k = np.arange(1, num_bins, dtype=np.float64)
    return (-truncation + k * (2.0 * truncation / num_bins)).astype(np.float32)


def sdf_bin_centers(num_bins: int, truncation: float) -> np.ndarray:
    """Centres of the bins of :func:`sdf_bin_edges`: float32 ``[num_bins]``, pixels.

    Centre k = ``-T + (k + 0.5) * 2T / K``; the centre of bin k lies in bin k.
    """
    num_bins = check_int(num_bins, "num_bins", 2)
    truncation = check_positive_float(truncation, "truncation")
    k = np.arange(num_bins, dtype=np.float64)
    return (-truncation + (k + 0.5) * (2.0 * truncation / num_bins)).astype(np.float32)


def sdf_from_bin_logits(logits, truncation: float, *, mode: str = "expectation") -> np.ndarray:
    """Turn ``sdf_bins`` logits ``[..., K]`` back into an sdf estimate ``[...]`` (float32 pixels).

    ``mode="expectation"``: sum over bins of softmax probability x bin centre (smooth, within
    +-T(1 - 1/K)); ``mode="argmax"``: the centre of the most likely bin.
    """
    logits = np.asarray(logits, dtype=np.float64)
    centers = sdf_bin_centers(logits.shape[-1], truncation).astype(np.float64)
    if mode == "argmax":
        return centers[np.argmax(logits, axis=-1)].astype(np.float32)
    if mode != "expectation":
        raise ValueError(f"mode must be 'expectation' or 'argmax', got {mode!r}")
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = shifted / shifted.sum(axis=-1, keepdims=True)
    return (probs @ centers).astype(np.float32)


def sdf_to_bins(sdf, num_bins: int, truncation: float):
    """Bin index (int32, same shape as ``sdf``) of each sdf value (pixels), with ``keras.ops``.

    Identical to ``np.digitize(sdf, sdf_bin_edges(num_bins, truncation))``.
    """
    edges = sdf_bin_edges(num_bins, truncation)
    return ops.cast(ops.digitize(ops.cast(sdf, "float32"), edges.tolist()), "int32")


def with_sdf_bins_target(inputs, targets, sample_weights=None):
    """Add the ``"sdf_bins"`` target (and sample weight) as copies of ``"sdf"``.

    For ``dataset.map`` on ``(inputs, targets)`` or ``(inputs, targets, sample_weights)``
    elements when the FCN has an ``sdf_bins`` head: :class:`SdfBinsLoss` bins the sdf itself.
    Returns the element with the same arity.
    """
    targets = {**targets, "sdf_bins": targets["sdf"]}
    if sample_weights is None:
        return inputs, targets
    return inputs, targets, {**sample_weights, "sdf_bins": sample_weights["sdf"]}


# --------------------------------------------------------------------------- segmentation

class _WeightedLoss(keras.losses.Loss):
    """Base: a ``weight`` multiplier (serialised) on top of ``keras.losses.Loss``."""

    def __init__(self, *, weight: float, name: str, reduction: str, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(weight, bool) or not float(weight) >= 0:
            raise ValueError(f"{name}: weight must be a number >= 0, got {weight!r}")
        self.weight = float(weight)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


@keras.saving.register_keras_serializable(package="sn_tf")
class FootprintLoss(_WeightedLoss):
    """BCE on footprint logits (+ optional soft-Jaccard term); see the module docstring.

    ``y_true``: float32 ``[B, H, W, 1]`` in {0, 1}; ``y_pred``: logits ``[B, H, W, 1]``.
    Per-pixel values ``[B, H, W]``.
    """

    def __init__(self, jaccard_weight: float = 0.0, *, weight: float = 1.0,
                 pos_weight: float = 1.0, focal_gamma: float = 0.0,
                 name: str = "footprint_loss", reduction: str = _SEGMENTATION_REDUCTION,
                 dtype=None):
        super().__init__(weight=weight, name=name, reduction=reduction, dtype=dtype)
        if isinstance(jaccard_weight, bool) or not float(jaccard_weight) >= 0:
            raise ValueError(f"jaccard_weight must be a number >= 0, got {jaccard_weight!r}")
        self.jaccard_weight = float(jaccard_weight)
        self.pos_weight = check_positive_float(pos_weight, "pos_weight")
        if isinstance(focal_gamma, bool) or not float(focal_gamma) >= 0:
            raise ValueError(f"focal_gamma must be a number >= 0, got {focal_gamma!r}")
        self.focal_gamma = float(focal_gamma)

    def call(self, y_true, y_pred):
        bce = ops.binary_crossentropy(y_true, y_pred, from_logits=True)
        if self.focal_gamma > 0:  # focal loss: (1 - p_t)^gamma, p_t = exp(-bce)
            bce = bce * ops.power(1.0 - ops.exp(-bce), self.focal_gamma)
        if self.pos_weight != 1.0:  # positives (y = 1) weigh pos_weight, negatives 1
            bce = bce * (1.0 + (self.pos_weight - 1.0) * y_true)
        loss = ops.mean(bce, axis=-1)
        if self.jaccard_weight > 0:
            prob = ops.sigmoid(y_pred)
            inter = ops.sum(prob * y_true, axis=(1, 2, 3))
            union = ops.sum(prob + y_true - prob * y_true, axis=(1, 2, 3))
            jaccard = (inter + 1.0) / (union + 1.0)
            loss = loss + self.jaccard_weight * (1.0 - jaccard)[:, None, None]
        return self.weight * loss

    def get_config(self):
        return {**super().get_config(), "jaccard_weight": self.jaccard_weight,
                "pos_weight": self.pos_weight, "focal_gamma": self.focal_gamma}


@keras.saving.register_keras_serializable(package="sn_tf")
class SdfLoss(_WeightedLoss):
    """Huber loss on the signed distance (pixels); see the module docstring.

    ``y_true``, ``y_pred``: float32 ``[B, H, W, 1]`` pixels. Per-pixel values ``[B, H, W]``:
    ``huber(y_pred - clip(y_true, -T, T); delta) / T`` with ``truncation`` T, else
    ``huber(y_pred - y_true; delta)`` in pixels.
    """

    def __init__(self, truncation: float | None = None, delta: float = 1.0, *,
                 weight: float = 1.0, name: str = "sdf_loss",
                 reduction: str = _SEGMENTATION_REDUCTION, dtype=None):
        super().__init__(weight=weight, name=name, reduction=reduction, dtype=dtype)
        self.truncation = (None if truncation is None
                           else check_positive_float(truncation, "truncation"))
        self.delta = check_positive_float(delta, "delta")

    def call(self, y_true, y_pred):
        scale = self.weight
        if self.truncation is not None:
            y_true = ops.clip(y_true, -self.truncation, self.truncation)
            scale = scale / self.truncation
        error = ops.abs(y_pred - y_true)
        quadratic = ops.minimum(error, self.delta)
        huber = 0.5 * quadratic * quadratic + self.delta * (error - quadratic)
        return scale * ops.mean(huber, axis=-1)

    def get_config(self):
        return {**super().get_config(), "truncation": self.truncation, "delta": self.delta}


@keras.saving.register_keras_serializable(package="sn_tf")
class SdfBinsLoss(_WeightedLoss):
    """Cross-entropy of binned-sdf logits against the bins of the sdf target.

    ``y_true``: the sdf target, float32 ``[B, H, W, 1]`` pixels (see
    :func:`with_sdf_bins_target`); ``y_pred``: logits ``[B, H, W, num_bins]``.
    Per-pixel values ``[B, H, W]``.
    """

    def __init__(self, num_bins: int, truncation: float, *, weight: float = 1.0,
                 name: str = "sdf_bins_loss", reduction: str = _SEGMENTATION_REDUCTION,
                 dtype=None):
        super().__init__(weight=weight, name=name, reduction=reduction, dtype=dtype)
        self.num_bins = check_int(num_bins, "num_bins", 2)
        self.truncation = check_positive_float(truncation, "truncation")

    def call(self, y_true, y_pred):
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != self.num_bins:
            raise ValueError(f"SdfBinsLoss expects {self.num_bins} logits per pixel, "
                             f"got y_pred of shape {y_pred.shape}")
        bins = sdf_to_bins(y_true[..., 0], self.num_bins, self.truncation)
        return self.weight * ops.sparse_categorical_crossentropy(bins, y_pred, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "truncation": self.truncation}


# --------------------------------------------------------------------------- DetectNet

def _cells(x):
    """Number of grid cells h * w of a ``[B, h, w, C]`` tensor, as a float32 scalar tensor."""
    shape = ops.shape(x)
    return ops.cast(shape[1] * shape[2], "float32")


@keras.saving.register_keras_serializable(package="sn_tf")
class CoverageLoss(_WeightedLoss):
    """DIGITS coverage loss: ``0.5 * sum over cells (p - t)^2`` per image, mean over the batch.

    ``y_true``: float32 ``[B, h, w, 1]`` in {0, 1}; ``y_pred``: probabilities ``[B, h, w, 1]``.
    Per-cell values ``[B, h, w]`` = ``0.5 (p - t)^2 * h * w`` (see the module docstring).
    """

    def __init__(self, *, weight: float = 1.0, name: str = "coverage_loss",
                 reduction: str = _DETECTNET_REDUCTION, dtype=None):
        super().__init__(weight=weight, name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        per_cell = 0.5 * ops.sum(ops.square(y_pred - y_true), axis=-1)
        return (self.weight * _cells(y_pred)) * per_cell


@keras.saving.register_keras_serializable(package="sn_tf")
class BboxLoss(_WeightedLoss):
    """DIGITS bbox loss: size- and object-count-normalised L1 on corner offsets, masked by coverage.

    ``y_true``: float32 ``[B, h, w, 9]`` (offsets 0..3 pixels, size normalisation 4..7,
    object-count normalisation 8; all zero without coverage); ``y_pred``: offsets
    ``[B, h, w, 4]`` pixels. Per-cell values ``[B, h, w]`` =
    ``sum_k |(pred_k - t_k) s_k| * n**count_norm * [n > 0] * h * w`` (see the module docstring;
    ``count_norm`` 1 is DIGITS, 0 weighs every covered cell alike).
    """

    def __init__(self, *, weight: float = 2.0, count_norm: float = 1.0,
                 name: str = "bbox_loss", reduction: str = _DETECTNET_REDUCTION, dtype=None):
        super().__init__(weight=weight, name=name, reduction=reduction, dtype=dtype)
        if isinstance(count_norm, bool) or not 0.0 <= float(count_norm) <= 1.0:
            raise ValueError(f"count_norm must be a number in [0, 1], got {count_norm!r}")
        self.count_norm = float(count_norm)

    def call(self, y_true, y_pred):
        if y_true.shape[-1] is not None and y_true.shape[-1] != BBOX_TARGET_CHANNELS:
            raise ValueError(f"BboxLoss expects a bbox target with {BBOX_TARGET_CHANNELS} "
                             f"channels, got shape {y_true.shape}")
        offsets, size_norm, count_norm = y_true[..., 0:4], y_true[..., 4:8], y_true[..., 8]
        if self.count_norm == 1.0:
            cell_weight = count_norm
        elif self.count_norm == 0.0:
            cell_weight = ops.cast(count_norm > 0, count_norm.dtype)
        else:  # n ** p, with 0 ** p = 0 for cells without coverage
            cell_weight = ops.power(ops.maximum(count_norm, 1e-12), self.count_norm)
        per_cell = ops.sum(ops.abs((y_pred - offsets) * size_norm), axis=-1) * cell_weight
        per_cell = ops.where(count_norm > 0, per_cell, ops.zeros_like(per_cell))
        return (self.weight * _cells(y_pred)) * per_cell

    def get_config(self):
        return {**super().get_config(), "count_norm": self.count_norm}


@keras.saving.register_keras_serializable(package="sn_tf")
class OrientLoss(_WeightedLoss):
    """L1 on the gliding-vertex parameters of oriented DetectNet, masked per building.

    ``y_true``: float32 ``[B, h, w, 5]`` (``sn_tf.input.targets``: alpha, beta, r, gliding weight
    g, obliquity weight q; all zero without coverage); ``y_pred``: ``[B, h, w, 3]``
    (alpha, beta, r) in [0, 1]. Per-cell values ``[B, h, w]`` =
    ``(|alpha' - alpha| + |beta' - beta|) * g
    + flat_weight * min(|alpha'| + |beta'|, |1 - alpha'| + |1 - beta'|) * (q - g)
    + obliquity_weight * |r' - r| * q``, times h * w (see the module docstring): alpha
    and beta are learnt on oblique buildings (r < the targets' gate) not cut by the crop;
    on near-axis ones (q - g = 1), whose parameters jump between (0, 0) and (1, 1) for a
    tiny rotation, they are pulled to the nearer of those two encodings of the plain box,
    so that a near-axis building whose r the model underestimates still decodes to about
    its box; r is learnt on every building not cut by the crop.
    """

    def __init__(self, *, weight: float = 1.0, obliquity_weight: float = 1.0,
                 flat_weight: float = 1.0, name: str = "orient_loss",
                 reduction: str = _DETECTNET_REDUCTION, dtype=None):
        super().__init__(weight=weight, name=name, reduction=reduction, dtype=dtype)
        for key, value in (("obliquity_weight", obliquity_weight),
                           ("flat_weight", flat_weight)):
            if isinstance(value, bool) or not float(value) >= 0.0:
                raise ValueError(f"{key} must be a number >= 0, got {value!r}")
        self.obliquity_weight = float(obliquity_weight)
        self.flat_weight = float(flat_weight)

    def call(self, y_true, y_pred):
        if y_true.shape[-1] is not None and y_true.shape[-1] != ORIENT_TARGET_CHANNELS:
            raise ValueError(f"OrientLoss expects an orient target with "
                             f"{ORIENT_TARGET_CHANNELS} channels, got shape {y_true.shape}")
        error = ops.abs(y_pred[..., 0:3] - y_true[..., 0:3])
        glide, obliquity = y_true[..., 3], y_true[..., 4]
        ab = y_pred[..., 0] + y_pred[..., 1]
        to_box = ops.minimum(ab, 2.0 - ab)  # alpha, beta in [0, 1]: L1 to (0, 0) or (1, 1)
        per_cell = ((error[..., 0] + error[..., 1]) * glide
                    + self.flat_weight * to_box * (obliquity - glide)
                    + self.obliquity_weight * error[..., 2] * obliquity)
        return (self.weight * _cells(y_pred)) * per_cell

    def get_config(self):
        return {**super().get_config(), "obliquity_weight": self.obliquity_weight,
                "flat_weight": self.flat_weight}
