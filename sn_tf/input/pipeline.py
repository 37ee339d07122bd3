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
    (``normalization_layer``, ``sn_tf.modeling.model_input``).
  * targets, ``target="segmentation"``: ``{"footprint": [B,H,W,1], "sdf": [B,H,W,1]}``
    (plus ``"contact": [B,H,W,1]`` with ``contact=True``);
    ``target="detection"``: ``{"coverage": [B,h,w,1], "bbox": [B,h,w,9]}`` (sn_tf.input.targets);
    ``target="oriented_detection"``: coverage claimed by each building's rotated rectangle
    and ``"orient": [B,h,w,5]`` added (gliding vertices, sn_tf.input.targets and sn_tf.input.rects).
  * sample_weights (only when ``sample_weights`` is True, or by default when
    ``boundary_weight`` is set or ``training=False``): one map per target, same
    [B, ., ., 1] shape: segmentation = valid-region mask x boundary weight map,
    detection = 1 for cells holding at least one valid (unpadded) pixel.
  * ``targets_on="device"`` (segmentation crops whose stored sdf crosses the batch;
    batch-read DetectNet crops without the interior target): ``(image, packed)`` instead,
    the stored label layers or the crops' boxes, rectangles and contact cells
    (``sn_tf.input.packed``), which ``packed_targets(...).expand`` turns into the same
    targets and weights in the train step;
    with ``crop_on="device"`` too (batch-read crops), the image and the layers are the
    window's rows [B, crop, S, .] and ``packed_targets(...)`` ``image`` / ``expand`` cut them
    there (``sn_tf.input.packed.orient_crops``).
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

Normalisation (per band, statistics of the converter's train split in the description):
  ``"dataset_info"`` (default): ``(x - mean) / std``. ``"percentile"``:
  ``(x - p1) / (p99 - p1)`` (not clipped). None: raw values as float32. A mapping
  ``{"mean": [C], "std": [C]}``: explicit per-channel values (after band selection).

Reading: files shuffled per epoch (stateless, from ``seed`` and the epoch), sharded per
input pipeline (``input_context``: by file when there are at least as many files as
pipelines, else by record within each file), read by an interleave (parallel by default,
``num_parallel_reads``; non-deterministic order for training unless
``deterministic=True``; each shard's framing walked first and its records counted
against the description as they are read: a cut, truncated or corrupt shard fails with
an error naming the file, ``sn_tf.dataset.reader.tf_checked_records``), a bounded shuffle of serialized records (``shuffle_buffer``;
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

Training with ``reader="ranged"`` (the default; ``sn_tf.input.ranged``): the same file
order, interleave and shuffle, over rows of an index built once from the shards (each
record's small features and its payloads' file positions) instead of the records; each
crop reads only its window's rows of each raw payload. For raw delivery of one image type
with all bands, the stored sdf and no scale jitter, crops are batched before any pixel is
read and each batch is read in numpy straight into reused aligned buffers, symmetry
included (``decode.read_batch``); otherwise windows are read per example. Same elements
as ``reader="record"`` for a seed; compressed label layers (the zlib contact and mask
layers) travel in the index's small Example and are decoded whole per crop, as the record
reader does, so ``augment.focus`` reads ranged too; a batch read's contact layer is
instead inflated once per tile and kept as its sparse pixels (``ranged.SparseLayers``),
from which focus picks windows (``aug.focus_corner``, when crops carry no boxes) and the
crops are cut. The record reader remains for evaluation, compressed images, focus with a
raw contact layer and remote paths.

Segmentation labels: the stored sdf gives both targets (footprint = sdf >= 0) unless the
requested truncation exceeds the stored one or scale jitter can zoom out past it; then
the mask and the untruncated distance are decoded instead (``_label_fields``).

Reproducibility: an example's augmentation depends only on (seed, tile id, epoch) (see
``sn_tf.input.augment``); with ``deterministic=True`` the batches are identical run to run for
a seed. With ``deterministic=None`` training trades that for throughput (arrival order
varies), evaluation is always in order.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping, Sequence

from sn_tf.dataset import schema
from sn_tf.dataset.info import DatasetInfo
from sn_tf.dataset.reader import (Shard, check_shards, load_info, shards,
                                  tf_checked_records)
from sn_tf.utils.tfimport import tensorflow
from sn_tf.input.cells import DEFAULT_CELL_SIZE
from sn_tf.input.config import InputConfig, input_config

tf = tensorflow()

from sn_tf.input import targets as tg  # noqa: E402  (after TF is imported quietly)
from sn_tf.input import ranged, ranged_source  # noqa: E402
from sn_tf.input.decode import (_CONTACT_WEIGHT,  # noqa: E402
                                _STORED_CONTACT, _STORED_SDF, _WINDOW, _batched_sdf,
                                _cut_payloads, _eval_example,
                                _feature_spec, _seg_targets, _train_example,
                                _with_payload_sources, read_batch)
from sn_tf.input.normalization import normalization_mean_std  # noqa: E402
from sn_tf.input.packed import (WINDOW, PackedDetection, PackedTargets,  # noqa: E402
                                check_crop_on, check_targets_on)
from sn_tf.input.plan import _normalization, _Plan, _plan, _type_specs  # noqa: E402


SHUFFLE_BUDGET_BYTES = 256 * 2 ** 20
MAX_CYCLE_LENGTH = 4
PREFETCH_BATCHES = 2  # fixed, not AUTOTUNE: memory stays bounded by the buffer sizes
# tf.data functions are plain graph code (tf.cond where they branch on tensors): no
# AutoGraph conversion, which re-reads the source files when a dataset is built
_graph = tf.autograph.experimental.do_not_convert


# ---- reading -------------------------------------------------------------------------------
def _worker_files(files: list[Shard], input_context):
    """(shards of this input pipeline, (num_shards, index) for record sharding or None)."""
    if input_context is None or input_context.num_input_pipelines == 1:
        return files, None
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= n:
        return files[i::n], None
    return files, (n, i)


def _expected(files: list[Shard], record_shard) -> list[int]:
    """Records this pipeline reads from each shard (of its ``record_shard`` when given;
    -1 for a shard without a described count)."""
    if record_shard is None:
        return [-1 if s.num_examples is None else s.num_examples for s in files]
    n, i = record_shard
    return [-1 if s.num_examples is None else len(range(i, s.num_examples, n)) for s in files]


def _file_dataset(files: list[Shard], record_shard, training: bool, seed: int, epochs):
    """Dataset of (file name, records expected int64, epoch int64, position of the file in
    ``files`` int64); files reshuffled per epoch when training."""
    names = tf.constant([s.path for s in files])
    counts = tf.constant(_expected(files, record_shard), tf.int64)
    if not training:
        return tf.data.Dataset.from_tensor_slices((names, counts)).enumerate().map(
            _graph(lambda k, fc: (fc[0], fc[1], tf.constant(0, tf.int64), k)))
    epochs_ds = tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(epochs)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.size(names)), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).map(
            _graph(lambda k: (tf.gather(names, k), tf.gather(counts, k), epoch,
                              tf.cast(k, tf.int64))))

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
    def read(f, expected, epoch, k):
        ds = tf_checked_records(f, expected, record_shard, buffer_size)
        return ds.map(_graph(lambda r: (r, epoch)))

    read = _graph(read)
    if num_parallel_reads in (None, 1):
        return files_ds.interleave(read, cycle_length=cycle_length, block_length=1)
    return files_ds.interleave(read, cycle_length=cycle_length, block_length=1,
                               num_parallel_calls=num_parallel_reads,
                               deterministic=deterministic)


def _worker_examples(files: list[Shard], record_shard) -> int:
    """Examples this input pipeline reads (from the described per-shard counts)."""
    return sum(_expected(files, record_shard))


def _auto_shuffle_buffer(info: DatasetInfo, split: str) -> int:
    """Records that fit ``SHUFFLE_BUDGET_BYTES`` (4..256, at most the split's size)."""
    sp = info.split(split)
    mean = sp.num_bytes / max(sp.num_examples, 1)
    n = int(SHUFFLE_BUDGET_BYTES // max(mean, 1))
    return max(1, min(max(n, 4), 256, sp.num_examples))


# ---- batched stage ---------------------------------------------------------------------------
def _finish_batch(batch: dict, plan: _Plan, pool=None, contact=None) -> dict:
    """Valid-region mask, evaluation padding fix-up and DetectNet targets for one batch;
    first, for a ``plan.batch_read`` plan, the batch's pixels (``decode.read_batch``,
    into buffers of ``pool``, the compressed contact layer from ``contact``)."""
    if plan.batch_read:
        batch = read_batch(batch, plan, pool, contact)
    out = dict(batch)
    image = batch["image"]
    if plan.packed is not None:  # the train step builds the targets from the stored layers
        return _packed_batch(out, plan)
    shape = tf.shape(image)  # [B, H, W, C] of the crops
    if plan.device_crop:  # the image is the window's rows: targets on the crop's grid
        shape = tf.stack([shape[0], plan.crop, plan.crop, shape[3]])
    if _STORED_SDF in out:
        out.update(_seg_targets(out.pop(_STORED_SDF), None, plan,
                                out.pop(_STORED_CONTACT, None)))
    if isinstance(batch.get("boxes"), tf.RaggedTensor):  # training batches: ragged_batch
        out["boxes"] = batch["boxes"].to_tensor()  # zero rows = padding
        out["rects"] = batch["rects"].to_tensor()
    if plan.training:
        out["valid"] = tf.ones(tf.concat([shape[:-1], [1]], 0), tf.float32)
    else:  # tiles of one batch may differ in size: padded_batch padded them with zeros
        rows = tf.range(shape[1])[None, :, None] < batch["height"][:, None, None]
        cols = tf.range(shape[2])[None, None, :] < batch["width"][:, None, None]
        out["valid"] = tf.cast(rows & cols, tf.float32)[..., None]
        if "sdf" in batch:
            out["sdf"] = tf.where(out["valid"] > 0, batch["sdf"], -plan.truncation)
        if plan.raw:  # padding = the band mean, which the model normalises to exactly 0
            out["image"] = tf.where(out["valid"] > 0, image, tf.constant(plan.pad_values))
    if plan.det:
        out.update(tg.detectnet_targets(out["boxes"], shape[1], shape[2], plan.cell_size,
                                        plan.cvg_scale, rects=out["rects"],
                                        cvg_shape="rect" if plan.oriented else "box"))
    return out


_PACKED = "_packed"  # internal batch key: the packed labels of targets built in the step


def _packed_batch(batch: dict, plan: _Plan) -> dict:
    """``{"image", _PACKED}`` of a training batch whose targets the train step builds:
    the stored sdf [B, H, W, 1] and, when needed, the contact layer [B, H, W, 1] (the last
    label channel of per-example crops, or ``read_batch``'s uint8 layer), packed by
    ``plan.packed`` (``sn_tf.input.packed``); for DetectNet the crops' boxes and
    rectangles (ragged: padded with zero rows) and ``read_batch``'s held contact cells.
    No valid mask: training crops have no padding."""
    if isinstance(plan.packed, PackedDetection):
        return {"image": batch["image"],
                _PACKED: plan.packed.pack(batch["boxes"].to_tensor(),
                                          batch["rects"].to_tensor(),
                                          batch.get(_STORED_CONTACT), batch.get(_WINDOW))}
    labels = batch[_STORED_SDF]
    contact = batch.get(_STORED_CONTACT)
    if labels.shape[-1] != 1:  # per-example crops: the label channels stacked
        labels, contact = labels[..., :1], labels[..., -1:]
    return {"image": batch["image"],
            _PACKED: plan.packed.pack(labels, contact, batch.get(_WINDOW))}


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


def _build(data_dir, info: DatasetInfo, plan: _Plan, split: str, rt: _Runtime, to_element):
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
    files, record_shard = _worker_files(shards(data_dir, split), rt.input_context)
    check_shards(files)  # framing walk: a cut or truncated shard fails here, named
    files_ds = _file_dataset(files, record_shard, training, plan.seed,
                             _epochs(training, rt.repeat))
    cycle = min(len(files), MAX_CYCLE_LENGTH) if training else 1
    if plan.ranged and any("://" in s.path for s in files):  # remote: whole records
        plan = dataclasses.replace(plan, ranged=False)
    spec = _feature_spec(plan)
    contact = None  # ranged.SparseLayers of a batch read's compressed contact layer
    if plan.ranged:
        payload_keys = sorted(_cut_payloads(plan))
        index = ranged_source.ranged_index(files, record_shard, spec, payload_keys)
        ds = ranged_source.ranged_records(files_ds, index, cycle)
        contact, spec = ranged_source.sparse_contact(plan, index, spec)
    else:
        ds = _records(files_ds, record_shard, cycle, rt.num_parallel_reads, det,
                      _read_buffer_size([s.path for s in files]))
    if training:
        buf = (_auto_shuffle_buffer(info, split) if rt.shuffle_buffer is None
               else int(rt.shuffle_buffer))
        if buf > 1:
            ds = ds.shuffle(buf, seed=plan.seed, reshuffle_each_iteration=True)

    def parse(record, epoch):
        if plan.ranged:  # record = the row of the shard index
            return ranged_parse(record, epoch)
        feat = tf.io.parse_single_example(record, spec)
        if plan.from_record:  # raw windows are cut from the record itself
            feat = _with_payload_sources(feat, record, plan)
        return feat, epoch

    ranged_parse = (ranged_source.ranged_parser(index, spec, payload_keys) if plan.ranged
                    else None)

    def build(feat, draw):
        return (_train_example(feat, draw, plan, contact) if training
                else _eval_example(feat, plan))

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
    pool = ranged.BufferPool() if plan.batch_read else None
    ds = ds.map(_graph(lambda b: to_element(_finish_batch(b, plan, pool, contact))),
                num_parallel_calls=npc, deterministic=det)
    if not training and plan.aois is None:  # known length: Keras shows progress
        n = _worker_examples(files, record_shard)
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


#: Pixels over which the ``core_weight`` ramps up inside the interior level (``keras_element``).
CORE_RAMP_PX = tg.CORE_RAMP_PX


def keras_element(batch: dict, target: str, sample_weights: bool,
                  cell_size: int = DEFAULT_CELL_SIZE,
                  boundary_weight: float | None = None, boundary_sigma: float = 3.0,
                  contact_weight: float | None = None, interior_level: float | None = None,
                  core_weight: float | None = None):
    """A ``make_examples`` batch -> ``(image, targets)`` or ``(image, targets, weights)``.

    Segmentation targets and weights: ``sn_tf.input.targets.segmentation_element`` (the
    contact weights from ``contact``, or from the weights-only layer when the batch has no
    contact target). Detection targets: ``coverage``, ``bbox`` (and ``orient`` for
    "oriented_detection") on the grid of ``cell_size`` pixel cells, and with
    ``interior_level`` k the full-resolution ``interior`` = ``sdf > k`` (the batch must
    carry ``sdf``: ``_plan(labels=True)``). Detection weights: 1 for cells that hold at
    least one valid (unpadded) pixel, times ``1 + contact_weight`` for cells within one cell
    of a contact pixel (a cell holding one or any of its 8 neighbours: the cells of buildings
    that share a wall) when ``contact_weight`` is given; ``interior``: ``valid``.
    """
    if target == "segmentation":
        layer = None
        if contact_weight is not None and sample_weights:
            layer = batch["contact"] if "contact" in batch else batch[_CONTACT_WEIGHT]
        out = tg.segmentation_element(batch, layer, sample_weights, boundary_weight,
                                      boundary_sigma, contact_weight, interior_level,
                                      core_weight)
        return (batch["image"], out) if not sample_weights else (batch["image"], *out)
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
    held = None
    if contact_weight is not None:
        held = tg.held_cells(batch["contact"] if "contact" in batch else batch[_CONTACT_WEIGHT],
                             cell_size)
    weights = tg.detectnet_weights(cells, [n for n in targets if n != "interior"],
                                   contact_weight, held)
    if interior_level is not None:
        weights["interior"] = batch["valid"]
    return batch["image"], targets, weights


# ---- public API ------------------------------------------------------------------------------
def make_examples(data_dir, split: str, target: str = "segmentation", training: bool = True,
                  config: InputConfig | None = None, *, input_context=None, **options):
    """Batches as dicts (keys in the module docstring; ``target`` may also be "all").

    ``config`` / ``options``: as ``make_dataset`` (the Keras-element options
    ``sample_weights``, ``boundary_weight``, ``contact_weight`` and ``interior_level`` do not
    apply). With ``training=False`` this is the evaluation / prediction dataset with
    georeference: predict on ``batch["image"]``, crop outputs to ``[:height, :width]`` and
    map pixels with ``transform_gdal``.
    """
    cfg = input_config(config, options).replace(boundary_weight=None, contact_weight=None,
                                                core_weight=None)
    info = load_info(data_dir)
    plan = _plan(info, split, cfg, target=target, training=training)
    return _build(data_dir, info, plan, split, _runtime(cfg, input_context), lambda b: b)


def make_dataset(data_dir, split: str, target: str = "segmentation", training: bool = True,
                 config: InputConfig | None = None, *, input_context=None, **options):
    """A tf.data.Dataset of ``(image, targets)`` or ``(image, targets, sample_weights)``.

    Args:
      data_dir: output folder of ``sn_tf.convert`` (with its description, sn_tf_info.json).
      split: split name, e.g. "train" or "val".
      target: "segmentation", "detection" or "oriented_detection" (targets in the module
        docstring).
      training: random augmented crops, repeated (True), or whole padded tiles once (False).
      config: an ``sn_tf.input.config.InputConfig`` (image types, bands, normalisation,
        crop, batch, augmentation, weights, parallelism: every field is documented there);
        None: its defaults.
      input_context: ``tf.distribute.InputContext`` from
        ``strategy.distribute_datasets_from_function``: shards the input per pipeline.
      **options: ``InputConfig`` fields by keyword, updating ``config`` (e.g.
        ``crop_size=512, batch_size=16``); an unknown name is a TypeError naming the known ones.

    Raises:
      ValueError: unknown target or split; image types absent, on different grids or
        without labels; bands out of range; crop not a multiple of the cell size for
        detection; crop larger than the tiles; bad normalization or augment options.
    """
    cfg = input_config(config, options)
    info = load_info(data_dir)
    plan, el = _keras_plan(info, split, target, training, cfg)

    def to_keras(batch):
        if _PACKED in batch:  # segmentation targets built in the train step
            return batch["image"], batch[_PACKED]
        element = keras_element(batch, target, el.sample_weights, cfg.cell_size,
                                plan.boundary_weight, plan.boundary_sigma, plan.contact_weight,
                                el.interior_level, el.core_weight)
        if _WINDOW in batch:  # crop_on="device": the train step cuts the image
            return (element[0], {**element[1], WINDOW: batch[_WINDOW]}, *element[2:])
        return element

    return _build(data_dir, info, plan, split, _runtime(cfg, input_context), to_keras)


def packed_targets(data_dir, split: str, target: str = "segmentation",
                   config: InputConfig | None = None, **options) -> PackedTargets | None:
    """How the train step expands ``make_dataset``'s packed training labels (same
    arguments, ``training=True``): a ``sn_tf.input.packed.PackedTargets`` (segmentation)
    or ``PackedDetection`` (DetectNet), or None when the dataset delivers finished targets
    (``targets_on="host"``; segmentation labels that do not cross the batch as the stored
    sdf: scale jitter, mask + distance; DetectNet crops not read by batch, or with the
    ``interior`` target)."""
    cfg = input_config(config, options)
    return _keras_plan(load_info(data_dir), split, target, True, cfg)[0].packed


def image_cut(data_dir, split: str, target: str = "segmentation",
              config: InputConfig | None = None, **options) -> int:
    """The crop size when ``make_dataset``'s training elements (same arguments,
    ``training=True``) carry the window's rows of the image for the train step to cut
    (``crop_on="device"``: ``sn_tf.input.packed.orient_crops`` with the windows under
    ``packed.WINDOW`` in the targets), else 0."""
    cfg = input_config(config, options)
    plan = _keras_plan(load_info(data_dir), split, target, True, cfg)[0]
    return plan.crop if plan.device_crop else 0


@dataclasses.dataclass(frozen=True)
class _ElementOptions:
    """The Keras-element options ``make_dataset`` resolved from its config."""

    sample_weights: bool
    interior_level: float | None
    core_weight: float | None


def _keras_plan(info: DatasetInfo, split: str, target: str, training: bool,
                cfg: InputConfig) -> tuple[_Plan, _ElementOptions]:
    """``make_dataset``'s plan (with ``packed`` set where the train step builds the
    targets: ``PackedTargets`` or ``PackedDetection``) and element options; ValueError on a
    bad option."""
    if target not in ("segmentation", "detection", "oriented_detection"):
        raise ValueError(f"make_dataset target must be 'segmentation', 'detection' or "
                         f"'oriented_detection', got {target!r} (make_examples also offers "
                         f"'all')")
    check_targets_on(cfg.targets_on)
    check_crop_on(cfg.crop_on)
    interior_level = cfg.interior_level
    plan = _plan(info, split, cfg, target=target, training=training,
                 labels=interior_level is not None or (
                     cfg.contact_weight is not None and target != "segmentation"))
    sample_weights = cfg.sample_weights
    if sample_weights is None:
        sample_weights = (cfg.boundary_weight is not None or cfg.contact_weight is not None
                          or bool(cfg.core_weight) or not training)

    if interior_level is not None and (not isinstance(
            interior_level, numbers.Real) or isinstance(interior_level, bool)
            or not 0 <= float(interior_level) < plan.truncation):
        raise ValueError(f"interior_level must be a number in [0, sdf truncation "
                         f"{plan.truncation:g}), got {interior_level!r}")
    core_weight = cfg.core_weight
    if core_weight is not None and (not isinstance(core_weight, numbers.Real) or isinstance(
            core_weight, bool) or not float(core_weight) >= 0 or interior_level is None):
        raise ValueError(f"core_weight must be a number >= 0 with an interior_level, got "
                         f"{core_weight!r} (interior_level {interior_level!r})")
    el = _ElementOptions(bool(sample_weights),
                         None if interior_level is None else float(interior_level),
                         None if core_weight is None else float(core_weight))
    if target == "segmentation" and training:  # its elements carry no boxes
        plan = dataclasses.replace(plan, boxes=False)
    if cfg.targets_on == "device" and target == "segmentation" and _batched_sdf(plan):
        plan = dataclasses.replace(plan, packed=PackedTargets(
            plan.truncation, plan.contact, el.sample_weights, plan.boundary_weight,
            plan.boundary_sigma, plan.contact_weight, el.interior_level, el.core_weight,
            crop=plan.crop if cfg.crop_on == "device" and plan.batch_read else 0))
    if cfg.targets_on == "device" and target != "segmentation" and _packed_detection(
            plan, el):
        plan = dataclasses.replace(
            plan, label_fields=("contact",) if plan.contact_weight is not None else (),
            packed=PackedDetection(
                plan.crop, plan.cell_size, plan.cvg_scale, plan.oriented, el.sample_weights,
                plan.contact_weight, crop=plan.crop if cfg.crop_on == "device" else 0))
    if cfg.crop_on == "device" and training and plan.batch_read and (
            plan.packed is not None or target != "segmentation"):  # DetectNet: the image
        plan = dataclasses.replace(plan, device_crop=True)
    return plan, el


def _packed_detection(plan: _Plan, el: _ElementOptions) -> bool:
    """True when a DetectNet plan's training batches can leave as packed labels
    (``PackedDetection``): batch-read crops whose only label layer is the contact layer
    of the weights (no ``interior`` target, which needs the sdf)."""
    return plan.training and plan.batch_read and el.interior_level is None


def _runtime(cfg: InputConfig, input_context) -> _Runtime:
    return _Runtime(cfg.batch_size, cfg.shuffle_buffer, cfg.num_parallel_calls,
                    cfg.num_parallel_reads, input_context, cfg.deterministic, cfg.repeat,
                    cfg.crops_per_tile)


def normalization_coefficients(info: DatasetInfo, image_types: Sequence[str],
                               bands: Mapping[str, Sequence[int]] | None = None,
                               normalization: Any = "dataset_info"):
    """Per-channel ``(scale, bias)``, float32 [C]: the pipeline feeds ``raw * scale + bias``.

    info: a dataset description (``sn_tf.dataset.info.load``); other arguments as
    ``make_dataset``. For exporting models that normalise raw bands themselves.
    """
    return _normalization(info, _type_specs(info, image_types, bands), normalization)


def normalization_layer(info: DatasetInfo, image_types: Sequence[str],
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
    sp = load_info(data_dir).split(split)
    n = sp.examples_of(aois) if aois is not None else sp.num_examples
    return max(1, n // batch_size)
