"""A training recipe resolved against a converted dataset: ``resolve`` checks the recipe
against the data (clear ``ConfigError`` naming the key and the data) and returns the ``Setup``
every training stage reads; ``input_config_of`` and ``train_dataset`` turn it into the input
pipeline's configuration and dataset.

Split from ``sn_tf.training.trainer`` (which re-exports these names) so that the callbacks,
the multi-host step and the tools share one resolved setup without importing the trainer.
"""

from __future__ import annotations

import dataclasses

from sn_tf.dataset import schema
from sn_tf.dataset.info import DatasetInfo, DatasetError
from sn_tf.dataset.reader import load_info
from sn_tf.head import detections, polygons
from sn_tf.input.cells import DEFAULT_CELL_SIZE, check_cell_size
from sn_tf.training import model_dir as md
from sn_tf.training.recipes import DATA_DEFAULTS
from sn_tf.utils import families
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()

from sn_tf import modeling  # noqa: E402
from sn_tf.input import packed, pipeline  # noqa: E402
from sn_tf.input.augment import augment_config  # noqa: E402
from sn_tf.input.config import InputConfig  # noqa: E402
from sn_tf.input.normalization import normalization_mean_std  # noqa: E402
from sn_tf.input.plan import IMAGE_DTYPES  # noqa: E402
from sn_tf.training import tuning  # noqa: E402
from sn_tf.utils.errors import SnTfError  # noqa: E402

#: ``data.crop_on`` values: ``sn_tf.input.packed.CROP_ON`` and "auto".
CROP_ON_CHOICES = ("auto",) + packed.CROP_ON
#: ``data.targets_on`` values: ``sn_tf.input.packed.TARGETS_ON`` and "auto".
TARGETS_ON_CHOICES = ("auto",) + packed.TARGETS_ON


def _target(config: dict) -> str:
    """Pipeline target of a recipe (its family's; "oriented_detection" for an oriented
    DetectNet)."""
    return families.get(config["model"]["kind"]).target_for(config["model"])


class ConfigError(SnTfError, ValueError):
    """The recipe does not fit the data (bands absent, crop not a multiple of the stride...)."""


@dataclasses.dataclass
class Setup:
    """A recipe resolved against one converted dataset."""

    config: dict
    data_dir: str
    info: DatasetInfo
    kind: str
    image_types: list[str]
    bands: dict[str, list[int]]
    mean: list[float]
    std: list[float]
    stride: int
    label_grid: str
    aois: list[str]
    image_dtype: str = "float32"

    @property
    def raw_input(self) -> bool:
        """True when the pipeline delivers raw values and the model normalises them."""
        return self.image_dtype == "raw"

    def augment_split(self) -> tuple[object, dict]:
        """(pipeline augmentation, radiometric options for the model's input stage).

        With raw input the radiometric part (gain, offset_std, noise_std) moves from the
        pipeline into the model (``sn_tf.modeling.model_input.RadiometricJitter``); otherwise the
        pipeline does all of it and the dict is empty.
        """
        cfg = augment_config(self.config["data"].get("augment"))
        if not self.raw_input:
            return cfg, {}
        radiometric = {k: getattr(cfg, k) for k in ("gain", "offset_std", "noise_std")}
        return dataclasses.replace(cfg, gain=0.0, offset_std=0.0, noise_std=0.0), radiometric

    @property
    def family(self) -> families.Family:
        """The model family (``sn_tf.utils.families``)."""
        return families.get(self.kind)

    @property
    def contact_output(self) -> bool:
        """True when the model has a ``contact`` output (FCN ``model.contact``)."""
        return "contact" in self.family.optional_head_outputs and \
            bool(self.config["model"].get("contact", False))

    @property
    def interior_output(self) -> bool:
        """True when the model has an ``interior`` output (FCN ``model.interior``, DetectNet
        ``model.aux_interior``: trained against ``data.interior_level``)."""
        return bool(self.config["model"].get(self.family.interior_key, False))

    @property
    def cell_size(self) -> int | None:
        """DetectNet pixels per output cell (``model.cell_size``, ``sn_tf.input.cells``; the
        model's default 16 when the recipe does not set it); None for the FCN."""
        if self.family.cell_size is None:
            return None
        return int(self.config["model"].get("cell_size", self.family.cell_size))

    @property
    def num_bands(self) -> int:
        return sum(len(v) for v in self.bands.values())

    def model_info(self) -> md.ModelInfo:
        from sn_tf.utils.provenance import package_versions

        types = {t: self.info.image_type(t) for t in self.image_types}
        return md.ModelInfo(
            kind=self.kind, image_types=list(self.image_types), bands=self.bands,
            input_dtypes={t: types[t].dtype for t in self.image_types},
            mean=self.mean, std=self.std, stride=self.stride,
            postprocess=polygons.postprocess_params(self.kind, self.config["postprocess"]),
            recipe=self.config.get("name", ""),
            sdf_truncation=self._sdf_truncation(), versions=package_versions(),
            normalizes_input=self.raw_input,
            source_bands={t: types[t].bands for t in self.image_types},
            cell_size=self.cell_size)

    def _sdf_truncation(self):
        t = self.config["data"].get("sdf_truncation")
        if t is not None:
            return float(t)
        return self.info.label_grid(self.label_grid).sdf_truncation


def resolve(config: dict, data_dir) -> Setup:
    """Check a recipe against a converted dataset; clear ``ConfigError`` on any mismatch."""
    try:
        info = load_info(data_dir)
    except DatasetError as err:
        raise ConfigError(str(err)) from None
    kind = config["model"]["kind"]
    try:
        families.get(kind)
    except families.FamilyError as err:
        raise ConfigError(f"model.kind: {err}") from None
    data = config["data"]
    known = info.image_types
    types = list(data["image_types"])
    absent = [t for t in types if t not in known]
    if absent:
        raise ConfigError(f"data.image_types {absent} are not in the TFRecords at {data_dir} "
                          f"(present: {sorted(known)})")
    bands = {}
    for t in types:
        n = known[t].bands
        chosen = (data.get("bands") or {}).get(t) or list(range(1, n + 1))
        bad = [b for b in chosen if not isinstance(b, int) or not 1 <= b <= n]
        if bad:
            raise ConfigError(f"data.bands[{t!r}] = {chosen}: bands {bad} absent from the "
                              f"TFRecords ({t} has bands 1..{n})")
        bands[t] = list(chosen)
    grids = {known[t].label_grid for t in types}
    if len(grids) != 1 or "" in grids:
        raise ConfigError(f"data.image_types {types} are not on one labelled grid "
                          f"(label grids {sorted(grids)}); use --resample_to when converting")
    depth = config["model"].get("depth", 4)
    stride = modeling.stride_for(kind, depth=depth)
    crop = int(data["crop_size"])
    if crop % stride:
        raise ConfigError(f"data.crop_size {crop} is not a multiple of the model stride "
                          f"{stride} ({kind})")
    for split in (data["train_split"], data["val_split"]):
        n = info.splits[split].num_examples if split in info.splits else 0
        if n == 0:
            raise ConfigError(f"split {split!r} is empty or absent in {data_dir} (splits: "
                              f"{ {k: v.num_examples for k, v in info.splits.items()} })")
    aois = _aois(info, types, data.get("aois"), data_dir)
    for split in (data["train_split"], data["val_split"]):
        if not info.split(split).examples_of(aois):
            raise ConfigError(f"split {split!r} has no tiles of AOIs {aois} in {data_dir}")
    mean, std = _normalisation(info, types, bands, data.get("normalization", "dataset_info"))
    image_dtype = data.get("image_dtype", "float32")
    if image_dtype not in IMAGE_DTYPES:
        raise ConfigError(f"data.image_dtype {image_dtype!r} unknown; known: "
                          f"{IMAGE_DTYPES}")
    targets_on = data.get("targets_on", DATA_DEFAULTS["targets_on"])
    if targets_on not in TARGETS_ON_CHOICES:
        raise ConfigError(f"data.targets_on {targets_on!r} unknown; known: "
                          f"{TARGETS_ON_CHOICES} (where the targets and weights of training "
                          f"batches are built: 'auto' = 'device' with a GPU)")
    crop_on = data.get("crop_on", DATA_DEFAULTS["crop_on"])
    if crop_on not in CROP_ON_CHOICES:
        raise ConfigError(f"data.crop_on {crop_on!r} unknown; known: {CROP_ON_CHOICES} "
                          f"(where FCN training crops are cut: 'auto' = 'device' with a GPU)")
    try:
        augment_config(data.get("augment"))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"data.augment: {err}") from None
    _check_oriented(config, info, data_dir)
    _check_detectnet_grid(config, crop)
    try:
        tuning.candidates(kind, config["postprocess"], config["train"].get("postprocess_search"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    tol = config["train"].get("postprocess_tolerance", tuning.SCORE_TOLERANCE)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise ConfigError(f"train.postprocess_tolerance must be a number in [0, 1), got "
                          f"{tol!r}")
    return Setup(config, str(data_dir), info, kind, types, bands, mean, std, stride,
                 grids.pop(), aois, image_dtype)


def _check_oriented(config: dict, info: DatasetInfo, data_dir) -> None:
    """An oriented DetectNet (``model.oriented``) needs ``loss.orient_weight``, an oriented
    grouping (``detections.ORIENTED_GROUPINGS``) and data with rotated rectangles (schema
    version >= 3; older data is refused, not trained axis-aligned); a plain one must not
    set ``loss.orient_weight``."""
    if families.get(config["model"]["kind"]).oriented_target is None:
        return
    oriented = bool(config["model"].get("oriented", False))
    has_loss = config["loss"].get("orient_weight") is not None
    if oriented != has_loss:
        raise ConfigError("model.oriented and loss.orient_weight go together: an oriented "
                          "DetectNet needs loss.orient_weight (a number), a plain one "
                          f"loss.orient_weight null (got oriented={oriented}, "
                          f"orient_weight={config['loss'].get('orient_weight')!r})")
    if not oriented:
        return
    grouping = config["postprocess"].get("grouping", "opencv")
    if grouping not in detections.ORIENTED_GROUPINGS:
        raise ConfigError(f"an oriented DetectNet needs postprocess.grouping in "
                          f"{detections.ORIENTED_GROUPINGS}, got {grouping!r}")
    version = info.schema_version
    if version < schema.FIRST_VERSION_WITH_CONTACT:
        raise ConfigError(f"{data_dir}: schema version {version} records store no rotated "
                          f"rectangles (rects_px, version >= {schema.FIRST_VERSION_WITH_CONTACT})"
                          f", which an oriented DetectNet (model.oriented) learns from: "
                          f"convert the data again with this sn_tf, or train the axis-aligned "
                          f"DetectNet (--set=model.oriented=false "
                          f"--set=loss.orient_weight=null)")


def _check_detectnet_grid(config: dict, crop: int) -> None:
    """A DetectNet's ``model.cell_size`` must be one the model builds (``sn_tf.input.cells``) and
    divide ``data.crop_size``; ``model.aux_interior`` needs ``data.interior_level``."""
    family = families.get(config["model"]["kind"])
    if family.cell_size is None:
        return
    m = config["model"]
    try:
        cell = check_cell_size(m.get("cell_size", family.cell_size), "model.cell_size")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if crop % cell:
        raise ConfigError(f"data.crop_size {crop} is not a multiple of model.cell_size {cell}")
    if m.get("aux_interior") and config["data"].get("interior_level") is None:
        raise ConfigError("model.aux_interior needs data.interior_level (the auxiliary "
                          "interior output learns sdf > data.interior_level), got None")


def _aois(info: DatasetInfo, types, wanted, data_dir) -> list[str]:
    """AOIs to train on: ``wanted`` (checked), else every AOI whose tiles hold all the image
    types (``DatasetInfo.aois_with``: the question the pipeline asks too)."""
    fits = list(info.aois_with(types))
    if wanted:
        bad = [a for a in wanted if a not in fits]
        if bad:
            raise ConfigError(f"data.aois {bad} lack image types {types} in {data_dir} "
                              f"(AOIs with them: {fits})")
        return list(wanted)
    if not fits:
        have = {a: list(v.image_types) for a, v in info.aois.items()}
        raise ConfigError(f"no AOI in {data_dir} has all of {types}: {have}")
    return fits


def _normalisation(info, types, bands, mode) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) such that the model input is (raw - mean) / std."""
    mean, std = normalization_mean_std(
        *pipeline.normalization_coefficients(info, types, bands, mode))
    return [float(v) for v in mean], [float(v) for v in std]


# ---- data ------------------------------------------------------------------------------
def split_aois(setup: Setup, split: str) -> list[str]:
    """The setup's AOIs that have tiles in ``split``."""
    present = setup.info.split(split).aois
    return [a for a in setup.aois if present.get(a)]


def input_config_of(setup: Setup, split: str, training: bool = True) -> InputConfig:
    """The input pipeline's configuration (``sn_tf.input.config``) from the recipe's ``data``
    section resolved against the dataset: training crops with the recipe's augmentation and
    weights, or (``training=False``) whole tiles padded to the model's stride, plain. Keys a
    recipe (or an older run's ``config.json``) lacks take ``recipes.DATA_DEFAULTS``."""
    d, t = {**DATA_DEFAULTS, **setup.config["data"]}, setup.config["train"]
    base = InputConfig(
        image_types=tuple(setup.image_types), bands=setup.bands,
        normalization={"mean": setup.mean, "std": setup.std},
        sdf_truncation=d.get("sdf_truncation"), cell_size=setup.cell_size or DEFAULT_CELL_SIZE,
        cvg_scale=float(d["cvg_scale"]), aois=split_aois(setup, split),
        image_dtype=setup.image_dtype, crop_size=int(d["crop_size"]),
        batch_size=int(d["batch_size"]), seed=int(t["seed"]))
    if not training:
        return base.replace(pad_to_multiple=setup.stride)
    return base.replace(
        boundary_weight=d.get("boundary_weight"), augment=setup.augment_split()[0],
        crops_per_tile=d["crops_per_tile"], reader=d["reader"],
        targets_on=resolved_targets_on(d["targets_on"], _target(setup.config)),
        crop_on=resolved_crop_on(d["crop_on"]),
        contact=setup.contact_output,
        contact_weight=d.get("contact_weight"),
        interior_level=d.get("interior_level") if setup.interior_output else None,
        core_weight=d.get("core_weight") if setup.interior_output else None)


def _gpu() -> bool:
    """True when TensorFlow sees a GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def resolved_targets_on(value: str, target: str) -> str:
    """``data.targets_on`` as the pipeline takes it: "auto" is "device" when TensorFlow
    sees a GPU; on a CPU-only run "device" for segmentation (its step builds the FCN's
    targets no dearer than the input CPUs do) and "host" for DetectNet ("device" measured
    ~3 % more CPU there: BUILD_NOTES.md section 8, session 7). ``target``: the pipeline
    target ("segmentation", "detection", "oriented_detection")."""
    if value != "auto":
        return value
    return "device" if _gpu() or target == "segmentation" else "host"


def resolved_crop_on(value: str) -> str:
    """``data.crop_on`` as the pipeline takes it: "auto" is "device" when TensorFlow sees
    a GPU (the train step then cuts the crops on it), else "host" (a CPU-only run would
    cut them on the same CPUs, in its train step instead of beside it)."""
    if value != "auto":
        return value
    return "device" if _gpu() else "host"


def train_dataset(setup: Setup, batch_size: int, input_context=None):
    """The training ``tf.data.Dataset`` of (image, targets[, weights]), repeated.

    Images are normalised float32, or raw values when ``data.image_dtype`` is "raw"
    (then the model built by ``build_model`` normalises and jitters them itself). With
    ``data.targets_on: "device"`` segmentation elements are (image, packed labels) instead,
    expanded in the train step (``sn_tf.training.packed_step``).
    """
    split = setup.config["data"]["train_split"]
    cfg = input_config_of(setup, split).replace(batch_size=batch_size)
    ds = pipeline.make_dataset(setup.data_dir, split, _target(setup.config), True, cfg,
                               input_context=input_context)
    if setup.config["model"].get("sdf_bins") and not packed.is_packed(ds.element_spec[1]):
        ds = ds.map(modeling.with_sdf_bins_target)  # an FCN with the discretised distance
    return ds
