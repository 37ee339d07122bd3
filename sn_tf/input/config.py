"""What an input pipeline makes: one frozen object mirroring a recipe's ``data`` section.

    cfg = InputConfig(image_types=("MUL-PanSharpen",), crop_size=512, batch_size=16,
                      boundary_weight=2.0, augment={"focus": 0.7})
    ds = sn_tf.make_dataset(data_dir, "train", "segmentation", config=cfg)
    ds = sn_tf.make_dataset(data_dir, "train", crop_size=512)      # the same, by keyword

``make_dataset`` and ``make_examples`` take either (keywords update ``config``; an unknown
keyword is a TypeError naming the known ones). The training stage builds one from the recipe
and the dataset (``sn_tf.training.trainer``); the pipeline checks it against the converted
dataset's description (``sn_tf.input.plan``). TF-free.

Fields (shapes and conventions: ``sn_tf.input.pipeline``'s module docstring):
  image_types: types to stack, all on one pixel grid (e.g. ("MUL-PanSharpen", "PAN")).
  bands: {type: 1-based band indices} to select bands; None = all bands of every type.
  normalization: "dataset_info" (default, (x - mean) / std), "percentile"
    ((x - p1) / (p99 - p1)), None (raw), or {"mean": [C], "std": [C]}.
  crop_size: training crop side (pixels); a multiple of ``cell_size`` for detection.
  batch_size: global batch size (per input pipeline it is
    ``input_context.get_per_replica_batch_size(batch_size)``).
  seed: seed of file order, record shuffle and every augmentation draw.
  shuffle_buffer: serialized records in the shuffle buffer (None: as many as fit 256 MiB,
    4..256).
  sdf_truncation: clip the sdf target to [-T, T] (None: the converter's value); any T works
    (the sdf is rebuilt from the stored distance).
  boundary_weight, boundary_sigma: with a weight w, segmentation sample weights
    ``1 + w * exp(-sdf^2 / (2 sigma^2))``.
  cell_size, cvg_scale: DetectNet pixels per grid cell (``sn_tf.input.cells``; the model's
    ``cell_size``, not its input multiple) and coverage shrink factor.
  augment: None (flips + 90-degree rotations), False (crop only), a dict or an
    ``sn_tf.input.augment.AugmentConfig`` (scale jitter, gain, offset, noise, box rule, focus).
  pad_to_multiple: evaluation padding multiple (default cell_size for detection, 32; a
    DetectNet model needs its input multiple 16 whatever its cell size).
  sample_weights: return weights (default: when boundary_weight, contact_weight or
    core_weight is set, or evaluating). ``make_dataset`` only.
  aois: keep only these AOIs (each must have all ``image_types``). None: the AOIs of the
    split that have all of them (``DatasetInfo.aois_with``); an error when none has them.
  num_parallel_calls: parallelism of the parse/decode/augment and batch maps (AUTOTUNE = -1).
  num_parallel_reads: parallel interleave of the shard files (AUTOTUNE, for remote storage);
    None or 1 reads with one thread (half the CPU per record, enough for local disks).
  deterministic: order guarantee (None: False for training, True for evaluation).
  repeat: None/True = forever when training, False = one epoch, int = that many epochs;
    evaluation reads once.
  image_dtype: "float32" (default) or "bfloat16" / "float16" (normalised, then cast), or
    "raw": NOT normalised, the model normalises itself with ``normalization_layer`` (same
    ``normalization``) as its first layer. Raw training crops keep the stored dtype (uint16
    for SpaceNet imagery; float32 when stacked types differ) and exclude radiometric
    augmentation (``sn_tf.modeling.model_input.RadiometricJitter`` does it in the model);
    raw evaluation tiles are float32 stored values padded with the band mean.
  crops_per_tile: training crops cut from each read tile (k > 1 amortises reading over k
    crops at the price of correlated steps; BUILD_NOTES.md section 8).
  contact: segmentation targets also hold ``"contact"`` float32 [B, H, W, 1] in {0, 1}, the
    converter's contact layer (schema version >= 3).
  contact_weight: with a weight c, segmentation sample weights get ``+ c`` on contact pixels;
    DetectNet cell weights are ``1 + c`` within one cell of a contact pixel. ``make_dataset``
    only.
  interior_level: with a level k, targets also hold ``"interior"`` float32 [B, H, W, 1] =
    ``sdf > k`` (the building cores, which touching buildings do not share), weighted by
    the valid-pixel mask. ``make_dataset`` only.
  core_weight: with a weight c (needs ``interior_level`` k), the ``"interior"`` weights get
    ``+ c * clip((sdf - k) / CORE_RAMP_PX, 0, 1)`` on valid pixels: a false gap deep inside a
    building (a roof ridge taken for a wall) costs up to 1 + c times a rim error.
    ``make_dataset`` only.
  reader: how training crops read their pixels. "ranged" (default): each crop reads only
    its window's rows of each raw pixel payload out of the shard file
    (``sn_tf.input.ranged``: the shards are indexed once when the dataset is built; the
    records' data CRCs are not checked on this path); "record": whole records through
    ``TFRecordDataset`` (CRC-checked). Same crops either way for a seed; "ranged" falls
    back to "record" where it cannot apply (evaluation, compressed images, augment focus
    with a raw contact layer, remote paths); compressed label layers ride in the index.
    BUILD_NOTES.md section 8.
  targets_on: where the targets and weights of training batches are built. "host"
    (default): in the pipeline, float32 (elements as above). "device": the elements are
    ``(image, packed)`` (``sn_tf.input.packed``): for segmentation the stored label
    layers, for DetectNet the crops' boxes, rotated rectangles and contact cells; the
    train step expands them with ``sn_tf.input.pipeline.packed_targets(...).expand`` into
    the same targets and weights (``sn_tf.training`` does this). Applies to segmentation
    crops whose stored sdf crosses the batch (no scale jitter) and to batch-read DetectNet
    crops without the ``interior`` target; other plans and evaluation get host-built
    targets either way. ``make_dataset`` only.
  crop_on: where training crops of batch-read plans (``reader`` "ranged", raw images of
    one type with all bands, no scale jitter) get their column cut and symmetry. "host"
    (default): in the pipeline. "device": the image leaves the pipeline as the window's
    rows (read straight into the batch, the host's memory floor) with the crops' windows
    (``sn_tf.input.packed.WINDOW``) in the packed labels (segmentation with
    ``targets_on="device"``: the label layers as rows too; DetectNet: its boxes are
    those of the cut crop either way) or in the targets (DetectNet with host-built
    targets), and the train step cuts them
    (``sn_tf.input.packed.orient_crops``; ``sn_tf.training.packed_step``): the same crops,
    ~27 % more bytes to the accelerator for 650 px tiles. Other plans cut on the host
    either way.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from sn_tf.input.cells import DEFAULT_CELL_SIZE

#: ``tf.data.AUTOTUNE`` (its value; this module does not import TensorFlow)
AUTOTUNE = -1


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """The options of one input pipeline (module docstring). Frozen: derive variants with
    :meth:`replace`."""

    image_types: tuple[str, ...] = ("MUL-PanSharpen",)
    bands: Mapping[str, tuple[int, ...]] | None = None
    normalization: Any = "dataset_info"
    crop_size: int = 256
    batch_size: int = 8
    seed: int = 0
    shuffle_buffer: int | None = None
    sdf_truncation: float | None = None
    boundary_weight: float | None = None
    boundary_sigma: float = 3.0
    cell_size: int = DEFAULT_CELL_SIZE
    cvg_scale: float = 0.4
    augment: Any = None
    pad_to_multiple: int | None = None
    sample_weights: bool | None = None
    aois: tuple[str, ...] | None = None
    num_parallel_calls: int | None = AUTOTUNE
    num_parallel_reads: int | None = AUTOTUNE
    deterministic: bool | None = None
    repeat: Any = None
    image_dtype: str = "float32"
    crops_per_tile: int = 1
    contact: bool = False
    contact_weight: float | None = None
    interior_level: float | None = None
    core_weight: float | None = None
    reader: str = "ranged"
    targets_on: str = "host"
    crop_on: str = "host"

    def __post_init__(self):
        # sequences become tuples, so configs compare and hash by value
        object.__setattr__(self, "image_types", tuple(self.image_types))
        if self.aois is not None:
            object.__setattr__(self, "aois", tuple(self.aois))
        if self.bands is not None:
            object.__setattr__(self, "bands", {t: tuple(b) for t, b in self.bands.items()})

    def replace(self, **changes) -> "InputConfig":
        """A copy with ``changes``; TypeError naming the known fields for an unknown one."""
        unknown = sorted(set(changes) - FIELDS)
        if unknown:
            raise TypeError(f"unknown input option(s) {unknown}; known: {sorted(FIELDS)}")
        return dataclasses.replace(self, **changes)


FIELDS = frozenset(f.name for f in dataclasses.fields(InputConfig))


def input_config(config: InputConfig | None, options: Mapping[str, Any]) -> InputConfig:
    """``config`` (default: ``InputConfig()``) updated with keyword ``options``."""
    if config is not None and not isinstance(config, InputConfig):
        raise TypeError(f"config must be an InputConfig, got {type(config).__name__}")
    return (config or InputConfig()).replace(**options)
