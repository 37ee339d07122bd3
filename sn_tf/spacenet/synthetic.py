"""Synthetic SpaceNet building dataset in the exact SpaceNet on-disk layouts.

``python -m sn_tf.sample --output_dir=DIR`` (or :func:`write_sample`) writes a small,
deterministic (for a seed) dataset that every other part of sn_tf can run on without the real
download:

* SpaceNet 2 AOIs (AOI_2..5)::

    AOI_<n>_<City>_Train/PAN/PAN_<tile>.tif                        650x650x1 uint16 (or float64)
    AOI_<n>_<City>_Train/MUL/MUL_<tile>.tif                        163x163x8 uint16
    AOI_<n>_<City>_Train/MUL-PanSharpen/MUL-PanSharpen_<tile>.tif  650x650x8 uint16
    AOI_<n>_<City>_Train/RGB-PanSharpen/RGB-PanSharpen_<tile>.tif  650x650x3 uint16 (R, G, B)
    AOI_<n>_<City>_Train/geojson/buildings/buildings_<tile>.geojson
    AOI_<n>_<City>_Train/summaryData/AOI_<n>_<City>_Train_Building_Solution.csv

  tile id ``AOI_<n>_<City>_img<N>``; EPSG:4326; 650 px of exactly 2.7e-6 deg; tiles on a
  regular per-AOI grid (step 0.001755 deg) anchored at the real SpaceNet 2 grid origin.
* AOI_1 Rio (SpaceNet 1)::

    AOI_1_Rio_Train/processedBuildingLabels/3-Band/3band_<tile>.tif   438|439 x 406 x 3 uint8
    AOI_1_Rio_Train/processedBuildingLabels/8-band/8band_<tile>.tif   110 x 102 x 8 uint16
    AOI_1_Rio_Train/processedBuildingLabels/vectordata/geojson/Geo_<tile>.geojson
    AOI_1_Rio_Train/processedBuildingLabels/vectordata/summarydata/
        AOI_1_Rio_polygons_solution_3band.csv

  tile id ``AOI_1_RIO_img<N>``; the scene mosaics (``AOI_1_Rio_Train/3-Band``, ``8-band``) are
  omitted (each folder holds only a README.txt saying so).

Scenes are composed in pixel coordinates of the label grid (650 px at 0.3 m for SpaceNet 2,
the 3band grid at ~0.5 m for Rio; x = column, y = row, origin at the top-left pixel corner):
textured bare soil, vegetation patches and trees, asphalt roads, water bodies, buildings
(rotated rectangles, L shapes, large flat blocks and row houses with shared walls) with several
roof materials, and the shadow each building casts on the ground. The 8-band reflectance
(Coastal, Blue, Green, Yellow, Red, Red Edge, NIR1, NIR2) is blurred by a small PSF, scaled to
11-bit DN and given sensor noise; MUL / Rio 8band are exact area averages of that render,
PAN a weighted sum of the visible and NIR bands, RGB-PanSharpen bands (5, 3, 2).

Labels follow SpaceNet: CRS84 lon/lat Polygon rings with z = 0, buildings clipped to the tile,
a FeatureCollection without features for a tile without buildings, a few deliberately invalid
(self-intersecting) rings; the summary CSV has the pixel ring (reversed order, 2 decimals,
clipped to the grid) and the geographic ring of every building, and ``-1,POLYGON EMPTY`` rows.

This module writes the files (``write_sample``); the AOIs, grids and sensor model are in
``synthetic_aois``, the scenes and their render in ``synthetic_scenes``.
"""

from __future__ import annotations

import csv
import json
import pathlib
import shutil

import numpy as np
import rasterio
import shapely
from rasterio.transform import Affine
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from sn_tf.spacenet.synthetic_aois import (BANDS, CRS84_URN, DEFAULT_AOIS, MANIFEST_FORMAT,
                                           MANIFEST_NAME, RIO_8BAND_SIZE, RIO_IMAGE_TYPES,
                                           SN2_IMAGE_TYPES, SN2_MUL_PX, AoiProfile, TileSpec,
                                           aoi_profile, plan_tiles)
from sn_tf.spacenet.synthetic_scenes import Building, SynthTile, synthesize_tile


# ----------------------------------------------------------------------------- files

def image_relpath(prof: AoiProfile, itype: str, tile_id: str) -> str:
    """Path of a tile image relative to the dataset root, per the SpaceNet layouts."""
    if prof.kind == "rio":
        sub = {"3band": "3-Band", "8band": "8-band"}[itype]
        return f"{prof.folder}/processedBuildingLabels/{sub}/{itype}_{tile_id}.tif"
    return f"{prof.folder}/{itype}/{itype}_{tile_id}.tif"


def label_relpath(prof: AoiProfile, tile_id: str) -> str:
    """Path of a tile's building GeoJSON relative to the dataset root."""
    if prof.kind == "rio":
        return f"{prof.folder}/processedBuildingLabels/vectordata/geojson/Geo_{tile_id}.geojson"
    return f"{prof.folder}/geojson/buildings/buildings_{tile_id}.geojson"


def summary_relpath(prof: AoiProfile) -> str:
    """Path of the AOI's summary CSV relative to the dataset root."""
    if prof.kind == "rio":
        return (f"{prof.folder}/processedBuildingLabels/vectordata/summarydata/"
                "AOI_1_Rio_polygons_solution_3band.csv")
    return f"{prof.folder}/summaryData/{prof.folder}_Building_Solution.csv"


def image_grid(spec: TileSpec, itype: str) -> tuple[int, int, Affine]:
    """(width, height, Affine) of image type ``itype`` of a tile; all share one footprint."""
    west, south, east, north = spec.bounds
    if itype == "MUL":
        w = h = SN2_MUL_PX
    elif itype == "8band":
        w, h = RIO_8BAND_SIZE
    else:
        return spec.width, spec.height, spec.transform
    return w, h, Affine((east - west) / w, 0.0, west, 0.0, -(north - south) / h, north)


def write_geotiff(path: pathlib.Path, data: np.ndarray, transform: Affine) -> None:
    """Write [B, H, W] ``data`` as an uncompressed EPSG:4326 GeoTIFF (no nodata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=data.dtype, crs="EPSG:4326", transform=transform) as dst:
        dst.write(data)


def geo_polygon(poly: Polygon, transform: Affine) -> Polygon:
    """Pixel-coordinate polygon -> lon/lat polygon through ``transform``.

    Valid polygons get a clockwise exterior (as in the SpaceNet GeoJSON files); invalid rings
    keep their vertex order.
    """
    a, c, e, f = transform.a, transform.c, transform.e, transform.f
    geo = shapely.transform(poly, lambda xy: np.stack([c + xy[:, 0] * a, f + xy[:, 1] * e], 1))
    return orient(geo, sign=-1.0) if geo.is_valid else geo


def _ring_lonlat(poly: Polygon) -> list[tuple[float, float]]:
    """Exterior ring (closed) as Python floats (lon, lat), z dropped."""
    return [(float(x), float(y)) for x, y in np.asarray(poly.exterior.coords)[:, :2]]


def geojson_text(geo_polys: list[Polygon], buildings: list[Building], gsd_m: float) -> str:
    """SpaceNet-style label GeoJSON (CRS84 lon/lat, z = 0), one feature per line."""
    feats = []
    for k, (poly, b) in enumerate(zip(geo_polys, buildings), start=1):
        px_area = b.label.area
        props = {"OBJECTID": k, "Id": 0, "Name": "None",
                 "Shape_Leng": round(b.label.length * gsd_m, 6),
                 "Shape_Area": round(px_area * gsd_m ** 2, 6),
                 "partialBuilding": 1.0 if b.cut else 0.0,
                 "partialDec": round(b.partial_dec, 6)}
        coords = [[[x, y, 0.0] for x, y in _ring_lonlat(poly)]]
        feats.append({"type": "Feature", "properties": props,
                      "geometry": {"type": "Polygon", "coordinates": coords}})
    head = ('{\n"type": "FeatureCollection",\n'
            f'"crs": {{ "type": "name", "properties": {{ "name": "{CRS84_URN}" }} }},\n\n'
            '"features": [\n')
    body = ",\n".join(json.dumps(f, separators=(", ", ": ")) for f in feats)
    return head + body + "\n]\n}\n"


def _pix_number(v: float, limit: float) -> str:
    """SpaceNet pixel coordinate text: rounded to 2 decimals, then clipped to [0, limit]."""
    r = round(float(v), 2)
    if r < 0:
        r = 0.0
    elif r > limit:
        r = float(limit)
    return repr(r)


def pixel_wkt(geo_poly: Polygon, transform: Affine, width: int, height: int) -> str:
    """``PolygonWKT_Pix``: the lon/lat ring mapped to pixels, REVERSED order, 2 decimals, z = 0."""
    inv = ~transform
    ring = np.asarray(geo_poly.exterior.coords)[::-1, :2]
    xs = inv.a * ring[:, 0] + inv.b * ring[:, 1] + inv.c
    ys = inv.d * ring[:, 0] + inv.e * ring[:, 1] + inv.f
    pts = ",".join(f"{_pix_number(x, width)} {_pix_number(y, height)} 0"
                   for x, y in zip(xs, ys))
    return f"POLYGON (({pts}))"


def geo_wkt(geo_poly: Polygon) -> str:
    """``PolygonWKT_Geo``: the lon/lat ring in file order with z = 0."""
    return "POLYGON ((" + ",".join(f"{x!r} {y!r} 0" for x, y in _ring_lonlat(geo_poly)) + "))"


def summary_rows(spec: TileSpec, geo_polys: list[Polygon]) -> list[list]:
    """Summary-CSV rows of one tile (``-1, POLYGON EMPTY`` when it has no building)."""
    if not geo_polys:
        return [[spec.tile_id, -1, "POLYGON EMPTY", "POLYGON EMPTY"]]
    return [[spec.tile_id, k, pixel_wkt(p, spec.transform, spec.width, spec.height), geo_wkt(p)]
            for k, p in enumerate(geo_polys, start=1)]


def touching_pairs(geo_polys: list[Polygon], tol_deg: float = 1e-9) -> set[int]:
    """0-based indices of polygons that touch another one (within tol) without overlapping."""
    if len(geo_polys) < 2:
        return set()
    arr = np.array([shapely.make_valid(p) for p in geo_polys])
    tree = shapely.STRtree(arr)
    left, right = tree.query(arr, predicate="dwithin", distance=tol_deg)
    out = set()
    for i, j in zip(left, right):
        if i < j:
            overlap = shapely.intersection(arr[i], arr[j]).area
            if overlap <= 1e-3 * min(arr[i].area, arr[j].area):
                out.update((int(i), int(j)))
    return out


def write_tile(root: pathlib.Path, tile: SynthTile) -> tuple[dict, list[list]]:
    """Write a tile's images and label GeoJSON; returns (manifest entry, summary-CSV rows)."""
    spec = tile.spec
    prof = aoi_profile(spec.aoi)
    images = {}
    for itype, data in tile.images.items():
        rel = image_relpath(prof, itype, spec.tile_id)
        write_geotiff(root / rel, data, image_grid(spec, itype)[2])
        images[itype] = rel
    buildings = tile.scene.buildings
    geo_polys = [geo_polygon(b.label, spec.transform) for b in buildings]
    label = label_relpath(prof, spec.tile_id)
    (root / label).parent.mkdir(parents=True, exist_ok=True)
    (root / label).write_text(geojson_text(geo_polys, buildings, spec.gsd_m))
    touching = touching_pairs(geo_polys)
    entry = {
        "tile_id": spec.tile_id, "aoi": spec.aoi, "role": spec.role,
        "images": images, "label": label,
        "bounds": list(spec.bounds),
        "n_buildings": len(buildings),
        "invalid": [k + 1 for k, b in enumerate(buildings) if b.invalid],
        "touching": sorted(k + 1 for k in touching),
        "cut": [k + 1 for k, b in enumerate(buildings) if b.cut],
    }
    return entry, summary_rows(spec, geo_polys)


def write_summary_csv(path: pathlib.Path, rows: list[list]) -> None:
    """SpaceNet summary CSV: ``ImageId,BuildingId,PolygonWKT_Pix,PolygonWKT_Geo``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo"])
        writer.writerows(rows)


def _clear_previous(root: pathlib.Path, folders: list[str]) -> None:
    """Remove AOI folders of an earlier sample in ``root``; refuse to touch foreign data."""
    manifest = root / MANIFEST_NAME
    previous = set()
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        previous = {a["folder"] for a in old.get("aois", [])}
    for folder in folders:
        path = root / folder
        if path.exists() and folder not in previous:
            raise FileExistsError(f"{path} exists and was not written by sn_tf.sample; "
                                  "choose an empty --output_dir")
    for folder in sorted(previous):
        if (root / folder).is_dir() and folder.startswith("AOI_") and folder.endswith("_Train"):
            shutil.rmtree(root / folder)
    manifest.unlink(missing_ok=True)


def _write_mosaic_readmes(root: pathlib.Path, prof: AoiProfile) -> None:
    """Rio only: the scene-mosaic folders, each with a README saying mosaics are omitted."""
    for sub in ("3-Band", "8-band"):
        d = root / prof.folder / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "README.txt").write_text(
            f"Scene mosaics ({sub}) are omitted from the sn_tf synthetic sample; the tiles are in "
            f"processedBuildingLabels/{sub}/.\n")


def write_sample(output_dir, aois=DEFAULT_AOIS, tiles_per_aoi: int | None = None,
                 seed: int = 0, pan_dtype: str = "uint16") -> dict:
    """Write the synthetic dataset under ``output_dir`` and return its manifest.

    aois: AOI names (AOI_1_Rio, AOI_2_Vegas, AOI_3_Paris, AOI_4_Shanghai, AOI_5_Khartoum);
    tiles_per_aoi: tiles per AOI (default 12 per SpaceNet 2 AOI, 6 for Rio); pan_dtype:
    "uint16" or "float64" for PAN. The manifest is also written to
    ``output_dir/sample_manifest.json``; all paths in it are relative to ``output_dir``::

        {"format": "sn_tf.sample/1", "seed": 0, "pan_dtype": "uint16", "bands": [8 names],
         "aois": [{"aoi", "kind" ("sn2"|"rio"), "folder", "image_dirs": {type: dir},
                   "label_dir", "summary_csv", "n_tiles", "n_empty_tiles", "n_buildings",
                   "n_invalid", "n_touching", "n_cut"}],
         "tiles": [{"tile_id", "aoi", "role" ("empty"|"showcase"|"normal"),
                    "images": {type: file}, "label": file,
                    "bounds": [west, south, east, north] (deg), "n_buildings",
                    "invalid": [...], "touching": [...], "cut": [...]}]}

    invalid / touching / cut list BuildingIds (1-based = GeoJSON feature order = summary-CSV
    BuildingId) of self-intersecting rings, buildings sharing a wall with another, and buildings
    clipped by the tile edge. An earlier sample in ``output_dir`` (found through its manifest) is
    replaced; an AOI folder not written by this module raises FileExistsError.
    """
    if pan_dtype not in ("uint16", "float64"):
        raise ValueError(f"pan_dtype must be uint16 or float64, got {pan_dtype!r}")
    aois = list(aois)
    profiles = [aoi_profile(a) for a in aois]
    root = pathlib.Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root, [p.folder for p in profiles])
    specs = plan_tiles(aois, tiles_per_aoi, seed)
    tiles, aoi_entries = [], []
    for prof in profiles:
        rows, entries = [], []
        for spec in (s for s in specs if s.aoi == prof.name):
            entry, tile_rows = write_tile(root, synthesize_tile(spec, seed, pan_dtype))
            entries.append(entry)
            rows += tile_rows
        write_summary_csv(root / summary_relpath(prof), rows)
        if prof.kind == "rio":
            _write_mosaic_readmes(root, prof)
        tiles += entries
        aoi_entries.append(_aoi_entry(prof, entries))
    manifest = {"format": MANIFEST_FORMAT, "seed": seed, "pan_dtype": pan_dtype,
                "bands": list(BANDS), "aois": aoi_entries, "tiles": tiles}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _aoi_entry(prof: AoiProfile, entries: list[dict]) -> dict:
    """Manifest summary of one AOI."""
    types = SN2_IMAGE_TYPES if prof.kind == "sn2" else RIO_IMAGE_TYPES
    return {
        "aoi": prof.name, "kind": prof.kind, "folder": prof.folder,
        "image_dirs": {t: str(pathlib.PurePosixPath(image_relpath(prof, t, "x")).parent)
                       for t in types},
        "label_dir": str(pathlib.PurePosixPath(label_relpath(prof, "x")).parent),
        "summary_csv": summary_relpath(prof),
        "n_tiles": len(entries),
        "n_empty_tiles": sum(e["n_buildings"] == 0 for e in entries),
        "n_buildings": sum(e["n_buildings"] for e in entries),
        "n_invalid": sum(len(e["invalid"]) for e in entries),
        "n_touching": sum(len(e["touching"]) for e in entries),
        "n_cut": sum(len(e["cut"]) for e in entries),
    }


def format_summary(manifest: dict, output_dir, seconds: float | None = None) -> str:
    """Short human-readable summary of a manifest (``seconds``: generation time, if known)."""
    took = f", {seconds:.1f} s" if seconds is not None else ""
    lines = [f"Synthetic SpaceNet sample in {output_dir} (seed {manifest['seed']}, "
             f"PAN {manifest['pan_dtype']}{took})"]
    for a in manifest["aois"]:
        lines.append(
            f"  {a['aoi']:<15} {a['n_tiles']:>3} tiles ({a['n_empty_tiles']} empty)  "
            f"{a['n_buildings']:>4} buildings: {a['n_invalid']} invalid, "
            f"{a['n_touching']} touching, {a['n_cut']} cut by the tile edge  -> {a['folder']}/")
    lines.append(f"  manifest: {pathlib.Path(output_dir) / MANIFEST_NAME}")
    return "\n".join(lines)
