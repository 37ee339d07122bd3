"""``python -m sn_tf.predict``: buildings from GeoTIFFs of any size with an exported model.

    python -m sn_tf.predict --saved_model=exports/fcn \\
        --images=/data/AOI_2_Vegas_Test_public --output=out/            # a SpaceNet folder
    python -m sn_tf.predict --saved_model=exports/fcn --images='scenes/*.tif' \\
        --output=out/ --window=512 --overlap=64 --batch_size=4 --overlays=out/png
    python -m sn_tf.predict --saved_model=exports/fcn --images=scene.tif --output=scene.geojson
    python -m sn_tf.predict --saved_model=exports/fcn --images=DIR --output=preds.csv \\
        --truth=DIR/geojson/buildings                                   # + score.json
    python -m sn_tf.predict --saved_model=exports/det --from_tfrecords=/data/sn_tf \\
        --split=val --output=out/                                       # scored on stored truth

Inputs (``--images``: comma-separated files, globs or folders)
  * ``<TYPE>_<tile id>.tif`` (e.g. ``MUL-PanSharpen_AOI_2_Vegas_img42.tif``): the prefix names
    the image type; the files of one tile id are stacked in the model's type order (all must
    be on one pixel grid). Files of types the model does not use are ignored.
  * a SpaceNet folder (``sn_tf.layout.discover``): every tile, with the types the model needs.
  * a plain GeoTIFF (no type prefix) when the model reads exactly one image type.
  The model's bands are read from each type (``ModelInfo.bands``); a file with too few bands
  (or another band count than the training data, ``ModelInfo.source_bands``)
  or another dtype than the model was trained on is an error naming the file. Image id = tile
  id found in the file name, else the file stem.

Outputs (``--output``)
  * ``FILE.csv``: SpaceNet CSV (pixel coordinates, every image listed, ``POLYGON EMPTY``
    rows for images without buildings).
  * ``FILE.geojson``: one image only; polygons in the image's CRS through its geotransform.
  * a folder: ``<image id>.geojson`` per image plus ``predictions.csv``.
  An image without georeference gets pixel coordinates in its GeoJSON, with a warning.
  ``--overlays=DIR``: ``<image id>.png``, the image as RGB (``--overlay_bands``, 1-based input
  channels; default WorldView bands 5,3,2 for 8 channels) with a 2-98 percentile stretch and the
  predicted outlines in yellow, decimated to at most ``--overlay_max_size`` pixels a side.
  With truth (``--truth``, or the stored truth of ``--from_tfrecords``) the outlines are
  coloured by the SpaceNet metric's verdict: true-positive proposals green, false positives
  red, missed truth buildings blue (``sn_tf.render.OUTCOME_COLORS``): merged rows of houses
  show as one red polygon over blue outlines.
  ``--truth=PATH`` (SpaceNet CSV in pixels, or label GeoJSON file/folder in map coordinates,
  reprojected to each image's CRS and mapped to its pixels): prints the SpaceNet table and
  writes ``score.json`` beside the outputs (only the predicted images are scored).

Sliding windows and stitching
  Windows are at most ``--window`` pixels (rounded up to a multiple of the model stride; may
  grow by one stride so that n windows cover the image with at least ``--overlap`` pixels
  between neighbours), spread evenly, start on multiples of the model stride (so the
  network's stride-2 stages and DetectNet's 8- or 16-pixel cells line up with a whole-image
  pass)
  and the last window of a row/column ends on the image edge (the serving signature pads
  only where a whole-image pass would pad). Each output is blended with separable linear
  ramps across each interior window side: weight 0 over the outer quarter of the overlap,
  rising linearly to 1 across the middle half; image borders get weight 1. Every pixel has
  a window with positive weight, and where the model's receptive-field radius is at most a
  quarter of the overlap the stitched output equals a whole-image pass up to float rounding.
  Weighted sums and weights are accumulated in float32; DetectNet grids are stitched on
  their grid of ``ModelInfo.cell_size`` pixel cells (window starts are multiples of the input
  multiple 16, hence of the cell size, so cells and their box offsets keep their meaning).

Memory
  Pixels are read window by window with rasterio windowed reads (GDAL's block cache bounded
  to ``GDAL_CACHE_BYTES``); only one row of windows of input is in memory. FCN outputs are
  kept as float32 accumulators for the rows still covered by a window, then handed to the
  polygon head row-strip by row-strip: a strip emits the buildings whose footprint component
  (the head's 4-connected components of ``logit > threshold``) is complete, and carries the
  rows of components that touch its last row into the next strip, so polygons are exactly
  those of a whole-scene call and memory grows with the scene WIDTH (and the tallest
  building), not its area. DetectNet grids (1/256 of the pixels, 5 channels; 8 with an
  oriented model's ``orient``) are accumulated for the whole scene and decoded once
  (``max_boxes`` scales with the scene area); the head's rectangle grouping finds candidate
  pairs with an STRtree (memory grows with the cells above the coverage threshold and their
  similar or overlapping pairs, not quadratically).

``--from_tfrecords=DIR --split=val``: tiles of a converted dataset (``sn_tf.read_examples``),
each predicted whole (unless ``--window`` is given), with the stored georeference; scored
against the stored truth polygons (``labels[grid]["polygons_px"]``) unless ``--truth`` is
given.

Exit status: 0 on success, 1 on an input problem (message on stderr, no traceback).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pathlib
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import shapely

from sn_tf import geo, layout, polygons
from sn_tf.export import ExportError, load_export, serving_dtype
from sn_tf.model_dir import ModelInfo

WINDOW = 512
OVERLAP = 64
BATCH_SIZE = 4
OVERLAY_MAX_SIZE = 4096
# GDAL raster block cache while reading windows, in bytes (an int GDAL_CACHEMAX given to
# rasterio.Env is a byte count). GDAL's default (5 % of RAM) keeps the blocks read, so RSS
# grew with the scene (by ~390 MB on a 5000 x 5000 x 8 uint16 scene, tools/bench_predict.py);
# 64 MiB holds a full row of 256-px blocks of such a scene up to ~16,000 px wide (what the
# overlapping window rows re-read).
GDAL_CACHE_BYTES = 64 * 2 ** 20
PREDICTIONS_CSV = "predictions.csv"
SCORE_JSON = "score.json"
HEAD_OUTPUTS = {"fcn": ("footprint", "sdf"), "detectnet": ("coverage", "bbox")}
# Outputs the head uses when the exported model has them (export_info.json
# signature.outputs): the FCN's contact and interior logits, an oriented DetectNet's orient.
OPTIONAL_HEAD_OUTPUTS = {"fcn": ("contact", "interior"), "detectnet": ("orient",)}
GEOJSON_SUFFIXES = (".geojson", ".json")
TIFF_SUFFIXES = (".tif", ".tiff")


class PredictError(Exception):
    """An input problem (names the file or image and the problem)."""


class PredictWarning(UserWarning):
    """A recoverable input problem, e.g. an image without georeference."""


def _ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for integers (b > 0)."""
    return -(-a // b)


# ----------------------------------------------------------------------------------------------
# The model


class Predictor:
    """An exported model: raw ``[B, h, w, C]`` windows -> float32 outputs as numpy.

    Attributes: ``info`` (ModelInfo), ``kind``, ``stride`` (input multiple of the model),
    ``dtype`` (numpy dtype of the serving input), ``params`` (post-processing parameters,
    ``ModelInfo.postprocess`` over the head's defaults), ``outputs`` (names the polygon head
    needs: ``HEAD_OUTPUTS``, plus the ``OPTIONAL_HEAD_OUTPUTS`` the export's signature lists
    in export_info.json), ``grid_stride`` (pixels per output cell: 1 for the FCN, the
    DetectNet's ``ModelInfo.cell_size``, 16 or 8).
    """

    def __init__(self, export_dir):
        self.export_dir = pathlib.Path(export_dir)
        self._serve, self.info, self.export_info = load_export(export_dir)
        self.kind = self.info.kind
        self.stride = int(self.info.stride)
        self.dtype = np.dtype(serving_dtype(self.info))
        self.params = polygons.postprocess_params(self.kind, self.info.postprocess)
        served = set(self.export_info.get("signature", {}).get("outputs", ()))
        self.outputs = HEAD_OUTPUTS[self.kind] + tuple(
            name for name in OPTIONAL_HEAD_OUTPUTS[self.kind] if name in served)
        self.grid_stride = self.info.grid_cell_size()

    @property
    def channels(self) -> int:
        """Input channels C."""
        return self.info.num_bands

    def factor(self, name: str) -> int:
        """Pixels per cell of output ``name`` (1 for full-resolution outputs)."""
        return self.grid_stride

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``serve`` on ``batch`` [B, h, w, C] (cast to the serving dtype).

        Returns {name: float32 [B, ceil(h/f), ceil(w/f), c]} for the head's outputs.
        """
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != self.channels:
            raise PredictError(f"expected a batch [B, H, W, {self.channels}], got {batch.shape}")
        result = self._serve(batch.astype(self.dtype, copy=False))
        out = {}
        for name in self.outputs:
            if name not in result:
                raise PredictError(f"{self.export_dir}: the model has no output {name!r} "
                                   f"(outputs: {sorted(result)})")
            value = result[name].numpy()
            f = self.factor(name)
            want = (batch.shape[0], _ceil_div(batch.shape[1], f), _ceil_div(batch.shape[2], f))
            if value.shape[:3] != want:
                raise PredictError(f"{self.export_dir}: output {name!r} has shape {value.shape} "
                                   f"for input {batch.shape}; expected {want} + channels")
            out[name] = value
        return out


def as_predictor(model) -> Predictor:
    """A :class:`Predictor` from a Predictor or an export dir path."""
    return model if isinstance(model, Predictor) else Predictor(model)


# ----------------------------------------------------------------------------------------------
# Windows and blending weights


def axis_windows(length: int, window: int, overlap: int, stride: int) -> list[tuple[int, int]]:
    """(start, size) windows covering [0, length) along one axis.

    ``window`` is rounded up to a multiple of ``stride``. One window when length <= window;
    else n = ceil((length - overlap) / (window - overlap)) windows of a common size (the
    smallest stride multiple letting n windows overlap by >= ``overlap``), starting on
    multiples of ``stride``, the last one extended to end exactly at ``length`` (it may be up to
    stride - 1 pixels larger). Neighbours overlap by at least ``overlap`` pixels.
    """
    if stride < 1 or window < 1 or overlap < 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive and "
                         f"overlap ({overlap}) >= 0")
    window = _ceil_div(window, stride) * stride
    if window - overlap < stride:
        raise ValueError(f"overlap {overlap} leaves less than one stride ({stride}) between "
                         f"windows of {window} pixels; use a larger window or smaller overlap")
    if length <= window:
        return [(0, length)]
    n = _ceil_div(length - overlap, window - overlap)
    size = _ceil_div(_ceil_div(length + (n - 1) * overlap, n), stride) * stride
    gap = (size - overlap) // stride * stride
    while gap * (n - 1) + size < length:
        size += stride
        gap = (size - overlap) // stride * stride
    last = (length - size) // stride * stride
    return [(i * gap, size) for i in range(n - 1) if i * gap < last] + [(last, length - last)]


def ramp(size: int, factor: int, start_interior: bool, end_interior: bool,
         overlap: int) -> np.ndarray:
    """float32 [ceil(size / factor)] blending weights of one window along one axis.

    Cell i (pixels [i*f, (i+1)*f) of the window) has its centre at d = (i + 0.5) * f pixels
    from the window start and size - d from its end. For an interior side the weight is
    ``clip((d - m) / (overlap - 2m), 0, 1)`` with m = overlap // 4 (0 in the outer quarter of
    the overlap, 1 beyond three quarters); image-border sides and overlap < 4 give 1.
    """
    cells = _ceil_div(size, factor)
    weight = np.ones(cells, np.float32)
    margin = overlap // 4
    span = overlap - 2 * margin
    if overlap < 4 or span <= 0:
        return weight
    centre = (np.arange(cells, dtype=np.float64) + 0.5) * factor
    if start_interior:
        weight = np.minimum(weight, np.clip((centre - margin) / span, 0.0, 1.0))
    if end_interior:
        weight = np.minimum(weight, np.clip((size - centre - margin) / span, 0.0, 1.0))
    return weight.astype(np.float32)


class _RowAccumulator:
    """float32 weighted sums and weight sums of the outputs of one grid stride ``f``.

    Holds output rows (cells) [base, base + n) over the full width ceil(W / f); rows are
    appended as windows reach them and removed by :meth:`pop` once final.
    """

    def __init__(self, factor: int, width: int, channels: dict[str, int]):
        self.factor = factor
        self.width = _ceil_div(width, factor)
        self.base = 0
        self.sums = {k: np.zeros((0, self.width, c), np.float32) for k, c in channels.items()}
        self.weight = np.zeros((0, self.width), np.float32)

    def _ensure(self, end: int) -> None:
        """Grow the buffers to cover output rows [base, end)."""
        extra = end - self.base - self.weight.shape[0]
        if extra > 0:
            self.weight = np.concatenate([self.weight, np.zeros((extra, self.width), np.float32)])
            for k, s in self.sums.items():
                self.sums[k] = np.concatenate([s, np.zeros((extra,) + s.shape[1:], np.float32)])

    def add(self, y0: int, x0: int, weight: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Accumulate one window: pixel origin (y0, x0) (multiples of f), weight [h', w'],
        values {name: [h', w', c]} on this grid."""
        r0, c0 = y0 // self.factor - self.base, x0 // self.factor
        h, w = weight.shape
        self._ensure(self.base + r0 + h)
        self.weight[r0:r0 + h, c0:c0 + w] += weight
        for k, v in values.items():
            self.sums[k][r0:r0 + h, c0:c0 + w] += v * weight[..., None]

    def pop(self, end: int) -> dict[str, np.ndarray]:
        """Normalised outputs {name: float32 [end - base, W', c]} of rows [base, end), which
        are then dropped from the buffers."""
        self._ensure(end)
        n = end - self.base
        weight = self.weight[:n, :, None]
        out = {k: s[:n] / np.where(weight > 0, weight, 1.0) for k, s in self.sums.items()}
        self.weight = self.weight[n:]
        self.sums = {k: s[n:] for k, s in self.sums.items()}
        self.base = end
        return out


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
            return itype, polygons.tile_id_from_name(stem[len(itype) + 1:])
    return None, polygons.tile_id_from_name(stem)


def _expand(spec: str) -> list[pathlib.Path]:
    """Files of one --images entry: a glob's matches, the file itself, or a folder's GeoTIFFs."""
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
        path = pathlib.Path(spec)
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


# ----------------------------------------------------------------------------------------------
# Stitching


def window_grid(height: int, width: int, stride: int, window: int | None, overlap: int
                ) -> tuple[list, list]:
    """(row windows, column windows) as (start, size) lists; window None = whole image."""
    if window is None:
        window = _ceil_div(max(height, width), stride) * stride
        overlap = 0
    return (axis_windows(height, window, overlap, stride),
            axis_windows(width, window, overlap, stride))


def _shape_batches(windows: list, batch_size: int) -> Iterator[list]:
    """Windows (y0, x0, h, w) grouped by shape, in chunks of at most ``batch_size``."""
    by_shape: dict[tuple[int, int], list] = {}
    for win in windows:
        by_shape.setdefault((win[2], win[3]), []).append(win)
    for group in by_shape.values():
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]


def iter_stitched_rows(predictor: Predictor, image, window: int | None = WINDOW,
                       overlap: int = OVERLAP, batch_size: int = BATCH_SIZE,
                       names: Sequence[str] | None = None, progress=None
                       ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Stitched outputs of ``image``, row-strip by row-strip, as soon as they are final.

    Yields (y0, y1, {name: float32 [ceil(y1/f) - ceil(y0/f), ceil(W/f), c]}) for consecutive
    pixel-row ranges [y0, y1) covering [0, H) (f = ``predictor.factor(name)``; y0, y1 are
    multiples of the model stride except y1 = H). ``image`` has ``height``, ``width`` and
    ``read(y0, x0, h, w)``; ``progress`` (tqdm or None) is advanced per window.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    names = list(names or predictor.outputs)
    height, width = image.height, image.width
    rows, cols = window_grid(height, width, predictor.stride, window, overlap)
    accs: dict[int, _RowAccumulator] = {}
    done = 0
    for k, (y0, h) in enumerate(rows):
        windows = [(y0, x0, h, w) for x0, w in cols]
        for batch in _shape_batches(windows, batch_size):
            outputs = predictor(np.stack([image.read(*win) for win in batch]))
            for i, (wy, wx, wh, ww) in enumerate(batch):
                _accumulate(accs, predictor, names, outputs, i, (wy, wx, wh, ww),
                            (height, width), overlap if window is not None else 0)
            if progress is not None:
                progress.update(len(batch))
        end = rows[k + 1][0] if k + 1 < len(rows) else height
        strip = {}
        for acc in accs.values():
            strip.update(acc.pop(_ceil_div(end, acc.factor)))
        yield done, end, strip
        done = end


def _accumulate(accs: dict, predictor: Predictor, names, outputs: dict, i: int, win,
                image_hw, overlap: int) -> None:
    """Add window ``i`` of a batch's outputs to the accumulator of each output's grid."""
    y0, x0, h, w = win
    by_factor: dict[int, dict] = {}
    for name in names:
        by_factor.setdefault(predictor.factor(name), {})[name] = outputs[name][i]
    for f, values in by_factor.items():
        if f not in accs:
            accs[f] = _RowAccumulator(f, image_hw[1], {n: v.shape[-1] for n, v in values.items()})
        wy = ramp(h, f, y0 > 0, y0 + h < image_hw[0], overlap)
        wx = ramp(w, f, x0 > 0, x0 + w < image_hw[1], overlap)
        accs[f].add(y0, x0, wy[:, None] * wx[None, :], values)


def stitch_outputs(predictor: Predictor, image, window: int | None = WINDOW,
                   overlap: int = OVERLAP, batch_size: int = BATCH_SIZE,
                   names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Whole stitched outputs {name: float32 [ceil(H/f), ceil(W/f), c]} (small images, tests)."""
    parts: dict[str, list] = {}
    for _, _, strip in iter_stitched_rows(predictor, image, window, overlap, batch_size, names):
        for name, value in strip.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


# ----------------------------------------------------------------------------------------------
# Polygons (only through the shared head)


def _shift(buildings: list, dy: int) -> list:
    """The buildings moved down by ``dy`` pixel rows."""
    if dy == 0:
        return buildings
    return [dataclasses.replace(b, polygon=shapely.transform(
        b.polygon, lambda xy: xy + np.array([0.0, dy]))) for b in buildings]


class _FcnStrips:
    """Polygons of FCN outputs delivered in row strips, identical to one whole-image call.

    Keeps the pending rows (starting at pixel row ``base``) and a mask of pixels already
    emitted. Each strip: components of ``footprint logit > threshold`` (the head's
    4-connectivity, :func:`sn_tf.polygons.label_footprint`) not yet emitted and not touching
    the last pending row are complete: only their pixels keep their logits and
    ``outputs_to_buildings`` runs on the pending rows; the rows from the first incomplete
    component on stay pending.
    """

    def __init__(self, image_id: str, width: int, params: dict):
        self.image_id, self.width, self.params = image_id, width, params
        self.threshold = float(params["threshold"])
        self.base = 0
        self.pending: dict[str, np.ndarray] | None = None
        self.done = np.zeros((0, width), bool)
        self.buildings: list = []

    def add(self, strip: dict[str, np.ndarray], final: bool) -> None:
        """Append a strip {"footprint", "sdf"[, "contact"]: float32 [n, W, 1]} and emit what
        is complete."""
        names = HEAD_OUTPUTS["fcn"] + OPTIONAL_HEAD_OUTPUTS["fcn"]
        strip = {k: v for k, v in strip.items() if k in names}
        if self.pending is None:
            self.pending = strip
        else:
            self.pending = {k: np.concatenate([self.pending[k], strip[k]]) for k in strip}
        n_new = strip["footprint"].shape[0]
        self.done = np.concatenate([self.done, np.zeros((n_new, self.width), bool)])
        logits = self.pending["footprint"][..., 0]
        footprint = (logits > self.threshold) & ~self.done
        incomplete = np.zeros_like(footprint)
        if not final and footprint.shape[0] and footprint[-1].any():
            labels, _ = polygons.label_footprint(footprint.astype(np.uint8), 0)
            cut = np.unique(labels[-1][labels[-1] > 0])
            incomplete = np.isin(labels, cut)
        emit = footprint & ~incomplete
        if emit.any():
            outputs = dict(self.pending)
            outputs["footprint"] = np.where(emit, logits, -np.inf).astype(np.float32)[..., None]
            found = polygons.outputs_to_buildings(
                "fcn", outputs, self.image_id, image_size=emit.shape, params=self.params)
            self.buildings += _shift(found, self.base)
            self.done |= emit
        rows = np.flatnonzero(incomplete.any(axis=1))
        keep_from = int(rows[0]) if rows.size else footprint.shape[0]
        self.pending = {k: v[keep_from:] for k, v in self.pending.items()}
        self.done = self.done[keep_from:]
        self.base += keep_from


def buildings_from_strips(predictor: Predictor, strips: Iterable, image_id: str,
                          height: int, width: int) -> list:
    """Building records (pixel coordinates) from :func:`iter_stitched_rows` strips."""
    if predictor.kind == "fcn":
        head = _FcnStrips(image_id, width, predictor.params)
        for _, y1, strip in strips:
            head.add(strip, final=y1 >= height)
        return head.buildings
    parts: dict[str, list] = {}
    for _, _, strip in strips:
        for name, value in strip.items():
            parts.setdefault(name, []).append(value)
    grids = {name: np.concatenate(values) for name, values in parts.items()}
    return polygons.outputs_to_buildings(predictor.kind, grids, image_id,
                                         image_size=(height, width), params=predictor.params,
                                         cell_size=predictor.grid_stride)


# ----------------------------------------------------------------------------------------------
# Prediction


@dataclasses.dataclass
class ImagePrediction:
    """Buildings of one image (pixel coordinates) with what is needed to write them.

    transform: GDAL geotransform (tuple of 6) or None (no georeference); crs: "" when none.
    """

    image_id: str
    source: str
    height: int
    width: int
    transform: tuple | None
    crs: str
    buildings: list


def _open(image, predictor: Predictor):
    """A window reader for a path, ImageSource, numpy array or reader."""
    if isinstance(image, (GeoTiffImage, ArrayImage)):
        return image
    if isinstance(image, np.ndarray):
        return ArrayImage("image", image)
    if isinstance(image, (str, os.PathLike)):
        sources = find_images([os.fspath(image)], predictor.info)
        if len(sources) != 1:
            raise PredictError(f"{image}: holds {len(sources)} images; use predict_images")
        image = sources[0]
    if isinstance(image, ImageSource):
        return GeoTiffImage(image, predictor.info, predictor.dtype)
    raise TypeError(f"cannot predict on {type(image).__name__}")


def predict_image(model, image, *, window: int | None = WINDOW, overlap: int = OVERLAP,
                  batch_size: int = BATCH_SIZE, progress=None, overlays_dir=None,
                  overlay_channels: Sequence[int] | None = None,
                  overlay_max_size: int = OVERLAY_MAX_SIZE, truth=None) -> ImagePrediction:
    """Buildings of one image with sliding windows (module docstring).

    Args:
      model: :class:`Predictor` or export dir.
      image: a GeoTIFF path (model with one image type), an :class:`ImageSource`, an
        :class:`ArrayImage`/:class:`GeoTiffImage`, or a numpy [H, W, C] array (model channel
        order, id "image", no georeference).
      window, overlap, batch_size: windows of at most ``window`` pixels (None: the whole image
        in one pass), overlapping by ``overlap``, ``batch_size`` per model call.
      progress: tqdm bar advanced per window, or None.
      overlays_dir: write ``<image id>.png`` there (``sn_tf.render``), decimated to at most
        ``overlay_max_size`` pixels a side, with ``overlay_channels`` (0-based) as RGB.
      truth: for the overlay only: this image's truth records (pixel coordinates), or a
        :class:`TruthSource`; the overlay then colours every polygon by what the SpaceNet
        metric made of it (``render.OUTCOME_COLORS``) instead of outlining the predictions.
    """
    import rasterio

    predictor = as_predictor(model)
    reader = _open(image, predictor)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), reader:
        if reader.channels != predictor.channels:
            raise PredictError(f"{reader.name}: {reader.channels} channels, the model takes "
                               f"{predictor.channels}")
        strips = iter_stitched_rows(predictor, reader, window, overlap, batch_size,
                                    progress=progress)
        buildings = buildings_from_strips(predictor, strips, reader.image_id, reader.height,
                                          reader.width)
        result = ImagePrediction(reader.image_id, reader.name, reader.height, reader.width,
                                 reader.transform, reader.crs, buildings)
        if overlays_dir is not None:
            if isinstance(truth, TruthSource):
                truth = truth.records(result)
            write_overlay(reader, buildings, overlays_dir, overlay_channels, overlay_max_size,
                          truth)
    return result


def write_overlay(reader, buildings: list, overlays_dir, channels=None,
                  max_size: int = OVERLAY_MAX_SIZE, truth: Sequence | None = None
                  ) -> pathlib.Path:
    """``<overlays_dir>/<image id>.png``: input ``channels`` (0-based, default
    ``render.default_rgb_channels``) as RGB with the buildings' outlines in yellow, or, with
    ``truth`` (records of this image, pixel coordinates), every polygon coloured by the
    SpaceNet metric's verdict: matched proposals green, false positives red, missed truth
    blue (``render.outcome_overlay``; default IoU and area rules)."""
    from sn_tf import render, scoring

    n = reader.channels
    channels = list(channels) if channels is not None else list(render.default_rgb_channels(n))
    if len(channels) != 3 or not all(0 <= c < n for c in channels):
        raise PredictError(f"overlay bands must be 3 input channels in 1..{n}, got "
                           f"{[c + 1 for c in channels]}")
    raw, scale = reader.overview(channels, max_size)
    path = pathlib.Path(overlays_dir) / f"{reader.image_id}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if truth is None:
        render.write_png(path, render.overlay(raw, [b.polygon for b in buildings], scale))
        return path
    truth = [t for t in truth if not t.is_empty]
    t_out, p_out = scoring.match_outcomes(truth, buildings)
    render.write_png(path, render.outcome_overlay(raw, [t.polygon for t in truth], t_out,
                                                  [b.polygon for b in buildings], p_out,
                                                  scale))
    return path


def _progress_bar(total: int | None, enabled: bool, unit: str):
    """A tqdm bar on stderr, or None when disabled."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="sn_tf.predict", dynamic_ncols=True)


def predict_images(model, images, *, window: int | None = WINDOW, overlap: int = OVERLAP,
                   batch_size: int = BATCH_SIZE, progress: bool = False, overlays_dir=None,
                   overlay_channels: Sequence[int] | None = None,
                   overlay_max_size: int = OVERLAY_MAX_SIZE,
                   truth: "TruthSource | None" = None) -> list[ImagePrediction]:
    """:func:`predict_image` over ``images`` (``--images`` entries or ImageSources).

    ``progress``: one tqdm bar over all windows of all images. ``truth``: colours the
    overlays by outcome (:func:`predict_image`).
    """
    predictor = as_predictor(model)
    if images and all(isinstance(i, ImageSource) for i in images):
        sources = list(images)
    else:
        sources = find_images(images, predictor.info)
    total = 0
    for s in sources if progress else ():  # the bar's total: one header read per image
        header = _header(s.files[predictor.info.image_types[0]])
        rows, cols = window_grid(header.height, header.width, predictor.stride, window, overlap)
        total += len(rows) * len(cols)
    bar = _progress_bar(total, progress, "window")
    try:
        return [predict_image(predictor, s, window=window, overlap=overlap,
                              batch_size=batch_size, progress=bar, overlays_dir=overlays_dir,
                              overlay_channels=overlay_channels,
                              overlay_max_size=overlay_max_size, truth=truth)
                for s in sources]
    finally:
        if bar is not None:
            bar.close()


def tile_array(tile: dict, info: ModelInfo, dtype) -> np.ndarray:
    """The model input [H, W, C] of a decoded tile (``sn_tf.read_examples``) in ``dtype``."""
    parts = []
    for itype in info.image_types:
        image = tile["images"].get(itype)
        if image is None:
            raise PredictError(f"tile {tile['tile_id']}: no {itype} image in the converted data "
                               f"(present: {sorted(tile['images'])})")
        data = image["data"]
        bands = info.bands[itype]
        _check_band_count(f"tile {tile['tile_id']}: {itype}", data.shape[-1], itype, bands, info)
        if np.dtype(data.dtype) != np.dtype(info.input_dtypes[itype]):
            raise PredictError(f"tile {tile['tile_id']}: {itype} pixels are {data.dtype} but the "
                               f"model was trained on {info.input_dtypes[itype]}")
        parts.append(data[..., [b - 1 for b in bands]].astype(dtype, copy=False))
    shapes = {p.shape[:2] for p in parts}
    if len(shapes) != 1:
        raise PredictError(f"tile {tile['tile_id']}: image types {info.image_types} are on "
                           f"different grids {sorted(shapes)}")
    return np.concatenate(parts, axis=-1)


def tile_truth(tile: dict, info: ModelInfo) -> list:
    """Truth records (pixel coordinates) of a decoded tile: its label grid's ``polygons_px``,
    plus an empty record registering the tile."""
    grid = tile["images"][info.image_types[0]].get("label_grid", "")
    records = [polygons.Building(tile["tile_id"], None)]
    if grid and grid in tile.get("labels", {}):
        records += [polygons.Building(tile["tile_id"], p)
                    for p in tile["labels"][grid]["polygons_px"]]
    return records


def predict_tfrecords(model, data_dir, split: str = "val", *, window: int | None = None,
                      overlap: int = OVERLAP, batch_size: int = BATCH_SIZE,
                      progress: bool = False, overlays_dir=None,
                      overlay_channels: Sequence[int] | None = None,
                      overlay_max_size: int = OVERLAY_MAX_SIZE,
                      truth: "TruthSource | None" = None
                      ) -> tuple[list[ImagePrediction], list]:
    """Predict every tile of a converted split; returns (predictions, truth records: the
    stored truth polygons, or ``truth``'s records when given).

    Tiles come from ``sn_tf.read_examples`` (source dtype, georeference of the model's first
    image type); ``window`` None predicts each tile whole. Overlays are coloured by outcome
    against that truth.
    """
    from sn_tf.reader import load_info, read_examples

    predictor = as_predictor(model)
    try:
        info = load_info(data_dir)
    except FileNotFoundError as err:
        raise PredictError(str(err)) from None
    if split not in info["splits"]:
        raise PredictError(f"{data_dir}: no split {split!r}; splits: {sorted(info['splits'])}")
    known = info["feature_spec"]["image_types"]
    missing = [t for t in predictor.info.image_types if t not in known]
    if missing:
        raise PredictError(f"{data_dir}: image type(s) {missing} the model reads are not in "
                           f"this dataset (present: {sorted(known)})")
    bar = _progress_bar(info["splits"][split]["num_examples"], progress, "tile")
    truth_source, truth = truth, []
    predictions, lacking = [], []
    try:
        for tile in read_examples(data_dir, split):
            if any(t not in tile["images"] for t in predictor.info.image_types):
                lacking.append(tile["tile_id"])  # an AOI without the model's image types
                if bar is not None:
                    bar.update(1)
                continue
            first = tile["images"][predictor.info.image_types[0]]
            transform = first["transform_gdal"]
            georef = bool(first["crs"]) or tuple(transform) != geo.IDENTITY_GDAL
            image = ArrayImage(tile["tile_id"], tile_array(tile, predictor.info, predictor.dtype),
                               transform if georef else None, first["crs"],
                               name=f"{data_dir}:{tile['tile_id']}")
            pred = predict_image(
                predictor, image, window=window, overlap=overlap, batch_size=batch_size)
            records = (tile_truth(tile, predictor.info) if truth_source is None
                       else truth_source.records(pred))
            if overlays_dir is not None:
                write_overlay(image, pred.buildings, overlays_dir, overlay_channels,
                              overlay_max_size, records)
            predictions.append(pred)
            truth += records
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if lacking:
        warnings.warn(f"{data_dir}: {len(lacking)} tile(s) of split {split!r} lack the image "
                      f"types {predictor.info.image_types} the model reads and were not "
                      f"predicted (e.g. {lacking[0]})", PredictWarning, stacklevel=2)
    return predictions, truth


# ----------------------------------------------------------------------------------------------
# Writing and scoring


def write_predictions(predictions: Sequence[ImagePrediction], output) -> list[pathlib.Path]:
    """Write ``output``: ``.csv`` (SpaceNet CSV, pixels), ``.geojson``/``.json`` (one image,
    map coordinates) or a folder (``<image id>.geojson`` each + ``predictions.csv``).

    Returns the written paths.
    """
    output = pathlib.Path(output)
    suffix = output.suffix.lower()
    buildings = [b for p in predictions for b in p.buildings]
    ids = [p.image_id for p in predictions]
    if suffix == ".csv":
        output.parent.mkdir(parents=True, exist_ok=True)
        polygons.write_spacenet_csv(buildings, output, image_ids=ids)
        return [output]
    if suffix in GEOJSON_SUFFIXES:
        if len(predictions) != 1:
            raise PredictError(f"--output {output}: a GeoJSON file holds one image but there are "
                               f"{len(predictions)}; give a folder or a .csv file")
        output.parent.mkdir(parents=True, exist_ok=True)
        _write_geojson(predictions[0], output)
        return [output]
    if output.exists() and not output.is_dir():
        raise PredictError(f"--output {output}: exists and is not a folder (use .csv or "
                           ".geojson for a file)")
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in predictions:
        paths.append(output / f"{p.image_id}.geojson")
        _write_geojson(p, paths[-1])
    paths.append(output / PREDICTIONS_CSV)
    polygons.write_spacenet_csv(buildings, paths[-1], image_ids=ids)
    return paths


def _write_geojson(prediction: ImagePrediction, path: pathlib.Path) -> None:
    """One image's buildings in its CRS through its geotransform (pixels without one, marked
    with sn_tf's pixel CRS so GDAL/QGIS do not take them for WGS84)."""
    from sn_tf.scoring import PIXEL_CRS_WKT

    crs = prediction.crs or (PIXEL_CRS_WKT if prediction.transform is None else None)
    polygons.write_geojson(prediction.buildings, path, transform=prediction.transform, crs=crs)


def score_dir(output) -> pathlib.Path:
    """Folder for ``score.json``: the output folder, or the output file's folder."""
    output = pathlib.Path(output)
    return output.parent if output.suffix.lower() in (".csv",) + GEOJSON_SUFFIXES else output


class TruthSource:
    """Truth buildings for predicted images, in each image's PIXEL coordinates.

    ``path``: a SpaceNet CSV (pixels) or a folder of CSVs, read once with
    ``sn_tf.scoring.read_buildings``; or a label GeoJSON file / folder of them (map
    coordinates, file name carrying the tile id), each read when its image comes, with
    ``sn_tf.geo.read_label_geojson`` in the image's CRS and mapped to its pixels.
    """

    def __init__(self, path):
        from sn_tf import scoring

        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise PredictError(f"--truth {self.path}: no such file or folder")
        files = sorted(self.path.iterdir()) if self.path.is_dir() else [self.path]
        self._geojson = {polygons.tile_id_from_name(f): f for f in files
                         if f.suffix.lower() in GEOJSON_SUFFIXES}
        self._csv: dict[str, list] = {}
        if not self._geojson:
            for r in scoring.read_buildings(self.path):
                self._csv.setdefault(r.image_id, []).append(r)

    def records(self, prediction: ImagePrediction) -> list:
        """The image's truth records (pixels), starting with an empty one registering it."""
        records = [polygons.Building(prediction.image_id, None)]
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
        return records + [polygons.Building(prediction.image_id, p) for p in polys]


def read_truth(path, predictions: Sequence[ImagePrediction]) -> list:
    """Truth records in PIXEL coordinates for the predicted images (:class:`TruthSource`):
    records of other images are dropped; every predicted image is registered."""
    source = path if isinstance(path, TruthSource) else TruthSource(path)
    return [r for p in predictions for r in source.records(p)]


def score(predictions: Sequence[ImagePrediction], truth: list, iou: float = 0.5,
          min_area: float = 20.0):
    """SpaceNet score (``sn_tf.scoring.score_polygons``) of the predictions (pixels)."""
    from sn_tf.scoring import score_polygons

    proposals = [b for p in predictions for b in p.buildings]
    return score_polygons(truth, proposals, iou_threshold=iou, min_area=min_area)


def write_score(result, directory) -> pathlib.Path:
    """``<directory>/score.json`` (``ScoreResult.to_dict()``)."""
    path = pathlib.Path(directory) / SCORE_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# CLI


def _fail(message: str) -> None:
    """Print ``message`` to stderr and exit with status 1 (no traceback)."""
    print(f"sn_tf.predict: error: {message}", file=sys.stderr)
    sys.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line: ``sn_tf.predict: warning: ...``."""
    print(f"sn_tf.predict: warning: {message}", file=sys.stderr)


def run(fl) -> str:
    """Predict per the flags; returns the summary printed at the end."""
    if not fl.saved_model or not fl.output:
        raise PredictError("--saved_model and --output are required")
    if bool(fl.images) == bool(fl.from_tfrecords):
        raise PredictError("give exactly one of --images and --from_tfrecords")
    predictor = Predictor(fl.saved_model)
    channels = [int(b) - 1 for b in fl.overlay_bands] if fl.overlay_bands else None
    truth_source = TruthSource(fl.truth) if fl.truth else None  # checked before predicting
    common = dict(overlap=fl.overlap, batch_size=fl.batch_size, progress=fl.progress,
                  overlays_dir=fl.overlays, overlay_channels=channels,
                  overlay_max_size=fl.overlay_max_size, truth=truth_source)
    truth = None
    if fl.from_tfrecords:
        window = fl.window if fl["window"].present else None
        predictions, truth = predict_tfrecords(predictor, fl.from_tfrecords, fl.split,
                                               window=window, **common)
    else:
        predictions = predict_images(predictor, fl.images, window=fl.window, **common)
    paths = write_predictions(predictions, fl.output)
    n = sum(len(p.buildings) for p in predictions)
    lines = [f"{n} buildings in {len(predictions)} image(s) -> "
             f"{paths[-1] if len(paths) == 1 else fl.output}"]
    if truth_source is not None and not fl.from_tfrecords:
        truth = read_truth(truth_source, predictions)
    if truth is not None:
        result = score(predictions, truth, fl.iou, fl.min_area)
        path = write_score(result, score_dir(fl.output))
        lines = [result.format_table(), f"wrote {path}"] + lines
    return "\n".join(lines)


def main(argv) -> None:
    """CLI entry point (flags in the module docstring)."""
    import logging

    from absl import flags

    from sn_tf.scoring import SpaceNetFormatError

    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    warnings.showwarning = _show_warning
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)
    try:
        print(run(flags.FLAGS))
    except (PredictError, ExportError, geo.DataError, layout.LayoutError, SpaceNetFormatError,
            ValueError, OSError) as err:
        _fail(str(err))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("saved_model", None, "Export dir written by sn_tf.export.")
    flags.DEFINE_list("images", None, "GeoTIFF files, globs, plain folders or SpaceNet folders "
                      "(comma-separated).")
    flags.DEFINE_string("from_tfrecords", None, "Converted dataset dir (sn_tf.convert output) to "
                        "predict instead of --images.")
    flags.DEFINE_string("split", "val", "Split of --from_tfrecords.")
    flags.DEFINE_string("output", None, "FILE.csv, FILE.geojson (one image) or a folder.")
    flags.DEFINE_string("truth", None, "Score against this SpaceNet CSV or label GeoJSON "
                        "file/folder; writes score.json beside the outputs.")
    flags.DEFINE_integer("window", WINDOW, "Largest window side in pixels (with "
                         "--from_tfrecords the default is the whole tile).")
    flags.DEFINE_integer("overlap", OVERLAP, "Minimum overlap of neighbouring windows (pixels).")
    flags.DEFINE_integer("batch_size", BATCH_SIZE, "Windows per model call.")
    flags.DEFINE_string("overlays", None, "Write <image id>.png overlays into this folder.")
    flags.DEFINE_list("overlay_bands", None, "1-based input channels shown as R,G,B "
                      "(default 5,3,2 for 8 channels, 1,2,3 for 3..7, 1 otherwise).")
    flags.DEFINE_integer("overlay_max_size", OVERLAY_MAX_SIZE, "Overlays are decimated to at "
                         "most this many pixels a side.")
    flags.DEFINE_float("iou", 0.5, "Scoring: IoU threshold.")
    flags.DEFINE_float("min_area", 20.0, "Scoring: drop polygons under this many pixels.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    app.run(main)
