"""Segmentation targets built in the train step (``targets_on="device"``).

With ``make_dataset(..., targets_on="device")`` a segmentation training batch leaves the
pipeline as ``(image, packed)``: ``packed`` holds the label layers as the crops read them
(:data:`STORED_SDF` the stored sdf, float16 [B, H, W, 1]; :data:`STORED_CONTACT` the contact
layer in its stored dtype, uint8 or float16 [B, H, W, 1], when the targets or weights need
it) instead of the float32 targets and per-pixel weights. :meth:`PackedTargets.expand`
turns them into exactly the targets and weights the pipeline builds on the host
(``targets_on="host"``): the same functions (``sn_tf.input.targets``) on the same values,
run where the train step runs (the accelerator). Training crops have no padding, so the
valid mask is all ones there too.

``sn_tf.training`` installs the expansion in the model's ``train_step`` (Keras ``fit``) and
in the multi-worker custom step; evaluation, prediction and export are unchanged (they never
receive packed labels).
"""

from __future__ import annotations

import dataclasses

from sn_tf.input import targets as tg
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()

#: Where the segmentation targets and weights of training batches are built.
TARGETS_ON = ("host", "device")
#: Keys of a packed label dict.
STORED_SDF = "stored_sdf"
STORED_CONTACT = "stored_contact"


def check_targets_on(value) -> str:
    """``value`` if it is one of :data:`TARGETS_ON`, else ValueError naming them."""
    if value not in TARGETS_ON:
        raise ValueError(f"targets_on must be one of {TARGETS_ON}, got {value!r}")
    return value


def is_packed(labels) -> bool:
    """True when ``labels`` (the second item of a training element) is a packed dict."""
    return isinstance(labels, dict) and STORED_SDF in labels


@dataclasses.dataclass(frozen=True)
class PackedTargets:
    """How packed label layers become a segmentation batch's targets and weights (the
    options of ``sn_tf.input.targets.segmentation_element``, resolved by the pipeline).

    truncation: T of the sdf target (pixels); contact_target: the targets hold
    ``contact``; sample_weights: weights are returned; the rest as
    ``segmentation_element``.
    """

    truncation: float
    contact_target: bool
    sample_weights: bool
    boundary_weight: float | None = None
    boundary_sigma: float = 3.0
    contact_weight: float | None = None
    interior_level: float | None = None
    core_weight: float | None = None

    @property
    def needs_contact(self) -> bool:
        """True when the packed labels must carry the contact layer."""
        return self.contact_target or (self.sample_weights and self.contact_weight is not None)

    def pack(self, sdf, contact=None) -> dict:
        """The packed labels: ``{STORED_SDF: sdf}`` (stored sdf [B, H, W, 1], its stored
        dtype) plus ``STORED_CONTACT: contact`` ([B, H, W, 1], stored dtype) when
        :attr:`needs_contact`."""
        out = {STORED_SDF: sdf}
        if self.needs_contact:
            if contact is None:
                raise ValueError("these targets need the contact layer; the batch has none")
            out[STORED_CONTACT] = contact
        return out

    def expand(self, packed: dict):
        """Packed labels -> ``targets`` dict, or ``(targets, weights)`` with
        ``sample_weights``: float32 [B, H, W, 1] each, equal to the host-built ones."""
        batch = tg.segmentation_targets_from_sdf(packed[STORED_SDF], None, self.truncation)
        layer = None
        if self.needs_contact:
            layer = tf.cast(packed[STORED_CONTACT] > 0, tf.float32)
            if self.contact_target:
                batch["contact"] = layer
        if self.sample_weights:
            batch["valid"] = tf.ones_like(batch["sdf"])
        return tg.segmentation_element(batch, layer, self.sample_weights,
                                       self.boundary_weight, self.boundary_sigma,
                                       self.contact_weight, self.interior_level,
                                       self.core_weight)
