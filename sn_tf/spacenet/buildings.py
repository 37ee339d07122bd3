"""SpaceNet buildings and their files: the :class:`Building` record, tile ids, the writers.

The one record type every producer (the polygon head, ``sn_tf.head.polygons``) and consumer
(the metric, ``sn_tf.spacenet.scoring``) of buildings shares, the tile id found in a file name,
and the SpaceNet submission CSV and GeoJSON writers (readers: ``sn_tf.spacenet.scoring``).
numpy + shapely only, so the metric imports it cheaply. Coordinate conventions: BUILD_NOTES.md
section 1 (pixel x = column, y = row, origin at the top-left corner of the top-left pixel).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

from sn_tf.spacenet.geo import pixel_to_map, polygon_parts

# SpaceNet tile id inside a file name, e.g. "RGB-PanSharpen_AOI_5_Khartoum_img924.tif".
TILE_ID_RE = re.compile(r"AOI_\d+_[A-Za-z]+_img\d+")

CSV_HEADER = "ImageId,BuildingId,PolygonWKT_Pix,Confidence"


@dataclasses.dataclass(frozen=True)
class Building:
    """One building (truth or proposal) of one image.

    Attributes:
      image_id: tile id, e.g. ``"AOI_2_Vegas_img3457"`` (no image-type prefix).
      polygon: shapely geometry in pixel coordinates (x=col, y=row) or map coordinates. An EMPTY
        geometry (or ``None``) adds no building; it only registers the image (a tile with no
        buildings). Readers may also return a MultiPolygon proposal, which scores as one
        building; the writers split MultiPolygons into one row per part.
      confidence: score used to order proposals (higher first); 1.0 for truth.
      building_id: optional id from the source file (informational; writers renumber).
    """

    image_id: str
    polygon: object
    confidence: float = 1.0
    building_id: int | None = None

    @property
    def is_empty(self) -> bool:
        """True when this record only registers its image (no polygon)."""
        return self.polygon is None or self.polygon.is_empty


# ----------------------------------------------------------------------------------------------
# Names and transforms


def tile_id_from_name(name: str | os.PathLike) -> str:
    """Tile id (``AOI_<n>_<City>_img<N>``) found in a file name, else the file stem.

    >>> tile_id_from_name("/x/RGB-PanSharpen_AOI_5_Khartoum_img924.tif")
    'AOI_5_Khartoum_img924'
    """
    base = os.path.basename(os.fspath(name))
    match = TILE_ID_RE.search(base)
    if match:
        return match.group(0)
    stem = base
    for suffix in (".geojson", ".json", ".csv", ".tif", ".tiff"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return os.path.splitext(stem)[0]


# ----------------------------------------------------------------------------------------------
# Writers


def polygon_wkt(polygon: Polygon, holes: str = "keep", decimals: int | None = None) -> str:
    """SpaceNet WKT of one Polygon: ``POLYGON ((x y, ...),(x y, ...))``, 2D.

    Rings are separated by ``),(`` with no space (what the official tester parses);
    ``holes="drop"`` writes the exterior ring only. Empty -> ``POLYGON EMPTY``.
    """
    if holes not in ("keep", "drop"):
        raise ValueError(f"holes must be 'keep' or 'drop', got {holes!r}")
    if polygon.is_empty:
        return "POLYGON EMPTY"
    return wkt_texts([polygon], holes, decimals)[0]


def _rows(buildings: Iterable[Building], image_ids: Sequence[str] | None):
    """(image_id, building_id, polygon or None, confidence) rows, grouped by image.

    Images keep their first-appearance order (then ``image_ids`` order for the rest); each
    building's Polygon parts get consecutive BuildingIds from 0 per image; images without a
    polygon get one ``(image_id, -1, None, 1.0)`` row.
    """
    per_image: dict[str, list[tuple[Polygon, float]]] = {}
    for b in buildings:
        parts = per_image.setdefault(str(b.image_id), [])
        for part in polygon_parts(b.polygon):
            parts.append((part, float(b.confidence)))
    for image_id in image_ids or ():
        per_image.setdefault(str(image_id), [])
    for image_id, parts in per_image.items():
        if not parts:
            yield image_id, -1, None, 1.0
        for k, (part, conf) in enumerate(parts):
            yield image_id, k, part, conf


def write_spacenet_csv(buildings: Iterable[Building], path: str | os.PathLike,
                       image_ids: Sequence[str] | None = None, holes: str = "keep",
                       decimals: int | None = None) -> int:
    """Write a SpaceNet submission CSV; returns the number of data rows written.

    Header ``ImageId,BuildingId,PolygonWKT_Pix,Confidence``; WKT in double quotes; polygons
    must be in PIXEL coordinates. MultiPolygons (and collections) are split into one row per
    Polygon part, never written as MULTIPOLYGON. Pass the full list of tile ids in
    ``image_ids`` to get an ``ImageId,-1,POLYGON EMPTY,1`` row for each tile without buildings.
    ``decimals``: None = shortest exact float text, else fixed decimals (SpaceNet uses 2).
    """
    rows = list(_rows(buildings, image_ids))
    for image_id in {r[0] for r in rows}:
        if "," in image_id or '"' in image_id:
            raise ValueError(f"image id {image_id!r} contains a comma or quote")
    texts = wkt_texts([r[2] for r in rows], holes, decimals)
    lines = [f'{image_id},{bid},"{text}",{float(conf)!r}' if polygon is not None
             else f"{image_id},{bid},POLYGON EMPTY,{float(conf)!r}"
             for (image_id, bid, polygon, conf), text in zip(rows, texts)]
    with open(path, "w", newline="") as f:
        f.write(CSV_HEADER + "\n")
        if lines:
            f.write("\n".join(lines) + "\n")
    return len(lines)


def wkt_texts(polygons: Sequence, holes: str = "keep", decimals: int | None = None) -> list:
    """:func:`polygon_wkt` of many Polygons at once; ``None`` entries give None.

    Coordinates: shortest round-trip text (``repr``, "3" for 3.0; decimals None) or fixed
    decimals, 2D, no ``-0``; rings joined by ``),(``. The rings and coordinates come out of
    GEOS in one vectorised call each; only the number formatting is Python (GEOS's own WKT
    writer does not round-trip every float exactly).
    """
    if holes not in ("keep", "drop"):
        raise ValueError(f"holes must be 'keep' or 'drop', got {holes!r}")
    out = [None] * len(polygons)
    index = [i for i, g in enumerate(polygons) if g is not None]
    if not index:
        return out
    geoms = np.asarray([polygons[i] for i in index], dtype=object)
    if holes == "keep":
        rings, ring_owner = shapely.get_rings(geoms, return_index=True)
    else:
        rings, ring_owner = shapely.get_exterior_ring(geoms), np.arange(len(geoms))
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    coords = coords + 0.0  # -0.0 -> 0.0
    flat = coords.ravel()
    if decimals is None and np.array_equal(flat, np.round(flat)) and np.abs(flat).max() < 2 ** 52:
        numbers = list(map(str, flat.astype(np.int64).tolist()))  # pixel corners: integers
    elif decimals is None:
        numbers = [t[:-2] if t.endswith(".0") else t for t in map(repr, flat.tolist())]
    else:
        fmt = f"{{:.{int(decimals)}f}}"
        numbers = [fmt.format(v) for v in flat.tolist()]
        numbers = ["0" if float(t) == 0 and t.startswith("-") else t for t in numbers]
    points = [f"{x} {y}" for x, y in zip(numbers[::2], numbers[1::2])]
    ring_end = np.cumsum(np.bincount(coord_ring, minlength=len(rings))).tolist()
    ring_text = ["(" + ", ".join(points[a:b]) + ")"
                 for a, b in zip([0] + ring_end[:-1], ring_end)]
    per_polygon: list[list[str]] = [[] for _ in index]
    for owner, text in zip(ring_owner.tolist(), ring_text):
        per_polygon[owner].append(text)
    for i, (k, texts) in enumerate(zip(index, per_polygon)):
        out[k] = "POLYGON (" + ",".join(texts) + ")" if texts else "POLYGON EMPTY"
    return out


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


def geojson_feature_collection(buildings: Iterable[Building], transform=None, crs=None) -> dict:
    """GeoJSON FeatureCollection dict of the buildings' Polygon parts.

    With ``transform``, the (pixel) polygons are mapped to map coordinates; without it they are
    written as they are. Properties: ``image_id``, ``building_id`` (0.. per image, as in the
    CSV), ``confidence``. ``crs`` adds a named ``crs`` member (see :func:`crs_name`).
    """
    features = []
    for image_id, bid, polygon, conf in _rows(buildings, None):
        if polygon is None:
            continue
        if transform is not None:
            polygon = pixel_to_map(polygon, transform)
        features.append({
            "type": "Feature",
            "properties": {"image_id": image_id, "building_id": bid, "confidence": conf},
            "geometry": shapely.geometry.mapping(polygon),
        })
    collection = {"type": "FeatureCollection"}
    name = crs_name(crs)
    if name is not None:
        collection["crs"] = {"type": "name", "properties": {"name": name}}
    collection["features"] = features
    return collection


def write_geojson(buildings: Iterable[Building], path: str | os.PathLike, transform=None,
                  crs=None) -> int:
    """Write :func:`geojson_feature_collection` to ``path``; returns the number of features.

    The text is assembled from GEOS's GeoJSON writer (vectorised), not ``json.dump`` of
    dicts (~5x faster); ``json.load`` of the file equals the collection.
    """
    rows = [r for r in _rows(buildings, None) if r[2] is not None]
    geoms = np.asarray([r[2] for r in rows], dtype=object)
    if transform is not None and len(rows):
        geoms = pixel_to_map(geoms, transform)
    geometry = shapely.to_geojson(geoms) if len(rows) else []
    ids = {image_id: json.dumps(image_id) for image_id in {r[0] for r in rows}}
    features = [f'{{"type": "Feature", "properties": {{"image_id": {ids[image_id]}, '
                f'"building_id": {bid}, "confidence": {json.dumps(float(conf))}}}, '
                f'"geometry": {text}}}'
                for (image_id, bid, _, conf), text in zip(rows, geometry)]
    head = '{"type": "FeatureCollection", '
    name = crs_name(crs)
    if name is not None:
        head += f'"crs": {{"type": "name", "properties": {{"name": {json.dumps(name)}}}}}, '
    with open(path, "w") as f:
        f.write(head + '"features": [' + ", ".join(features) + "]}\n")
    return len(features)
