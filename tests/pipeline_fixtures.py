"""Tiny converted SpaceNet-2 datasets with exactly known polygons, for pipeline tests.

``write_dataset`` writes two AOIs in the SpaceNet 2 layout and converts them with
``sn_tf.dataset.converter``:

* AOI_2_Vegas: PAN (1 band), MUL-PanSharpen (8), RGB-PanSharpen (3) on one grid, MUL (8)
  on a 4x coarser grid;
* AOI_3_Paris: PAN and MUL-PanSharpen only.

Tiles have different sizes (all >= 64 and multiples of 4). The MUL-PanSharpen pixels
encode where they come from: band 1 = row, band 2 = column, band 3 = tile number (bands
4..8 and the other types are random), so a test can recover exactly which source pixel
every output pixel of an augmented crop came from. Each tile's buildings (pixel
coordinates, x = column, y = row, origin at the top-left pixel corner) are axis-aligned
rectangles with fractional corners, a rotated rectangle, an L shape, a small building,
one cut by the right tile edge and two row houses sharing a wall;
``Dataset.polygons[tile_id]`` holds them clipped to the tile (as the converter stores
them).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin
from shapely import affinity

from sn_tf.dataset import converter
from sn_tf.dataset import labels
from sn_tf.spacenet import geo

PIXEL_DEG = 2.7e-6
SPLITS = (("train", 0.6), ("val", 0.4))
SIZES = ((96, 96), (80, 112), (100, 84), (64, 72), (88, 88))  # (height, width), cycled
TYPES = {"PAN": 1, "MUL-PanSharpen": 8, "RGB-PanSharpen": 3, "MUL": 8}
PARIS_TYPES = ("PAN", "MUL-PanSharpen")


@dataclasses.dataclass
class Dataset:
    """A converted fixture: folders, and per tile its size, polygons and split."""

    source: pathlib.Path
    converted: pathlib.Path
    info: dict
    sizes: dict  # tile_id -> (height, width)
    polygons: dict  # tile_id -> list of shapely Polygons (pixels, clipped to the tile)
    numbers: dict  # tile_id -> tile number (band 3 of MUL-PanSharpen)
    transforms: dict  # tile_id -> GDAL transform of the label grid
    split: dict  # tile_id -> split name

    def tiles(self, split: str, aoi: str | None = None) -> list[str]:
        """Tile ids of a split (optionally one AOI), sorted."""
        return sorted(t for t, s in self.split.items()
                      if s == split and (aoi is None or t.startswith(aoi)))

    def mask(self, tile_id: str) -> np.ndarray:
        """uint8 [H, W] footprint mask of a tile (pixel-centre rule)."""
        h, w = self.sizes[tile_id]
        return labels.rasterize_mask(self.polygons[tile_id], h, w)

    def distance(self, tile_id: str) -> np.ndarray:
        """float32 [H, W] distance to the per-building boundary (BUILD_NOTES.md labels)."""
        h, w = self.sizes[tile_id]
        inst = labels.rasterize_instances(self.polygons[tile_id], h, w)
        return labels.distance_to_boundary(inst > 0, labels.instance_boundary(inst))


    def contact(self, tile_id: str) -> np.ndarray:
        """uint8 [H, W] contact layer of a tile (``labels.contact_mask``, the converter's
        default radius)."""
        h, w = self.sizes[tile_id]
        return labels.contact_mask(labels.rasterize_instances(self.polygons[tile_id], h, w))


def tile_polygons(number: int, height: int, width: int) -> list:
    """Unclipped pixel polygons of tile ``number`` (varied by the number)."""
    dx, dy = (number * 7) % 11 + 0.3, (number * 5) % 9 + 0.2
    rect = shapely.box(3.3 + dx, 4.6 + dy, 21.7 + dx, 15.2 + dy)
    rotated = affinity.rotate(shapely.box(30.1, 30.4, 52.8, 41.3), 25 + 10 * (number % 3),
                              origin="centroid")
    ell = shapely.Polygon([(8.2, 50.3), (26.6, 50.3), (26.6, 56.4), (15.3, 56.4),
                           (15.3, 62.7), (8.2, 62.7)])
    small = shapely.box(55.4 + dy, 8.3, 58.7 + dy, 12.6)
    cut = shapely.box(width - 9.4, 20.3 + dx, width + 6.2, 33.8 + dx)
    row = [shapely.box(35.3, 52.2, 42.0, 61.6), shapely.box(42.0, 52.2, 49.6, 61.6)]
    return [rect, rotated, ell, small, cut] + row


def _geojson(polys_map) -> str:
    feats = [{"type": "Feature", "properties": {"OBJECTID": i},
              "geometry": {"type": "Polygon",
                           "coordinates": [[[x, y, 0.0] for x, y in p.exterior.coords]]}}
             for i, p in enumerate(polys_map)]
    return json.dumps({"type": "FeatureCollection", "crs": {
        "type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": feats})


def _image(itype: str, number: int, h: int, w: int, rng) -> np.ndarray:
    """[bands, h, w] uint16 pixels; MUL-PanSharpen bands 1..3 = row, column, tile number."""
    data = rng.integers(0, 2048, (TYPES[itype], h, w), dtype=np.uint16)
    if itype == "MUL-PanSharpen":
        data[0] = np.arange(h, dtype=np.uint16)[:, None]
        data[1] = np.arange(w, dtype=np.uint16)[None, :]
        data[2] = number
    return data


def write_tile(folder: pathlib.Path, aoi: str, number: int, size, types, rng) -> tuple:
    """Write one tile's GeoTIFFs and GeoJSON; return (tile_id, clipped polygons, GDAL gt)."""
    h, w = size
    tile_id = f"{aoi}_img{number}"
    x0, y0 = -115.30 + number * 0.001, 36.20
    transform = from_origin(x0, y0, PIXEL_DEG, PIXEL_DEG)
    for itype in types:
        factor = 4 if itype == "MUL" else 1
        th, tw = h // factor, w // factor
        t = from_origin(x0, y0, PIXEL_DEG * factor, PIXEL_DEG * factor)
        (folder / itype).mkdir(parents=True, exist_ok=True)
        with rasterio.open(folder / itype / f"{itype}_{tile_id}.tif", "w", driver="GTiff",
                           width=tw, height=th, count=TYPES[itype], dtype="uint16",
                           crs="EPSG:4326", transform=t) as ds:
            ds.write(_image(itype, number, th, tw, rng))
    polys = tile_polygons(number, h, w)
    gt = geo.affine_to_gdal(transform)
    label_dir = folder / "geojson" / "buildings"
    label_dir.mkdir(parents=True, exist_ok=True)
    (label_dir / f"buildings_{tile_id}.geojson").write_text(
        _geojson(geo.pixel_to_map(polys, gt)))
    clipped, _ = labels.clip_to_tile(polys, h, w)
    return tile_id, clipped, gt


def _numbers(aoi: str, n_train: int, n_val: int) -> list[int]:
    """Tile numbers giving exactly n_train train and n_val val tiles (hash split)."""
    want, chosen = {"train": n_train, "val": n_val}, []
    for n in range(1, 10000):
        s = converter.split_of(f"{aoi}_img{n}", SPLITS)
        if want.get(s, 0) > 0:
            want[s] -= 1
            chosen.append(n)
        if not any(want.values()):
            return chosen
    raise RuntimeError("could not choose tile numbers")


def write_dataset(root, vegas=(5, 3), paris=(2, 1), shard_size_mb=0.4) -> Dataset:
    """Write and convert the fixture under ``root`` (train/val tiles per AOI as given)."""
    root = pathlib.Path(root)
    source, out = root / "source", root / "converted"
    rng = np.random.default_rng(0)
    ds = Dataset(source, out, {}, {}, {}, {}, {}, {})
    for aoi, counts, types in (("AOI_2_Vegas", vegas, tuple(TYPES)),
                               ("AOI_3_Paris", paris, PARIS_TYPES)):
        for i, number in enumerate(_numbers(aoi, *counts)):
            size = SIZES[i % len(SIZES)]
            tile_id, polys, gt = write_tile(source / f"{aoi}_Train", aoi, number, size,
                                            types, rng)
            ds.sizes[tile_id], ds.polygons[tile_id] = size, polys
            ds.numbers[tile_id], ds.transforms[tile_id] = number, gt
            ds.split[tile_id] = converter.split_of(tile_id, SPLITS)
    cfg = converter.ConvertConfig(num_workers=1, progress=False, splits=SPLITS,
                                shard_size_mb=shard_size_mb)
    ds.info = converter.convert(source, out, cfg).info
    return ds
