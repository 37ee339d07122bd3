"""SpaceNet buildings and their files: the :class:`Building` record, tile ids, cities, I/O.

The one record type every producer (the polygon head, ``sn_tf.head``) and consumer (the
metric, ``sn_tf.spacenet.scoring``) of buildings shares, the tile id found in a file name and
its city (:func:`city_of`), the SpaceNet submission CSV and GeoJSON writers, and the readers
(:func:`read_buildings`: SpaceNet CSVs, GeoJSON files or folders of them; malformed rows raise
:class:`SpaceNetFormatError` or are skipped as :class:`ReadIssue`). numpy + shapely only, so
the metric imports it cheaply. Coordinate conventions: BUILD_NOTES.md
section 1 (pixel x = column, y = row, origin at the top-left corner of the top-left pixel).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import re
from typing import Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

from sn_tf.spacenet.geo import pixel_to_map, polygon_parts
from sn_tf.utils.errors import SnTfError

# SpaceNet tile id inside a file name, e.g. "RGB-PanSharpen_AOI_5_Khartoum_img924.tif".
TILE_ID_RE = re.compile(r"AOI_\d+_[A-Za-z]+_img\d+")

CSV_HEADER = "ImageId,BuildingId,PolygonWKT_Pix,Confidence"
GEOJSON_SUFFIXES = (".geojson", ".json")
CSV_SUFFIXES = (".csv",)
CONFIDENCE_KEYS = ("confidence", "Confidence", "conf", "score")
IMAGE_ID_KEYS = ("image_id", "ImageId")


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


# ----------------------------------------------------------------------------------------------
# Readers


class SpaceNetFormatError(SnTfError, ValueError):
    """A truth/proposal file cannot be read; the message names the file and line/feature."""


@dataclasses.dataclass(frozen=True)
class ReadIssue:
    """A skipped malformed row: ``path``, ``where`` (``"line 12"`` or ``"feature 3"``), problem."""

    path: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.message}"


class _Reporter:
    """Raises or records read problems according to ``on_error`` ("raise" | "skip")."""

    def __init__(self, on_error: str, issues: list | None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error = on_error
        self.issues = issues if issues is not None else []

    def __call__(self, path, where: str, message: str) -> None:
        issue = ReadIssue(os.fspath(path), where, message)
        if self.on_error == "raise":
            raise SpaceNetFormatError(str(issue))
        self.issues.append(issue)


def _parse_float(text: str) -> float | None:
    """Finite float from text, else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _parse_int(text: str) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def _csv_columns(header: list[str] | None) -> tuple[int, int, int, int | None, bool]:
    """(image, building, geometry, 4th/confidence column or None, 4th column is Confidence).

    Geometry = ``PolygonWKT_Pix`` when present, else ``PolygonWKT_Geo``. The confidence is the
    ``Confidence`` column; without one, a remaining 4th column (e.g. ``PolygonWKT_Geo`` holding a
    placeholder ``1`` in SpaceNet samples) is used when numeric, else 1.0.
    """
    if header is None:
        return 0, 1, 2, 3, False
    names = [h.strip().lower() for h in header]
    image = names.index("imageid")
    building = names.index("buildingid") if "buildingid" in names else None
    if "polygonwkt_pix" in names:
        geometry = names.index("polygonwkt_pix")
    elif "polygonwkt_geo" in names:
        geometry = names.index("polygonwkt_geo")
    else:
        geometry = None
    if geometry is None or building is None:
        raise KeyError("header needs ImageId, BuildingId and PolygonWKT_Pix (or PolygonWKT_Geo)")
    if "confidence" in names:
        return image, building, geometry, names.index("confidence"), True
    rest = [k for k in range(len(names)) if k not in (image, building, geometry)]
    return image, building, geometry, (rest[0] if rest else None), False


def read_spacenet_csv(path: str | os.PathLike, on_error: str = "raise",
                      issues: list | None = None, info: dict | None = None) -> list[Building]:
    """Read a SpaceNet truth or submission CSV into :class:`Building` records (file order).

    Accepts headers ``ImageId,BuildingId,PolygonWKT_Pix,Confidence`` and
    ``ImageId,BuildingId,PolygonWKT_Pix,PolygonWKT_Geo`` (numeric 4th column = confidence,
    default 1.0), a missing header (standard column order), ``#`` comment lines, blank lines,
    z coordinates (dropped), ``-0.0``. ``POLYGON EMPTY`` rows and BuildingId -1 rows give a
    record with an empty polygon (image registration only). Polygons are returned as written
    (2D, not repaired). See the module docstring for ``on_error``; a line that is not UTF-8
    text is malformed too (named by file and line). ``info`` (a dict), when given, receives
    ``"crs"``: ``PIXEL`` for ``PolygonWKT_Pix`` (or no header), ``"EPSG:4326"`` when only
    ``PolygonWKT_Geo`` is there.
    """
    report = _Reporter(on_error, issues)
    rows = []  # (line number, image id, building id text, wkt, confidence text)
    header_done = False
    columns = _csv_columns(None)
    geo_only = False
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for lineno, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            report(path, f"line {lineno}", f"not UTF-8 text (byte 0x{raw[err.start]:02x} "
                   f"at column {err.start + 1})")
            continue
        text = line.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        fields = next(csv.reader([text]))
        if not header_done:
            header_done = True
            if fields[0].strip().lower() == "imageid":
                try:
                    columns = _csv_columns(fields)
                except (KeyError, ValueError) as err:
                    raise SpaceNetFormatError(f"{os.fspath(path)}: line {lineno}: bad header: "
                                              f"{err.args[0]}") from None
                n_columns = len(fields)
                geo_only = "polygonwkt_pix" not in [h.strip().lower() for h in fields]
                continue
            n_columns = None
        rows.append((lineno, fields, n_columns))
    if info is not None:
        info["crs"] = "EPSG:4326" if geo_only else PIXEL
    image_col, bid_col, geom_col, conf_col, conf_named = columns
    wkts = [r[1][geom_col].strip() if len(r[1]) > geom_col else "" for r in rows]
    geometries = shapely.from_wkt(np.array(wkts, dtype=object), on_invalid="ignore") if wkts else []
    out = []
    for (lineno, fields, n_columns), wkt, geometry in zip(rows, wkts, geometries):
        where = f"line {lineno}"
        if len(fields) < 3 or (n_columns is not None and len(fields) != n_columns):
            report(path, where, f"expected {n_columns or '3 or 4'} columns, got {len(fields)}")
            continue
        image_id = fields[image_col].strip()
        if not image_id:
            report(path, where, "empty ImageId")
            continue
        if geometry is None:
            report(path, where, f"cannot parse WKT {wkt[:60]!r}")
            continue
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            report(path, where, f"expected a POLYGON, got {geometry.geom_type.upper()}")
            continue
        confidence = 1.0
        if conf_col is not None and conf_col < len(fields) and fields[conf_col].strip():
            value = _parse_float(fields[conf_col].strip())
            if value is None and conf_named:
                report(path, where, f"Confidence {fields[conf_col]!r} is not a finite number")
                continue
            confidence = 1.0 if value is None else value
        building_id = _parse_int(fields[bid_col].strip())
        if building_id == -1 or geometry.is_empty:
            out.append(Building(image_id, None, confidence, building_id))
        else:
            out.append(Building(image_id, shapely.force_2d(geometry), confidence, building_id))
    return out


def _feature_confidence(properties: dict) -> float | None:
    """Confidence from a GeoJSON feature's properties (1.0 when absent; None when not numeric)."""
    for key in CONFIDENCE_KEYS:
        if key in properties and properties[key] is not None:
            value = properties[key]
            return _parse_float(value) if not isinstance(value, bool) else None
    return 1.0


def read_geojson(path: str | os.PathLike, image_id: str | None = None, on_error: str = "raise",
                 issues: list | None = None, info: dict | None = None) -> list[Building]:
    """Read a GeoJSON file (FeatureCollection, Feature or bare geometry) into records.

    The image id of a feature is its ``image_id``/``ImageId`` property when present, else
    ``image_id`` when given, else the tile id in the file name (``AOI_\\d+_[A-Za-z]+_img\\d+``),
    else the file stem. A zero-byte or feature-less file registers its image with no
    buildings. Confidence from the ``confidence``/``Confidence``/``conf``/``score`` property,
    default 1.0. Polygons are returned as written (2D, not repaired); coordinates are whatever
    the file holds (no reprojection). ``info`` (a dict), when given, receives ``"crs"``: the
    file's ``crs`` member (:func:`crs_key`), ``"EPSG:4326"`` without one (RFC 7946), or
    ``PIXEL`` when the file has no ``crs`` member and coordinates outside longitude/latitude
    range (pixel GeoJSON written before sn_tf marked it; ``"note"`` then says so).
    """
    report = _Reporter(on_error, issues)
    file_id = image_id if image_id is not None else tile_id_from_name(path)
    data = pathlib.Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        report(path, f"line {line}", f"not UTF-8 text (byte 0x{data[err.start]:02x})")
        return []
    if info is not None:
        info["crs"] = "EPSG:4326"
    if not text.strip():
        return [Building(file_id, None)]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        report(path, f"line {err.lineno}", f"invalid JSON: {err.msg}")
        return []
    if not isinstance(data, dict):
        report(path, "top level", "expected a GeoJSON object")
        return []
    if data.get("type") == "FeatureCollection":
        features = data.get("features") or []
        if not isinstance(features, list):
            report(path, "features", f"expected a JSON array, got {type(features).__name__}")
            return []
    elif data.get("type") == "Feature":
        features = [data]
    else:
        features = [{"type": "Feature", "properties": {}, "geometry": data}]
    out, own_ids = [], False
    for k, feature in enumerate(features):
        where = f"feature {k}"
        if feature is not None and not isinstance(feature, dict):
            report(path, where, f"expected a JSON object, got {type(feature).__name__}")
            continue
        properties = (feature.get("properties") if isinstance(feature, dict) else None) or {}
        if not isinstance(properties, dict):
            report(path, where, f"properties: expected a JSON object, got "
                   f"{type(properties).__name__}")
            properties = {}
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        fid = next((str(properties[key]) for key in IMAGE_ID_KEYS if properties.get(key)), None)
        own_ids |= fid is not None
        if geometry is None:
            continue
        try:
            shape = shapely.geometry.shape(geometry)
        except Exception as err:  # shapely raises several types for bad coordinates
            report(path, where, f"bad geometry: {err}")
            continue
        if shape.geom_type not in ("Polygon", "MultiPolygon"):
            report(path, where, f"expected a Polygon, got {shape.geom_type}")
            continue
        confidence = _feature_confidence(properties)
        if confidence is None:
            report(path, where, "confidence is not a finite number")
            continue
        out.append(Building(fid or file_id, None if shape.is_empty else shapely.force_2d(shape),
                            confidence))
    if not own_ids:
        out.insert(0, Building(file_id, None))
    if info is not None:
        name = _crs_member_name(data.get("crs"))
        if name is None and data.get("crs") is not None:
            report(path, "crs", "expected a JSON object with properties.name (a string)")
        if name:
            info["crs"] = crs_key(name)
        else:
            bounds = [r.polygon.bounds for r in out if not r.is_empty]
            if bounds:
                b = np.array(bounds)
                if (b[:, [0, 2]].min() < -180 or b[:, [0, 2]].max() > 180
                        or b[:, [1, 3]].min() < -90 or b[:, [1, 3]].max() > 90):
                    info["crs"] = PIXEL
                    info["note"] = (f"{os.fspath(path)}: no 'crs' member and coordinates outside "
                                    "longitude/latitude range: read as pixel coordinates")
    return out


def _crs_member_name(crs) -> str | None:
    """``crs.properties.name`` of a GeoJSON ``crs`` member; None when absent or mistyped."""
    props = crs.get("properties") if isinstance(crs, dict) else None
    name = props.get("name") if isinstance(props, dict) else None
    return name if isinstance(name, str) else None


def _data_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """CSV and GeoJSON files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in GEOJSON_SUFFIXES + CSV_SUFFIXES)


def read_files(path: str | os.PathLike, on_error: str = "raise",
               issues: list | None = None) -> list["SourceFile"]:
    """:class:`SourceFile` records + CRS of each file of ``path`` (a file, or a folder of
    them sorted by name); raises as :func:`read_buildings`."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _data_files(path)
        if not files:
            raise SpaceNetFormatError(f"{path}: folder holds no .csv, .geojson or .json file")
        return [f for file in files for f in read_files(file, on_error, issues)]
    suffix = path.suffix.lower()
    info: dict = {}
    if suffix in CSV_SUFFIXES:
        records = read_spacenet_csv(path, on_error, issues, info)
    elif suffix in GEOJSON_SUFFIXES:
        records = read_geojson(path, None, on_error, issues, info)
    else:
        raise SpaceNetFormatError(f"{path}: unknown file type (expected .csv, .geojson or .json)")
    return [SourceFile(str(path), records, info.get("crs"), info.get("note"))]


def read_buildings(path: str | os.PathLike, on_error: str = "raise",
                   issues: list | None = None) -> list[Building]:
    """Read a SpaceNet CSV, a GeoJSON file, or a folder of them (sorted by file name).

    Coordinates are returned as written (see :func:`read_files` for each file's CRS).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      SpaceNetFormatError: unknown file type, empty folder, or a malformed row with
        ``on_error="raise"``.
    """
    return [r for f in read_files(path, on_error, issues) for r in f.records]


# ----------------------------------------------------------------------------------------------
# Coordinate systems and units

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


def _units(crs) -> tuple[str, float]:
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


def _to_common_crs(truth: list, proposals: list, warnings: list) -> str | None:
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


def _area_to_pixels(geoms: np.ndarray, area: np.ndarray, units: str, metres: float,
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


# ----------------------------------------------------------------------------------------------
# Cities


def city_of(image_id: str) -> str:
    """City of a tile id: its first three ``_`` tokens (``AOI_2_Vegas_img1`` -> ``AOI_2_Vegas``)."""
    return "_".join(image_id.split("_")[:3])
