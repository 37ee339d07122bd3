"""Finding AOIs, tiles and image types in the SpaceNet on-disk layouts (no pixels read).

Two layouts (SPACENET_FACTS.md section 1):

* AOI_1 Rio (SpaceNet 1)::

    AOI_1_Rio_Train/processedBuildingLabels/3-Band/3band_<tile>.tif          -> type "3band"
    AOI_1_Rio_Train/processedBuildingLabels/8-band/8band_<tile>.tif          -> type "8band"
    AOI_1_Rio_Train/processedBuildingLabels/vectordata/geojson/Geo_<tile>.geojson

* AOI_2..5 (SpaceNet 2)::

    AOI_<n>_<City>_Train/<TYPE>/<TYPE>_<tile>.tif   TYPE in PAN, MUL, MUL-PanSharpen, RGB-PanSharpen
    AOI_<n>_<City>_Train/geojson/buildings/buildings_<tile>.geojson

The tile id is the file name without the type prefix and extension, e.g.
``AOI_2_Vegas_img123`` or ``AOI_1_RIO_img42``; it joins every image type with its labels.
Lab HDF5 files (``<city>_8_band_label_layers.h5`` ...) found in an image-type folder are
recorded as an alternative pixel source for that type.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

from sn_tf.utils.errors import SnTfError
from sn_tf.utils.objectstore import as_path

SN2_IMAGE_TYPES = ("PAN", "MUL", "MUL-PanSharpen", "RGB-PanSharpen")
RIO_IMAGE_TYPES = ("3band", "8band")
ALL_IMAGE_TYPES = SN2_IMAGE_TYPES + RIO_IMAGE_TYPES
# Preference order for the grid that carries labels when several types share a grid.
LABEL_GRID_PRIORITY = ("MUL-PanSharpen", "RGB-PanSharpen", "PAN", "MUL", "3band", "8band")

AOI_DIR_RE = re.compile(r"^(AOI_\d+_[A-Za-z]+)_(Train|Test)(_public)?$", re.IGNORECASE)
TILE_ID_RE = re.compile(r"AOI_\d+_[A-Za-z]+_img\d+", re.IGNORECASE)

# folder (relative to the AOI folder) -> image type, per layout
_SN2_IMAGE_DIRS = {t: t for t in SN2_IMAGE_TYPES}
_SN2_LABEL_DIR = "geojson/buildings"
_SN2_KNOWN_DIRS = set(SN2_IMAGE_TYPES) | {"geojson", "summaryData", "summarydata"}
_RIO_ROOT = "processedBuildingLabels"
_RIO_IMAGE_DIRS = {"3band": "3-Band", "8band": "8-band"}
_RIO_LABEL_DIR = "vectordata/geojson"
_RIO_KNOWN_DIRS = {"3-Band", "8-band", "vectordata"}
_RIO_TOP_KNOWN_DIRS = {"3-Band", "8-band", _RIO_ROOT}
_H5_RE = re.compile(r"^(?P<city>.+)_(?P<bands>\d+)_band_label_layers\.h5$", re.IGNORECASE)


class LayoutError(SnTfError, ValueError):
    """The data directory holds no SpaceNet layout sn_tf recognises."""


@dataclasses.dataclass
class TileSource:
    """Everything on disk that belongs to one tile.

    images: image type -> GeoTIFF path.  label_path: building GeoJSON or None.
    h5: image type -> (HDF5 path, dataset name) for lab HDF5 copies of the pixels.
    labels_expected: False for AOI folders without any label folder (test sets).
    """

    tile_id: str
    aoi: str
    images: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)
    label_path: pathlib.Path | None = None
    h5: dict[str, tuple[pathlib.Path, str]] = dataclasses.field(default_factory=dict)
    labels_expected: bool = True


@dataclasses.dataclass
class AoiLayout:
    """One AOI folder: its name, layout kind and tiles (sorted by tile id)."""

    name: str
    path: pathlib.Path
    kind: str  # "sn2" or "rio"
    tiles: list[TileSource]
    image_types: list[str]
    warnings: list[str]


def find_aoi_dirs(data_dir: pathlib.Path) -> list[pathlib.Path]:
    """AOI folders at ``data_dir`` itself, below it, or two levels below it (sorted)."""
    data_dir = as_path(data_dir)
    if not data_dir.is_dir():
        raise LayoutError(f"{data_dir}: not a directory")
    if AOI_DIR_RE.match(data_dir.name):
        return [data_dir]
    try:
        children = sorted(p for p in data_dir.iterdir() if p.is_dir())
    except OSError as exc:
        raise LayoutError(f"{data_dir}: cannot list the folder ({exc.strerror or exc})") from None
    found = []
    for child in children:
        if AOI_DIR_RE.match(child.name):
            found.append(child)
        else:  # an unreadable folder here holds no AOI sn_tf can use: passed over
            found += [g for g in list_dir(child, [])
                      if g.is_dir() and AOI_DIR_RE.match(g.name)]
    return found


def list_dir(folder: pathlib.Path, warnings: list[str]) -> list[pathlib.Path]:
    """The sorted entries of ``folder``; a folder that cannot be listed (permissions, I/O
    error) is reported in ``warnings`` and gives no entries."""
    try:
        return sorted(folder.iterdir())
    except OSError as exc:
        warnings.append(f"{folder}: cannot list the folder ({exc.strerror or exc}); ignored")
        return []


def _strip_prefix(stem: str, prefix: str) -> str | None:
    return stem[len(prefix) + 1:] if stem.startswith(prefix + "_") else None


def _scan_files(folder: pathlib.Path, suffixes: tuple[str, ...], prefix: str, what: str,
                warnings: list[str], skip=lambda path: False):
    """Yield (path, tile id) of every ``<prefix>_<tile>.<suffix>`` file of ``folder``.

    Files for which ``skip(path)`` is true are passed over silently; anything else that
    does not match is reported in ``warnings`` (hidden files excepted).
    """
    for path in list_dir(folder, warnings):
        if skip(path):
            continue
        if path.is_dir():
            warnings.append(f"{path}: unexpected folder inside {what}; ignored")
        elif path.suffix.lower() not in suffixes:
            if not path.name.startswith("."):
                warnings.append(f"{path}: not a {what} file; ignored")
        elif not (tile_id := _strip_prefix(path.stem, prefix)):
            warnings.append(f"{path}: name does not start with '{prefix}_'; ignored")
        else:
            yield path, tile_id


def _scan_images(folder: pathlib.Path, itype: str, prefix: str, tiles: dict, aoi: str,
                 warnings: list[str]) -> None:
    """Add every ``<prefix>_<tile>.tif`` of ``folder`` to ``tiles`` as image type ``itype``.

    Lab HDF5 copies (``<city>_<n>_band_label_layers.h5``) in the folder are registered as
    an alternative pixel source of ``itype``.
    """
    def is_h5(path):
        return bool(_H5_RE.match(path.name))

    for h5 in filter(is_h5, list_dir(folder, [])):  # listing problems: reported below
        _scan_h5(h5, itype, tiles, aoi, warnings)
    for path, tile_id in _scan_files(folder, (".tif", ".tiff"), prefix, f"{itype} GeoTIFF",
                                     warnings, skip=is_h5):
        tiles.setdefault(tile_id, TileSource(tile_id, aoi)).images[itype] = path


def _scan_h5(path: pathlib.Path, itype: str, tiles: dict, aoi: str, warnings: list) -> None:
    """Register every ``img<N>`` dataset of a lab HDF5 file as a pixel source of ``itype``."""
    try:
        import h5py

        with h5py.File(path, "r") as f:
            names = [n for n in f.keys() if re.fullmatch(r"img\d+", n)]
    except Exception as exc:  # unreadable HDF5 is a data problem, reported not raised
        warnings.append(f"{path}: cannot read HDF5 ({exc}); ignored")
        return
    prefix = _tile_prefix(aoi, tiles)
    for name in names:
        tile_id = f"{prefix}_{name}"
        tiles.setdefault(tile_id, TileSource(tile_id, aoi)).h5[itype] = (path, name)


def _tile_prefix(aoi: str, tiles: dict) -> str:
    """The tile-id prefix used in this AOI (``AOI_1_RIO`` for Rio), from known tiles."""
    for tile_id in tiles:
        m = re.match(r"^(.*)_img\d+$", tile_id)
        if m:
            return m.group(1)
    return aoi


def _scan_labels(folder: pathlib.Path, prefix: str, tiles: dict, aoi: str,
                 warnings: list[str]) -> None:
    """Attach every ``<prefix>_<tile>.geojson`` of ``folder`` to its tile."""
    for path, tile_id in _scan_files(folder, (".geojson", ".json"), prefix,
                                     "GeoJSON label", warnings):
        tiles.setdefault(tile_id, TileSource(tile_id, aoi)).label_path = path


def _unknown_dirs(folder: pathlib.Path, known: set[str]) -> list[str]:
    """Warnings for sub-folders sn_tf does not know (and for a folder it cannot list)."""
    warnings: list[str] = []
    entries = list_dir(folder, warnings)
    return warnings + [f"{p}: unknown folder; ignored" for p in entries
                       if p.is_dir() and p.name not in known and not p.name.startswith(".")]


def scan_aoi(aoi_dir: pathlib.Path) -> AoiLayout:
    """Scan one AOI folder of either layout into an ``AoiLayout``."""
    aoi_dir = as_path(aoi_dir)
    m = AOI_DIR_RE.match(aoi_dir.name)
    if not m:
        raise LayoutError(f"{aoi_dir}: not an AOI folder (expected AOI_<n>_<City>_Train)")
    aoi = m.group(1)
    tiles: dict[str, TileSource] = {}
    warnings: list[str] = []
    rio_root = aoi_dir / _RIO_ROOT
    if rio_root.is_dir():
        kind = "rio"
        warnings += _unknown_dirs(aoi_dir, _RIO_TOP_KNOWN_DIRS)
        warnings += _unknown_dirs(rio_root, _RIO_KNOWN_DIRS)
        for itype, sub in _RIO_IMAGE_DIRS.items():
            if (rio_root / sub).is_dir():
                _scan_images(rio_root / sub, itype, itype, tiles, aoi, warnings)
        label_dir = rio_root / _RIO_LABEL_DIR
        label_prefix = "Geo"
    else:
        kind = "sn2"
        warnings += _unknown_dirs(aoi_dir, _SN2_KNOWN_DIRS)
        for itype, sub in _SN2_IMAGE_DIRS.items():
            if (aoi_dir / sub).is_dir():
                _scan_images(aoi_dir / sub, itype, itype, tiles, aoi, warnings)
        label_dir = aoi_dir / _SN2_LABEL_DIR
        label_prefix = "buildings"
    has_labels = label_dir.is_dir()
    if has_labels:
        _scan_labels(label_dir, label_prefix, tiles, aoi, warnings)
    for t in tiles.values():
        t.labels_expected = has_labels
    # h5 datasets were keyed before GeoTIFF names were known in some scan orders: re-key.
    _merge_h5_only_tiles(tiles)
    image_types = sorted({t for tile in tiles.values() for t in (*tile.images, *tile.h5)},
                         key=ALL_IMAGE_TYPES.index)
    return AoiLayout(aoi, aoi_dir, kind, [tiles[k] for k in sorted(tiles, key=tile_sort_key)],
                     image_types, warnings)


def _merge_h5_only_tiles(tiles: dict[str, TileSource]) -> None:
    """Join HDF5-only entries to the GeoTIFF tile with the same image number."""
    by_num: dict[str, str] = {}
    for tile_id, t in tiles.items():
        if t.images or t.label_path:
            by_num[tile_id.rsplit("_img", 1)[-1]] = tile_id
    for tile_id in [k for k, t in tiles.items() if not t.images and not t.label_path]:
        target = by_num.get(tile_id.rsplit("_img", 1)[-1])
        if target and target != tile_id:
            tiles[target].h5.update(tiles.pop(tile_id).h5)


def tile_sort_key(tile_id: str):
    """Natural order: ``..._img9`` before ``..._img10``."""
    head, _, num = tile_id.rpartition("_img")
    return (head, int(num)) if num.isdigit() else (tile_id, -1)


def discover(data_dir, aois=None) -> list[AoiLayout]:
    """Scan a SpaceNet root (or one AOI folder); ``aois`` selects AOI names (e.g. AOI_2_Vegas)."""
    dirs = find_aoi_dirs(as_path(data_dir))
    if not dirs:
        raise LayoutError(
            f"{data_dir}: no SpaceNet AOI folder found (expected folders named like "
            "AOI_2_Vegas_Train or AOI_1_Rio_Train, here or one or two levels below)")
    layouts = [scan_aoi(d) for d in dirs]
    if aois:
        wanted = {a.lower() for a in aois}
        unknown = wanted - {lay.name.lower() for lay in layouts}
        if unknown:
            raise LayoutError(f"{data_dir}: AOI(s) {sorted(unknown)} not found; present: "
                              f"{[lay.name for lay in layouts]}")
        layouts = [lay for lay in layouts if lay.name.lower() in wanted]
    return layouts


def city_of(image_id: str) -> str:
    """City key used by SpaceNet scoring: the first three ``_`` tokens of an image id."""
    return "_".join(image_id.split("_")[:3])
