"""Readers of building records: SpaceNet CSVs, GeoJSON files, folders of them.

:func:`read_buildings` returns :class:`~sn_tf.spacenet.buildings.Building` records; with
``on_error="raise"`` a malformed row or feature raises :class:`SpaceNetFormatError` naming the
file and row, with ``"skip"`` it is skipped and reported as a :class:`ReadIssue`.
:func:`read_files` also gives each file's coordinate system (``sn_tf.spacenet.crs``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib

import numpy as np
import shapely

from sn_tf.spacenet.buildings import (CONFIDENCE_KEYS, CSV_SUFFIXES, GEOJSON_SUFFIXES, IMAGE_ID_KEYS, Building, tile_id_from_name)
from sn_tf.spacenet.crs import PIXEL, SourceFile, crs_key, crs_member_name
from sn_tf.utils.errors import SnTfError



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
        name = crs_member_name(data.get("crs"))
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


