"""The synthetic dataset's AOIs and tiles: grids, bands, radiometry, materials, tile plans.

Constants of the SpaceNet 1 / 2 grids and image types, the sensor model (DN gain, haze,
noise), land-cover spectra and roof materials; :class:`AoiProfile` (one city's look and
grid), :class:`TileSpec` and :func:`plan_tiles` (which tiles a sample holds). Used by
``synthetic_scenes`` (what a tile shows) and ``synthetic`` (the files).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from rasterio.transform import Affine


# ----------------------------------------------------------------------------- constants

SN2_TILE_PX = 650
SN2_PIXEL_DEG = 2.7e-6
SN2_TILE_DEG = 0.001755  # = 650 * 2.7e-6, the SpaceNet 2 tile-grid step
SN2_MUL_PX = 163
SN2_GSD_M = 0.3
RIO_HEIGHT_PX = 406
RIO_TILE_DEG = (0.0019678, 406 * 4.4887e-6)  # (width, height) of a Rio tile footprint
RIO_8BAND_SIZE = (110, 102)  # (width, height)
RIO_GSD_M = 0.5

BANDS = ("Coastal", "Blue", "Green", "Yellow", "Red", "RedEdge", "NIR1", "NIR2")
RGB_BAND_INDEX = (4, 2, 1)  # 0-based channels of R, G, B in the 8-band order (bands 5, 3, 2)
# PAN (450-800 nm) as a weighted sum of the 8 bands (weights sum to 1).
PAN_WEIGHTS = np.array([0.0, 0.14, 0.20, 0.16, 0.20, 0.16, 0.14, 0.0], np.float32)

SN2_IMAGE_TYPES = ("PAN", "MUL", "MUL-PanSharpen", "RGB-PanSharpen")
RIO_IMAGE_TYPES = ("3band", "8band")
DEFAULT_AOIS = ("AOI_2_Vegas", "AOI_3_Paris", "AOI_1_Rio")
DEFAULT_TILES_PER_AOI = {"sn2": 12, "rio": 6}
MANIFEST_NAME = "sample_manifest.json"
MANIFEST_FORMAT = "sn_tf.sample/1"
CRS84_URN = "urn:ogc:def:crs:OGC:1.3:CRS84"

# DN = HAZE + GAIN * reflectance + noise (11-bit data in uint16).
DN_GAIN = 2000.0
DN_MAX = 2047
HAZE_DN = np.array([70, 45, 28, 18, 12, 9, 6, 5], np.float32)
NOISE_DN = np.array([11, 9, 8, 8, 8, 8, 9, 10], np.float32)  # sensor noise at 0.3 m
PAN_NOISE_DN = 8.0
MUL_EXTRA_NOISE_DN = 3.0
RIO_3BAND_SCALE = 0.2  # uint8 = DN * scale (band means ~60-100, like the real Rio 3band tiles)

# Ground classes of the scene (``Scene.ground``); roofs are ROOF_BASE + material index.
SOIL, VEGETATION, ROAD, WATER, SHADOW = 0, 1, 2, 3, 4
ROOF_BASE = 8
CLASS_NAMES = {SOIL: "soil", VEGETATION: "vegetation", ROAD: "road", WATER: "water",
               SHADOW: "shadow"}

# Reflectance spectra (Coastal .. NIR2).
VEGETATION_SPECTRUM = (0.035, 0.04, 0.08, 0.065, 0.045, 0.20, 0.42, 0.44)
ROAD_SPECTRUM = (0.08, 0.085, 0.09, 0.095, 0.10, 0.105, 0.11, 0.115)
WATER_SPECTRUM = (0.09, 0.075, 0.06, 0.045, 0.03, 0.015, 0.008, 0.006)
SKYLIGHT = (0.03, 0.026, 0.02, 0.015, 0.012, 0.01, 0.01, 0.01)  # diffuse light in shadows
SHADOW_FACTOR = 0.3
ROOF_MATERIALS = {
    "concrete": (0.27, 0.29, 0.31, 0.32, 0.32, 0.32, 0.32, 0.31),
    "white_membrane": (0.46, 0.50, 0.52, 0.52, 0.51, 0.50, 0.48, 0.46),
    "clay_tile": (0.05, 0.06, 0.08, 0.13, 0.24, 0.30, 0.33, 0.34),
    "slate": (0.17, 0.18, 0.17, 0.16, 0.15, 0.15, 0.15, 0.15),
    "blue_metal": (0.24, 0.27, 0.23, 0.18, 0.14, 0.14, 0.16, 0.17),
}
MATERIAL_NAMES = tuple(ROOF_MATERIALS)


@dataclasses.dataclass(frozen=True)
class AoiProfile:
    """What a city looks like and where its tile grid is.

    origin: (lon, lat) of the top-left corner of grid cell (0, 0) (the real SpaceNet 2 grid
    origin for AOI_2..5); grid_cells: (columns, rows) of the grid to draw tiles from.
    buildings: (min, max) buildings per non-empty tile; kind weights: house, l_shape, large, row.
    shadow_dir: unit vector (x right, y down) along which shadows are cast.
    road_counts: maximum number of roads along the street-grid direction and across it.
    frontage_prob: probability that a tile's houses line its roads.
    """

    name: str
    number: int
    kind: str  # "sn2" or "rio"
    origin: tuple[float, float]
    grid_cells: tuple[int, int]
    soil: tuple[float, ...]
    vegetation_cover: tuple[float, float]
    trees_per_ha: float
    water_prob: float
    buildings: tuple[int, int]
    kind_weights: tuple[float, float, float, float]
    roof_weights: dict
    north_aligned_prob: float
    shadow_dir: tuple[float, float]
    road_counts: tuple[int, int]
    frontage_prob: float

    @property
    def folder(self) -> str:
        """AOI folder name, e.g. ``AOI_2_Vegas_Train``."""
        return f"{self.name}_Train"

    @property
    def tile_prefix(self) -> str:
        """Tile-id prefix: the AOI name, upper-case city for Rio (``AOI_1_RIO``)."""
        return "AOI_1_RIO" if self.kind == "rio" else self.name


def _unit(x: float, y: float) -> tuple[float, float]:
    """(x, y) scaled to unit length."""
    n = math.hypot(x, y)
    return (x / n, y / n)


AOI_PROFILES = {
    p.name: p for p in (
        AoiProfile(
            name="AOI_1_Rio", number=1, kind="rio", origin=(-43.6860, -22.9370),
            grid_cells=(30, 30), soil=(0.10, 0.11, 0.13, 0.15, 0.16, 0.18, 0.22, 0.24),
            vegetation_cover=(0.15, 0.40), trees_per_ha=6.0, water_prob=0.25,
            buildings=(20, 50), kind_weights=(0.55, 0.15, 0.10, 0.20),
            roof_weights={"clay_tile": 0.45, "concrete": 0.25, "white_membrane": 0.1,
                          "slate": 0.1, "blue_metal": 0.1},
            north_aligned_prob=0.3, shadow_dir=_unit(0.4, 1.0), road_counts=(2, 2),
            frontage_prob=0.6),
        AoiProfile(
            name="AOI_2_Vegas", number=2, kind="sn2", origin=(-115.3075176, 36.2616777),
            grid_cells=(88, 79), soil=(0.14, 0.17, 0.23, 0.28, 0.31, 0.33, 0.35, 0.37),
            vegetation_cover=(0.03, 0.15), trees_per_ha=4.0, water_prob=0.15,
            buildings=(25, 60), kind_weights=(0.60, 0.25, 0.10, 0.05),
            roof_weights={"concrete": 0.3, "clay_tile": 0.3, "white_membrane": 0.15,
                          "slate": 0.2, "blue_metal": 0.05},
            north_aligned_prob=0.6, shadow_dir=_unit(-0.5, -1.0), road_counts=(3, 2),
            frontage_prob=0.85),
        AoiProfile(
            name="AOI_3_Paris", number=3, kind="sn2", origin=(2.18641139997, 49.0582359),
            grid_cells=(64, 46), soil=(0.11, 0.12, 0.145, 0.16, 0.175, 0.20, 0.23, 0.25),
            vegetation_cover=(0.15, 0.35), trees_per_ha=8.0, water_prob=0.2,
            buildings=(30, 60), kind_weights=(0.35, 0.15, 0.20, 0.30),
            roof_weights={"slate": 0.45, "clay_tile": 0.2, "concrete": 0.2,
                          "white_membrane": 0.1, "blue_metal": 0.05},
            north_aligned_prob=0.3, shadow_dir=_unit(-0.3, -1.0), road_counts=(2, 2),
            frontage_prob=0.7),
        AoiProfile(
            name="AOI_4_Shanghai", number=4, kind="sn2", origin=(121.5901692, 31.4277759),
            grid_cells=(90, 130), soil=(0.09, 0.10, 0.13, 0.16, 0.18, 0.20, 0.23, 0.25),
            vegetation_cover=(0.10, 0.30), trees_per_ha=5.0, water_prob=0.3,
            buildings=(15, 40), kind_weights=(0.35, 0.10, 0.35, 0.20),
            roof_weights={"concrete": 0.35, "blue_metal": 0.25, "white_membrane": 0.2,
                          "slate": 0.2},
            north_aligned_prob=0.4, shadow_dir=_unit(-0.2, -1.0), road_counts=(2, 2),
            frontage_prob=0.5),
        AoiProfile(
            name="AOI_5_Khartoum", number=5, kind="sn2", origin=(32.4858384, 15.7402062),
            grid_cells=(45, 128), soil=(0.15, 0.18, 0.24, 0.30, 0.34, 0.36, 0.38, 0.40),
            vegetation_cover=(0.02, 0.10), trees_per_ha=3.0, water_prob=0.1,
            buildings=(20, 50), kind_weights=(0.60, 0.20, 0.10, 0.10),
            roof_weights={"concrete": 0.45, "white_membrane": 0.1, "clay_tile": 0.15,
                          "slate": 0.2, "blue_metal": 0.1},
            north_aligned_prob=0.5, shadow_dir=_unit(-0.3, -1.0), road_counts=(2, 2),
            frontage_prob=0.6),
    )
}


# ----------------------------------------------------------------------------- tile plan

@dataclasses.dataclass(frozen=True)
class TileSpec:
    """One tile to generate: identity, label grid and forced content.

    width/height: label (render) grid in pixels; transform: rasterio Affine of that grid
    (EPSG:4326); gsd_m: metres per pixel of that grid; role: "empty" (no buildings), "showcase"
    (forced row houses + an invalid polygon) or "normal".
    """

    aoi: str
    index: int
    number: int
    tile_id: str
    width: int
    height: int
    transform: Affine
    gsd_m: float
    role: str

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        t = self.transform
        return (t.c, t.f + self.height * t.e, t.c + self.width * t.a, t.f)


def plan_tiles(aois=DEFAULT_AOIS, tiles_per_aoi: int | None = None, seed: int = 0
               ) -> list[TileSpec]:
    """The tiles ``write_sample`` generates, in AOI order then tile-number order.

    Tile numbers are distinct random ints (not contiguous); grid cells are distinct random cells
    of the AOI grid. With >= 2 tiles an AOI has one "empty" and one "showcase" tile.
    """
    specs = []
    for name in aois:
        prof = aoi_profile(name)
        n = tiles_per_aoi if tiles_per_aoi is not None else DEFAULT_TILES_PER_AOI[prof.kind]
        if n < 1:
            raise ValueError(f"tiles_per_aoi must be >= 1, got {n}")
        rng = np.random.default_rng([seed, prof.number, 7919])
        numbers = np.sort(rng.choice(np.arange(1, 7000), size=n, replace=False))
        cols, rows = prof.grid_cells
        cells = rng.choice(cols * rows, size=n, replace=False)
        roles = ["normal"] * n
        special = rng.permutation(n)
        roles[special[0]] = "showcase"
        if n >= 2:
            roles[special[1]] = "empty"
        for i, (num, cell) in enumerate(zip(numbers, cells)):
            specs.append(_tile_spec(prof, i, int(num), divmod(int(cell), cols), roles[i], rng))
    return specs


def _tile_spec(prof: AoiProfile, index: int, number: int, row_col: tuple[int, int], role: str,
               rng: np.random.Generator) -> TileSpec:
    """TileSpec of grid cell (row, col) of ``prof``'s grid."""
    row, col = row_col
    if prof.kind == "sn2":
        x0 = prof.origin[0] + col * SN2_TILE_DEG
        y0 = prof.origin[1] - row * SN2_TILE_DEG
        width = height = SN2_TILE_PX
        transform = Affine(SN2_PIXEL_DEG, 0.0, x0, 0.0, -SN2_PIXEL_DEG, y0)
        gsd = SN2_GSD_M
    else:
        x0 = prof.origin[0] + col * RIO_TILE_DEG[0]
        y0 = prof.origin[1] - row * RIO_TILE_DEG[1]
        width = 439 if rng.random() < 0.3 else 438
        height = RIO_HEIGHT_PX
        transform = Affine(RIO_TILE_DEG[0] / width, 0.0, x0, 0.0, -RIO_TILE_DEG[1] / height, y0)
        gsd = RIO_GSD_M
    return TileSpec(prof.name, index, number, f"{prof.tile_prefix}_img{number}", width, height,
                    transform, gsd, role)


def aoi_profile(name: str) -> AoiProfile:
    """The profile of AOI ``name`` (e.g. ``AOI_2_Vegas``); ValueError for unknown names."""
    if name not in AOI_PROFILES:
        raise ValueError(f"unknown AOI {name!r}; choose from {sorted(AOI_PROFILES)}")
    return AOI_PROFILES[name]
