"""Coordinate systems and units of building files: sn_tf's pixel CRS, CRS names, and the
common CRS and area units in which truth and proposals are scored (``sn_tf.spacenet.scoring``).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import shapely

from sn_tf.utils.errors import SnTfError


#: CRS of pixel coordinates (x = column, y = row). In GeoJSON, sn_tf writes it as the ``crs``
#: member's name :data:`PIXEL_CRS_WKT`, an engineering (local) CRS that GDAL's
#: ``SetFromUserInput`` (used by its GeoJSON driver, hence QGIS) reads as "not georeferenced,
#: unit pixel" instead of taking the coordinates for WGS84 longitudes and latitudes.
PIXEL = "pixel"
PIXEL_CRS_WKT = ('LOCAL_CS["sn_tf image pixels (x = column, y = row, origin top-left corner)",'
                 'LOCAL_DATUM["image",32767],UNIT["pixel",1],AXIS["X",EAST],AXIS["Y",SOUTH]]')
#: Metres per degree of latitude (and of longitude at the equator) on the WGS84 sphere radius.
METRES_PER_DEGREE = 6378137.0 * math.pi / 180.0
#: Default ground sample distance (metres per pixel) that turns the pixel rules (min_area,
#: touch_distance, size_classes) into map units for map-coordinate inputs: the 0.3 m of the
#: SpaceNet 2 PAN / pansharpened tiles (SpaceNet 1 Rio 3-band: 0.5).
DEFAULT_GSD = 0.3


class ScoreInputError(SnTfError, ValueError):
    """Truth and proposals cannot be compared (e.g. pixel vs map coordinates)."""


@dataclasses.dataclass
class SourceFile:
    """Records of one input file and the CRS of its coordinates (:data:`PIXEL`, an
    ``"EPSG:n"`` string or another CRS text; None for in-memory records: as the other side)."""

    path: str
    records: list
    crs: str | None = None
    note: str | None = None


def crs_key(name) -> str | None:
    """Canonical form of a CRS name: CRS84 / EPSG:4326 / ``urn:ogc:def:crs:EPSG::n`` ->
    ``"EPSG:n"``; sn_tf's pixel CRS -> :data:`PIXEL`; anything else unchanged."""
    if name is None:
        return None
    text = str(name).strip()
    if text in ("urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "CRS84", "OGC:CRS84"):
        return "EPSG:4326"
    if text == PIXEL or text == PIXEL_CRS_WKT or text.startswith('LOCAL_CS["sn_tf image pixels'):
        return PIXEL
    match = re.fullmatch(r"(?:urn:ogc:def:crs:)?EPSG:+(?:[\d.]*:)?(\d+)", text, re.IGNORECASE)
    return f"EPSG:{match.group(1)}" if match else text


def _describe(crs) -> str:
    return "pixel coordinates" if crs == PIXEL else str(crs)


def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(a) == CRS.from_user_input(b)
    except CRSError:  # unknown to PROJ: different texts are different CRSs
        return False


def crs_units(crs) -> tuple[str, float]:
    """(``"pixel"`` | ``"metre"`` | ``"degree"``, metres per CRS unit) of a CRS key."""
    if crs is None or crs == PIXEL:
        return "pixel", 1.0
    if crs == "EPSG:4326":
        return "degree", METRES_PER_DEGREE
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as err:
        raise ScoreInputError(f"CRS {crs!r}: not understood ({err}); cannot apply the pixel "
                              "area rule; reproject the files") from None
    if parsed.is_geographic:
        return "degree", METRES_PER_DEGREE
    if parsed.is_projected:
        return "metre", float(parsed.linear_units_factor[1])
    raise ScoreInputError(f"CRS {crs!r}: units unknown (neither geographic nor projected); "
                          "cannot apply the pixel area rule; reproject the files")


def _reproject(source: SourceFile, dst: str) -> SourceFile:
    from sn_tf.spacenet.geo import reproject_geoms

    keep = [k for k, r in enumerate(source.records) if not r.is_empty]
    try:
        moved = reproject_geoms([source.records[k].polygon for k in keep], source.crs, dst)
    except Exception as err:
        raise ScoreInputError(f"{source.path}: cannot reproject from {source.crs} to {dst} "
                              f"({err})") from None
    records = list(source.records)
    for k, geom in zip(keep, moved):
        records[k] = dataclasses.replace(records[k], polygon=geom)
    return dataclasses.replace(source, records=records, crs=dst)


def to_common_crs(truth: list, proposals: list, warnings: list) -> str | None:
    """Bring every file to the truth's CRS (in place): map CRSs are reprojected (a warning
    names both), pixel vs map coordinates raise :class:`ScoreInputError`. Returns that CRS."""
    known = [f for f in truth + proposals if f.crs is not None]
    if not known:
        return None
    target = known[0]
    for side in (truth, proposals):
        for k, f in enumerate(side):
            if f.crs is None or f.crs == target.crs:
                continue
            if PIXEL in (f.crs, target.crs):
                raise ScoreInputError(
                    f"{f.path} is in {_describe(f.crs)} but {target.path} in "
                    f"{_describe(target.crs)}: pixel and map coordinates cannot be compared "
                    "(score pixel CSVs against pixel CSVs, or map GeoJSON against map GeoJSON)")
            if _same_crs(f.crs, target.crs):
                continue
            side[k] = _reproject(f, target.crs)
            warnings.append(f"{f.path}: reprojected from {f.crs} to {target.crs} "
                            f"(the CRS of {target.path})")
    return target.crs


def area_to_pixels(geoms: np.ndarray, area: np.ndarray, units: str, metres: float,
                    gsd: float) -> np.ndarray:
    """Areas in pixels of ``gsd`` metres: as they are for pixel inputs; m2 / gsd^2 for
    projected CRSs; for lon/lat degrees, deg2 * (metres per degree)^2 * cos(latitude of the
    centroid) / gsd^2 (the local equirectangular scale; < 0.1 % off at tile size)."""
    if units == "pixel" or not len(area):
        return area
    if units == "metre":
        return area * (metres / gsd) ** 2
    lat = shapely.get_y(shapely.centroid(geoms))
    return area * (metres / gsd) ** 2 * np.cos(np.radians(np.nan_to_num(lat)))




def crs_name(crs) -> str | None:
    """GeoJSON ``crs`` name for a CRS (string such as ``"EPSG:32616"`` or a rasterio CRS).

    EPSG:4326 (written lon, lat) -> ``urn:ogc:def:crs:OGC:1.3:CRS84``; EPSG:n ->
    ``urn:ogc:def:crs:EPSG::n``; anything else -> its string form.
    """
    if crs is None:
        return None
    text = crs if isinstance(crs, str) else (crs.to_string() if hasattr(crs, "to_string") else str(crs))
    match = re.fullmatch(r"\s*(?:EPSG|epsg):(\d+)\s*", text)
    if match:
        code = int(match.group(1))
        return "urn:ogc:def:crs:OGC:1.3:CRS84" if code == 4326 else f"urn:ogc:def:crs:EPSG::{code}"
    return text


def crs_member_name(crs) -> str | None:
    """``crs.properties.name`` of a GeoJSON ``crs`` member; None when absent or mistyped."""
    props = crs.get("properties") if isinstance(crs, dict) else None
    name = props.get("name") if isinstance(props, dict) else None
    return name if isinstance(name, str) else None


