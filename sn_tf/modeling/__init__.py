"""The sn_tf models (FCN segmentation, DetectNet detection), their losses and metrics.

Registry (``kind`` names a family of ``sn_tf.utils.families``: ``"fcn"`` or ``"detectnet"``)::

    model = build_model("fcn", num_bands=8, width=32, sdf_bins=16)
    model.compile(optimizer="adam",
                  loss=losses_for("fcn", sdf_truncation=10.0, sdf_bins=16),
                  metrics=metrics_for("fcn"))
    stride_for("fcn", depth=4)   # input H and W must be multiples of this

Outputs and targets follow BUILD_NOTES.md section 1 ("Targets handed from the pipeline to the
models"); the models output raw logits/probabilities/offsets for the shared polygon head.
Importing this package registers the custom objects (losses, :class:`PerChannelConstant`), so
``keras.saving.load_model`` restores saved models and their compiled losses.
"""

from __future__ import annotations

from sn_tf.utils.tfimport import tensorflow

tensorflow()  # quiet import with sn_tf's TF settings, before Keras loads TF
import keras  # noqa: E402

from sn_tf.modeling.detectnet import DETECTNET_STRIDE, build_detectnet
from sn_tf.modeling.fcn import build_fcn, fcn_stride
from sn_tf.modeling.layers import PerChannelConstant
from sn_tf.modeling.losses import (BboxLoss, CoverageLoss, FootprintLoss, OrientLoss,
                                   SdfBinsLoss, SdfLoss, sdf_bin_centers, sdf_bin_edges,
                                   sdf_from_bin_logits, sdf_to_bins, with_sdf_bins_target)
from sn_tf.utils import families

__all__ = [
    "DETECTNET_STRIDE",
    "MODEL_KINDS",
    "BboxLoss",
    "CoverageLoss",
    "FootprintLoss",
    "OrientLoss",
    "PerChannelConstant",
    "SdfBinsLoss",
    "SdfLoss",
    "build_detectnet",
    "build_fcn",
    "build_model",
    "fcn_stride",
    "losses_for",
    "metrics_for",
    "sdf_bin_centers",
    "sdf_bin_edges",
    "sdf_from_bin_logits",
    "sdf_to_bins",
    "stride_for",
    "with_sdf_bins_target",
]

#: The model families ``build_model``, ``losses_for``, ``metrics_for`` and ``stride_for`` know.
MODEL_KINDS = families.NAMES


def build_model(kind: str, num_bands: int, **kwargs) -> keras.Model:
    """Build the family's model: its ``builder(num_bands, **kwargs)`` (``build_fcn``,
    ``build_detectnet``)."""
    return families.get(kind).entry("builder")(num_bands, **kwargs)


def stride_for(kind: str, *, depth: int = 4) -> int:
    """Input-size multiple of a model kind: ``fcn_stride(depth)`` for "fcn", 16 for "detectnet"
    (whatever its output ``cell_size``, ``sn_tf.input.cells``)."""
    return families.get(kind).input_multiple or fcn_stride(depth)


def losses_for(kind: str, *, sdf_truncation: float | None = None, sdf_bins: int | None = None,
               jaccard_weight: float = 0.0, sdf_delta: float = 1.0, sdf_weight: float = 1.0,
               sdf_bins_weight: float = 1.0, coverage_weight: float = 1.0,
               bbox_weight: float = 2.0, count_norm: float = 1.0,
               contact: bool = False, contact_loss_weight: float = 1.0,
               contact_jaccard_weight: float = 0.0, contact_pos_weight: float = 1.0,
               contact_focal_gamma: float = 0.0, interior: bool = False,
               interior_loss_weight: float = 1.0,
               interior_jaccard_weight: float = 0.0, interior_focal_gamma: float = 0.0,
               orient_weight: float | None = None, obliquity_weight: float = 1.0,
               flat_weight: float = 1.0) -> dict[str, keras.losses.Loss]:
    """Losses keyed by output name, for ``model.compile(loss=...)``.

    "fcn": ``footprint`` (:class:`FootprintLoss` with ``jaccard_weight``), ``sdf``
    (:class:`SdfLoss` with ``sdf_truncation``, ``sdf_delta``, ``sdf_weight``) and, when
    ``sdf_bins`` is set (it needs ``sdf_truncation``, the dataset's ``--sdf_truncation``),
    ``sdf_bins`` (:class:`SdfBinsLoss`; map the dataset through :func:`with_sdf_bins_target`),
    and with ``contact`` the ``contact`` logits (:class:`FootprintLoss`: binary cross-entropy,
    positives weighted ``contact_pos_weight``, focal with ``contact_focal_gamma``,
    ``contact_jaccard_weight`` soft Jaccard, times ``contact_loss_weight``), and with
    ``interior`` the ``interior`` logits (:class:`FootprintLoss` with
    ``interior_jaccard_weight``, focal with ``interior_focal_gamma``, times
    ``interior_loss_weight``).
    "detectnet": ``coverage`` (:class:`CoverageLoss`, ``coverage_weight`` default 1) and
    ``bbox`` (:class:`BboxLoss`, ``bbox_weight`` default 2, ``count_norm`` default 1), as in
    DIGITS; with ``orient_weight`` (for a model built with ``oriented=True``) also
    ``orient`` (:class:`OrientLoss` with ``obliquity_weight`` and ``flat_weight``); with
    ``interior`` (a model built with ``aux_interior=True``) its auxiliary full-resolution
    ``interior`` logits (:class:`FootprintLoss` with ``interior_jaccard_weight``, times
    ``interior_loss_weight``), as the FCN's.
    Parameters of the other kind are ignored.
    """
    options = dict(sdf_truncation=sdf_truncation, sdf_bins=sdf_bins,
                   jaccard_weight=jaccard_weight, sdf_delta=sdf_delta, sdf_weight=sdf_weight,
                   sdf_bins_weight=sdf_bins_weight, coverage_weight=coverage_weight,
                   bbox_weight=bbox_weight, count_norm=count_norm, contact=contact,
                   contact_loss_weight=contact_loss_weight,
                   contact_jaccard_weight=contact_jaccard_weight,
                   contact_pos_weight=contact_pos_weight,
                   contact_focal_gamma=contact_focal_gamma, interior=interior,
                   interior_loss_weight=interior_loss_weight,
                   interior_jaccard_weight=interior_jaccard_weight,
                   interior_focal_gamma=interior_focal_gamma, orient_weight=orient_weight,
                   obliquity_weight=obliquity_weight, flat_weight=flat_weight)
    return families.get(kind).entry("losses")(**options)


def metrics_for(kind: str, *, contact: bool = False,
                interior: bool = False) -> dict[str, list[keras.metrics.Metric]]:
    """Fresh training metrics keyed by output name, for ``model.compile(metrics=...)``.

    "fcn": footprint IoU of the building class (logits thresholded at 0, i.e. p = 0.5) and sdf
    mean absolute error (pixels), with ``contact`` also the contact IoU. "detectnet": coverage
    IoU (probabilities thresholded at 0.5).
    Metrics receive the same sample weights as the losses.
    """
    return families.get(kind).entry("metrics")(contact=contact, interior=interior)
