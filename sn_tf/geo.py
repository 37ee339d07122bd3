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
import pathlib
import re
import warnings

import numpy as np
import shapely
from affine import Affine

IDENTITY_GDAL = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


class DataError(Exception):
    """A problem with one input file; ``str()`` names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def gdal_to_affine(gt) -> Affine:
    """GDAL geotransform (GT0..GT5) -> rasterio Affine."""
    return Affine.from_gdal(*gt)


def affine_to_gdal(affine: Affine) -> tuple[float, ...]:
    """rasterio Affine -> GDAL geotransform tuple (GT0..GT5)."""
    return tuple(float(v) for v in affine.to_gdal())


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
        a = gdal_to_affine(self.transform_gdal)
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

    path = pathlib.Path(path)
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


def read_raster(path) -> tuple[np.ndarray, RasterHeader]:
    """Read all bands of a GeoTIFF: (HWC array in the file's dtype and band order, header)."""
    from rasterio.errors import RasterioError

    with _open(path) as ds:
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


def polygon_parts(geom) -> list:
    """The Polygon parts of any geometry (a repaired bow-tie may give several)."""
    if geom is None or geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in polygon_parts(g)]
    return []


def repair(geom):
    """Make a geometry valid (shapely.make_valid) and keep only its polygonal parts."""
    if geom.is_valid:
        return polygon_parts(geom)
    return [p for p in polygon_parts(shapely.make_valid(geom)) if p.area > 0]


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


def read_label_geojson(path, dst_crs: str | None = None) -> LabelRead:
    """Read building polygons from a SpaceNet label GeoJSON, repaired and in ``dst_crs``.

    A zero-byte file and a FeatureCollection without features both mean "no buildings"
    (with a note). Invalid polygons are repaired with ``shapely.make_valid``; MultiPolygons
    are split into Polygons; z values are dropped. Raises ``DataError`` for unparsable files.
    """
    path = pathlib.Path(path)
    notes: list[str] = []
    if not path.exists():
        raise DataError(path, "label file does not exist")
    if path.stat().st_size == 0:
        return LabelRead([], "EPSG:4326", ["label file is empty (0 bytes): no buildings"])
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise DataError(path, "not a GeoJSON FeatureCollection")
    src_crs = geojson_crs(doc)
    feats = doc.get("features") or []
    if not feats:
        return LabelRead([], src_crs, ["label file has no features: no buildings"])
    polys, n_invalid, n_other = [], 0, 0
    for i, feat in enumerate(feats):
        gj = (feat or {}).get("geometry")
        if not gj:
            n_other += 1
            continue
        try:
            geom = shapely.force_2d(shapely.geometry.shape(gj))
        except Exception as exc:  # malformed coordinates
            notes.append(f"feature {i}: unreadable geometry ({exc}); dropped")
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            n_other += 1
            continue
        if not geom.is_valid:
            n_invalid += 1
        polys += repair(geom)
    if n_invalid:
        notes.append(f"{n_invalid} invalid polygon(s) repaired with make_valid")
    if n_other:
        notes.append(f"{n_other} feature(s) without polygon geometry dropped")
    if dst_crs and src_crs:
        from rasterio.crs import CRS

        if CRS.from_user_input(src_crs) != CRS.from_user_input(dst_crs):
            polys = [p for g in reproject_geoms(polys, src_crs, dst_crs) for p in repair(g)]
            notes.append(f"labels reprojected from {src_crs} to {dst_crs}")
    return LabelRead(polys, src_crs, notes)


def map_to_pixel(geoms, transform_gdal) -> list:
    """Map-coordinate geometries -> pixel coordinates (x = col, y = row) of a raster grid."""
    inv = ~gdal_to_affine(transform_gdal)
    return _apply_affine(geoms, inv)


def pixel_to_map(geoms, transform_gdal) -> list:
    """Pixel-coordinate geometries -> map coordinates through ``transform_gdal``."""
    return _apply_affine(geoms, gdal_to_affine(transform_gdal))


def _apply_affine(geoms, a: Affine) -> list:
    if len(geoms) == 0:
        return []

    def fn(c):
        return np.column_stack([a.a * c[:, 0] + a.b * c[:, 1] + a.c,
                                a.d * c[:, 0] + a.e * c[:, 1] + a.f])

    return list(shapely.transform(np.asarray(list(geoms), dtype=object), fn))
