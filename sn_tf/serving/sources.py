"""Images to predict and the truth to score them against: files, folders, discovery.

Inputs (``--images``: comma-separated files, globs or folders)
  * ``<TYPE>_<tile id>.tif`` (e.g. ``MUL-PanSharpen_AOI_2_Vegas_img42.tif``): the prefix names
    the image type; the files of one tile id are stacked in the model's type order (all must
    be on one pixel grid). Files of types the model does not use are ignored.
  * a SpaceNet folder (``sn_tf.spacenet.layout.discover``): every tile, with the types the model needs.
  * a plain GeoTIFF (no type prefix) when the model reads exactly one image type.
  The model's bands are read from each type (``ModelInfo.bands``); a file with too few bands
  (or another band count than the training data, ``ModelInfo.source_bands``)
  or another dtype than the model was trained on is an error naming the file. Image id = tile
  id found in the file name, else the file stem.

Truth (``--truth``): :class:`TruthSource`, a SpaceNet CSV (pixels) or label GeoJSON
(map coordinates, mapped to each image's pixels).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np

from sn_tf.spacenet import geo, layout
from sn_tf.spacenet.buildings import Building, tile_id_from_name
from sn_tf.serving.windows import _ceil_div
from sn_tf.training.model_dir import ModelInfo
from sn_tf.utils import objectstore
from sn_tf.utils.errors import SnTfError


GEOJSON_SUFFIXES = (".geojson", ".json")
TIFF_SUFFIXES = (".tif", ".tiff")


class PredictError(SnTfError):
    """An input problem (names the file or image and the problem)."""


class PredictWarning(UserWarning):
    """A recoverable input problem, e.g. an image without georeference."""


# ----------------------------------------------------------------------------------------------
# Images


@dataclasses.dataclass
class ImageSource:
    """One image to predict: its id and the GeoTIFF of each image type (model type order)."""

    image_id: str
    files: dict[str, pathlib.Path]

    @property
    def name(self) -> str:
        """The file names, for messages."""
        return ", ".join(str(p) for p in self.files.values())


class ArrayImage:
    """An in-memory image [H, W, C] (already stacked in the model's channel order)."""

    def __init__(self, image_id: str, array: np.ndarray, transform=None, crs: str = "",
                 name: str | None = None):
        array = np.asarray(array)
        if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
            raise PredictError(f"{name or image_id}: expected a non-empty [H, W, C] image, got "
                               f"shape {array.shape}")
        self.image_id, self.array, self.crs = image_id, array, crs or ""
        self.transform = None if transform is None else geo.as_gdal_transform(transform)
        self.height, self.width, self.channels = array.shape
        self.name = name or image_id

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Pixels [h, w, C] of rows [y0, y0+h) and columns [x0, x0+w)."""
        return self.array[y0:y0 + h, x0:x0 + w]

    def overview(self, channels: Sequence[int], max_size: int) -> tuple[np.ndarray, int]:
        """(raw [H', W', len(channels)] decimated by an integer scale, scale)."""
        scale = max(1, _ceil_div(max(self.height, self.width), max_size))
        return self.array[::scale, ::scale][..., list(channels)], scale

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class GeoTiffImage:
    """The GeoTIFFs of one :class:`ImageSource`, opened for windowed reads of the model bands.

    Checks on opening (``PredictError`` naming the file): readable, non-empty file; each image
    type has the dtype the model was trained on and at least the bands it reads; all types
    share one pixel grid (size). ``transform`` is the GDAL geotransform of the first type, or
    None without georeference (with a :class:`PredictWarning`); ``crs`` is "" without a CRS.
    """

    def __init__(self, source: ImageSource, info: ModelInfo, dtype):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        self.image_id, self.source, self.dtype = source.image_id, source, np.dtype(dtype)
        self.name = source.name
        self._plan, self._datasets = [], []
        offset = 0
        try:
            for itype in info.image_types:
                path = source.files[itype]
                header = _header(path)
                expected = np.dtype(info.input_dtypes[itype])
                bands = list(info.bands[itype])
                _check_band_count(str(path), header.count, itype, bands, info)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    ds = rasterio.open(path)
                self._datasets.append(ds)
                dtypes = {np.dtype(d) for d in ds.dtypes}
                if dtypes != {expected}:
                    raise PredictError(f"{path}: pixels are {'/'.join(sorted(map(str, dtypes)))} "
                                       f"but the model was trained on {expected} {itype} images")
                if not self._plan:
                    self.height, self.width = ds.height, ds.width
                    self._georef(header, path)
                elif (ds.height, ds.width) != (self.height, self.width):
                    first = source.files[info.image_types[0]]
                    raise PredictError(f"{path}: {ds.width}x{ds.height} pixels, not on the grid of "
                                       f"{first} ({self.width}x{self.height}); the model's "
                                       "image types must share one pixel grid")
                self._plan.append((ds, bands, offset, path))
                offset += len(bands)
        except RasterioIOError as err:
            self.close()
            raise PredictError(f"{source.name}: cannot open ({err})") from None
        except BaseException:
            self.close()
            raise
        self.channels = offset

    def _georef(self, header: geo.RasterHeader, path) -> None:
        """Set ``transform`` (GDAL tuple or None) and ``crs`` from the first file's header."""
        georeferenced = bool(header.crs) or tuple(header.transform_gdal) != geo.IDENTITY_GDAL
        self.transform = tuple(header.transform_gdal) if georeferenced else None
        self.crs = header.crs
        if not georeferenced:
            warnings.warn(f"{path}: no georeference; its GeoJSON polygons are in pixel "
                          "coordinates", PredictWarning, stacklevel=3)
        elif not header.crs:
            warnings.warn(f"{path}: geotransform but no CRS; its GeoJSON has no crs member",
                          PredictWarning, stacklevel=3)

    def read(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Pixels [h, w, C] (serving dtype) of rows [y0, y0+h), columns [x0, x0+w)."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        out = np.empty((h, w, self.channels), self.dtype)
        for ds, bands, offset, path in self._plan:
            try:
                data = ds.read(bands, window=Window(x0, y0, w, h))
            except RasterioError as err:
                raise PredictError(f"{path}: pixels cannot be read, file truncated or corrupt "
                                   f"({err})") from None
            out[..., offset:offset + len(bands)] = np.moveaxis(data, 0, -1)
        return out

    def overview(self, channels: Sequence[int], max_size: int) -> tuple[np.ndarray, int]:
        """(raw [H', W', len(channels)] read decimated by an integer scale (nearest), scale)."""
        scale = max(1, _ceil_div(max(self.height, self.width), max_size))
        shape = (_ceil_div(self.height, scale), _ceil_div(self.width, scale))
        out = np.empty(shape + (len(channels),), self.dtype)
        for k, channel in enumerate(channels):
            for ds, bands, offset, _ in self._plan:
                if offset <= channel < offset + len(bands):
                    out[..., k] = ds.read(bands[channel - offset], out_shape=shape)
        return out, scale

    def close(self) -> None:
        """Close the datasets."""
        for ds in self._datasets:
            ds.close()
        self._datasets = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_band_count(where: str, count: int, itype: str, bands: Sequence[int],
                      info: ModelInfo) -> None:
    """Refuse an input of ``itype`` with ``count`` bands that the model cannot have been
    trained on: fewer than the highest band it reads, or (when ``info.source_bands`` knows
    the training data's count) any other count. ``where`` names the file or tile."""
    trained = info.source_bands.get(itype)
    if count < max(bands):
        raise PredictError(f"{where}: has {count} band(s) but the model reads bands "
                           f"{list(bands)} of {itype}")
    if trained is not None and count != trained:
        raise PredictError(f"{where}: has {count} band(s) but the model was trained on "
                           f"{trained}-band {itype} images (is it the right file?)")


def _header(path) -> geo.RasterHeader:
    """``geo.raster_header`` with data problems (missing, empty, unreadable) as PredictError."""
    try:
        return geo.raster_header(path)
    except geo.DataError as err:
        raise PredictError(str(err)) from None


# ----------------------------------------------------------------------------------------------
# Finding images


def _known_types(info: ModelInfo) -> list[str]:
    """Image-type prefixes recognised in file names, longest first (MUL-PanSharpen before MUL)."""
    return sorted(set(layout.ALL_IMAGE_TYPES) | set(info.image_types), key=len, reverse=True)


def split_type(path, info: ModelInfo) -> tuple[str | None, str]:
    """(image type or None, image id) of a file named ``<TYPE>_<tile id>.tif`` or plain."""
    stem = pathlib.Path(path).name
    for itype in _known_types(info):
        if stem.startswith(itype + "_"):
            return itype, tile_id_from_name(stem[len(itype) + 1:])
    return None, tile_id_from_name(stem)


def _expand_url(spec: str) -> list:
    """``_expand`` for an object store URL (``sn_tf.utils.objectstore``): a glob matched
    by the store's ``FileSystems.match``, one object, or the GeoTIFFs under a prefix."""
    if any(ch in spec for ch in "*?["):
        found = objectstore.filesystems().match([spec])[0].metadata_list
        matches = sorted(objectstore.ObjectPath(m.path) for m in found)
        if not matches:
            raise PredictError(f"{spec}: matches no object")
        return matches
    path = objectstore.as_path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir()
                      if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)
    raise PredictError(f"{spec}: no such object or prefix")


def _expand(spec: str) -> list[pathlib.Path]:
    """Files of one --images entry: a glob's matches, the file itself, or a folder's GeoTIFFs
    (an object store URL: ``_expand_url``)."""
    if objectstore.is_url(spec):
        return _expand_url(spec)
    path = pathlib.Path(spec)
    if any(ch in spec for ch in "*?["):
        matches = sorted(pathlib.Path(p) for p in glob.glob(spec) if os.path.isfile(p))
        if not matches:
            raise PredictError(f"{spec}: matches no file")
        return matches
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir()
                      if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)
    raise PredictError(f"{spec}: no such file or folder")


def _layout_sources(layouts, info: ModelInfo) -> list[ImageSource]:
    """One source per tile of SpaceNet AOI folders, with the model's image types."""
    resampled = [t for t in info.image_types if "@" in t]
    if resampled:
        raise PredictError(f"the model reads resampled image type(s) {resampled}, which exist "
                           "only in converted datasets; use --from_tfrecords")
    sources = []
    for lay in layouts:
        for tile in lay.tiles:
            missing = [t for t in info.image_types if t not in tile.images]
            if missing:
                raise PredictError(f"{lay.path}: tile {tile.tile_id} has no {', '.join(missing)} "
                                   f"image (the model reads {info.image_types}; present: "
                                   f"{sorted(tile.images) or 'none'})")
            sources.append(ImageSource(tile.tile_id, {t: tile.images[t] for t in info.image_types}))
    return sources


def _group_files(files: Sequence[pathlib.Path], info: ModelInfo) -> list[ImageSource]:
    """Group typed files by image id; plain files are the model's single type."""
    groups: dict[str, dict[str, pathlib.Path]] = {}
    ignored = []
    for path in files:
        itype, image_id = split_type(path, info)
        if itype is None:
            if len(info.image_types) != 1:
                raise PredictError(f"{path}: cannot tell which of the model's image types "
                                   f"{info.image_types} this file holds; name the files "
                                   "<TYPE>_<tile id>.tif")
            itype = info.image_types[0]
        elif itype not in info.image_types:
            ignored.append(path)
            continue
        group = groups.setdefault(image_id, {})
        if itype in group:
            raise PredictError(f"{path}: a second {itype} image for image id {image_id} "
                               f"(first: {group[itype]})")
        group[itype] = path
    if files and not groups:
        raise PredictError(f"none of the {len(files)} input file(s) holds an image type the "
                           f"model reads ({info.image_types}); e.g. {files[0]}")
    sources = []
    for image_id, group in groups.items():
        missing = [t for t in info.image_types if t not in group]
        if missing:
            raise PredictError(f"image {image_id}: no {', '.join(missing)} file beside "
                               f"{', '.join(map(str, group.values()))} (the model stacks "
                               f"{info.image_types})")
        sources.append(ImageSource(image_id, {t: group[t] for t in info.image_types}))
    return sources


def find_images(specs: Sequence[str] | str, info: ModelInfo) -> list[ImageSource]:
    """Image sources of ``--images`` entries (files, globs, plain folders, SpaceNet folders).

    Raises PredictError for entries that match nothing, files whose type cannot be told,
    tiles missing a type, duplicate image ids, or no image at all.
    """
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    files: list[pathlib.Path] = []
    sources: list[ImageSource] = []
    for spec in map(str, specs):
        path = objectstore.as_path(spec)  # a local path or an object store URL
        if path.is_dir():
            try:
                layouts = layout.discover(path)
            except layout.LayoutError:
                layouts = []
            if layouts:
                sources += _layout_sources(layouts, info)
                continue
        found = _expand(spec)
        if not found:
            raise PredictError(f"{spec}: no GeoTIFF (.tif) files and no SpaceNet AOI folder")
        files += found
    sources += _group_files(files, info)
    seen: dict[str, str] = {}
    for s in sources:
        if s.image_id in seen:
            raise PredictError(f"image id {s.image_id} appears twice ({seen[s.image_id]} and "
                               f"{s.name}); output files would collide")
        seen[s.image_id] = s.name
    if not sources:
        raise PredictError(f"no images found in {', '.join(specs)}")
    return sources


class TruthSource:
    """Truth buildings for predicted images, in each image's PIXEL coordinates.

    ``path``: a SpaceNet CSV (pixels) or a folder of CSVs, read once with
    ``sn_tf.spacenet.building_readers.read_buildings``; or a label GeoJSON file / folder of them (map
    coordinates, file name carrying the tile id), each read when its image comes, with
    ``sn_tf.spacenet.geo.read_label_geojson`` in the image's CRS and mapped to its pixels.
    """

    def __init__(self, path):
        from sn_tf.spacenet.building_readers import read_buildings

        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise PredictError(f"--truth {self.path}: no such file or folder")
        files = sorted(self.path.iterdir()) if self.path.is_dir() else [self.path]
        self._geojson = {tile_id_from_name(f): f for f in files
                         if f.suffix.lower() in GEOJSON_SUFFIXES}
        self._csv: dict[str, list] = {}
        if not self._geojson:
            for r in read_buildings(self.path):
                self._csv.setdefault(r.image_id, []).append(r)

    def records(self, prediction) -> list:
        """The image's truth records (pixels), starting with an empty one registering it
        (``prediction``: an ``ImagePrediction``, ``sn_tf.serving.predictor``)."""
        records = [Building(prediction.image_id, None)]
        if not self._geojson:
            return records + self._csv.get(prediction.image_id, [])
        file = self._geojson.get(prediction.image_id)
        if file is None:
            return records
        try:
            read = geo.read_label_geojson(file, prediction.crs or None)
        except geo.DataError as err:
            raise PredictError(str(err)) from None
        polys = read.polygons
        if prediction.transform is not None:
            polys = geo.map_to_pixel(polys, prediction.transform)
        return records + [Building(prediction.image_id, p) for p in polys]
