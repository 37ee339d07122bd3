"""Tiny SpaceNet-2-layout folders with exactly known polygons, for converter tests.

``make_sn2_aoi`` writes ``AOI_<n>_<City>_Train/{PAN,MUL,MUL-PanSharpen,RGB-PanSharpen}`` GeoTIFFs
(EPSG:4326, the SpaceNet 2 pixel size scaled to ``size``) and label GeoJSONs whose pixel
polygons are returned, so tests can compare converted labels with exact expectations.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin

TILE_DEG = 0.001755
BANDS = {"PAN": 1, "MUL": 8, "MUL-PanSharpen": 8, "RGB-PanSharpen": 3}


def tile_polygons(n: int, size: int) -> list:
    """Pixel polygons (on the ``size`` grid) of tile number ``n``: n % 4 rectangles."""
    k = n % 4
    return [shapely.box(10 + 25 * i, 12 + 7 * i, 30 + 25 * i, 30 + 7 * i) for i in range(k)]


def geojson_text(polys_map, crs="urn:ogc:def:crs:OGC:1.3:CRS84") -> str:
    feats = [{"type": "Feature", "properties": {"OBJECTID": i},
              "geometry": {"type": "Polygon",
                           "coordinates": [[[x, y, 0.0] for x, y in p.exterior.coords]]}}
             for i, p in enumerate(polys_map)]
    return json.dumps({"type": "FeatureCollection",
                       "crs": {"type": "name", "properties": {"name": crs}}, "features": feats})


def make_sn2_aoi(root, aoi="AOI_2_Vegas", numbers=(1, 2, 3, 5, 8, 13), size=130,
                 types=tuple(BANDS), seed=0) -> dict:
    """Write one SN2-layout AOI; returns {tile_id: pixel polygons on the size x size grid}."""
    root = pathlib.Path(root)
    folder = root / f"{aoi}_Train"
    rng = np.random.default_rng(seed)
    expected = {}
    for t in types:
        (folder / t).mkdir(parents=True, exist_ok=True)
    (folder / "geojson" / "buildings").mkdir(parents=True, exist_ok=True)
    for n in numbers:
        tile_id = f"{aoi}_img{n}"
        x0, y0 = -115.30 + n * TILE_DEG, 36.20
        for t in types:
            px = size if t != "MUL" else max(1, round(size * 163 / 650))
            transform = from_origin(x0, y0, TILE_DEG / px, TILE_DEG / px)
            with rasterio.open(folder / t / f"{t}_{tile_id}.tif", "w", driver="GTiff",
                               width=px, height=px, count=BANDS[t], dtype="uint16",
                               crs="EPSG:4326", transform=transform) as ds:
                ds.write(rng.integers(0, 2048, (BANDS[t], px, px), dtype=np.uint16))
        polys = tile_polygons(n, size)
        pan_t = from_origin(x0, y0, TILE_DEG / size, TILE_DEG / size)
        from sn_tf.spacenet.geo import affine_to_gdal, pixel_to_map

        polys_map = pixel_to_map(polys, affine_to_gdal(pan_t))
        (folder / "geojson" / "buildings" / f"buildings_{tile_id}.geojson").write_text(
            geojson_text(polys_map))
        expected[tile_id] = polys
    return expected
