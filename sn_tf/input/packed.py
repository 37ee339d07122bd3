"""Training targets built in the train step (``targets_on="device"``).

Segmentation (:class:`PackedTargets`): with ``make_dataset(..., targets_on="device")`` a
segmentation training batch leaves the pipeline as ``(image, packed)``: ``packed`` holds
the label layers as the crops read them (:data:`STORED_SDF` the stored sdf, float16
[B, H, W, 1]; :data:`STORED_CONTACT` the contact layer in its stored dtype, uint8 or float16
[B, H, W, 1], when the targets or weights need it) instead of the float32 targets and
per-pixel weights. :meth:`PackedTargets.expand` turns them into exactly the targets and
weights the pipeline builds on the host (``targets_on="host"``): the same functions
(``sn_tf.input.targets``) on the same values, run where the train step runs (the
accelerator). Training crops have no padding, so the valid mask is all ones there too.

DetectNet (:class:`PackedDetection`): batch-read crops leave with their boxes and rotated
rectangles, already cut and turned with the crop's window and symmetry on the host (a few
hundred bytes a crop; :data:`BOXES`, :data:`RECTS`, zero rows padding them to a power of
two), and for the contact weights the cells of the crop holding a contact pixel
(:data:`CONTACT_CELLS`, uint8 [B, h, w, 1], cut from the tile's sparse contact pixels)
instead of the ``coverage`` / ``bbox`` / ``orient`` grids: building those claims every cell
for every box ([B, N, h, w]), ~3 ms of host CPU a crop, and :meth:`PackedDetection.expand`
does it in the step (``targets.detectnet_targets``, ``targets.detectnet_weights``: the
same ops on the same values).

With ``crop_on="device"`` too, the crop's column cut and symmetry move there as well: the
image (and the segmentation label layers) arrive as the window's rows ([B, crop, S, C], S
the tiles' width: each read straight from the page-cached shard into the batch, the host's
memory floor) with :data:`WINDOW`, and :func:`orient_crops` cuts them exactly as the host
would (``image``, ``expand``). DetectNet elements whose targets stay on the host (the
``interior`` target needs the sdf) carry the image's rows with the windows under
:data:`WINDOW` in the targets dict (``sn_tf.training.packed_step`` cuts the image).

``sn_tf.training`` installs the expansion in the model's ``train_step`` (Keras ``fit``) and
in the multi-worker custom step; evaluation, prediction and export are unchanged (they never
receive packed labels).
"""

from __future__ import annotations

import dataclasses

from sn_tf.input import targets as tg
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()

#: Where the targets and weights of training batches are built.
TARGETS_ON = ("host", "device")
#: Where the column crop and the symmetry of such batches are done (``crop_on``).
CROP_ON = ("host", "device")
#: Keys of a packed label dict.
STORED_SDF = "stored_sdf"
STORED_CONTACT = "stored_contact"
WINDOW = "window"  # int32 [B, 4] with crop_on="device": see orient_crops
#: ... and of a packed DetectNet label dict (PackedDetection).
BOXES = "boxes_xyxy_px"  # float32 [B, N, 4], N a power of two >= MIN_BOX_ROWS
RECTS = "rects_px"  # float32 [B, N, 8]
CONTACT_CELLS = "contact_cells"  # uint8 [B, h, w, 1]: cells holding a contact pixel
#: The fewest box rows of a packed DetectNet batch; more are padded to the next power of
#: two, so that an XLA-compiled train step sees a handful of shapes, not one per count.
MIN_BOX_ROWS = 32


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


_NO_WINDOW = "crop_on='device' labels need the crops' windows"


def _put(out: dict, key: str, value, needed: bool, missing: str) -> None:
    """``out[key] = value`` when ``needed``; ValueError(``missing``) if it is then None."""
    if needed:
        if value is None:
            raise ValueError(missing)
        out[key] = value


def cut_image(image, labels: dict, crop: int):
    """The training element's image: with ``crop`` (``crop_on="device"``), cut from the
    window's rows [B, crop, S, C] by ``labels[WINDOW]`` (:func:`orient_crops`), else
    ``image`` itself."""
    return orient_crops(image, labels[WINDOW], crop) if crop else image


def is_packed(labels) -> bool:
    """True when ``labels`` (the second item of a training element) is a packed dict
    (segmentation layers or DetectNet boxes)."""
    return isinstance(labels, dict) and (STORED_SDF in labels or BOXES in labels)


#: The box-row buckets: MIN_BOX_ROWS times the powers of two up to 2^20 rows.
_BOX_ROW_BUCKETS = [MIN_BOX_ROWS << k for k in range(16)]


def box_rows(n):
    """int32 scalar: the rows a packed DetectNet batch pads ``n`` (int32 scalar, at most
    2^20) boxes to: the smallest of :data:`MIN_BOX_ROWS` and the powers of two above it
    that holds them."""
    buckets = tf.constant(_BOX_ROW_BUCKETS, tf.int32)
    n = tf.reshape(tf.cast(n, tf.int32), [1])
    return buckets[tf.searchsorted(buckets, n, side="left")[0]]


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
    def layers_as_rows(self) -> bool:
        """True when the label layers leave as the window's rows (with :attr:`crop`)."""
        return bool(self.crop)

    @property
    def needs_contact(self) -> bool:
        """True when the packed labels must carry the contact layer."""
        return self.contact_target or (self.sample_weights and self.contact_weight is not None)

    def pack(self, sdf, contact=None, window=None) -> dict:
        """The packed labels: ``{STORED_SDF: sdf}`` (stored sdf [B, H, W, 1], its stored
        dtype) plus ``STORED_CONTACT: contact`` ([B, H, W, 1], stored dtype) when
        :attr:`needs_contact`, plus ``WINDOW: window`` when :attr:`crop` is set."""
        out = {STORED_SDF: sdf}
        _put(out, STORED_CONTACT, contact, self.needs_contact,
             "these targets need the contact layer; the batch has none")
        _put(out, WINDOW, window, bool(self.crop), _NO_WINDOW)
        return out

    def expand(self, packed: dict):
        """Packed labels -> ``targets`` dict, or ``(targets, weights)`` with
        ``sample_weights``: float32 [B, H, W, 1] each, equal to the host-built ones. With
        :attr:`crop` the layers are cut first (:func:`orient_crops`); the image then needs
        the same cut: :meth:`image`."""
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
        """The training element's image (:func:`cut_image` with :attr:`crop`)."""
        return cut_image(image, packed, self.crop)


@dataclasses.dataclass(frozen=True)
class PackedDetection:
    """How packed DetectNet labels become a training batch's targets and weights: the
    crops' boxes and rotated rectangles (padded with zero rows) and, with a contact
    weight, the cells holding a contact pixel, instead of the host-built
    ``coverage`` / ``bbox`` / ``orient`` grids (``sn_tf.input.targets``).

    size: the crops' side (pixels; the targets' image size); cell_size, cvg_scale,
    oriented (coverage claimed by the rectangles, plus the ``orient`` target): as
    ``targets.detectnet_targets``; sample_weights: weights are returned (1 per cell, times
    ``1 + contact_weight`` within one cell of a contact pixel with ``contact_weight``);
    crop: with ``crop_on="device"`` the crop size, the image arriving as the window's rows
    with the :data:`WINDOW` to cut it by, else 0 (the boxes are always those of the cut
    crop: the host cuts and turns them with the crop's window and symmetry).
    """

    size: int
    cell_size: int
    cvg_scale: float
    oriented: bool
    sample_weights: bool
    contact_weight: float | None = None
    crop: int = 0

    #: The labels are boxes and cells, never the window's rows of a layer.
    layers_as_rows = False

    @property
    def needs_contact(self) -> bool:
        """True when the packed labels must carry the contact cells."""
        return self.sample_weights and self.contact_weight is not None

    @property
    def names(self) -> tuple[str, ...]:
        """The target names, in the order of the host-built element."""
        return ("coverage", "bbox", "orient") if self.oriented else ("coverage", "bbox")

    def pack(self, boxes, rects, cells=None, window=None) -> dict:
        """The packed labels: :data:`BOXES` [B, N, 4] and :data:`RECTS` [B, N, 8] (float32,
        ``boxes`` and ``rects`` [B, M, .] padded with zero rows to ``N = box_rows(M)``),
        :data:`CONTACT_CELLS` ``cells`` [B, h, w, 1] uint8 when :attr:`needs_contact`,
        :data:`WINDOW` ``window`` when :attr:`crop` is set."""
        rows = box_rows(tf.shape(boxes)[1])

        def pad(x, width):
            x = tf.cast(x, tf.float32)
            x = tf.pad(x, [[0, 0], [0, rows - tf.shape(x)[1]], [0, 0]])
            return tf.ensure_shape(x, [None, None, width])

        out = {BOXES: pad(boxes, 4), RECTS: pad(rects, 8)}
        _put(out, CONTACT_CELLS, cells, self.needs_contact,
             "these weights need the contact cells; the batch has none")
        _put(out, WINDOW, window, bool(self.crop), _NO_WINDOW)
        return out

    def expand(self, packed: dict):
        """Packed labels -> ``targets`` dict, or ``(targets, weights)`` with
        ``sample_weights``: float32 [B, h, w, .] each (``coverage``, ``bbox``, with
        :attr:`oriented` ``orient``), equal to the host-built ones (the same
        ``targets.detectnet_targets`` and ``targets.detectnet_weights`` on the same
        boxes; zero box rows are padding there too)."""
        out = tg.detectnet_targets(packed[BOXES], self.size, self.size, self.cell_size,
                                   self.cvg_scale,
                                   rects=packed[RECTS] if self.oriented else None,
                                   cvg_shape="rect" if self.oriented else "box")
        targets = {k: out[k] for k in self.names}
        if not self.sample_weights:
            return targets
        return targets, tg.detectnet_weights(tf.ones_like(out["coverage"]), self.names,
                                             self.contact_weight,
                                             packed.get(CONTACT_CELLS))

    def image(self, image, packed: dict):
        """The training element's image (:func:`cut_image` with :attr:`crop`)."""
        return cut_image(image, packed, self.crop)
