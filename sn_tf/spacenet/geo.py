"""The rasterio/shapely boundary: read rasters and building labels, convert coordinates.

Conventions (BUILD_NOTES.md section 1): ``transform_gdal`` is the GDAL geotransform
(GT0..GT5), ``transform_affine`` is rasterio's ``Affine`` (a, b, c, d, e, f) =
(GT1, GT2, GT0, GT4, GT5, GT3). Pixel coordinates are (x = column, y = row) with (0, 0) the
top-left corner of the top-left pixel. Images are returned HWC in the file's dtype and band
order. Data problems raise ``DataError`` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings

import numpy as np
import shapely
from affine import Affine

from sn_tf.utils.errors import SnTfError
from sn_tf.utils.objectstore import as_path

IDENTITY_GDAL = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class DataError(SnTfError):
    """A problem with one input file; ``str()`` names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def as_gdal_transform(transform) -> tuple[float, ...]:
    """Normalise a transform to a GDAL geotransform tuple (GT0..GT5) of 6 floats.

    Accepts a GDAL tuple/list, a rasterio ``Affine`` (recognised by its ``a..f``
    attributes) or a string ``"GT0,GT1,GT2,GT3,GT4,GT5"``. Raises ValueError for a wrong
    number of values, non-numeric or non-finite values, or a singular transform.
    """
    if isinstance(transform, str):
        parts = [p.strip() for p in transform.split(",")]
        if len(parts) != 6:
            raise ValueError(f"transform {transform!r}: expected 6 comma-separated numbers "
                             f"GT0,GT1,GT2,GT3,GT4,GT5, got {len(parts)}")
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"transform {transform!r}: not all values are numbers") from None
    elif all(hasattr(transform, k) for k in "abcdef"):
        values = tuple(float(v) for v in (transform.c, transform.a, transform.b,
                                          transform.f, transform.d, transform.e))
    else:
        values = tuple(float(v) for v in transform)
        if len(values) != 6:
            raise ValueError(f"transform {transform!r}: expected 6 GDAL values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"transform {values}: values must be finite")
    if values[1] * values[5] - values[2] * values[4] == 0:
        raise ValueError(f"transform {values}: singular (zero pixel area)")
    return values


def to_affine(transform) -> Affine:
    """rasterio ``Affine`` for any transform accepted by ``as_gdal_transform``."""
    return Affine.from_gdal(*as_gdal_transform(transform))


def affine_to_gdal(affine: Affine) -> tuple[float, ...]:
    """rasterio Affine -> GDAL geotransform tuple (GT0..GT5)."""
    return tuple(float(v) for v in affine.to_gdal())


def pixel_area(transform) -> float:
    """Area of one pixel in map units (absolute determinant of the transform)."""
    gt = as_gdal_transform(transform)
    return abs(gt[1] * gt[5] - gt[2] * gt[4])


@dataclasses.dataclass
class RasterHeader:
    """Raster metadata without pixels: size, bands, dtype and georeference."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    transform_gdal: tuple
    crs: str  # "" when the raster has no CRS
    nodata: float | None

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) in map units of the four pixel-grid corners."""
        a = to_affine(self.transform_gdal)
        xs, ys = zip(*(a * c for c in ((0, 0), (self.width, 0), (0, self.height),
                                       (self.width, self.height))))
        return min(xs), min(ys), max(xs), max(ys)


def _crs_string(crs) -> str:
    if crs is None:
        return ""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _open(path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    path = as_path(path)  # a local path or an object store URL
    if not path.exists():
        raise DataError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise DataError(path, f"not a readable GeoTIFF ({exc})") from None


def raster_header(path) -> RasterHeader:
    """Read only the header of a raster."""
    with _open(path) as ds:
        return _header(ds, path)


def _header(ds, path) -> RasterHeader:
    georef = ds.crs is not None or not ds.transform.is_identity
    return RasterHeader(
        path=str(path), width=ds.width, height=ds.height, count=ds.count,
        dtype=ds.dtypes[0], transform_gdal=affine_to_gdal(ds.transform) if georef
        else IDENTITY_GDAL, crs=_crs_string(ds.crs), nodata=ds.nodata)


# GDAL reads uncompressed GeoTIFFs (SpaceNet's) through a memory map instead of strip by
# strip through its block cache: ~3x less CPU, same pixels; other files, other platforms
# and files too short for their strips (an error, as before) take the usual path.
# (GTIFF_DIRECT_IO, also faster, returns zeros for a truncated file without an error.)
FAST_READ_OPTIONS = {"GTIFF_VIRTUAL_MEM_IO": "IF_ENOUGH_RAM"}


def read_raster(path, fast: bool = True) -> tuple[np.ndarray, RasterHeader]:
    """Read all bands of a GeoTIFF: (HWC array in the file's dtype and band order, header).

    ``fast``: with ``FAST_READ_OPTIONS`` (False: GDAL's defaults; same result).
    """
    import rasterio
    from rasterio.errors import RasterioError

    with rasterio.Env(**(FAST_READ_OPTIONS if fast else {})), _open(path) as ds:
        header = _header(ds, path)
        if len(set(ds.dtypes)) != 1:
            raise DataError(path, f"bands of different dtypes {ds.dtypes} are not supported")
        data = np.empty((ds.height, ds.width, ds.count), ds.dtypes[0])  # HWC
        try:
            # GDAL fills the HWC buffer through a [C, H, W] view: no transposing copy,
            # and faster than a band-sequential read for pixel-interleaved GeoTIFFs.
            ds.read(out=data.transpose(2, 0, 1))
        except RasterioError as exc:
            raise DataError(path, f"pixels cannot be read, file truncated or corrupt ({exc})")
    return data, header


# ---- labels ----------------------------------------------------------------------------
@dataclasses.dataclass
class LabelRead:
    """Building polygons read from one label file, in the requested CRS.

    polygons: valid shapely Polygons (map coordinates of ``crs``), z dropped.
    notes: human-readable remarks (repairs, reprojection, empty file).
    """

    polygons: list
    source_crs: str
    notes: list[str]


CRS84_NAMES = ("urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "CRS84")


def geojson_crs(doc: dict) -> str:
    """CRS declared by a GeoJSON document ('EPSG:4326' when absent or CRS84, RFC 7946)."""
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name")
    if not name or name in CRS84_NAMES:
        return "EPSG:4326"
    m = re.search(r"EPSG:+(\d+)", name)
    return f"EPSG:{m.group(1)}" if m else name


def polygon_parts(geometry) -> list:
    """The non-empty Polygon parts of any geometry (Polygon, MultiPolygon, collection).

    Lines and points (e.g. left over by ``make_valid``) are dropped.
    """
    if geometry is None or geometry.is_empty:
        return []
    if geometry.geom_type == "Polygon":
        return [geometry]
    return [p for g in getattr(geometry, "geoms", ()) for p in polygon_parts(g)]


def repair_polygon(geometry) -> list:
    """Valid Polygon parts of ``geometry``: ``shapely.make_valid`` when invalid, then split.

    A self-intersecting ring (bow tie) becomes its lobes; a valid polygon is returned as is.
    """
    if geometry is None or geometry.is_empty:
        return []
    if geometry.is_valid:
        return polygon_parts(geometry)
    return [p for p in polygon_parts(shapely.make_valid(geometry)) if p.area > 0]


def reproject_geoms(geoms, src_crs: str, dst_crs: str) -> list:
    """Reproject shapely geometries between CRSs (rasterio.warp.transform on coordinates)."""
    if not geoms or not src_crs or not dst_crs or src_crs == dst_crs:
        return list(geoms)
    from rasterio.crs import CRS
    from rasterio.warp import transform

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return list(geoms)

    def fn(coords):
        xs, ys = transform(src, dst, coords[:, 0], coords[:, 1])
        return np.column_stack([xs, ys])

    return list(shapely.transform(np.asarray(geoms, dtype=object), fn))


def _declared_crs(path, doc: dict) -> str:
    """The CRS a label document declares (``geojson_crs``), its members' JSON types checked.

    Raises ``DataError`` for a ``crs`` member that is not an object (or whose ``properties``
    is not an object, or whose ``name`` is not a string) and for a name PROJ does not know
    (e.g. an unknown EPSG code).
    """
    crs = doc.get("crs")
    if crs is not None and not isinstance(crs, dict):
        raise DataError(path, f"'crs' member must be a JSON object, got {_json_type(crs)}")
    props = (crs or {}).get("properties")
    if props is not None and not isinstance(props, dict):
        raise DataError(path, f"'crs.properties' must be a JSON object, got {_json_type(props)}")
    name = (props or {}).get("name")
    if name is not None and not isinstance(name, str):
        raise DataError(path, f"'crs.properties.name' must be a string, got {_json_type(name)}")
    declared = geojson_crs(doc)
    if declared != "EPSG:4326":
        from rasterio.crs import CRS
        from rasterio.errors import CRSError

        try:
            CRS.from_user_input(declared)
        except CRSError as exc:
            raise DataError(path, f"unknown CRS {name!r} in the 'crs' member ({exc})") from None
    return declared


def _json_type(value) -> str:
    """The JSON name of a parsed value's type (for messages)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _features(path, doc: dict) -> list:
    """The ``features`` array of a FeatureCollection (absent or null: empty), type-checked."""
    feats = doc.get("features")
    if feats is None:
        return []
    if not isinstance(feats, list):
        raise DataError(path, f"'features' must be a JSON array, got {_json_type(feats)}")
    for i, feat in enumerate(feats):
        if feat is not None and not isinstance(feat, dict):
            raise DataError(path, f"feature {i}: expected a JSON object, got {_json_type(feat)}")
    return feats


def _check_finite(path, geom, where: str) -> None:
    """Raise ``DataError`` when a geometry has a NaN or infinite coordinate."""
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        raise DataError(path, f"{where}: non-finite coordinate (NaN or infinity)")


def read_label_geojson(path, dst_crs: str | None = None) -> LabelRead:
    """Read building polygons from a SpaceNet label GeoJSON, repaired and in ``dst_crs``.

    A zero-byte file and a FeatureCollection without features both mean "no buildings"
    (with a note). Invalid polygons are repaired with ``shapely.make_valid``; MultiPolygons
    are split into Polygons; z values are dropped; a feature whose geometry cannot be read
    is dropped with a note. Raises ``DataError`` naming the file for a file that cannot be
    read or parsed, members of the wrong JSON type (``crs``, ``features``, a feature), an
    unknown CRS, and NaN or infinite coordinates (before or after reprojection).
    """
    path = as_path(path)  # a local path or an object store URL
    notes: list[str] = []
    if not path.exists():
        raise DataError(path, "label file does not exist")
    try:
        if path.stat().st_size == 0:
            return LabelRead([], "EPSG:4326", ["label file is empty (0 bytes): no buildings"])
        text = path.read_text()
    except OSError as exc:
        raise DataError(path, f"cannot read the label file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise DataError(path, "not a GeoJSON FeatureCollection")
    src_crs = _declared_crs(path, doc)
    feats = _features(path, doc)
    if not feats:
        return LabelRead([], src_crs, ["label file has no features: no buildings"])
    polys, n_invalid, n_other = [], 0, 0
    for i, feat in enumerate(feats):
        gj = (feat or {}).get("geometry")
        if not gj:
            n_other += 1
            continue
        try:
            with np.errstate(invalid="ignore"):  # NaN coordinates: checked below
                geom = shapely.force_2d(shapely.geometry.shape(gj))
        except Exception as exc:  # malformed coordinates
            notes.append(f"feature {i}: unreadable geometry ({exc}); dropped")
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            n_other += 1
            continue
        _check_finite(path, geom, f"feature {i}")
        if not geom.is_valid:
            n_invalid += 1
        polys += repair_polygon(geom)
    if n_invalid:
        notes.append(f"{n_invalid} invalid polygon(s) repaired with make_valid")
    if n_other:
        notes.append(f"{n_other} feature(s) without polygon geometry dropped")
    if dst_crs and src_crs:
        from rasterio.crs import CRS

        if CRS.from_user_input(src_crs) != CRS.from_user_input(dst_crs):
            moved = reproject_geoms(polys, src_crs, dst_crs)
            for g in moved:
                _check_finite(path, g, f"reprojected from {src_crs} to {dst_crs}")
            polys = [p for g in moved for p in repair_polygon(g)]
            notes.append(f"labels reprojected from {src_crs} to {dst_crs}")
    return LabelRead(polys, src_crs, notes)


def _transform_geoms(geometry, fn):
    """shapely.transform for one geometry (returns one) or a sequence (returns a list)."""
    if isinstance(geometry, shapely.Geometry) or (isinstance(geometry, np.ndarray)
                                                  and geometry.ndim == 0):
        return shapely.transform(geometry, fn)
    if isinstance(geometry, np.ndarray):
        return shapely.transform(geometry, fn)
    geoms = list(geometry)
    return list(shapely.transform(np.asarray(geoms, dtype=object), fn)) if geoms else []


def pixel_to_map(geometry, transform):
    """Pixel (x = col, y = row) -> map coordinates through ``transform`` (any form).

    One geometry gives one geometry, an array an array, a list a list.
    """
    gt = as_gdal_transform(transform)

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([gt[0] + x * gt[1] + y * gt[2], gt[3] + x * gt[4] + y * gt[5]])

    return _transform_geoms(geometry, apply)


def map_to_pixel(geometry, transform):
    """Map -> pixel coordinates (inverse of ``transform``); same shapes as ``pixel_to_map``."""
    gt = as_gdal_transform(transform)
    det = gt[1] * gt[5] - gt[2] * gt[4]

    def apply(xy: np.ndarray) -> np.ndarray:
        dx, dy = xy[:, 0] - gt[0], xy[:, 1] - gt[3]
        return np.column_stack([(dx * gt[5] - dy * gt[2]) / det,
                                (dy * gt[1] - dx * gt[4]) / det])

    return _transform_geoms(geometry, apply)
