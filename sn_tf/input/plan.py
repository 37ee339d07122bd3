"""What a pipeline reads and makes, checked against the dataset's description before any graph.

``_plan`` resolves ``make_dataset`` / ``make_examples`` arguments against the dataset's
description (image types and bands present, dtypes, encodings, label fields, schema version,
the normalisation) into one frozen ``_Plan`` that the graph functions
(``sn_tf.input.decode``, ``sn_tf.input.pipeline``) read; a misconfiguration is an error here,
naming the argument and the dataset.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

from sn_tf.dataset import schema
from sn_tf.dataset.info import DatasetInfo, InfoError
from sn_tf.input import augment as aug
from sn_tf.input.augment import AugmentConfig, augment_config
from sn_tf.input.config import InputConfig
from sn_tf.input.normalization import coefficients_from_mean_std, normalization_mean_std


TARGETS = ("segmentation", "detection", "oriented_detection", "all")
NORMALIZATIONS = ("dataset_info", "percentile")  # "dataset_info": the description's mean, std
IMAGE_DTYPES = ("float32", "bfloat16", "float16", "raw")
READERS = ("ranged", "record")
DEFAULT_SEG_PAD = 32


# ---- configuration checked against the description (sn_tf.dataset.info) ------------------
@dataclasses.dataclass(frozen=True)
class _TypeSpec:
    """One image type as stored: name, dtype, encoding, band count and selected channels."""

    name: str
    dtype: str
    encoding: str
    num_bands: int
    channels: tuple[int, ...]  # 0-based channels to keep, in output order
    example_bytes: int = 0  # raw bytes of the dataset's example tile (example_shape)

    @property
    def all_channels(self) -> bool:
        return self.channels == tuple(range(self.num_bands))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything the graph functions need, resolved from the description and arguments."""

    types: tuple[_TypeSpec, ...]
    grid: str
    label_arrays: dict  # field -> (dtype, encoding)
    label_fields: tuple[str, ...]  # ("sdf",) or ("mask", "distance"), then "contact" when
    # the contact target or weight is asked for; () without segmentation
    truncation: float
    norm_scale: np.ndarray  # float32 [C]
    norm_bias: np.ndarray  # float32 [C]
    seg: bool
    det: bool
    training: bool
    crop: int
    cell_size: int  # DetectNet pixels per grid cell (sn_tf.input.cells)
    cvg_scale: float
    pad_multiple: int
    augment: AugmentConfig
    seed: int
    boundary_weight: float | None
    boundary_sigma: float
    aois: tuple[str, ...] | None
    image_dtype: str = "float32"
    from_record: bool = False  # training windows of raw arrays cut from the record itself
    grid_shape: tuple[int, int] = (0, 0)  # the label grid's example_shape (H, W)
    contact: bool = False  # segmentation targets include "contact"
    contact_weight: float | None = None  # sample weights + contact_weight on contact pixels
    oriented: bool = False  # target "oriented_detection": rectangle coverage + orient targets
    ranged: bool = False  # training windows read from the shard files (sn_tf.input.ranged)
    packed: Any = None  # sn_tf.input.packed.PackedTargets / PackedDetection: the train
    # step builds the targets from the stored label layers or the crops' boxes
    # (make_dataset targets_on="device")
    boxes: bool = True  # training crops carry boxes and rectangles (make_examples and the
    # detection targets; make_dataset's segmentation elements use none, so it sets False)
    device_crop: bool = False  # make_dataset(crop_on="device"): batch-read crops leave as
    # the window's rows (the image; the label layers too when packed) for the train step

    def cut_from_record(self, encoding: str) -> bool:
        """True when a payload of ``encoding`` is read out of the serialized record
        (``_cut_payloads``) instead of being parsed (copied) first."""
        return (self.from_record or self.ranged) and encoding == "raw"

    @property
    def batch_read(self) -> bool:
        """True when ranged training crops are read a whole batch at a time
        (``sn_tf.input.ranged.read_crops``, straight into reused batch buffers): raw
        delivery of one image type with all its bands, labels none or the stored raw sdf
        and / or the contact layer (raw by window, zlib from its sparse pixels), no scale
        jitter. Other ranged plans read per example (``decode._ranged_window``)."""
        return (self.ranged and self.raw and len(self.types) == 1
                and self.types[0].all_channels
                and self.label_fields in ((), ("sdf",), ("sdf", "contact"), ("contact",))
                and all(self.label_arrays[f][1] == "raw" for f in self.label_fields
                        if f == "sdf")
                and self.augment.scale_range is None)

    @property
    def focus_in_read(self) -> bool:
        """True when ``augment.focus`` moves the windows in ``decode.read_batch`` (numpy,
        ``aug.focus_corner``), from the compressed contact layer it inflates there, instead of
        decoding the whole layer per example in the graph: batch-read crops without boxes
        (only boxes need the final window before batching)."""
        return self.batch_read and not self.boxes and self.augment.focus > 0

    @property
    def label_rows(self) -> bool:
        """True when the label layers leave as the window's rows too (packed segmentation
        labels of a ``device_crop`` plan); DetectNet's packed labels are the cut crop's
        boxes and contact cells."""
        return self.device_crop and self.packed is not None and self.packed.layers_as_rows

    @property
    def raw(self) -> bool:
        """True when images leave the pipeline un-normalised (``image_dtype="raw"``)."""
        return self.image_dtype == "raw"

    @property
    def pad_values(self) -> np.ndarray:
        """float32 [C]: per-channel raw value that normalises to exactly 0 (the padding of
        raw evaluation images): the mean of ``normalization_layer``."""
        return normalization_mean_std(self.norm_scale, self.norm_bias)[0].astype(np.float32)

    @property
    def channels(self) -> int:
        return sum(len(t.channels) for t in self.types)

    @property
    def common_dtype(self) -> str:
        """Dtype the stacked image keeps until normalisation (float32 when types differ)."""
        dtypes = {t.dtype for t in self.types}
        return dtypes.pop() if len(dtypes) == 1 else "float32"


def _check_types(info: DatasetInfo, image_types: Sequence[str], split: str, aois
                 ) -> tuple[str, tuple[str, ...] | None]:
    """Validate the image types; return (the label grid they share, the AOIs to read).

    aois None: the AOIs of ``split`` that have every requested image type (None when
    that is all of them, i.e. no filtering); an explicit list must all have them.
    """
    known = info.image_types
    if isinstance(image_types, str) or not image_types:
        raise ValueError(f"image_types must be a non-empty sequence of type names, "
                         f"got {image_types!r}")
    if len(set(image_types)) != len(image_types):
        raise ValueError(f"image_types has duplicates: {list(image_types)}")
    missing = [t for t in image_types if t not in known]
    if missing:
        raise ValueError(f"image type(s) {missing} are not in this dataset; present: "
                         f"{sorted(known)}")
    grids = {t: known[t].label_grid for t in image_types}
    unlabeled = [t for t, g in grids.items() if not g]
    if unlabeled:
        raise ValueError(f"image type(s) {unlabeled} have no label grid in this dataset "
                         f"(converted with --label_grids that exclude their grid); "
                         f"targets cannot be built for them")
    if len(set(grids.values())) > 1:
        desc = ", ".join(f"{t} on grid {g} {list(known[t].example_shape[:2])}"
                         for t, g in grids.items())
        raise ValueError(f"image types must share one pixel grid to be stacked, got: {desc}. "
                         f"Convert with --resample_to to put them on one grid "
                         f"(e.g. 'MUL@MUL-PanSharpen')")
    split_aois = sorted(info.split(split).aois)
    lacking = {a: info.lacking(a, image_types) for a in split_aois}
    grid = next(iter(grids.values()))
    if aois is None:
        fits = info.aois_with(image_types, split)
        if not fits:
            raise ValueError(f"no AOI in split {split!r} has all of {list(image_types)}: "
                             + "; ".join(f"{a} lacks {lacking[a]}" for a in split_aois))
        return grid, None if len(fits) == len(split_aois) else fits
    unknown = [a for a in aois if a not in split_aois]
    if unknown:
        raise ValueError(f"AOI(s) {unknown} have no tiles in split {split!r}; "
                         f"AOIs there: {split_aois}")
    for a in aois:
        if lacking[a]:
            have = list(info.aois[a].image_types)
            raise ValueError(f"AOI {a} in split {split!r} has no {lacking[a]} (it has "
                             f"{have}); select other AOIs with aois=[...] or leave aois=None "
                             f"(the AOIs that have all image types)")
    return grid, tuple(aois)


def _type_specs(info: DatasetInfo, image_types, bands) -> tuple[_TypeSpec, ...]:
    """Per-type storage facts and the selected channels (``bands`` are 1-based)."""
    bands = {} if bands is None else bands
    if not isinstance(bands, Mapping):
        raise ValueError(f"bands must be None or a dict {{image type: [1-based band "
                         f"indices]}}, got {type(bands).__name__}")
    extra = [t for t in bands if t not in image_types]
    if extra:
        raise ValueError(f"bands given for {extra}, which are not in image_types "
                         f"{list(image_types)}")
    specs = []
    for t in image_types:
        stored = info.image_type(t)
        n = stored.bands
        chosen = bands.get(t)
        if chosen is None:
            channels = tuple(range(n))
        else:
            chosen = list(chosen)
            bad = [b for b in chosen if not isinstance(b, (int, np.integer)) or not 1 <= b <= n]
            if not chosen or bad:
                raise ValueError(f"bands[{t!r}] must be a non-empty list of 1-based band "
                                 f"indices in 1..{n} ({t} has {n} bands), got {chosen}")
            channels = tuple(int(b) - 1 for b in chosen)
        if stored.dtype not in schema.TF_DECODABLE_DTYPES:
            raise ValueError(f"{t} is stored as {stored.dtype}, which TensorFlow cannot "
                             f"decode")
        specs.append(_TypeSpec(t, stored.dtype, stored.encoding, n, channels,
                               stored.example_bytes))
    return tuple(specs)


def _normalization(info: DatasetInfo, types: tuple[_TypeSpec, ...], normalization):
    """(scale, bias) float32 [C] so that ``x * scale + bias`` is the normalised value."""
    c = sum(len(t.channels) for t in types)
    if normalization is None or normalization == "none":
        return np.ones(c, np.float32), np.zeros(c, np.float32)
    if isinstance(normalization, Mapping):
        mean = np.asarray(normalization.get("mean"), np.float64).ravel()
        std = np.asarray(normalization.get("std"), np.float64).ravel()
        if mean.shape != (c,) or std.shape != (c,) or np.any(std <= 0):
            raise ValueError(f"normalization mapping needs 'mean' and 'std' of length {c} "
                             f"(the selected channels) with std > 0")
        return coefficients_from_mean_std(mean, std)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, None, or "
                         f"{{'mean': [...], 'std': [...]}}, got {normalization!r}")
    lo_parts, span_parts = [], []
    for t in types:
        try:
            s = info.stats(t.name)
        except InfoError as err:
            raise ValueError(f"{err}; use normalization=None or an explicit "
                             f"{{'mean', 'std'}}") from None
        lo, hi = (s.mean, s.std) if normalization == "dataset_info" else (s.p1, s.p99)
        a = [lo[i] for i in t.channels]
        b = [hi[i] for i in t.channels]
        if any(v is None for v in a + b):
            raise ValueError(f"band_stats of {t.name} lack values for some selected bands")
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        span = b if normalization == "dataset_info" else b - a
        lo_parts.append(a)
        span_parts.append(np.where(span > 0, span, 1.0))
    lo, span = np.concatenate(lo_parts), np.concatenate(span_parts)
    return (1 / span).astype(np.float32), (-lo / span).astype(np.float32)


def _plan(info: DatasetInfo, split: str, config: InputConfig, *, target: str, training: bool,
          labels: bool = False) -> _Plan:
    """Check ``config`` (``sn_tf.input.config``) against the dataset and resolve it into a
    ``_Plan`` for ``target`` and ``training``.

    labels: decode the segmentation labels (footprint, sdf) for a detection target too
    (the DetectNet ``interior`` auxiliary target).
    """
    c = config
    image_types, bands, normalization, crop_size, seed = (
        c.image_types, c.bands, c.normalization, c.crop_size, c.seed)
    sdf_truncation, boundary_weight, boundary_sigma = (
        c.sdf_truncation, c.boundary_weight, c.boundary_sigma)
    cell_size, cvg_scale, augment, pad_to_multiple, aois = (
        c.cell_size, c.cvg_scale, c.augment, c.pad_to_multiple, c.aois)
    image_dtype, contact, contact_weight = c.image_dtype, c.contact, c.contact_weight
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    info.split(split)  # InfoError (a ValueError) naming the splits
    grid, aois = _check_types(info, image_types, split, None if aois is None else tuple(aois))
    types = _type_specs(info, image_types, bands)
    scale, bias = _normalization(info, types, normalization)
    seg, det = target in ("segmentation", "all"), target in ("detection", "oriented_detection",
                                                              "all")
    seg = seg or bool(labels)
    if isinstance(cell_size, bool) or not isinstance(cell_size, int) or cell_size < 1:
        raise ValueError(f"cell_size must be a positive int (pixels per DetectNet cell), "
                         f"got {cell_size!r}")
    if not isinstance(crop_size, int) or crop_size < 1:
        raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
    if det and training and crop_size % cell_size:
        raise ValueError(f"crop_size={crop_size} is not a multiple of the DetectNet "
                         f"cell_size={cell_size}")
    if not 0 < cvg_scale <= 1:
        raise ValueError(f"cvg_scale must be in (0, 1], got {cvg_scale}")
    pad = pad_to_multiple or (cell_size if det else DEFAULT_SEG_PAD)
    if det and pad % cell_size:
        raise ValueError(f"pad_to_multiple={pad} is not a multiple of the DetectNet "
                         f"cell_size={cell_size}")
    grid_info = info.label_grid(grid)
    stored_t = grid_info.sdf_truncation
    truncation = stored_t if sdf_truncation is None else float(sdf_truncation)
    if truncation <= 0:
        raise ValueError(f"sdf_truncation must be > 0, got {sdf_truncation}")
    if boundary_weight is not None and (not seg or boundary_weight < 0 or boundary_sigma <= 0):
        raise ValueError("boundary_weight needs target='segmentation' (or 'all'), "
                         "boundary_weight >= 0 and boundary_sigma > 0")
    _check_contact(info, grid, seg, contact, contact_weight)
    if training and augment_config(augment).focus > 0 and not grid_info.has("contact"):
        raise ValueError(f"augment focus needs the contact layer, which this dataset (schema "
                         f"version {info.schema_version}) lacks: convert the data "
                         f"again with this sn_tf")
    if training:
        small = [t for t in image_types
                 if min(info.image_type(t).example_shape[:2]) < crop_size]
        if small:
            shape = info.image_type(small[0]).example_shape[:2]
            raise ValueError(f"crop_size={crop_size} exceeds the tiles of {small} "
                             f"({shape[0]}x{shape[1]})")
    arrays = {f: (v.dtype, v.encoding) for f, v in grid_info.arrays.items()}
    cfg = augment_config(augment) if training else aug.NO_AUGMENT
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
    if image_dtype == "raw" and cfg.radiometric:
        raise ValueError("image_dtype='raw' delivers stored values: radiometric augmentation "
                         "(gain, offset_std, noise_std) needs a float image_dtype")
    from_record = training and info.schema_version >= schema.FIRST_VERSION_WITH_OFFSETS
    fields = _label_fields(seg, cfg, stored_t, truncation)
    if contact or contact_weight is not None:
        fields += ("contact",)
    ranged = training and _ranged(c.reader, types, (arrays.get("contact") or (None, None))[1],
                                  cfg)
    return _Plan(types, grid, arrays, fields,
                 truncation, scale, bias, seg, det, training, crop_size,
                 cell_size, float(cvg_scale), int(pad), cfg, int(seed),
                 None if boundary_weight is None else float(boundary_weight),
                 float(boundary_sigma), aois, image_dtype, from_record,
                 tuple(grid_info.example_shape), bool(contact),
                 None if contact_weight is None else float(contact_weight),
                 oriented=target == "oriented_detection", ranged=ranged)


def _ranged(reader: str, types, contact_encoding, cfg: AugmentConfig) -> bool:
    """True when training crops read their windows from the shard files
    (``sn_tf.input.ranged``): ``reader="ranged"`` and every image type raw. Raw label layers
    are read by window too; compressed ones (the zlib contact and mask layers, a few KB a
    tile) travel in the shard index's small Example and are decoded whole per crop, as the
    record reader does. Augment focus decodes the whole contact layer of each tile to pick
    windows: with ranged reads only when that layer is compressed (a raw one, 0.4 MB a
    650 px tile, would swell the index held in the tf.data graph)."""
    if reader not in READERS:
        raise ValueError(f"reader must be one of {READERS}, got {reader!r}")
    return (reader == "ranged" and all(t.encoding == "raw" for t in types)
            and (cfg.focus == 0 or contact_encoding not in (None, "raw")))


def _check_contact(info: DatasetInfo, grid: str, seg: bool, contact, contact_weight) -> None:
    """The contact target and weight need segmentation and data with the contact layer
    (schema version >= 3)."""
    if not isinstance(contact, bool):
        raise ValueError(f"contact must be True or False, got {contact!r}")
    if contact_weight is not None and (isinstance(contact_weight, bool) or not isinstance(
            contact_weight, numbers.Real) or not float(contact_weight) >= 0):
        raise ValueError(f"contact_weight must be a number >= 0 or None, got "
                         f"{contact_weight!r}")
    if not (contact or contact_weight is not None):
        return
    if not seg:
        raise ValueError("contact and contact_weight need target='segmentation' (or 'all')")
    if not info.label_grid(grid).has("contact"):
        raise ValueError(f"the contact layer is not in this dataset (schema version "
                         f"{info.schema_version}; it came with version "
                         f"{schema.FIRST_VERSION_WITH_CONTACT}): convert the data again with "
                         f"this sn_tf to train with contact or contact_weight")


def _label_fields(seg: bool, cfg: AugmentConfig, stored_t: float, truncation: float):
    """Label arrays to decode for the segmentation targets.

    The stored sdf (clipped at ``stored_t``) gives both targets when its clipped values
    stay clipped after scaling: ``min scale * stored_t >= truncation``; otherwise (a
    larger T, or zooming out) mask and the untruncated distance are decoded instead.
    """
    if not seg:
        return ()
    s_min = cfg.scale_range[0] if cfg.scale_range is not None else 1.0
    return ("sdf",) if s_min * stored_t >= truncation else ("mask", "distance")
