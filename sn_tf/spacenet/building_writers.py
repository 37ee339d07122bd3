"""Writers of building records: SpaceNet submission CSV (``PolygonWKT_Pix``) and GeoJSON.

Pixel polygons are written as SpaceNet's WKT (:func:`wkt_texts`: exact float round trip), GeoJSON
in pixel coordinates (with sn_tf's pixel CRS, ``sn_tf.spacenet.crs.PIXEL_CRS_WKT``) or, with a
``transform``, in map coordinates. MultiPolygons are split into one row (feature) per part.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

from sn_tf.spacenet.buildings import CSV_HEADER, Building
from sn_tf.spacenet.crs import crs_name
from sn_tf.spacenet.geo import pixel_to_map, polygon_parts



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
    fast = _integer_wkt(geoms) if holes == "keep" and decimals is None else None
    if fast is not None:
        for k, text in zip(index, fast):
            out[k] = text
        return out
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


def _integer_wkt(geoms: np.ndarray) -> list | None:
    """SpaceNet WKT (str list [N]) of 2D Polygons (object [N]) whose coordinates are all
    integers below 2**52 (pixel corners), from GEOS's WKT writer at full precision (one
    vectorised call, ~4x faster than formatting in Python); None when any is not such a
    Polygon. GEOS writes those integers exactly, as ``str(int)``, and -0 as 0; only its ring
    separator ``), (`` becomes SpaceNet's ``),(``."""
    if not np.all(shapely.get_type_id(geoms) == 3) or shapely.has_z(geoms).any():
        return None
    flat = shapely.get_coordinates(geoms).ravel()
    if flat.size and not (np.array_equal(flat, np.round(flat)) and np.abs(flat).max() < 2 ** 52):
        return None
    texts = shapely.to_wkt(geoms, rounding_precision=-1, trim=True).tolist()
    return [text.replace("), (", "),(") for text in texts]


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
                f'"building_id": {bid}, "confidence": {_json_float(conf)}}}, '
                f'"geometry": {text}}}'
                for (image_id, bid, _, conf), text in zip(rows, geometry)]
    head = '{"type": "FeatureCollection", '
    name = crs_name(crs)
    if name is not None:
        head += f'"crs": {{"type": "name", "properties": {{"name": {json.dumps(name)}}}}}, '
    with open(path, "w") as f:
        f.write(head + '"features": [' + ", ".join(features) + "]}\n")
    return len(features)


def _json_float(value: float) -> str:
    """``json.dumps(float(value))``: the shortest round-trip repr for finite values (what
    ``json`` writes, without its per-call overhead), ``NaN`` / ``Infinity`` otherwise."""
    value = float(value)
    return repr(value) if math.isfinite(value) else json.dumps(value)
