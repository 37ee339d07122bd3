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

With ``crop_on="device"`` too, the crop's column cut and symmetry move there as well: the
image and the label layers arrive as the window's rows ([B, crop, S, C], S the tiles'
width: each read straight from the page-cached shard into the batch, the host's memory
floor) with :data:`WINDOW`, and :func:`orient_crops` cuts them exactly as the host would
(:meth:`PackedTargets.image`, :meth:`PackedTargets.expand`). DetectNet's elements keep
their host-built targets from the cut crops and carry the image's rows, with the windows
under :data:`WINDOW` in the targets dict (``sn_tf.training.packed_step`` cuts the image).

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
#: Where the column crop and the symmetry of such batches are done (``crop_on``).
CROP_ON = ("host", "device")
#: Keys of a packed label dict.
STORED_SDF = "stored_sdf"
STORED_CONTACT = "stored_contact"
WINDOW = "window"  # int32 [B, 4] with crop_on="device": see orient_crops


def check_targets_on(value) -> str:
    """``value`` if it is one of :data:`TARGETS_ON`, else ValueError naming them."""
    if value not in TARGETS_ON:
        raise ValueError(f"targets_on must be one of {TARGETS_ON}, got {value!r}")
    return value


def check_crop_on(value) -> str:
    """``value`` if it is one of :data:`CROP_ON`, else ValueError naming them."""
    if value not in CROP_ON:
        raise ValueError(f"crop_on must be one of {CROP_ON}, got {value!r}")
    return value


def orient_crops(rows, window, crop: int):
    """[B, crop, crop, C]: the crops of a ``crop_on="device"`` batch cut from the window's
    rows as the host would have cut them (``sn_tf.input.ranged.read_crops``).

    rows: [B, crop, S, C], each crop's window rows (S >= crop columns, any dtype);
    window: int32 [B, 4] ``(x0, flip_rows, flip_cols, transpose)``: columns
    ``[x0, x0 + crop)`` of ``rows``, then rows reversed, columns reversed, transposed
    (``sn_tf.input.augment.split_dihedral``'s form of the crop's symmetry). The flips are
    folded into the two gathers' indices, the transpose is a select."""
    x0, flip_r, flip_c, transpose = tf.unstack(tf.cast(window, tf.int32), num=4, axis=1)
    ramp = tf.range(crop, dtype=tf.int32)[None, :]
    back = crop - 1 - ramp
    cols = x0[:, None] + tf.where(flip_c[:, None] > 0, back, ramp)
    x = tf.gather(rows, cols, axis=2, batch_dims=1)
    x = tf.gather(x, tf.where(flip_r[:, None] > 0, back, ramp), axis=1, batch_dims=1)
    return tf.where(transpose[:, None, None, None] > 0, tf.transpose(x, [0, 2, 1, 3]), x)


def is_packed(labels) -> bool:
    """True when ``labels`` (the second item of a training element) is a packed dict."""
    return isinstance(labels, dict) and STORED_SDF in labels


@dataclasses.dataclass(frozen=True)
class PackedTargets:
    """How packed label layers become a segmentation batch's targets and weights (the
    options of ``sn_tf.input.targets.segmentation_element``, resolved by the pipeline).

    truncation: T of the sdf target (pixels); contact_target: the targets hold
    ``contact``; sample_weights: weights are returned; crop: with ``crop_on="device"`` the
    crop size, the image and the layers arriving as the window's rows with the
    :data:`WINDOW` to cut them by (:func:`orient_crops`), else 0; the rest as
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
    crop: int = 0

    @property
    def needs_contact(self) -> bool:
        """True when the packed labels must carry the contact layer."""
        return self.contact_target or (self.sample_weights and self.contact_weight is not None)

    def pack(self, sdf, contact=None, window=None) -> dict:
        """The packed labels: ``{STORED_SDF: sdf}`` (stored sdf [B, H, W, 1], its stored
        dtype) plus ``STORED_CONTACT: contact`` ([B, H, W, 1], stored dtype) when
        :attr:`needs_contact`, plus ``WINDOW: window`` when :attr:`crop` is set."""
        out = {STORED_SDF: sdf}
        if self.needs_contact:
            if contact is None:
                raise ValueError("these targets need the contact layer; the batch has none")
            out[STORED_CONTACT] = contact
        if self.crop:
            if window is None:
                raise ValueError("crop_on='device' labels need the crops' windows")
            out[WINDOW] = window
        return out

    def expand(self, packed: dict):
        """Packed labels -> ``targets`` dict, or ``(targets, weights)`` with
        ``sample_weights``: float32 [B, H, W, 1] each, equal to the host-built ones. With
        :attr:`crop` the layers are cut first (:func:`orient_crops`); the image then needs
        the same cut: :meth:`expand_element`."""
        if self.crop:
            packed = {k: orient_crops(v, packed[WINDOW], self.crop)
                      for k, v in packed.items() if k != WINDOW}
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

    def image(self, image, packed: dict):
        """The training element's image: with :attr:`crop`, cut from the window's rows
        [B, crop, S, C] (:func:`orient_crops`), else ``image`` itself."""
        return orient_crops(image, packed[WINDOW], self.crop) if self.crop else image
