"""Tests of sn_tf.sample (sn_tf.spacenet.synthetic): the synthetic dataset must match the SpaceNet layouts exactly and be
learnable and deterministic. One small sample (3 tiles per AOI) is generated per module."""

import csv
import json
import math
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject
from shapely.geometry import shape

from sn_tf.spacenet import synthetic, synthetic_aois, synthetic_scenes

AOIS = ("AOI_2_Vegas", "AOI_3_Paris", "AOI_1_Rio")
TILES = 3
SEED = 0

# image type -> (count, dtype, width or None (= 438|439), height, pixel size x, pixel size y)
SN2_SPECS = {
    "PAN": (1, "uint16", 650, 650, 2.7e-6, 2.7e-6),
    "MUL": (8, "uint16", 163, 163, 0.001755 / 163, 0.001755 / 163),
    "MUL-PanSharpen": (8, "uint16", 650, 650, 2.7e-6, 2.7e-6),
    "RGB-PanSharpen": (3, "uint16", 650, 650, 2.7e-6, 2.7e-6),
}


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    manifest = synthetic.write_sample(root, aois=AOIS, tiles_per_aoi=TILES, seed=SEED)
    return root, manifest


def _features(path: pathlib.Path) -> list:
    return json.loads(path.read_text())["features"]


def _geo_ring(feature) -> np.ndarray:
    return np.asarray(feature["geometry"]["coordinates"][0], float)


def _read_csv(path: pathlib.Path) -> tuple[list, list]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _read(path: pathlib.Path) -> np.ndarray:
    """float64 [B, H, W] pixels of a GeoTIFF."""
    with rasterio.open(path) as src:
        return src.read().astype(np.float64)


def _wkt_triples(wkt: str) -> np.ndarray:
    body = re.fullmatch(r"POLYGON \(\((.*)\)\)", wkt).group(1)
    return np.array([[float(v) for v in p.split(" ")] for p in body.split(",")])


def _transform(root: pathlib.Path, tile: dict) -> tuple[Affine, int, int]:
    """Transform and size of the label grid (MUL-PanSharpen / 3band) of a manifest tile."""
    itype = "3band" if "3band" in tile["images"] else "MUL-PanSharpen"
    with rasterio.open(root / tile["images"][itype]) as src:
        return src.transform, src.width, src.height


# ----------------------------------------------------------------------------- layout

def test_file_names_follow_the_spacenet_layouts(sample_dir):
    root, manifest = sample_dir
    assert [a["aoi"] for a in manifest["aois"]] == list(AOIS)
    patterns = {
        "AOI_2_Vegas": [rf"AOI_2_Vegas_Train/{t}/{t}_AOI_2_Vegas_img\d+\.tif"
                        for t in SN2_SPECS]
        + [r"AOI_2_Vegas_Train/geojson/buildings/buildings_AOI_2_Vegas_img\d+\.geojson",
           r"AOI_2_Vegas_Train/summaryData/AOI_2_Vegas_Train_Building_Solution\.csv"],
        "AOI_3_Paris": [rf"AOI_3_Paris_Train/{t}/{t}_AOI_3_Paris_img\d+\.tif" for t in SN2_SPECS]
        + [r"AOI_3_Paris_Train/geojson/buildings/buildings_AOI_3_Paris_img\d+\.geojson",
           r"AOI_3_Paris_Train/summaryData/AOI_3_Paris_Train_Building_Solution\.csv"],
        "AOI_1_Rio": [
            r"AOI_1_Rio_Train/processedBuildingLabels/3-Band/3band_AOI_1_RIO_img\d+\.tif",
            r"AOI_1_Rio_Train/processedBuildingLabels/8-band/8band_AOI_1_RIO_img\d+\.tif",
            r"AOI_1_Rio_Train/processedBuildingLabels/vectordata/geojson/"
            r"Geo_AOI_1_RIO_img\d+\.geojson",
            r"AOI_1_Rio_Train/processedBuildingLabels/vectordata/summarydata/"
            r"AOI_1_Rio_polygons_solution_3band\.csv",
            r"AOI_1_Rio_Train/(3-Band|8-band)/README\.txt"],
    }
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    files.remove(synthetic_aois.MANIFEST_NAME)
    for f in files:
        aoi = next(a for a in AOIS if f.startswith(a + "_Train/"))
        assert any(re.fullmatch(p, f) for p in patterns[aoi]), f
    per_tile = {"AOI_2_Vegas": 5, "AOI_3_Paris": 5, "AOI_1_Rio": 3}
    for aoi in AOIS:
        n = sum(f.startswith(aoi + "_") for f in files)
        assert n == TILES * per_tile[aoi] + 1 + 2 * (aoi == "AOI_1_Rio"), aoi
    for tile in manifest["tiles"]:
        for rel in [*tile["images"].values(), tile["label"]]:
            assert (root / rel).is_file()
            assert rel.split("/")[-1].split("_", 1)[1].rsplit(".", 1)[0] == tile["tile_id"]


def test_tile_numbers_are_distinct_and_not_a_range(sample_dir):
    _, manifest = sample_dir
    for aoi in AOIS:
        nums = [int(t["tile_id"].rsplit("img", 1)[1]) for t in manifest["tiles"]
                if t["aoi"] == aoi]
        assert len(set(nums)) == TILES
        assert sorted(nums) != list(range(min(nums), min(nums) + TILES))


def test_sn_tf_layout_discovers_the_sample(sample_dir):
    from sn_tf.spacenet import layout

    root, manifest = sample_dir
    found = {lay.name: lay for lay in layout.discover(root)}
    assert set(found) == set(AOIS)
    for lay in found.values():
        assert not lay.warnings
        expected = {t["tile_id"] for t in manifest["tiles"] if t["aoi"] == lay.name}
        assert {t.tile_id for t in lay.tiles} == expected
        for t in lay.tiles:
            assert t.label_path is not None and set(t.images) == set(
                synthetic_aois.RIO_IMAGE_TYPES if lay.kind == "rio" else SN2_SPECS)


# ----------------------------------------------------------------------------- rasters

def test_raster_types_sizes_pixel_sizes_and_shared_footprint(sample_dir):
    root, manifest = sample_dir
    for tile in manifest["tiles"]:
        bounds = []
        for itype, rel in tile["images"].items():
            with rasterio.open(root / rel) as src:
                assert src.crs.to_epsg() == 4326
                assert src.nodata is None
                t = src.transform
                assert t.b == 0 and t.d == 0 and t.e < 0
                if itype in SN2_SPECS:
                    count, dtype, w, h, px, py = SN2_SPECS[itype]
                    assert (src.count, src.dtypes[0], src.width, src.height) == (count, dtype, w, h)
                    assert t.a == pytest.approx(px, rel=1e-12)
                    assert -t.e == pytest.approx(py, rel=1e-12)
                elif itype == "3band":
                    assert (src.count, src.dtypes[0], src.height) == (3, "uint8", 406)
                    assert src.width in (438, 439)
                    assert t.a == pytest.approx(0.0019678 / src.width, rel=1e-9)
                    assert -t.e == pytest.approx(4.4887e-6, rel=1e-9)
                else:
                    assert (src.count, src.dtypes[0], src.width, src.height) == (
                        8, "uint16", 110, 102)
                data = src.read()
                if src.dtypes[0] == "uint16":
                    assert data.max() <= 2047  # 11-bit data
                bounds.append(np.array(src.bounds))
        for b in bounds[1:]:
            np.testing.assert_allclose(b, bounds[0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(bounds[0], tile["bounds"], rtol=0, atol=1e-12)


def test_sn2_tiles_sit_on_the_aoi_grid(sample_dir):
    _, manifest = sample_dir
    for tile in manifest["tiles"]:
        prof = synthetic_aois.aoi_profile(tile["aoi"])
        if prof.kind != "sn2":
            continue
        west, _, _, north = tile["bounds"]
        col = (west - prof.origin[0]) / 0.001755
        row = (prof.origin[1] - north) / 0.001755
        assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6


def test_derived_image_types(sample_dir):
    """RGB-PanSharpen = bands 5,3,2; MUL = area average; PAN = weighted visible+NIR sum."""
    root, manifest = sample_dir
    tile = next(t for t in manifest["tiles"] if t["aoi"] == "AOI_2_Vegas" and t["n_buildings"])
    read = {k: _read(root / v) for k, v in tile["images"].items()}
    np.testing.assert_array_equal(read["RGB-PanSharpen"], read["MUL-PanSharpen"][[4, 2, 1]])
    averaged = synthetic_scenes.area_average(read["MUL-PanSharpen"], 163, 163)
    diff = read["MUL"] - averaged
    assert np.abs(diff.mean(axis=(1, 2))).max() < 1.0
    assert diff.std() < 6.0  # MUL noise only, no misregistration
    weighted = np.tensordot(synthetic_aois.PAN_WEIGHTS, read["MUL-PanSharpen"], 1)
    assert np.corrcoef(weighted.ravel(), read["PAN"].ravel())[0, 1] > 0.99


def test_rio_8band_is_the_area_average_of_the_3band_grid(sample_dir):
    root, manifest = sample_dir
    tile = next(t for t in manifest["tiles"] if t["aoi"] == "AOI_1_Rio" and t["n_buildings"])
    rgb = _read(root / tile["images"]["3band"])
    eight = _read(root / tile["images"]["8band"])
    red_avg = synthetic_scenes.area_average(rgb[:1], 102, 110)[0]
    assert np.corrcoef(red_avg.ravel(), eight[4].ravel())[0, 1] > 0.97


def test_area_average_equals_gdal_average_resampling():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 2000, (2, 650, 650)).astype(np.float32)
    src[:, :, 300:] += 500  # an edge inside an output pixel
    t_src = Affine(2.7e-6, 0, 10.0, 0, -2.7e-6, 50.0)
    t_dst = Affine(0.001755 / 163, 0, 10.0, 0, -0.001755 / 163, 50.0)
    gdal = np.zeros((2, 163, 163), np.float32)
    reproject(src, gdal, src_transform=t_src, src_crs="EPSG:4326", dst_transform=t_dst,
              dst_crs="EPSG:4326", resampling=Resampling.average)
    ours = synthetic_scenes.area_average(src, 163, 163)
    np.testing.assert_allclose(ours, gdal, rtol=0, atol=0.05)
    assert synthetic_scenes.area_average(np.ones((1, 650, 650)), 163, 163) == pytest.approx(1.0)


def test_pan_float64_option(tmp_path):
    manifest = synthetic.write_sample(tmp_path, aois=["AOI_3_Paris"], tiles_per_aoi=1,
                                      pan_dtype="float64")
    tile = manifest["tiles"][0]
    with rasterio.open(tmp_path / tile["images"]["PAN"]) as src:
        pan = src.read()
        assert src.dtypes[0] == "float64" and src.nodata is None
    assert np.array_equal(pan, np.rint(pan)) and 0 <= pan.min() and pan.max() <= 2047
    with rasterio.open(tmp_path / tile["images"]["MUL"]) as src:
        assert src.dtypes[0] == "uint16"
    with pytest.raises(ValueError):
        synthetic.write_sample(tmp_path / "x", aois=["AOI_3_Paris"], pan_dtype="float32")


# ----------------------------------------------------------------------------- labels

def test_geojson_is_crs84_lonlat_with_z0_and_closed_rings(sample_dir):
    root, manifest = sample_dir
    n = 0
    for tile in manifest["tiles"]:
        doc = json.loads((root / tile["label"]).read_text())
        assert doc["type"] == "FeatureCollection"
        assert doc["crs"] == {"type": "name",
                              "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}}
        assert len(doc["features"]) == tile["n_buildings"]
        west, south, east, north = tile["bounds"]
        for k, f in enumerate(doc["features"], start=1):
            assert f["geometry"]["type"] == "Polygon"
            assert len(f["geometry"]["coordinates"]) == 1
            assert f["properties"]["OBJECTID"] == k
            assert f["properties"]["partialBuilding"] in (0.0, 1.0)
            ring = _geo_ring(f)
            assert ring.shape[1] == 3 and np.all(ring[:, 2] == 0.0)
            assert np.array_equal(ring[0], ring[-1]) and len(ring) >= 4
            assert ring[:, 0].min() >= west - 1e-9 and ring[:, 0].max() <= east + 1e-9
            assert ring[:, 1].min() >= south - 1e-9 and ring[:, 1].max() <= north + 1e-9
            n += 1
    assert n > 30


def test_summary_csv_matches_the_geojson(sample_dir):
    root, manifest = sample_dir
    number = r"-?\d+\.\d{1,2}"
    pix_re = re.compile(rf"POLYGON \(\(({number} {number} 0,)+{number} {number} 0\)\)")
    for aoi in manifest["aois"]:
        header, rows = _read_csv(root / aoi["summary_csv"])
        assert header == ["ImageId", "BuildingId", "PolygonWKT_Pix", "PolygonWKT_Geo"]
        by_tile: dict = {}
        for r in rows:
            by_tile.setdefault(r[0], []).append(r)
        tiles = [t for t in manifest["tiles"] if t["aoi"] == aoi["aoi"]]
        assert set(by_tile) == {t["tile_id"] for t in tiles}
        for tile in tiles:
            feats = _features(root / tile["label"])
            trows = by_tile[tile["tile_id"]]
            if not feats:
                assert trows == [[tile["tile_id"], "-1", "POLYGON EMPTY", "POLYGON EMPTY"]]
                continue
            assert [int(r[1]) for r in trows] == list(range(1, len(feats) + 1))
            transform, width, height = _transform(root, tile)
            inv = ~transform
            for r, f in zip(trows, feats):
                geo = _geo_ring(f)
                assert pix_re.fullmatch(r[2]), r[2]
                np.testing.assert_array_equal(_wkt_triples(r[3]), geo)  # Geo WKT: file order
                pix = _wkt_triples(r[2])
                assert np.all(pix[:, 2] == 0)
                xs, ys = inv * (geo[::-1, 0], geo[::-1, 1])  # reversed vertex order
                want = np.stack([np.clip(np.round(xs, 2), 0, width),
                                 np.clip(np.round(ys, 2), 0, height)], 1)
                np.testing.assert_allclose(pix[:, :2], want, rtol=0, atol=0.0100001)
                np.testing.assert_array_equal(pix[0], pix[-1])
                assert pix[:, 0].min() >= 0 and pix[:, 0].max() <= width
                assert pix[:, 1].min() >= 0 and pix[:, 1].max() <= height


def test_empty_invalid_touching_and_cut_buildings(sample_dir):
    root, manifest = sample_dir
    for aoi in AOIS:
        tiles = [t for t in manifest["tiles"] if t["aoi"] == aoi]
        empty = [t for t in tiles if t["n_buildings"] == 0]
        assert empty, f"{aoi}: no tile without buildings"
        for t in empty:
            assert _features(root / t["label"]) == []
        n_invalid = n_touch = n_cut = 0
        for t in tiles:
            polys = [shape(f["geometry"]) for f in _features(root / t["label"])]
            invalid = [k + 1 for k, p in enumerate(polys) if not p.is_valid]
            assert invalid == t["invalid"]
            n_invalid += len(invalid)
            n_touch += _count_touching(polys)
            west, south, east, north = t["bounds"]
            for k, (p, f) in enumerate(zip(polys, _features(root / t["label"])), start=1):
                ring = _geo_ring(f)
                on_edge = (np.isclose(ring[:, 0], west, atol=1e-12, rtol=0)
                           | np.isclose(ring[:, 0], east, atol=1e-12, rtol=0)
                           | np.isclose(ring[:, 1], south, atol=1e-12, rtol=0)
                           | np.isclose(ring[:, 1], north, atol=1e-12, rtol=0)).any()
                assert on_edge == (k in t["cut"]) == (f["properties"]["partialBuilding"] == 1)
                n_cut += on_edge
        assert n_invalid >= 1, f"{aoi}: no invalid polygon"
        assert n_touch >= 1, f"{aoi}: no touching buildings"
        assert n_cut >= 1, f"{aoi}: no building cut by the tile edge"


def _count_touching(polys: list) -> int:
    """Pairs of polygons that share a boundary (distance ~0) without overlapping."""
    n = 0
    for i in range(len(polys)):
        for j in range(i + 1, len(polys)):
            a, b = shapely.make_valid(polys[i]), shapely.make_valid(polys[j])
            if a.distance(b) < 1e-10 and a.intersection(b).area < 1e-3 * min(a.area, b.area):
                n += 1
    return n


def test_invalid_polygon_pixels_are_drawn_as_building(sample_dir):
    root, manifest = sample_dir
    tile = next(t for t in manifest["tiles"] if t["invalid"] and "MUL-PanSharpen" in t["images"])
    spec = _spec_of(tile)
    scene = synthetic_scenes.synthesize_tile(spec, SEED).scene
    k = tile["invalid"][0]
    poly = shape(_features(root / tile["label"])[k - 1]["geometry"])
    mask = features.rasterize([shapely.make_valid(shapely.force_2d(poly))],
                              out_shape=(spec.height, spec.width), transform=spec.transform)
    assert mask.sum() > 50
    assert np.mean(scene.building_id[mask > 0] == k) > 0.99


# ----------------------------------------------------------------------------- imagery

def _spec_of(tile: dict) -> synthetic_aois.TileSpec:
    specs = synthetic_aois.plan_tiles(AOIS, TILES, SEED)
    return next(s for s in specs if s.tile_id == tile["tile_id"])


def test_regenerated_tile_equals_the_file_and_its_labels(sample_dir):
    root, manifest = sample_dir
    tile = next(t for t in manifest["tiles"] if t["aoi"] == "AOI_3_Paris" and t["n_buildings"])
    synth = synthetic_scenes.synthesize_tile(_spec_of(tile), SEED)
    with rasterio.open(root / tile["images"]["MUL-PanSharpen"]) as src:
        np.testing.assert_array_equal(src.read(), synth.images["MUL-PanSharpen"])
        transform, shape_hw = src.transform, (src.height, src.width)
    polys = [shapely.make_valid(shapely.force_2d(shape(f["geometry"])))
             for f in _features(root / tile["label"])]
    burned = features.rasterize(polys, out_shape=shape_hw, transform=transform)
    roof = synth.scene.building_id > 0
    assert np.mean(burned.astype(bool) == roof) > 0.999


@pytest.mark.parametrize("aoi", ["AOI_2_Vegas", "AOI_3_Paris"])
def test_imagery_is_learnable(sample_dir, aoi):
    """NDVI separates vegetation from roofs, and a nearest-class-mean pixel classifier (class
    means from even rows, evaluated on odd rows) finds building pixels with > 90 % accuracy."""
    root, manifest = sample_dir
    tile = max((t for t in manifest["tiles"] if t["aoi"] == aoi), key=lambda t: t["n_buildings"])
    scene = synthetic_scenes.synthesize_tile(_spec_of(tile), SEED).scene
    classes = scene.classes()
    with rasterio.open(root / tile["images"]["MUL-PanSharpen"]) as src:
        img = src.read().astype(np.float64)
    red, nir1 = img[4], img[6]
    ndvi = (nir1 - red) / (nir1 + red)
    roof = classes >= synthetic_aois.ROOF_BASE
    veg = classes == synthetic_aois.VEGETATION
    assert roof.mean() > 0.03 and veg.mean() > 0.005
    assert ndvi[veg].mean() > ndvi[roof].mean() + 0.3

    x = img.reshape(8, -1).T
    y = classes.ravel()
    train = np.zeros(classes.shape, bool)
    train[::2] = True
    train = train.ravel()
    labels = np.unique(y[train])
    means = np.stack([x[train & (y == c)].mean(0) for c in labels])
    xt, yt = x[~train], y[~train]
    dist = ((xt[:, None, :] - means[None]) ** 2).sum(-1)
    pred = labels[dist.argmin(1)]
    is_b, pred_b = yt >= synthetic_aois.ROOF_BASE, pred >= synthetic_aois.ROOF_BASE
    accuracy = np.mean(is_b == pred_b)
    baseline = max(is_b.mean(), 1 - is_b.mean())
    assert accuracy > 0.9 and accuracy > baseline + 0.03
    assert (is_b & pred_b).sum() / is_b.sum() > 0.85  # building recall


def test_roof_spectra_differ_from_background_spectra():
    """Every roof material is far (> 0.05 reflectance RMS over 8 bands) from soil, roads,
    vegetation and water of every AOI."""
    backgrounds = [synthetic_aois.ROAD_SPECTRUM, synthetic_aois.VEGETATION_SPECTRUM, synthetic_aois.WATER_SPECTRUM]
    backgrounds += [p.soil for p in synthetic_aois.AOI_PROFILES.values()]
    for name, roof in synthetic_aois.ROOF_MATERIALS.items():
        for bg in backgrounds:
            rms = np.sqrt(np.mean((np.asarray(roof) - np.asarray(bg)) ** 2))
            assert rms > 0.05, (name, bg)


# ----------------------------------------------------------------------------- determinism, CLI

def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = dict(aois=["AOI_1_Rio"], tiles_per_aoi=1)
    m1 = synthetic.write_sample(tmp_path / "a", seed=5, **kwargs)
    m2 = synthetic.write_sample(tmp_path / "b", seed=5, **kwargs)
    m3 = synthetic.write_sample(tmp_path / "c", seed=6, **kwargs)
    assert m1 == m2
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len(files) == 7
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    tif = lambda m, d: (tmp_path / d / m["tiles"][0]["images"]["3band"]).read_bytes()
    assert tif(m1, "a") != tif(m3, "c")


def test_rewriting_replaces_an_old_sample_but_not_foreign_data(tmp_path):
    synthetic.write_sample(tmp_path, aois=["AOI_1_Rio"], tiles_per_aoi=2, seed=1)
    synthetic.write_sample(tmp_path, aois=["AOI_1_Rio"], tiles_per_aoi=1, seed=2)
    tifs = list((tmp_path / "AOI_1_Rio_Train").rglob("3band_*.tif"))
    assert len(tifs) == 1  # the two tiles of the first run are gone
    foreign = tmp_path / "other"
    (foreign / "AOI_1_Rio_Train").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        synthetic.write_sample(foreign, aois=["AOI_1_Rio"], tiles_per_aoi=1)


def test_plan_tiles_roles_and_errors():
    specs = synthetic_aois.plan_tiles(["AOI_2_Vegas", "AOI_1_Rio"], 5, seed=0)
    assert len(specs) == 10
    for aoi in ("AOI_2_Vegas", "AOI_1_Rio"):
        roles = sorted(s.role for s in specs if s.aoi == aoi)
        assert roles == ["empty", "normal", "normal", "normal", "showcase"]
    assert len({(s.aoi, s.bounds) for s in specs}) == 10
    default = synthetic_aois.plan_tiles()
    assert [sum(s.aoi == a for s in default) for a in synthetic_aois.DEFAULT_AOIS] == [12, 12, 6]
    with pytest.raises(ValueError):
        synthetic_aois.plan_tiles(["AOI_9_Atlantis"])
    with pytest.raises(ValueError):
        synthetic_aois.plan_tiles(["AOI_2_Vegas"], 0)


def test_cli_writes_and_summarises(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sn_tf.sample", f"--output_dir={tmp_path}", "--aois=AOI_1_Rio",
         "--tiles_per_aoi=2", "--seed=3"], capture_output=True, text=True, check=True)
    assert "AOI_1_Rio" in out.stdout and "2 tiles" in out.stdout
    manifest = json.loads((tmp_path / synthetic_aois.MANIFEST_NAME).read_text())
    assert manifest["seed"] == 3 and len(manifest["tiles"]) == 2
    assert math.isclose(sum(t["n_buildings"] for t in manifest["tiles"]),
                        manifest["aois"][0]["n_buildings"])
