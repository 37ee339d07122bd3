"""The converted dataset's description: typed, validated, and TF-free.

A converted folder holds the shards, sn_tf's description ``sn_tf_info.json`` (this
module: ``DatasetInfo``) and TensorFlow Datasets' metadata (``dataset_info.json`` and
``features.json``, written from the same description by ``save``), so that
``tfds.builder_from_directory(folder)`` reads it too::

    info = load("/data/sn_tfrecords")                # DatasetInfo; InfoError names the file
    info.image_type("PAN").bands                     # 1
    info.split("val").shard_counts()                 # {"spacenet-val.tfrecord-...": 12, ...}
    info.aois_with(("MUL@MUL-PanSharpen",), "train") # AOIs whose tiles hold every type
    info.stats("PAN").mean                           # (per band, train split)

Every stage asks its questions here; none reads the JSON by key. Versions:
``info_version`` is the format of this description (1 = the ``dataset_info.json`` that
sn_tf wrote before it had TFDS metadata: still read, recognised by its content; 2 =
``sn_tf_info.json``), ``schema_version`` the records' (``sn_tf.dataset.schema``). Newer or
unknown versions of either are refused with a message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import types
from typing import Any, Mapping

import numpy as np

from sn_tf.dataset import schema
from sn_tf.utils.errors import SnTfError
from sn_tf.utils.objectstore import as_path

INFO_FILE = "sn_tf_info.json"
TFDS_INFO_FILE = "dataset_info.json"  # TFDS's metadata; sn_tf's own description before
TFDS_FEATURES_FILE = "features.json"
INFO_VERSION = 2
KNOWN_INFO_VERSIONS = (1, 2)
FORMAT = "sn_tf.dataset_info"
SHARD_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"  # converter.shard_name


class DatasetError(SnTfError, ValueError):
    """A converted dataset cannot be used as it is; the message names the file."""


class InfoError(DatasetError):
    """The description is absent, malformed, or of a version this sn_tf does not know."""


class ShardError(DatasetError):
    """A shard holds fewer records than its description says, or a corrupt record."""


def _frozen_map(items) -> Mapping:
    return types.MappingProxyType(dict(items))


# ---- the parts ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageTypeInfo:
    """One stored image type: pixels ``dtype`` [H, W, ``bands``], ``encoding`` "raw" |
    "zlib"; ``example_shape`` (H, W, C) of the first tile converted (tiles of other AOIs
    may differ in H, W); ``label_grid`` the grid its labels are on ("" = none); ``crs`` of
    that first tile."""

    name: str
    dtype: str
    bands: int
    example_shape: tuple[int, int, int]
    label_grid: str
    crs: str
    encoding: str

    @property
    def resampled(self) -> bool:
        """True for ``T@G``: type T resampled onto the grid of type G."""
        return "@" in self.name

    @property
    def example_bytes(self) -> int:
        """Raw bytes of one ``example_shape`` tile of this type."""
        return math.prod(self.example_shape) * np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class LabelArrayInfo:
    """One label array of a grid: stored ``dtype`` and ``encoding``."""

    dtype: str
    encoding: str


@dataclasses.dataclass(frozen=True)
class LabelGridInfo:
    """One label grid (named after the image type that carries it): ``arrays`` {field:
    LabelArrayInfo} (mask, distance, sdf, and contact from schema version 3),
    ``example_shape`` (H, W) of the first tile, the sdf clip ``sdf_truncation`` (pixels) and
    ``contact_radius`` (pixels; None in data before the contact layer)."""

    name: str
    example_shape: tuple[int, int]
    arrays: Mapping[str, LabelArrayInfo]
    sdf_truncation: float
    contact_radius: int | None

    def __post_init__(self):
        object.__setattr__(self, "arrays", _frozen_map(self.arrays))

    def has(self, field: str) -> bool:
        """True when the grid stores label array ``field``."""
        return field in self.arrays


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file (name relative to the folder) and the records it holds."""

    file: str
    num_examples: int


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """One split: examples, bytes, shards (in order) and examples per AOI."""

    name: str
    num_examples: int
    num_bytes: int
    shards: tuple[ShardInfo, ...]
    aois: Mapping[str, int]

    def __post_init__(self):
        object.__setattr__(self, "shards", tuple(self.shards))
        object.__setattr__(self, "aois", _frozen_map(self.aois))

    def shard_counts(self) -> dict[str, int]:
        """{shard file name: records it must hold}."""
        return {s.file: s.num_examples for s in self.shards}

    def examples_of(self, aois) -> int:
        """Examples of the given AOIs in this split (0 for an AOI without tiles here)."""
        return sum(self.aois.get(a, 0) for a in aois)


@dataclasses.dataclass(frozen=True)
class AoiInfo:
    """One AOI found by the converter: ``layout`` "sn2" | "rio", source ``folder``,
    ``image_types`` its tiles hold (resampled ``T@G`` types included), ``tiles_found``."""

    name: str
    layout: str
    folder: str
    image_types: tuple[str, ...]
    tiles_found: int


@dataclasses.dataclass(frozen=True)
class BandStatsInfo:
    """Per-band statistics of one image type (the train split's tiles, subsampled;
    ``sn_tf.dataset.stats``): one value per band, None for a band without valid pixels."""

    dtype: str
    count: tuple[int, ...]
    mean: tuple[float | None, ...]
    std: tuple[float | None, ...]
    min: tuple[float | None, ...]
    max: tuple[float | None, ...]
    p1: tuple[float | None, ...]
    p99: tuple[float | None, ...]


@dataclasses.dataclass(frozen=True)
class SkippedTile:
    """A tile the converter could not convert, and why."""

    tile_id: str
    aoi: str
    reason: str


@dataclasses.dataclass(frozen=True)
class TileNote:
    """A repair or remark on a converted tile."""

    tile_id: str
    note: str


# ---- the description -------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """A converted dataset (see the module docstring).

    ``config`` and ``versions`` record how it was made (the converter's options, package
    versions); no stage reads them.
    """

    name: str
    schema_version: int
    image_types: Mapping[str, ImageTypeInfo]
    label_grids: Mapping[str, LabelGridInfo]
    splits: Mapping[str, SplitInfo]
    aois: Mapping[str, AoiInfo]
    band_stats: Mapping[str, BandStatsInfo]
    band_stats_split: str
    skipped: tuple[SkippedTile, ...] = ()
    notes: tuple[TileNote, ...] = ()
    layout_warnings: tuple[str, ...] = ()
    shards_resumed: int = 0
    elapsed_s: float = 0.0
    created: str = ""
    command_line: str = ""
    versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    info_version: int = INFO_VERSION
    source: str = ""  # the file it was loaded from ("" when built in memory)

    def __post_init__(self):
        for name in ("image_types", "label_grids", "splits", "aois", "band_stats",
                     "versions", "config"):
            object.__setattr__(self, name, _frozen_map(getattr(self, name)))
        for name in ("skipped", "notes", "layout_warnings"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def _where(self) -> str:
        return self.source or f"the description of dataset {self.name!r}"

    # ---- questions --------------------------------------------------------------------
    def image_type(self, name: str) -> ImageTypeInfo:
        """The stored image type ``name``; InfoError listing the types present."""
        if name not in self.image_types:
            raise InfoError(f"{self._where()}: image type {name!r} is not in this dataset; "
                            f"present: {sorted(self.image_types)}")
        return self.image_types[name]

    def label_grid(self, name: str) -> LabelGridInfo:
        """The label grid ``name``; InfoError listing the grids present."""
        if name not in self.label_grids:
            raise InfoError(f"{self._where()}: label grid {name!r} is not in this dataset; "
                            f"grids: {sorted(self.label_grids)}")
        return self.label_grids[name]

    def split(self, name: str) -> SplitInfo:
        """The split ``name``; InfoError listing the splits."""
        if name not in self.splits:
            raise InfoError(f"{self._where()}: no split {name!r}; splits: {list(self.splits)}")
        return self.splits[name]

    def stats(self, image_type: str) -> BandStatsInfo:
        """Band statistics of ``image_type``; InfoError when it has none."""
        if image_type not in self.band_stats:
            raise InfoError(f"{self._where()}: no band statistics for {image_type} "
                            f"(statistics come from the {self.band_stats_split} split; "
                            f"types with statistics: {sorted(self.band_stats)})")
        return self.band_stats[image_type]

    def lacking(self, aoi: str, image_types) -> list[str]:
        """The ``image_types`` that the tiles of ``aoi`` do not hold."""
        have = self.aois[aoi].image_types if aoi in self.aois else ()
        return [t for t in image_types if t not in have]

    def aois_with(self, image_types, split: str | None = None) -> tuple[str, ...]:
        """The AOIs (sorted; with tiles in ``split`` when given) whose tiles hold every one
        of ``image_types``: THE answer for every stage that picks AOIs by type."""
        names = sorted(self.split(split).aois) if split is not None else sorted(self.aois)
        return tuple(a for a in names if not self.lacking(a, image_types))

    def features(self) -> dict[str, schema.FeatureType]:
        """{feature key: declared type} of this dataset's records."""
        return schema.feature_types(sorted(self.image_types), sorted(self.label_grids),
                                    self.schema_version)

    @property
    def num_examples(self) -> int:
        """Examples in every split."""
        return sum(s.num_examples for s in self.splits.values())

    # ---- JSON ---------------------------------------------------------------------------
    def to_json(self) -> dict:
        """The content of ``sn_tf_info.json`` (``from_json`` reads it back)."""
        return {
            "format": FORMAT,
            "info_version": INFO_VERSION,
            "name": self.name,
            "schema_version": self.schema_version,
            "created": self.created,
            "command_line": self.command_line,
            "versions": dict(self.versions),
            "config": dict(self.config),
            "feature_spec": {
                "image_types": {k: _image_json(v) for k, v in self.image_types.items()},
                "label_grids": {k: _grid_json(v) for k, v in self.label_grids.items()},
                "features": {k: v.to_json() for k, v in self.features().items()},
            },
            "splits": {k: {"num_examples": s.num_examples, "num_bytes": s.num_bytes,
                           "shards": [dataclasses.asdict(x) for x in s.shards],
                           "aois": dict(s.aois)} for k, s in self.splits.items()},
            "aois": {k: {"layout": a.layout, "folder": a.folder,
                         "image_types": list(a.image_types), "tiles_found": a.tiles_found}
                     for k, a in self.aois.items()},
            "band_stats": {k: _stats_json(v) for k, v in self.band_stats.items()},
            "band_stats_split": self.band_stats_split,
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "notes": [dataclasses.asdict(n) for n in self.notes],
            "layout_warnings": list(self.layout_warnings),
            "shards_resumed": self.shards_resumed,
            "elapsed_s": self.elapsed_s,
        }


def _image_json(t: ImageTypeInfo) -> dict:
    return {"dtype": t.dtype, "bands": t.bands, "example_shape": list(t.example_shape),
            "label_grid": t.label_grid, "crs": t.crs, "encoding": t.encoding}


def _grid_json(g: LabelGridInfo) -> dict:
    return {"example_shape": list(g.example_shape),
            "arrays": {f: dataclasses.asdict(a) for f, a in g.arrays.items()},
            "sdf_truncation": g.sdf_truncation, "contact_radius": g.contact_radius}


def _stats_json(s: BandStatsInfo) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(s).items()}


# ---- reading and checking JSON ---------------------------------------------------------
class _Doc:
    """A JSON object being read: ``get`` checks each value's type and names the file and
    the key path of whatever is wrong."""

    def __init__(self, value, path: str, where: str):
        if not isinstance(value, dict):
            raise InfoError(f"{path}: {where or 'the file'} must be a JSON object, got "
                            f"{type(value).__name__}")
        self.value, self.path, self.where = value, path, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return key in self.value

    def get(self, key: str, kind, *, optional: bool = False, default=None):
        """The value of ``key``, which must be of ``kind`` (a type or tuple of types;
        int accepted where float is asked); a missing key is an error unless optional."""
        if key not in self.value:
            if optional:
                return default
            raise InfoError(f"{self.path}: {self._name(key)} is missing")
        value = self.value[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise InfoError(f"{self.path}: {self._name(key)} must be "
                            f"{' or '.join(k.__name__ for k in kinds)}, got {value!r}")
        return value

    def obj(self, key: str, *, optional: bool = False) -> "_Doc":
        """The object at ``key`` as a ``_Doc``."""
        value = self.get(key, dict, optional=optional, default={})
        return _Doc(value, self.path, self._name(key))

    def items(self):
        """(key, _Doc) for every member (all must be objects)."""
        return [(k, _Doc(v, self.path, self._name(k))) for k, v in self.value.items()]

    def ints(self, key: str, length: int | None = None) -> tuple[int, ...]:
        values = self.get(key, list)
        if any(not isinstance(v, int) or isinstance(v, bool) for v in values) or \
                (length is not None and len(values) != length):
            raise InfoError(f"{self.path}: {self._name(key)} must be a list of "
                            f"{length or ''} integers, got {values!r}".replace("  ", " "))
        return tuple(values)

    def numbers(self, key: str) -> tuple[float | None, ...]:
        values = self.get(key, list)
        if any(v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool))
               for v in values):
            raise InfoError(f"{self.path}: {self._name(key)} must be a list of numbers or "
                            f"null, got {values!r}")
        return tuple(None if v is None else float(v) for v in values)

    def strings(self, key: str, *, optional: bool = False) -> tuple[str, ...]:
        values = self.get(key, list, optional=optional, default=[])
        if any(not isinstance(v, str) for v in values):
            raise InfoError(f"{self.path}: {self._name(key)} must be a list of strings, "
                            f"got {values!r}")
        return tuple(values)


def _image_type(name: str, d: _Doc) -> ImageTypeInfo:
    shape = d.ints("example_shape", 3)
    t = ImageTypeInfo(name, d.get("dtype", str), d.get("bands", int), shape,
                      d.get("label_grid", str), d.get("crs", str), d.get("encoding", str))
    if t.bands != shape[2] or t.encoding not in schema.ENCODINGS:
        raise InfoError(f"{d.path}: {d.where}: bands {t.bands} must equal example_shape[2] "
                        f"{shape[2]} and encoding be one of {schema.ENCODINGS}")
    return t


def _label_grid(name: str, d: _Doc, version: int) -> LabelGridInfo:
    arrays = {f: LabelArrayInfo(a.get("dtype", str), a.get("encoding", str))
              for f, a in d.obj("arrays").items()}
    need = schema.label_array_fields(version)
    if any(f not in arrays for f in need):
        raise InfoError(f"{d.path}: {d.where}.arrays must describe {list(need)}, got "
                        f"{sorted(arrays)}")
    radius = d.get("contact_radius", int, optional=version < schema.FIRST_VERSION_WITH_CONTACT)
    return LabelGridInfo(name, d.ints("example_shape", 2), arrays,
                         d.get("sdf_truncation", float), radius)


def _split(name: str, d: _Doc) -> SplitInfo:
    shards = []
    for i, s in enumerate(d.get("shards", list)):
        sd = _Doc(s, d.path, f"{d.where}.shards[{i}]")
        shards.append(ShardInfo(sd.get("file", str), sd.get("num_examples", int)))
    aois = {k: v for k, v in d.get("aois", dict).items()}
    if any(not isinstance(v, int) for v in aois.values()):
        raise InfoError(f"{d.path}: {d.where}.aois must map AOI names to tile counts")
    sp = SplitInfo(name, d.get("num_examples", int), d.get("num_bytes", int), tuple(shards),
                   aois)
    if sum(s.num_examples for s in shards) != sp.num_examples or \
            sum(aois.values()) != sp.num_examples:
        raise InfoError(f"{d.path}: {d.where}: num_examples {sp.num_examples} disagrees with "
                        f"its shards ({sum(s.num_examples for s in shards)}) or AOIs "
                        f"({sum(aois.values())})")
    return sp


def _stats(d: _Doc) -> BandStatsInfo:
    return BandStatsInfo(d.get("dtype", str), d.ints("count"), *(
        d.numbers(k) for k in ("mean", "std", "min", "max", "p1", "p99")))


def _aoi(name: str, d: _Doc, stored) -> AoiInfo:
    return AoiInfo(name, d.get("layout", str), d.get("folder", str),
                   _stored_types(d.strings("image_types"), stored),
                   d.get("tiles_found", int))


def _stored_types(listed, stored) -> tuple[str, ...]:
    """An AOI's types as listed; for a version 1 description (which listed the source
    types only: ``stored`` is the dataset's types) also each resampled ``T@G`` whose
    source T and grid type G the AOI has, as the converter made it."""
    if stored is None:
        return tuple(listed)
    extra = [t for t in sorted(stored) if "@" in t and t not in listed
             and all(p in listed for p in t.split("@"))]
    return tuple(listed) + tuple(extra)


def from_json(doc, path: str = "") -> DatasetInfo:
    """Validate a description (``sn_tf_info.json``, or version 1's ``dataset_info.json``)
    into a ``DatasetInfo``; InfoError names ``path`` and the offending key."""
    path = path or "the dataset description"
    d = _Doc(doc, path, "")
    info_version = d.get("info_version", int, optional=True, default=1)
    if info_version not in KNOWN_INFO_VERSIONS:
        raise InfoError(f"{path}: description format version {info_version} is not known "
                        f"to this sn_tf (knows {KNOWN_INFO_VERSIONS}): it was written by a "
                        f"newer sn_tf; upgrade sn_tf")
    version = d.get("schema_version", int)
    if version not in schema.KNOWN_SCHEMA_VERSIONS:
        raise InfoError(f"{path}: schema version {version} is not known to this sn_tf "
                        f"(knows {schema.KNOWN_SCHEMA_VERSIONS}); upgrade sn_tf")
    spec = d.obj("feature_spec")
    image_types = {k: _image_type(k, v) for k, v in spec.obj("image_types").items()}
    label_grids = {k: _label_grid(k, v, version) for k, v in spec.obj("label_grids").items()}
    stored = set(image_types) if info_version == 1 else None
    aois = {k: _aoi(k, v, stored) for k, v in d.obj("aois").items()}
    skipped = [SkippedTile(**{k: _Doc(s, path, "skipped").get(k, str)
                              for k in ("tile_id", "aoi", "reason")})
               for s in d.get("skipped", list)]
    notes = [TileNote(**{k: _Doc(n, path, "notes").get(k, str) for k in ("tile_id", "note")})
             for n in d.get("notes", list)]
    info = DatasetInfo(
        name=d.get("name", str), schema_version=version, image_types=image_types,
        label_grids=label_grids,
        splits={k: _split(k, v) for k, v in d.obj("splits").items()}, aois=aois,
        band_stats={k: _stats(v) for k, v in d.obj("band_stats").items()},
        band_stats_split=d.get("band_stats_split", str), skipped=skipped, notes=notes,
        layout_warnings=d.strings("layout_warnings"),
        shards_resumed=d.get("shards_resumed", int), elapsed_s=d.get("elapsed_s", float),
        created=d.get("created", str), command_line=d.get("command_line", str),
        versions={k: str(v) for k, v in d.get("versions", dict).items()},
        config=d.get("config", dict), info_version=info_version, source=path)
    _check_consistent(info, path)
    return info


def _check_consistent(info: DatasetInfo, path: str) -> None:
    """Cross-references: label grids, AOIs of the splits, statistics of stored types."""
    for t in info.image_types.values():
        if t.label_grid and t.label_grid not in info.label_grids:
            raise InfoError(f"{path}: image type {t.name} is on label grid {t.label_grid!r}, "
                            f"which is not described (grids: {sorted(info.label_grids)})")
    for sp in info.splits.values():
        unknown = [a for a in sp.aois if a not in info.aois]
        if unknown:
            raise InfoError(f"{path}: split {sp.name!r} has tiles of AOI(s) {unknown}, which "
                            f"are not described")
    for a in info.aois.values():
        unknown = [t for t in a.image_types if t not in info.image_types]
        if unknown and any(sp.aois.get(a.name) for sp in info.splits.values()):
            raise InfoError(f"{path}: AOI {a.name} lists image type(s) {unknown}, which are "
                            f"not described")


# ---- files -------------------------------------------------------------------------------
def _read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InfoError(f"{path}: cannot read the dataset description ({err})") from None


def is_legacy(doc) -> bool:
    """True for the ``dataset_info.json`` of sn_tf before ``sn_tf_info.json`` (its own
    description, recognised by its content), False for TFDS's metadata."""
    return isinstance(doc, dict) and "feature_spec" in doc and "schema_version" in doc


def load(data_dir) -> DatasetInfo:
    """The description of a converted folder: ``sn_tf_info.json``, or the version 1
    ``dataset_info.json`` of data converted before it (recognised by its content); the
    folder may be an object store URL (``sn_tf.utils.objectstore``)."""
    folder = as_path(data_dir)
    path = folder / INFO_FILE
    if path.is_file():
        return from_json(_read_json(path), str(path))
    legacy = folder / TFDS_INFO_FILE
    if legacy.is_file():
        doc = _read_json(legacy)
        if is_legacy(doc):
            return from_json(doc, str(legacy))
        raise InfoError(f"{legacy}: TensorFlow Datasets metadata without sn_tf's {INFO_FILE}: "
                        f"{folder} was not written by sn_tf.convert, or its conversion did "
                        f"not finish (run sn_tf.convert again with --resume)")
    raise InfoError(f"{path}: not found; is {folder} the output of sn_tf.convert?")


def _write(path: pathlib.Path, doc) -> None:
    """Write JSON through a temporary file renamed into place (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def save(info: DatasetInfo, data_dir) -> DatasetInfo:
    """Write ``sn_tf_info.json`` and TFDS's ``features.json`` and ``dataset_info.json``
    into ``data_dir``; returns the description as read back from the file."""
    folder = pathlib.Path(data_dir)
    doc = info.to_json()
    checked = from_json(json.loads(json.dumps(doc)), str(folder / INFO_FILE))
    _write(folder / TFDS_FEATURES_FILE, tfds_features(info))
    _write(folder / TFDS_INFO_FILE, tfds_dataset_info(info))
    _write(folder / INFO_FILE, doc)  # last: its presence marks a finished description
    return checked


# ---- TensorFlow Datasets metadata (written without TFDS) ---------------------------------
_TENSOR = "tensorflow_datasets.core.features.tensor_feature.Tensor"
_DICT = "tensorflow_datasets.core.features.features_dict.FeaturesDict"


def tfds_shape(ft: schema.FeatureType) -> tuple:
    """The TFDS Tensor shape of a declared feature: an optional feature gets a leading
    variable dimension (TFDS then parses it with ``allow_missing``: 0 rows where absent)."""
    if ft.optional and (not ft.shape or ft.shape[0] is not None):
        return (None,) + tuple(ft.shape)
    return tuple(ft.shape)


def _tfds_tensor(ft: schema.FeatureType) -> dict:
    dims = [str(-1 if d is None else d) for d in tfds_shape(ft)]
    return {"pythonClassName": _TENSOR,
            "tensor": {"shape": {"dimensions": dims} if dims else {}, "dtype": ft.dtype,
                       "encoding": "none"}}


def tfds_features(info: DatasetInfo) -> dict:
    """TFDS ``features.json``: a FeaturesDict nested along the keys' ``/`` (TFDS flattens
    nested dicts with ``/``, which gives back sn_tf's keys) of Tensor features."""
    tree: dict = {}
    for key, ft in info.features().items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = ft

    def to_json(node):
        if isinstance(node, schema.FeatureType):
            return _tfds_tensor(node)
        return {"pythonClassName": _DICT, "featuresDict": {"features": {
            k: to_json(v) for k, v in sorted(node.items())}}}

    return to_json(tree)


def tfds_dataset_info(info: DatasetInfo) -> dict:
    """TFDS ``dataset_info.json`` (the DatasetInfo proto as JSON): name, version (the
    schema version), the splits with their shard lengths, file format and template."""
    return {
        "name": info.name,
        "version": f"{info.schema_version}.0.0",
        "description": f"SpaceNet tiles converted by sn_tf (schema version "
                       f"{info.schema_version}); sn_tf's description is {INFO_FILE}.",
        "fileFormat": "tfrecord",
        "moduleName": "sn_tf.dataset.converter",
        "splits": [{"name": s.name, "numBytes": str(s.num_bytes),
                    "shardLengths": [str(x.num_examples) for x in s.shards],
                    "filepathTemplate": SHARD_TEMPLATE} for s in info.splits.values()],
    }
