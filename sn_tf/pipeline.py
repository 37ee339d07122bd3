"""``sn_tf.make_dataset``: stream converted TFRecords into Keras-ready batches with tf.data.

    ds = sn_tf.make_dataset("/data/sn_tfrecords", "train", target="segmentation",
                            image_types=("MUL-PanSharpen", "PAN"), crop_size=256,
                            batch_size=8)
    model.fit(ds, steps_per_epoch=steps_per_epoch("/data/sn_tfrecords", "train", 8))

What a dataset yields
---------------------
Training (``training=True``), one element per batch of random crops:
  ``(image, targets)`` or ``(image, targets, sample_weights)``
  * image: float32 [B, crop, crop, C], C = selected bands of the chosen image types stacked
    in the given order (band order within a type as in the source file), normalised;
    ``image_dtype`` "bfloat16"/"float16": the same values cast; "raw": the stored values
    (uint16 for SpaceNet imagery), for a model whose first layer normalises
    (``normalization_layer``, ``sn_tf.model_input``).
  * targets, ``target="segmentation"``: ``{"footprint": [B,H,W,1], "sdf": [B,H,W,1]}``
    (plus ``"contact": [B,H,W,1]`` with ``contact=True``);
    ``target="detection"``: ``{"coverage": [B,h,w,1], "bbox": [B,h,w,9]}`` (sn_tf.targets);
    ``target="oriented_detection"``: coverage claimed by each building's rotated rectangle
    and ``"orient": [B,h,w,5]`` added (gliding vertices, sn_tf.targets and sn_tf.rects).
  * sample_weights (only when ``sample_weights`` is True, or by default when
    ``boundary_weight`` is set or ``training=False``): one map per target, same
    [B, ., ., 1] shape: segmentation = valid-region mask x boundary weight map,
    detection = 1 for cells holding at least one valid (unpadded) pixel.
Evaluation (``training=False``): whole tiles, every example of the split exactly once, in
  ``read_examples`` order (deterministic; ``deterministic=False`` allows reordering), no
  repeat, no augmentation. Each tile is zero-padded at the bottom and right to a multiple
  of ``pad_to_multiple`` (default: ``cell_size`` for detection, 32 for segmentation; a
  batch is padded to its largest tile), and padded pixels of the image are 0 AFTER
  normalisation (the band mean for ``"dataset_info"``), with weight 0 in the sample
  weights. Elements are ``(image, targets, sample_weights)``: ``model.evaluate`` and
  ``model.predict`` work as is.

``make_examples`` (same arguments) yields the same batches as one dict, for prediction
with georeference, visualisation and tests::

    "image" [B,H,W,C], "footprint" [B,H,W,1], "sdf" [B,H,W,1]   (segmentation / all)
    "contact" [B,H,W,1] float32 in {0, 1}                     (with ``contact=True``)
    "coverage" [B,h,w,1], "bbox" [B,h,w,9], "orient" [B,h,w,5]  (detection / all)
    "boxes" [B,N,4] float32 xyxy pixels of the (augmented) image, zero rows = padding
    "rects" [B,N,8] float32: each box's building's rotated rectangle, 4 (x, y) vertices in
      the same pixels, never clipped (boxes' corners for data before schema version 3)
    "valid" [B,H,W,1] float32, 1 on real pixels
    "tile_id" [B] string, "aoi" [B] string
    evaluation only: "transform_gdal" [B,6] float64 (GDAL order, of the unpadded tile;
    padding is at the bottom/right so pixel (c, r) keeps its map position), "crs" [B]
    string, "height" [B] int32, "width" [B] int32 (unpadded size).

Normalisation (per band, statistics of the converter's train split in dataset_info.json):
  ``"dataset_info"`` (default): ``(x - mean) / std``. ``"percentile"``:
  ``(x - p1) / (p99 - p1)`` (not clipped). None: raw values as float32. A mapping
  ``{"mean": [C], "std": [C]}``: explicit per-channel values (after band selection).

Reading: files shuffled per epoch (stateless, from ``seed`` and the epoch), sharded per
input pipeline (``input_context``: by file when there are at least as many files as
pipelines, else by record within each file), read by an interleave (parallel by default,
``num_parallel_reads``; non-deterministic order for training unless
``deterministic=True``), a bounded shuffle of serialized records (``shuffle_buffer``;
default: as many records as fit 256 MiB), a parallel map that parses only the small
features (version 2 records: raw pixel payloads stay in the record, whose payload
offsets are checked once per tile, ``schema.tf_payload``), with ``crops_per_tile`` k > 1
k crops per parsed tile interleaved over ``batch_size`` tiles, then one parallel
map per example that decodes only the needed arrays (raw images and labels: only the
rows of the crop window), crops, applies the geometric augmentation on the source
dtype, normalises with the radiometric jitter fused in (one multiply-add per pixel) and
builds the segmentation targets; ``batch`` (training: one crop shape, boxes ragged;
evaluation: ``padded_batch``); a batched map for what is vectorised
over a batch (DetectNet targets, valid masks, evaluation padding); a fixed ``prefetch``
of ``PREFETCH_BATCHES``. Per-example rather than batched element-wise work is a
measured choice: on CPU a [8, 512, 512, 8] float32 op costs about 3x more per image than
the same op on one image (each fresh 64 MB batch buffer is page-faulted in); the small
sdf (float16, one channel) is the exception: it crosses the batch as stored and the
segmentation targets are built from it per batch (``_batched_sdf``). Memory is
bounded by the shuffle buffer, the in-flight elements of the parallel stages (about
``num_parallel_calls`` examples and batches), the prefetched batches and, with
``crops_per_tile`` > 1, ``batch_size`` parsed records.

Segmentation labels: the stored sdf gives both targets (footprint = sdf >= 0) unless the
requested truncation exceeds the stored one or scale jitter can zoom out past it; then
the mask and the untruncated distance are decoded instead (``_label_fields``).

Reproducibility: an example's augmentation depends only on (seed, tile id, epoch) (see
``sn_tf.augment``); with ``deterministic=True`` the batches are identical run to run for
a seed. With ``deterministic=None`` training trades that for throughput (arrival order
varies), evaluation is always in order.
"""

from __future__ import annotations

import dataclasses
import numbers
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from sn_tf import schema
from sn_tf.cells import DEFAULT_CELL_SIZE
from sn_tf.augment import AugmentConfig, augment_config
from sn_tf.reader import load_info, shard_files
from sn_tf.tfimport import tensorflow

tf = tensorflow()

from sn_tf import augment as aug  # noqa: E402  (after TF is imported quietly)
from sn_tf import targets as tg  # noqa: E402

TARGETS = ("segmentation", "detection", "oriented_detection", "all")
NORMALIZATIONS = ("dataset_info", "percentile")
IMAGE_DTYPES = ("float32", "bfloat16", "float16", "raw")
SHUFFLE_BUDGET_BYTES = 256 * 2 ** 20
DEFAULT_SEG_PAD = 32
MAX_CYCLE_LENGTH = 4
PREFETCH_BATCHES = 2  # fixed, not AUTOTUNE: memory stays bounded by the buffer sizes
# tf.data functions are plain graph code (tf.cond where they branch on tensors): no
# AutoGraph conversion, which re-reads the source files when a dataset is built
_graph = tf.autograph.experimental.do_not_convert


# ---- configuration checked against dataset_info.json --------------------------------------
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
    """Everything the graph functions need, resolved from dataset_info.json and arguments."""

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
    cell_size: int  # DetectNet pixels per grid cell (sn_tf.cells)
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

    def cut_from_record(self, encoding: str) -> bool:
        """True when a payload of ``encoding`` is read out of the serialized record
        (``_cut_payloads``) instead of being parsed (copied) first."""
        return self.from_record and encoding == "raw"

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


def _check_types(info: dict, image_types: Sequence[str], split: str, aois
                 ) -> tuple[str, tuple[str, ...] | None]:
    """Validate the image types; return (the label grid they share, the AOIs to read).

    aois None: the AOIs of ``split`` that have every requested image type (None when
    that is all of them, i.e. no filtering); an explicit list must all have them.
    """
    known = info["feature_spec"]["image_types"]
    if isinstance(image_types, str) or not image_types:
        raise ValueError(f"image_types must be a non-empty sequence of type names, "
                         f"got {image_types!r}")
    if len(set(image_types)) != len(image_types):
        raise ValueError(f"image_types has duplicates: {list(image_types)}")
    missing = [t for t in image_types if t not in known]
    if missing:
        raise ValueError(f"image type(s) {missing} are not in this dataset; present: "
                         f"{sorted(known)}")
    grids = {t: known[t]["label_grid"] for t in image_types}
    unlabeled = [t for t, g in grids.items() if not g]
    if unlabeled:
        raise ValueError(f"image type(s) {unlabeled} have no label grid in this dataset "
                         f"(converted with --label_grids that exclude their grid); "
                         f"targets cannot be built for them")
    if len(set(grids.values())) > 1:
        desc = ", ".join(f"{t} on grid {g} {known[t]['example_shape'][:2]}"
                         for t, g in grids.items())
        raise ValueError(f"image types must share one pixel grid to be stacked, got: {desc}. "
                         f"Convert with --resample_to to put them on one grid "
                         f"(e.g. 'MUL@MUL-PanSharpen')")
    split_aois = list(info["splits"][split]["aois"])
    lacking = {a: _lacking_types(info, a, image_types) for a in split_aois}
    grid = next(iter(grids.values()))
    if aois is None:
        fits = tuple(a for a in split_aois if not lacking[a])
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
            have = info["aois"].get(a, {}).get("image_types", [])
            raise ValueError(f"AOI {a} in split {split!r} has no {lacking[a]} (it has "
                             f"{have}); select other AOIs with aois=[...] or leave aois=None "
                             f"(the AOIs that have all image types)")
    return grid, tuple(aois)


def _lacking_types(info: dict, aoi: str, image_types) -> list[str]:
    """The requested image types an AOI does not have (a resampled type "T@G" exists where
    its source T and grid type G do)."""
    have = info["aois"].get(aoi, {}).get("image_types", [])
    return [t for t in image_types if not all(p in have for p in t.split("@"))]


def _type_specs(info: dict, image_types, bands) -> tuple[_TypeSpec, ...]:
    """Per-type storage facts and the selected channels (``bands`` are 1-based)."""
    known = info["feature_spec"]["image_types"]
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
        n = int(known[t]["bands"])
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
        dtype = known[t]["dtype"]
        if dtype not in schema.TF_DECODABLE_DTYPES:
            raise ValueError(f"{t} is stored as {dtype}, which TensorFlow cannot decode")
        shape = known[t].get("example_shape")  # absent: no size to check windows against,
        # so every payload is parsed (tf_payload never matches 0 bytes of a real tile)
        example_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize if shape else 0
        specs.append(_TypeSpec(t, dtype, known[t].get("encoding", "raw"), n, channels,
                               example_bytes))
    return tuple(specs)


def _normalization(info: dict, types: tuple[_TypeSpec, ...], normalization):
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
    stats = info.get("band_stats", {})
    lo_parts, span_parts = [], []
    for t in types:
        s = stats.get(t.name)
        if s is None:
            raise ValueError(f"dataset_info.json has no band_stats for {t.name} (statistics "
                             f"come from the train split); use normalization=None or an "
                             f"explicit {{'mean', 'std'}}")
        keys = ("mean", "std") if normalization == "dataset_info" else ("p1", "p99")
        a = [s[keys[0]][i] for i in t.channels]
        b = [s[keys[1]][i] for i in t.channels]
        if any(v is None for v in a + b):
            raise ValueError(f"band_stats of {t.name} lack values for some selected bands")
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        span = b if normalization == "dataset_info" else b - a
        lo_parts.append(a)
        span_parts.append(np.where(span > 0, span, 1.0))
    lo, span = np.concatenate(lo_parts), np.concatenate(span_parts)
    return (1 / span).astype(np.float32), (-lo / span).astype(np.float32)


def _plan(info: dict, split: str, *, target, training, image_types, bands, normalization,
          crop_size, seed, sdf_truncation, boundary_weight, boundary_sigma, cell_size,
          cvg_scale, augment, pad_to_multiple, aois, image_dtype="float32", contact=False,
          contact_weight=None, labels=False) -> _Plan:
    """Check every argument against the dataset and resolve it into a ``_Plan``.

    labels: decode the segmentation labels (footprint, sdf) for a detection target too
    (the DetectNet ``interior`` auxiliary target).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if split not in info["splits"]:
        raise ValueError(f"no split {split!r}; splits: {list(info['splits'])}")
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
    grid_info = info["feature_spec"]["label_grids"][grid]
    stored_t = float(grid_info.get("sdf_truncation", 32.0))
    truncation = stored_t if sdf_truncation is None else float(sdf_truncation)
    if truncation <= 0:
        raise ValueError(f"sdf_truncation must be > 0, got {sdf_truncation}")
    if boundary_weight is not None and (not seg or boundary_weight < 0 or boundary_sigma <= 0):
        raise ValueError("boundary_weight needs target='segmentation' (or 'all'), "
                         "boundary_weight >= 0 and boundary_sigma > 0")
    _check_contact(info, grid, seg, contact, contact_weight)
    if training and augment_config(augment).focus > 0 and \
            "contact" not in info["feature_spec"]["label_grids"][grid]["arrays"]:
        raise ValueError(f"augment focus needs the contact layer, which this dataset (schema "
                         f"version {info.get('schema_version', 1)}) lacks: convert the data "
                         f"again with this sn_tf")
    if training:
        small = [t for t in image_types
                 if min(info["feature_spec"]["image_types"][t]["example_shape"][:2]) < crop_size]
        if small:
            shape = info["feature_spec"]["image_types"][small[0]]["example_shape"][:2]
            raise ValueError(f"crop_size={crop_size} exceeds the tiles of {small} "
                             f"({shape[0]}x{shape[1]})")
    arrays = {f: (v["dtype"], v["encoding"]) for f, v in grid_info["arrays"].items()}
    cfg = augment_config(augment) if training else aug.NO_AUGMENT
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}, got {image_dtype!r}")
    if image_dtype == "raw" and cfg.radiometric:
        raise ValueError("image_dtype='raw' delivers stored values: radiometric augmentation "
                         "(gain, offset_std, noise_std) needs a float image_dtype")
    from_record = training and int(info.get("schema_version", 1)) >= \
        schema.FIRST_VERSION_WITH_OFFSETS
    fields = _label_fields(seg, cfg, stored_t, truncation)
    if contact or contact_weight is not None:
        fields += ("contact",)
    return _Plan(types, grid, arrays, fields,
                 truncation, scale, bias, seg, det, training, crop_size,
                 cell_size, float(cvg_scale), int(pad), cfg, int(seed),
                 None if boundary_weight is None else float(boundary_weight),
                 float(boundary_sigma), aois, image_dtype, from_record,
                 tuple(grid_info.get("example_shape", (0, 0))), bool(contact),
                 None if contact_weight is None else float(contact_weight),
                 oriented=target == "oriented_detection")


def _check_contact(info: dict, grid: str, seg: bool, contact, contact_weight) -> None:
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
    if "contact" not in info["feature_spec"]["label_grids"][grid]["arrays"]:
        raise ValueError(f"the contact layer is not in this dataset (schema version "
                         f"{info.get('schema_version', 1)}; it came with version "
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


# ---- reading -------------------------------------------------------------------------------
def _worker_files(files: list[str], input_context):
    """(files of this input pipeline, (num_shards, index) for record sharding or None)."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return files, None
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= n:
        return files[i::n], None
    return files, (n, i)


def _file_dataset(files: list[str], training: bool, seed: int, epochs):
    """Dataset of (file name, epoch int64); files reshuffled per epoch when training."""
    names = tf.constant(files)
    if not training:
        return tf.data.Dataset.from_tensor_slices(names).map(
            _graph(lambda f: (f, tf.constant(0, tf.int64))))
    epochs_ds = tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(epochs)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            names, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).map(_graph(lambda f: (f, epoch)))

    return epochs_ds.flat_map(_graph(one_epoch))


def _read_buffer_size(files: list[str]) -> int | None:
    """TFRecordDataset's read buffer: 0 (none) for local files, else TF's default.

    Records of whole tiles are MBs: an unbuffered reader reads each straight into its
    output string, one copy fewer than through the 256 KB buffer (~0.13 of ~1.9 ms CPU
    per 8.5 MB record, measured with ``sn_tf.keep_freed_memory``). Remote file systems
    (``gs://`` ...) keep the buffer: there each small read is a request.
    """
    return 0 if all("://" not in f for f in files) else None


def _records(files_ds, record_shard, cycle_length: int, num_parallel_reads, deterministic,
             buffer_size: int | None = None):
    """Interleave the records of the files: (serialized, epoch).

    num_parallel_reads None or 1: one reader thread cycling over the files (about half
    the CPU per record of the parallel form; enough for local disks); otherwise a
    parallel interleave (for high-latency storage such as GCS). buffer_size: of each
    TFRecordDataset (``_read_buffer_size``).
    """
    def read(f, epoch):
        ds = tf.data.TFRecordDataset(f, buffer_size=buffer_size)
        if record_shard is not None:
            ds = ds.shard(*record_shard)
        return ds.map(_graph(lambda r: (r, epoch)))

    read = _graph(read)
    if num_parallel_reads in (None, 1):
        return files_ds.interleave(read, cycle_length=cycle_length, block_length=1)
    return files_ds.interleave(read, cycle_length=cycle_length, block_length=1,
                               num_parallel_calls=num_parallel_reads,
                               deterministic=deterministic)


def _worker_examples(info: dict, split: str, files: list[str], record_shard) -> int:
    """Examples this input pipeline reads (from the per-shard counts in dataset_info.json)."""
    counts = {sh["file"]: sh["num_examples"] for sh in info["splits"][split]["shards"]}
    per_file = [counts[pathlib.PurePath(f).name] for f in files]
    if record_shard is None:
        return sum(per_file)
    n, i = record_shard
    return sum(len(range(i, c, n)) for c in per_file)


def _auto_shuffle_buffer(info: dict, split: str) -> int:
    """Records that fit ``SHUFFLE_BUDGET_BYTES`` (4..256, at most the split's size)."""
    sp = info["splits"][split]
    mean = sp["num_bytes"] / max(sp["num_examples"], 1)
    n = int(SHUFFLE_BUDGET_BYTES // max(mean, 1))
    return max(1, min(max(n, 4), 256, sp["num_examples"]))


# ---- parsing and decoding (one example) ------------------------------------------------------
def _feature_spec(plan: _Plan) -> dict:
    """The schema's parse spec restricted to the features this plan reads.

    Payloads cut from the record (``_cut_payloads``) are not parsed (a copy of MBs);
    their offsets are.
    """
    full = schema.tf_feature_spec([t.name for t in plan.types], [plan.grid])
    cut = _cut_payloads(plan)
    keys = [schema.KEY_SCHEMA_VERSION, schema.KEY_TILE_ID, schema.KEY_AOI,
            schema.label_key(plan.grid, "shape"), schema.label_key(plan.grid, "boxes_xyxy_px"),
            schema.label_key(plan.grid, "rects_px")]
    keys += [schema.image_key(t.name, "shape") for t in plan.types]
    keys += [k for k in ([schema.image_key(t.name, "data") for t in plan.types]
                         + [schema.label_key(plan.grid, f) for f in plan.label_fields])
             if k not in cut]
    if plan.training and plan.augment.focus > 0:  # the whole contact layer picks windows
        keys.append(schema.label_key(plan.grid, "contact"))
    keys = list(dict.fromkeys(keys))
    keys += sorted({offsets_key for offsets_key, _, _ in cut.values()})
    if not plan.training:
        first = plan.types[0].name
        keys += [schema.image_key(first, "transform_gdal"), schema.image_key(first, "crs")]
    return {k: full[k] for k in keys}


def _cut_payloads(plan: _Plan) -> dict[str, tuple[str, int, int]]:
    """The payloads this plan cuts from the record: {feature key: (offsets key, index in
    the offsets, bytes of the dataset's example tile)}."""
    out = {schema.image_key(t.name, "data"): (schema.image_key(t.name, "payload_offset"), 0,
                                              t.example_bytes)
           for t in plan.types if plan.cut_from_record(t.encoding)}
    for f in plan.label_fields:
        dtype, encoding = plan.label_arrays[f]
        if plan.cut_from_record(encoding):
            out[schema.label_key(plan.grid, f)] = (
                schema.label_key(plan.grid, "payload_offsets"),
                schema.LABEL_ARRAY_FIELDS.index(f),
                int(np.prod(plan.grid_shape)) * np.dtype(dtype).itemsize)
    return out


def _with_payload_sources(feat: dict, record, plan: _Plan) -> dict:
    """Parsed features plus, for each payload cut from the record, ``(source, base)``
    under ``_SOURCE``/``_BASE`` + key (``schema.tf_payload``): the record and the offset
    when it checks, else the parsed value and 0. Once per tile, before any crops."""
    feat, offsets = dict(feat), {}
    for key, (offsets_key, index, nbytes) in _cut_payloads(plan).items():
        if offsets_key not in offsets:  # none (b"") -> zeros, an offset that never checks
            offsets[offsets_key] = tf.concat([schema.tf_decode_offsets(feat[offsets_key]),
                                              tf.zeros([len(schema.LABEL_ARRAY_FIELDS)],
                                                       tf.int64)], 0)
        feat[_SOURCE + key], feat[_BASE + key] = schema.tf_payload(
            record, key, offsets[offsets_key][index], nbytes)
    return feat


_SOURCE, _BASE = "_source:", "_base:"  # internal feature names (not schema keys)


def _payload_bytes(feat: dict, key: str):
    """``(data, base)``: where a payload's bytes start (``_with_payload_sources`` when it
    was cut from the record, else the parsed feature and 0)."""
    if _SOURCE + key in feat:
        return feat[_SOURCE + key], feat[_BASE + key]
    return feat[key], 0


def _check_example(feat: dict, plan: _Plan):
    """Graph assertions: known schema version, every image type present and on the grid."""
    tile_id = feat[schema.KEY_TILE_ID]
    ops = [tf.debugging.Assert(
        tf.reduce_any(tf.equal(feat[schema.KEY_SCHEMA_VERSION],
                               tf.constant(schema.KNOWN_SCHEMA_VERSIONS, tf.int64))),
        ["unknown schema version in tile", tile_id])]
    hw = feat[schema.label_key(plan.grid, "shape")]
    for t in plan.types:
        shape = feat[schema.image_key(t.name, "shape")]
        ops.append(tf.debugging.Assert(
            tf.reduce_all(tf.equal(shape, tf.concat([hw, [t.num_bands]], 0))),
            [f"image {t.name} missing or not on the {plan.grid} label grid in tile",
             tile_id, "image shape", shape, "label shape", hw]))
    return ops


def _decode_window(data, encoding: str, dtype: str, shape, window, flip_rows=None, base=0):
    """Pixels of ``window = (y0, x0, win)`` of an encoded HWC array (shape int32 [3]; a
    Python int channel count ``shape[2]`` gives the result a static channel dimension).

    base: where the array's bytes start in ``data`` (raw only; int64 scalar or 0).

    flip_rows: optional bool scalar tensor: rows in reverse order (an up-down flip).
    Raw arrays decode only the window: one byte range per row (``substr`` with a vector
    of row offsets, so the column crop and the row order cost nothing beyond the one copy
    into the output; measured 0.6 ms less per 512 x 512 x 8 uint16 crop than a row-block
    substr + column slice + ``tf.reverse``).
    """
    y0, x0, win = window
    if encoding == "raw":
        pixel_bytes = shape[2] * np.dtype(dtype).itemsize
        rows = tf.range(win)
        if flip_rows is not None:
            rows = tf.where(flip_rows, win - 1 - rows, rows)
        offsets = (tf.cast(y0 + rows, tf.int64) * tf.cast(shape[1] * pixel_bytes, tf.int64)
                   + tf.cast(x0 * pixel_bytes, tf.int64) + base)
        parts = tf.strings.substr(data, offsets,
                                  tf.fill([win], tf.cast(win * pixel_bytes, tf.int64)))
        flat = tf.io.decode_raw(parts, tf.dtypes.as_dtype(dtype), little_endian=True)
        return tf.reshape(flat, [-1, win, shape[2]])
    x = schema.tf_decode_bytes(data, encoding, dtype, shape)[y0:y0 + win, x0:x0 + win]
    if flip_rows is None:
        return x
    return tf.cond(flip_rows, lambda: tf.reverse(x, [0]), lambda: tf.identity(x))


def _decode_image_window(feat: dict, t: _TypeSpec, window, flip_rows, plan: _Plan):
    """Window of one image type [win, win, selected channels], source dtype."""
    shape = tf.cast(feat[schema.image_key(t.name, "shape")], tf.int32)
    shape = [shape[0], shape[1], t.num_bands]  # static channels (checked by _check_example)
    data, base = _payload_bytes(feat, schema.image_key(t.name, "data"))
    x = _decode_window(data, t.encoding, t.dtype, shape, window, flip_rows, base)
    return x if t.all_channels else tf.gather(x, list(t.channels), axis=2)


def _decode_image(feat: dict, t: _TypeSpec):
    """The whole image of one type [H, W, selected channels], source dtype."""
    shape = tf.cast(feat[schema.image_key(t.name, "shape")], tf.int32)
    x = schema.tf_decode_bytes(feat[schema.image_key(t.name, "data")], t.encoding, t.dtype,
                               shape)
    return x if t.all_channels else tf.gather(x, list(t.channels), axis=2)


def _stack(parts: list, plan: _Plan):
    """Concatenate per-type images on the channel axis in the plan's common dtype."""
    dtype = tf.dtypes.as_dtype(plan.common_dtype)
    parts = [p if p.dtype == dtype else tf.cast(p, dtype) for p in parts]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)


def _decode_labels(feat: dict, plan: _Plan, window=None, flip_rows=None):
    """Label arrays ``plan.label_fields`` stacked [H, W, L] (float, stored dtype), or None.

    window: ``(y0, x0, win)`` to decode only that window (rows reversed where
    ``flip_rows``); None = whole tile.
    """
    if not plan.label_fields:
        return None
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    layers = []
    for field in plan.label_fields:
        dtype, encoding = plan.label_arrays[field]
        key = schema.label_key(plan.grid, field)
        if window is None:
            layers.append(schema.tf_decode_bytes(feat[key], encoding, dtype,
                                                 tf.concat([hw, [1]], 0)))
            continue
        data, base = _payload_bytes(feat, key)
        layers.append(_decode_window(data, encoding, dtype, [hw[0], hw[1], 1], window,
                                     flip_rows, base))
    dtype = next((x.dtype for x in layers if x.dtype.is_floating), tf.float32)
    layers = [x if x.dtype == dtype else tf.cast(x, dtype) for x in layers]
    return layers[0] if len(layers) == 1 else tf.concat(layers, axis=-1)


def _boxes(feat: dict, plan: _Plan):
    """float32 [N, 4] boxes of the tile (xyxy pixels)."""
    flat = tf.sparse.to_dense(feat[schema.label_key(plan.grid, "boxes_xyxy_px")])
    return tf.reshape(flat, [-1, 4])


def _rects(feat: dict, plan: _Plan, boxes):
    """float32 [N, 8] rotated rectangles of the tile (4 (x, y) vertices each, pixels),
    parallel to ``boxes`` [N, 4]. Records before schema version 3 store none: then each
    box's corners (axis-aligned rectangles: obliquity 1, no gliding target)."""
    flat = tf.sparse.to_dense(feat[schema.label_key(plan.grid, "rects_px")])
    x1, y1, x2, y2 = tf.unstack(boxes, num=4, axis=-1)
    corners = tf.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=-1)
    stored = tf.equal(tf.size(flat), 2 * tf.size(boxes))
    return tf.cond(stored, lambda: tf.reshape(flat, [-1, 8]), lambda: corners)


def _seg_targets(labels, scale, plan: _Plan) -> dict:
    """footprint and sdf float32 [..., H, W, 1] (and ``contact`` when the plan has it) from
    the stacked label arrays [..., H, W, L] (order ``plan.label_fields``)."""
    if plan.label_fields[0] == "sdf":
        out = tg.segmentation_targets_from_sdf(labels[..., :1], scale, plan.truncation)
    else:
        out = tg.segmentation_targets(labels[..., :1], labels[..., 1:2], scale,
                                      plan.truncation)
    if plan.contact:
        out["contact"] = tf.cast(labels[..., -1:] > 0, tf.float32)
    elif plan.contact_weight is not None:  # weights only: carried under an internal name
        out[_CONTACT_WEIGHT] = tf.cast(labels[..., -1:] > 0, tf.float32)
    return out


_CONTACT_WEIGHT = "_contact"  # internal batch key: the contact layer for the weights only


def _to_stored(image, plan: _Plan):
    """A float32 (resampled) raw image back in the plan's common dtype (rounded if integer)."""
    dtype = tf.dtypes.as_dtype(plan.common_dtype)
    if dtype == image.dtype:
        return image
    return tf.saturate_cast(tf.round(image) if dtype.is_integer else image, dtype)


def _normalise(image, scale, bias, plan: _Plan, noise_key=None):
    """Image in the plan's output dtype: ``image * scale + bias`` (+ noise), or as is (raw)."""
    if plan.raw:
        return image
    image = aug.affine_bands(image, scale, bias)
    if noise_key is not None:
        image = aug.add_noise(image, plan.augment.noise_std, noise_key)
    return image if plan.image_dtype == "float32" else tf.cast(image, plan.image_dtype)


def _train_example(feat: dict, draw, plan: _Plan) -> dict:
    """One random augmented crop (image in the output dtype, targets, boxes, tile id, AOI).

    draw: int64 scalar, the index of this crop's random draws for the tile: the epoch, or
    ``epoch * crops_per_tile + i`` for the i-th crop of a tile (``_repeat_crops``).

    Geometric ops run on the source dtype (uint16 images, float16 labels) before the
    float32 normalisation, so they move half the bytes; ``image_dtype="raw"`` stops there.
    """
    cfg = plan.augment
    crop = plan.crop
    tile_id = feat[schema.KEY_TILE_ID]
    keys = aug.split_key(aug.example_key(plan.seed, tile_id, draw), 4)
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    with tf.control_dependencies(_check_example(feat, plan)):
        window = aug.draw_window(keys[0], hw[0], hw[1], crop, cfg.scale_range)
    if cfg.focus > 0:  # its own key: the other draws stay those of focus = 0
        window = aug.focus_window(tf.random.experimental.stateless_fold_in(keys[0], 1),
                                  window, _contact_points(feat, plan), hw[0], hw[1], cfg.focus)
    t, flr, fud = aug.draw_dihedral(keys[1], cfg.flips, cfg.rot90)
    if cfg.scale_range is None:  # rows flipped while decoding; then columns, transpose
        rows, cols = aug.split_dihedral(t, flr, fud) if cfg.flips or cfg.rot90 else (None,
                                                                                    None)

        def geometric(x):  # static [crop, crop, C]: 2-D views in flip_transpose
            x = tf.ensure_shape(x, [crop, crop, x.shape[-1]])
            return x if cols is None else aug.flip_transpose(x, cols, t)
    else:  # resample first (nearest-neighbour ties are not flip-symmetric), then symmetry
        rows = None

        def geometric(x):
            return aug.dihedral(x, t, flr, fud)
    image = _stack([_decode_image_window(feat, tp, window, rows, plan) for tp in plan.types],
                   plan)
    labels = _decode_labels(feat, plan, window, rows)
    if cfg.scale_range is not None:
        image, labels = aug.resize_window(image, labels, crop)
        if plan.raw:
            image = _to_stored(image, plan)
    image = tf.ensure_shape(geometric(image), [crop, crop, plan.channels])
    gain, offset = aug.draw_radiometric(keys[2], plan.channels, cfg)
    scale, bias = aug.radiometric_coefficients(plan.norm_scale, plan.norm_bias, gain, offset)
    image = _normalise(image, scale, bias, plan, keys[3] if cfg.noise_std > 0 else None)
    boxes = _boxes(feat, plan)
    boxes, rects = aug.crop_boxes_and_rects(boxes, _rects(feat, plan, boxes), window[0],
                                            window[1], window[2], crop, cfg.min_box_visible)
    out = {"image": image, "boxes": aug.dihedral_boxes(boxes, crop, t, flr, fud),
           "rects": aug.dihedral_rects(rects, crop, t, flr, fud),
           "tile_id": tile_id, "aoi": feat[schema.KEY_AOI]}
    if labels is not None:
        labels = tf.ensure_shape(geometric(labels), [crop, crop, len(plan.label_fields)])
        if _batched_sdf(plan):  # the stored sdf crosses the batch, targets after it
            out[_STORED_SDF] = labels
        else:
            zoom = None if cfg.scale_range is None else tf.cast(crop, tf.float32) / tf.cast(
                window[2], tf.float32)
            out.update(_seg_targets(labels, zoom, plan))
    return out


_STORED_SDF = "_stored_sdf"  # internal batch key, replaced by the targets in _finish_batch


def _contact_points(feat: dict, plan: _Plan):
    """int64 [N, 2] (row, column) of the tile's contact pixels (the whole layer decoded)."""
    dtype, encoding = plan.label_arrays["contact"]
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    layer = schema.tf_decode_bytes(feat[schema.label_key(plan.grid, "contact")], encoding,
                                   dtype, hw)
    return tf.where(layer > 0)


def _batched_sdf(plan: _Plan) -> bool:
    """True when training crops carry the stored sdf (e.g. float16 [crop, crop, 1], and the
    contact layer beside it when asked for) through batching and ``_finish_batch`` builds
    the targets from it: sdf-based labels and no scale jitter (no per-example factor). A quarter of the bytes of the two float32
    targets cross the batch copy (this pipeline is bound by memory traffic: reading,
    parsing and copying ~50 MB per 512 px crop); measured ~2 % less CPU per crop.
    """
    return (plan.training and plan.label_fields[:1] == ("sdf",)
            and plan.augment.scale_range is None)


def _pad_example(x, multiple: int, value=0.0):
    """Pad [H, W, ...] at the bottom/right to multiples of ``multiple`` with scalar ``value``."""
    shape = tf.shape(x)
    pads = [[0, (-shape[0]) % multiple], [0, (-shape[1]) % multiple]]
    return tf.pad(x, pads + [[0, 0]] * (len(x.shape) - 2), constant_values=value)


def _eval_example(feat: dict, plan: _Plan) -> dict:
    """One whole tile, normalised and padded, with its georeference (no augmentation).

    Raw (``image_dtype="raw"``) tiles come as float32 stored values; their padding gets
    the band mean in ``_finish_batch`` (after batching, which pads too).
    """
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    with tf.control_dependencies(_check_example(feat, plan)):
        image = _stack([_decode_image(feat, t) for t in plan.types], plan)
    if plan.raw:
        image = tf.cast(image, tf.float32)
    else:
        image = _normalise(image, tf.constant(plan.norm_scale), tf.constant(plan.norm_bias),
                           plan)
    first = plan.types[0].name
    boxes = _boxes(feat, plan)
    out = {"image": _pad_example(image, plan.pad_multiple),
           "boxes": boxes, "rects": _rects(feat, plan, boxes),
           "tile_id": feat[schema.KEY_TILE_ID], "aoi": feat[schema.KEY_AOI],
           "transform_gdal": schema.tf_decode_transform(
               feat[schema.image_key(first, "transform_gdal")]),
           "crs": feat[schema.image_key(first, "crs")], "height": hw[0], "width": hw[1]}
    labels = _decode_labels(feat, plan)
    if labels is not None:
        seg = _seg_targets(labels, None, plan)
        out["footprint"] = _pad_example(seg["footprint"], plan.pad_multiple)
        out["sdf"] = _pad_example(seg["sdf"], plan.pad_multiple, -plan.truncation)
        for key in ("contact", _CONTACT_WEIGHT):
            if key in seg:
                out[key] = _pad_example(seg[key], plan.pad_multiple)
    return out


# ---- batched stage ---------------------------------------------------------------------------
def _finish_batch(batch: dict, plan: _Plan) -> dict:
    """Valid-region mask, evaluation padding fix-up and DetectNet targets for one batch."""
    out = dict(batch)
    image = batch["image"]
    if _STORED_SDF in out:
        out.update(_seg_targets(out.pop(_STORED_SDF), None, plan))
    if isinstance(batch["boxes"], tf.RaggedTensor):  # training batches: ragged_batch
        out["boxes"] = batch["boxes"].to_tensor()  # zero rows = padding
        out["rects"] = batch["rects"].to_tensor()
    if plan.training:
        out["valid"] = tf.ones(tf.concat([tf.shape(image)[:-1], [1]], 0), tf.float32)
    else:  # tiles of one batch may differ in size: padded_batch padded them with zeros
        shape = tf.shape(image)
        rows = tf.range(shape[1])[None, :, None] < batch["height"][:, None, None]
        cols = tf.range(shape[2])[None, None, :] < batch["width"][:, None, None]
        out["valid"] = tf.cast(rows & cols, tf.float32)[..., None]
        if "sdf" in batch:
            out["sdf"] = tf.where(out["valid"] > 0, batch["sdf"], -plan.truncation)
        if plan.raw:  # padding = the band mean, which the model normalises to exactly 0
            out["image"] = tf.where(out["valid"] > 0, image, tf.constant(plan.pad_values))
    if plan.det:
        shape = tf.shape(image)
        out.update(tg.detectnet_targets(out["boxes"], shape[1], shape[2], plan.cell_size,
                                        plan.cvg_scale, rects=out["rects"],
                                        cvg_shape="rect" if plan.oriented else "box"))
    return out


@dataclasses.dataclass(frozen=True)
class _Runtime:
    """How the graph runs (batching, shuffling, parallelism, distribution, epochs)."""

    batch_size: int
    shuffle_buffer: int | None
    num_parallel_calls: int | None
    num_parallel_reads: int | None
    input_context: Any
    deterministic: bool | None
    repeat: Any
    crops_per_tile: int = 1


def _build(data_dir, info: dict, plan: _Plan, split: str, rt: _Runtime, to_element):
    """The tf.data graph (module docstring); ``to_element`` maps each finished batch dict."""
    if not plan.training and rt.repeat:
        raise ValueError("evaluation (training=False) reads every example exactly once; "
                         "repeat must be None or False")
    crops = rt.crops_per_tile
    if not isinstance(crops, numbers.Integral) or isinstance(crops, bool) or crops < 1:
        raise ValueError(f"crops_per_tile must be a positive int, got {crops!r}")
    crops = int(crops)
    if crops > 1 and not plan.training:
        raise ValueError("crops_per_tile applies to training crops; evaluation (training="
                         "False) reads every whole tile exactly once")
    batch_size = rt.batch_size
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if rt.input_context is not None:
        batch_size = rt.input_context.get_per_replica_batch_size(batch_size)
    training, npc = plan.training, rt.num_parallel_calls
    det = (not training) if rt.deterministic is None else bool(rt.deterministic)
    files, record_shard = _worker_files(shard_files(data_dir, split), rt.input_context)
    files_ds = _file_dataset(files, training, plan.seed, _epochs(training, rt.repeat))
    cycle = min(len(files), MAX_CYCLE_LENGTH) if training else 1
    ds = _records(files_ds, record_shard, cycle, rt.num_parallel_reads, det,
                  _read_buffer_size(files))
    if training:
        buf = (_auto_shuffle_buffer(info, split) if rt.shuffle_buffer is None
               else int(rt.shuffle_buffer))
        if buf > 1:
            ds = ds.shuffle(buf, seed=plan.seed, reshuffle_each_iteration=True)
    spec = _feature_spec(plan)

    def parse(record, epoch):
        feat = tf.io.parse_single_example(record, spec)
        if plan.from_record:  # raw windows are cut from the record itself
            feat = _with_payload_sources(feat, record, plan)
        return feat, epoch

    def build(feat, draw):
        return _train_example(feat, draw, plan) if training else _eval_example(feat, plan)

    if plan.aois is not None or crops > 1:  # parse, drop other AOIs, repeat crops, decode
        ds = ds.map(_graph(parse), num_parallel_calls=npc, deterministic=det)
        if plan.aois is not None:
            wanted = tf.constant(list(plan.aois))
            ds = ds.filter(_graph(lambda f, e: tf.reduce_any(tf.equal(f[schema.KEY_AOI],
                                                                      wanted))))
        if crops > 1:
            ds = _repeat_crops(ds, crops, batch_size)
        ds = ds.map(_graph(build), num_parallel_calls=npc, deterministic=det)
    else:
        ds = ds.map(_graph(lambda r, e: build(*parse(r, e))), num_parallel_calls=npc,
                    deterministic=det)
    ds = _batch(ds, batch_size, training)
    ds = ds.map(_graph(lambda b: to_element(_finish_batch(b, plan))), num_parallel_calls=npc,
                deterministic=det)
    if not training and plan.aois is None:  # known length: Keras shows progress, and a
        # shard that disagrees with dataset_info.json fails loudly instead of silently
        n = _worker_examples(info, split, files, record_shard)
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    options = tf.data.Options()
    if rt.input_context is not None:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
    return ds.with_options(options).prefetch(PREFETCH_BATCHES)


def _repeat_crops(ds, crops: int, cycle: int):
    """Parsed tiles ``(feat, epoch)`` -> ``crops`` elements ``(feat, epoch * crops + i)``
    per tile, i = 0..crops-1, each one crop's draw index (repeated augmentation).

    The tensors are shared, not copied. A deterministic interleave over ``cycle`` (= the
    batch size) tiles takes one crop of each in turn: a batch holds crops of ``cycle``
    different tiles, and ``crops`` consecutive batches hold the same tiles, each crop with
    its own window and symmetry (the end of a finite stream, with fewer than ``cycle``
    tiles left, is the exception). At most ``cycle`` parsed records are held; a cycle of
    ``crops * cycle`` tiles would spread a tile's crops further apart but hold ``crops``
    times the records (4.3 GB for a global batch of 128 and k = 4).
    """
    def repeat(feat, epoch):
        return tf.data.Dataset.range(crops).map(_graph(lambda i: (feat, epoch * crops + i)))

    return ds.interleave(_graph(repeat), cycle_length=cycle, block_length=1)


def _batch(ds, batch_size: int, training: bool):
    """Batch the examples.

    Training crops all have one shape: a plain batch, with the variable-length boxes
    batched as a ragged tensor (zero-padded in ``_finish_batch``); ``padded_batch``
    would zero-fill every batch buffer before copying the crops in (measured: +0.5 ms CPU
    per 512 x 512 x 8 crop). Evaluation tiles may differ in size: ``padded_batch`` (zero
    padding; zero boxes = none).
    """
    if training:
        return ds.ragged_batch(batch_size, drop_remainder=True)
    return ds.padded_batch(batch_size)


def _epochs(training: bool, repeat) -> int | None:
    """Number of epochs (None = forever): repeat None/True -> forever when training."""
    if not training:
        return 1
    if repeat is None or repeat is True:
        return None
    if repeat is False:
        return 1
    if isinstance(repeat, int) and repeat >= 1:
        return repeat
    raise ValueError(f"repeat must be None, a bool or a positive int, got {repeat!r}")


def contact_cells(contact, cell_size: int):
    """float32 [B, h, w, 1] in {0, 1}: cells of ``cell_size`` pixels that hold a contact
    pixel of ``contact`` [B, H, W, 1] (H, W multiples of ``cell_size``) or have a neighbour
    (8-connected) that does."""
    held = tf.nn.max_pool2d(tf.cast(contact > 0, tf.float32), cell_size, cell_size, "VALID")
    return tf.nn.max_pool2d(held, 3, 1, "SAME")


def keras_element(batch: dict, target: str, sample_weights: bool,
                  cell_size: int = DEFAULT_CELL_SIZE,
                  boundary_weight: float | None = None, boundary_sigma: float = 3.0,
                  contact_weight: float | None = None, interior_level: float | None = None):
    """A ``make_examples`` batch -> ``(image, targets)`` or ``(image, targets, weights)``.

    Segmentation targets: ``footprint``, ``sdf``, ``contact`` when the batch has it, and
    with ``interior_level`` k ``interior`` = ``sdf > k`` (float32 {0, 1}: the building cores,
    apart across every shared wall).
    Segmentation weights (the same map for every target): ``valid`` x (boundary weight map
    ``1 + boundary_weight * exp(-sdf^2 / (2 sigma^2))``, or 1, ``+ contact_weight`` on
    contact pixels). Detection targets: ``coverage``, ``bbox`` (and ``orient`` for
    "oriented_detection") on the grid of ``cell_size`` pixel cells, and with
    ``interior_level`` k the full-resolution ``interior`` = ``sdf > k`` (the batch must
    carry ``sdf``: ``_plan(labels=True)``). Detection weights: 1 for cells that hold at
    least one valid (unpadded) pixel, times ``1 + contact_weight`` for cells within one cell
    of a contact pixel (a cell holding one or any of its 8 neighbours: the cells of buildings
    that share a wall) when ``contact_weight`` is given; ``interior``: ``valid``.
    """
    if target == "segmentation":
        targets = {k: batch[k] for k in ("footprint", "sdf", "contact") if k in batch}
        if interior_level is not None:
            targets["interior"] = tf.cast(batch["sdf"] > interior_level, tf.float32)
        if not sample_weights:
            return batch["image"], targets
        w = batch["valid"]
        if boundary_weight is not None or contact_weight is not None:
            m = (1.0 if boundary_weight is None
                 else tg.boundary_weights(batch["sdf"], boundary_weight, boundary_sigma))
            if contact_weight is not None:
                layer = batch["contact"] if "contact" in batch else batch[_CONTACT_WEIGHT]
                m = m + contact_weight * layer
            w = w * m
        return batch["image"], targets, {k: w for k in targets}
    targets = {"coverage": batch["coverage"], "bbox": batch["bbox"]}
    if target == "oriented_detection":
        targets["orient"] = batch["orient"]
    if interior_level is not None:
        targets["interior"] = tf.cast(batch["sdf"] > interior_level, tf.float32)
    if not sample_weights:
        return batch["image"], targets
    if "height" in batch:
        shape = tf.shape(batch["coverage"])
        cells = tg.valid_cells(batch["height"], batch["width"], shape[1], shape[2], cell_size)
    else:
        cells = tf.ones_like(batch["coverage"])
    if contact_weight is not None:
        cells = cells * (1.0 + contact_weight * contact_cells(
            batch["contact"] if "contact" in batch else batch[_CONTACT_WEIGHT], cell_size))
    weights = {name: cells for name in targets if name != "interior"}
    if interior_level is not None:
        weights["interior"] = batch["valid"]
    return batch["image"], targets, weights


# ---- public API ------------------------------------------------------------------------------
def make_examples(data_dir, split: str, target: str = "segmentation", training: bool = True,
                  image_types: Sequence[str] = ("MUL-PanSharpen",),
                  bands: Mapping[str, Sequence[int]] | None = None,
                  normalization: Any = "dataset_info", crop_size: int = 256,
                  batch_size: int = 8, seed: int = 0, shuffle_buffer: int | None = None,
                  sdf_truncation: float | None = None, boundary_sigma: float = 3.0,
                  cell_size: int = DEFAULT_CELL_SIZE, cvg_scale: float = 0.4,
                  augment: Any = None,
                  pad_to_multiple: int | None = None, aois: Sequence[str] | None = None,
                  num_parallel_calls: int = tf.data.AUTOTUNE,
                  num_parallel_reads: int | None = tf.data.AUTOTUNE, input_context=None,
                  deterministic: bool | None = None, repeat: Any = None,
                  image_dtype: str = "float32", crops_per_tile: int = 1,
                  contact: bool = False):
    """Batches as dicts (keys in the module docstring; ``target`` may also be "all").

    Arguments as ``make_dataset``. With ``training=False`` this is the evaluation /
    prediction dataset with georeference: predict on ``batch["image"]``, crop outputs to
    ``[:height, :width]`` and map pixels with ``transform_gdal``.
    """
    info = load_info(data_dir)
    plan = _plan(info, split, target=target, training=training, image_types=image_types,
                 bands=bands, normalization=normalization, crop_size=crop_size, seed=seed,
                 sdf_truncation=sdf_truncation, boundary_weight=None,
                 boundary_sigma=boundary_sigma, cell_size=cell_size, cvg_scale=cvg_scale,
                 augment=augment, pad_to_multiple=pad_to_multiple, aois=aois,
                 image_dtype=image_dtype, contact=contact)
    rt = _Runtime(batch_size, shuffle_buffer, num_parallel_calls, num_parallel_reads,
                  input_context, deterministic, repeat, crops_per_tile)
    return _build(data_dir, info, plan, split, rt, lambda b: b)


def make_dataset(data_dir, split: str, target: str = "segmentation", training: bool = True,
                 image_types: Sequence[str] = ("MUL-PanSharpen",),
                 bands: Mapping[str, Sequence[int]] | None = None,
                 normalization: Any = "dataset_info", crop_size: int = 256,
                 batch_size: int = 8, seed: int = 0, shuffle_buffer: int | None = None,
                 sdf_truncation: float | None = None, boundary_weight: float | None = None,
                 boundary_sigma: float = 3.0, cell_size: int = DEFAULT_CELL_SIZE,
                 cvg_scale: float = 0.4,
                 augment: Any = None, pad_to_multiple: int | None = None,
                 sample_weights: bool | None = None, aois: Sequence[str] | None = None,
                 num_parallel_calls: int = tf.data.AUTOTUNE,
                 num_parallel_reads: int | None = tf.data.AUTOTUNE, input_context=None,
                 deterministic: bool | None = None, repeat: Any = None,
                 image_dtype: str = "float32", crops_per_tile: int = 1,
                 contact: bool = False, contact_weight: float | None = None,
                 interior_level: float | None = None):
    """A tf.data.Dataset of ``(image, targets)`` or ``(image, targets, sample_weights)``.

    Args:
      data_dir: output folder of ``sn_tf.convert`` (with dataset_info.json).
      split: split name, e.g. "train" or "val".
      target: "segmentation", "detection" or "oriented_detection" (targets in the module
        docstring).
      training: random augmented crops, repeated (True), or whole padded tiles once (False).
      image_types: types to stack, all on one pixel grid (e.g. ("MUL-PanSharpen", "PAN")).
      bands: {type: 1-based band indices} to select bands; None = all bands of every type.
      normalization: "dataset_info" (default, (x - mean) / std), "percentile"
        ((x - p1) / (p99 - p1)), None (raw), or {"mean": [C], "std": [C]}.
      crop_size: training crop side (pixels); a multiple of ``cell_size`` for detection.
      batch_size: global batch size (per input pipeline it is
        ``input_context.get_per_replica_batch_size(batch_size)``).
      seed: seed of file order, record shuffle and every augmentation draw.
      shuffle_buffer: serialized records in the shuffle buffer (None: as many as fit
        256 MiB, 4..256).
      sdf_truncation: clip the sdf target to [-T, T] (None: the converter's value); any T
        works (the sdf is rebuilt from the stored distance).
      boundary_weight, boundary_sigma: with a weight w, segmentation sample weights
        ``1 + w * exp(-sdf^2 / (2 sigma^2))``.
      cell_size, cvg_scale: DetectNet pixels per grid cell (``sn_tf.cells``; the model's
        ``cell_size``, not its input multiple) and coverage shrink factor.
      augment: None (flips + 90-degree rotations), False (crop only), a dict or an
        ``sn_tf.augment.AugmentConfig`` (scale jitter, gain, offset, noise, box rule).
      pad_to_multiple: evaluation padding multiple (default cell_size for detection, 32;
        a DetectNet model needs its input multiple 16 whatever its cell size).
      sample_weights: return weights (default: when boundary_weight is set or evaluating).
      aois: keep only these AOIs (each must have all ``image_types``). None (default):
        the AOIs of the split that have all ``image_types`` (e.g. SpaceNet 2 AOIs but not
        Rio, which lacks MUL-PanSharpen); an error when no AOI has them.
      num_parallel_calls: parallelism of the parse/decode/augment and batch maps.
      num_parallel_reads: parallel interleave of the shard files (default AUTOTUNE, for
        remote storage); None or 1 reads with one thread (half the CPU per record, enough
        for local disks).
      input_context: ``tf.distribute.InputContext`` from
        ``strategy.distribute_datasets_from_function``: shards the input per pipeline.
      deterministic: order guarantee (default: False for training, True for evaluation).
      repeat: None/True = forever when training, False = one epoch, int = that many epochs;
        evaluation reads once.
      image_dtype: "float32" (default) or "bfloat16" / "float16" (normalised, then cast:
        half the bytes per batch), or "raw": NOT normalised: the model normalises itself,
        with ``normalization_layer`` (same ``normalization``) as its first layer
        (cheapest on CPU: no float pass, a quarter of the float32 bytes). Raw training
        crops keep the stored dtype (uint16 for SpaceNet imagery; float32 when stacked
        types differ; with scale jitter the bilinear resample is rounded back to it) and
        exclude radiometric augmentation (``sn_tf.model_input.RadiometricJitter`` does it
        in the model); raw evaluation tiles are float32 stored values padded with the band
        mean, which the normalisation layer maps to exactly 0.
      crops_per_tile: training crops cut from each read tile (repeated augmentation), each
        with its own window and augmentation draws. 1 (default) reads a tile per crop;
        k > 1 amortises reading and parsing the record over k crops (1.25-1.5x the crops
        per CPU-second at k = 4, BUILD_NOTES.md section 4) at the price of correlated
        steps: k consecutive batches hold the same ``batch_size`` tiles, differently
        cropped and flipped (512 px crops of a 650 px tile overlap by >= 53 %). A pass
        over the file list then yields k crops per tile, so a Keras epoch of
        ``steps_per_epoch`` steps sees 1/k as many different tiles.
      contact: segmentation targets also hold ``"contact"``: float32 [B, H, W, 1] in {0, 1},
        the converter's contact layer (pixels whose (2r+1)-pixel window holds two different
        buildings: shared walls and narrow gaps), augmented with the image. Needs data of
        schema version >= 3.
      contact_weight: with a weight c, the segmentation sample weights get ``+ c`` on
        contact pixels (the few pixels that keep touching buildings apart), on top of the
        boundary map; DetectNet cell weights are ``1 + c`` within one cell of a contact pixel
        (:func:`contact_cells`; the labels are then decoded for the detection target too).
        Needs data of schema version >= 3.
      interior_level: with a level k, segmentation targets also hold ``"interior"``:
        float32 [B, H, W, 1] = ``sdf > k`` (pixels more than k from every building boundary,
        shared walls included: the cores, which touching buildings do not share). Detection
        targets may hold it too (DetectNet's auxiliary ``interior`` output; the labels are
        then decoded and augmented with the image like the segmentation targets), weighted
        by the valid-pixel mask.

    Raises:
      ValueError: unknown target or split; image types absent, on different grids or
        without labels; bands out of range; crop not a multiple of the cell size for
        detection; crop larger than the tiles; bad normalization or augment options.
    """
    if target not in ("segmentation", "detection", "oriented_detection"):
        raise ValueError(f"make_dataset target must be 'segmentation', 'detection' or "
                         f"'oriented_detection', got {target!r} (make_examples also offers "
                         f"'all')")
    info = load_info(data_dir)
    plan = _plan(info, split, target=target, training=training, image_types=image_types,
                 bands=bands, normalization=normalization, crop_size=crop_size, seed=seed,
                 sdf_truncation=sdf_truncation, boundary_weight=boundary_weight,
                 boundary_sigma=boundary_sigma, cell_size=cell_size, cvg_scale=cvg_scale,
                 augment=augment, pad_to_multiple=pad_to_multiple, aois=aois,
                 image_dtype=image_dtype, contact=contact, contact_weight=contact_weight,
                 labels=interior_level is not None or (
                     contact_weight is not None and target != "segmentation"))
    if sample_weights is None:
        sample_weights = (boundary_weight is not None or contact_weight is not None
                          or not training)

    if interior_level is not None and (not isinstance(
            interior_level, numbers.Real) or isinstance(interior_level, bool)
            or not 0 <= float(interior_level) < plan.truncation):
        raise ValueError(f"interior_level must be a number in [0, sdf truncation "
                         f"{plan.truncation:g}), got {interior_level!r}")

    def to_keras(batch):
        return keras_element(batch, target, sample_weights, cell_size, plan.boundary_weight,
                             plan.boundary_sigma, plan.contact_weight,
                             None if interior_level is None else float(interior_level))

    rt = _Runtime(batch_size, shuffle_buffer, num_parallel_calls, num_parallel_reads,
                  input_context, deterministic, repeat, crops_per_tile)
    return _build(data_dir, info, plan, split, rt, to_keras)


def normalization_coefficients(info: dict, image_types: Sequence[str],
                               bands: Mapping[str, Sequence[int]] | None = None,
                               normalization: Any = "dataset_info"):
    """Per-channel ``(scale, bias)``, float32 [C]: the pipeline feeds ``raw * scale + bias``.

    info: a loaded dataset_info.json (``sn_tf.reader.load_info``); other arguments as
    ``make_dataset``. For exporting models that normalise raw bands themselves.
    """
    return _normalization(info, _type_specs(info, image_types, bands), normalization)


def coefficients_from_mean_std(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """float32 per-channel (scale, bias) = (1 / std, -mean / std), computed in float64;
    the inverse of :func:`normalization_mean_std` (std > 0)."""
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    return (1 / std).astype(np.float32), (-mean / std).astype(np.float32)


def normalization_mean_std(scale: np.ndarray, bias: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """float64 per-channel (mean, std) with ``(x - mean) / std == x * scale + bias``.

    scale, bias: float32 [C] (``normalization_coefficients``). ``normalization_layer``,
    the raw evaluation padding and ``sn_tf.export`` all derive the mean from here, so the
    padding is exactly the layer's float32 mean and normalises to exactly 0.
    """
    std = 1.0 / scale.astype(np.float64)
    return -bias.astype(np.float64) * std, std


def normalization_layer(info: dict, image_types: Sequence[str],
                        bands: Mapping[str, Sequence[int]] | None = None,
                        normalization: Any = "dataset_info", name: str = "normalization"):
    """Keras layer ``raw -> (raw - mean) / std`` per channel, for ``image_dtype="raw"`` input.

    Built from ``normalization_coefficients`` (same arguments), so a model that puts it
    first and is fed ``make_dataset(..., image_dtype="raw")`` sees exactly the values the
    default float32 pipeline feeds (up to float32 rounding). A stock
    ``keras.layers.Normalization`` computing in float32 whatever the mixed-precision policy
    (11-bit values do not survive a bfloat16 cast), so saved models load without custom
    objects; it accepts uint16 or float input and returns float32.
    """
    import keras

    scale, bias = normalization_coefficients(info, image_types, bands, normalization)
    mean, std = normalization_mean_std(scale, bias)
    return keras.layers.Normalization(axis=-1, mean=mean.tolist(),
                                      variance=(std ** 2).tolist(), dtype="float32",
                                      name=name)


def steps_per_epoch(data_dir, split: str, batch_size: int, aois: Sequence[str] | None = None
                    ) -> int:
    """Full batches in one pass over ``split`` (for ``fit(steps_per_epoch=...)``)."""
    sp = load_info(data_dir)["splits"][split]
    n = sum(sp["aois"][a] for a in aois) if aois is not None else sp["num_examples"]
    return max(1, n // batch_size)
