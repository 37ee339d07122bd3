"""The converter on small generated SpaceNet-layout folders with exactly known polygons."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from sn_tf.dataset import converter
from sn_tf.dataset import info as dsinfo
from sn_tf.dataset import labels, schema
from sn_tf.spacenet import geo
from sn_tf.dataset.reader import read_examples
from fixtures.spacenet import TILE_DEG, geojson_text, make_sn2_aoi

REPO = pathlib.Path(__file__).resolve().parents[1]
QUIET = dict(progress=False)


def _run(data, out, **kw):
    cfg = converter.ConvertConfig(**{**QUIET, "num_workers": 1, **kw})
    return converter.convert(data, out, cfg)


def _cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "sn_tf.convert", "--noprogress", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def aoi(tmp_path_factory):
    root = tmp_path_factory.mktemp("sn2")
    expected = make_sn2_aoi(root)
    return root, expected


@pytest.fixture(scope="module")
def converted(aoi, tmp_path_factory):
    root, expected = aoi
    out = tmp_path_factory.mktemp("out2")
    result = _run(root, out, num_workers=2, shard_size_mb=0.2)
    return out, result


def test_round_trip_images_labels_georeference(aoi, converted):
    root, expected = aoi
    out, result = converted
    assert result.exit_code == converter.EXIT_OK
    seen = []
    for tile in read_examples(out):
        seen.append(tile["tile_id"])
        for itype, img in tile["images"].items():
            src, h = geo.read_raster(root / "AOI_2_Vegas_Train" / itype /
                                     f"{itype}_{tile['tile_id']}.tif")
            assert img["data"].dtype == np.uint16
            np.testing.assert_array_equal(img["data"], src)
            assert img["transform_gdal"] == h.transform_gdal and img["crs"] == "EPSG:4326"
        assert set(tile["labels"]) == {"MUL-PanSharpen", "MUL"}
        assert tile["images"]["PAN"]["label_grid"] == "MUL-PanSharpen"
        assert tile["images"]["MUL"]["label_grid"] == "MUL"
        lab = tile["labels"]["MUL-PanSharpen"]
        polys = expected[tile["tile_id"]]
        np.testing.assert_array_equal(lab["mask"], labels.rasterize_mask(polys, 130, 130))
        np.testing.assert_allclose(lab["boxes_xyxy_px"],
                                   labels.boxes_xyxy_px(polys, 130, 130), atol=1e-3)
        sdf = lab["sdf"]
        assert np.all(lab["mask"][sdf > 0] == 1) and np.all(lab["mask"][sdf < 0] == 0)
    assert sorted(seen) == sorted(expected)  # every tile exactly once


def test_dataset_info(converted, aoi):
    out, result = converted
    info = dsinfo.load(out)
    assert info == result.info and info.source == str(out / "sn_tf_info.json")
    assert info.schema_version == schema.SCHEMA_VERSION and info.versions["tensorflow"]
    assert info.num_examples == len(aoi[1])
    for split, sp in info.splits.items():
        assert all((out / sh.file).exists() for sh in sp.shards)
        for sh in sp.shards:  # TFDS naming
            assert sh.file.startswith(f"spacenet-{split}.tfrecord-")
            assert sh.file.endswith(f"-of-{len(sp.shards):05d}")
    st = info.stats("MUL-PanSharpen")
    assert len(st.mean) == 8 and 900 < st.mean[0] < 1150  # uniform 0..2047
    assert st.p1[0] < 40 and st.p99[0] > 2000 and st.max[0] <= 2047
    assert info.image_type("PAN") == dsinfo.ImageTypeInfo(
        "PAN", "uint16", 1, (130, 130, 1), "MUL-PanSharpen", "EPSG:4326", "raw")
    assert info.skipped == () and not list(out.glob("*.tmp-*"))


def test_split_is_a_stable_hash_of_the_tile_id():
    ids = [f"AOI_2_Vegas_img{i}" for i in range(4000)]
    splits = (("train", 0.8), ("val", 0.2))
    first = [converter.split_of(t, splits) for t in ids]
    assert first == [converter.split_of(t, splits) for t in ids]
    assert 0.77 < first.count("train") / len(ids) < 0.83
    # adding tiles (or AOIs) never moves an existing tile
    more = ids + [f"AOI_3_Paris_img{i}" for i in range(100)]
    assert [converter.split_of(t, splits) for t in more][:4000] == first


def test_one_and_two_workers_write_the_same_shards(aoi, converted, tmp_path):
    out2, _ = converted
    out1 = tmp_path / "one"
    _run(aoi[0], out1, num_workers=1, shard_size_mb=0.2)
    names = sorted(p.name for p in out1.glob("*.tfrecord-*"))
    assert names == sorted(p.name for p in out2.glob("*.tfrecord-*"))
    for name in names:
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()


def test_existing_output_needs_resume_or_overwrite(aoi, converted):
    out, _ = converted
    with pytest.raises(converter.ConvertError, match="--resume.*--overwrite"):
        _run(aoi[0], out)
    again = _run(aoi[0], out, resume=True, shard_size_mb=0.2)  # nothing left to do
    assert again.info.shards_resumed == sum(len(s.shards) for s in
                                            again.info.splits.values())
    with pytest.raises(converter.ConvertError, match="other inputs or options"):
        _run(aoi[0], out, resume=True, shard_size_mb=50)


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    data = tmp_path / "data"
    expected = make_sn2_aoi(data, numbers=tuple(range(1, 25)), size=650,
                            types=("PAN", "MUL-PanSharpen"))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "sn_tf.convert", "--noprogress", f"--data_dir={data}",
            f"--output_dir={out}", "--num_workers=1", "--shard_size_mb=0.5",
            "--splits=train=1"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = out / ".sn_tf_work"
    deadline = time.time() + 120
    while time.time() < deadline and not list(work.glob("*.done.json")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(work.glob("*.done.json")))
    total = len(expected)  # 0.5 MB shards hold one 650 px tile each
    assert 1 <= done < total, f"kill came too late or too early ({done}/{total} shards)"
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "kept from an earlier run" in resumed.stdout
    ids = [t["tile_id"] for t in read_examples(out, decode_polygons=False)]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    assert not list(out.glob("*.tmp-*"))


# ---- bad input -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """One AOI with one problem per tile: (output dir, result, CLI run, polygons)."""
    root = tmp_path_factory.mktemp("bad")
    numbers = tuple(range(1, 15))
    make_sn2_aoi(root, numbers=numbers, types=("PAN", "MUL-PanSharpen", "MUL"))
    a = root / "AOI_2_Vegas_Train"
    lab = a / "geojson" / "buildings"
    tif = a / "PAN"
    (tif / "PAN_AOI_2_Vegas_img1.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # corrupt
    p2 = tif / "PAN_AOI_2_Vegas_img2.tif"
    p2.write_bytes(p2.read_bytes()[: p2.stat().st_size // 2])  # truncated
    (lab / "buildings_AOI_2_Vegas_img3.geojson").unlink()  # no label file
    (lab / "buildings_AOI_2_Vegas_img4.geojson").write_bytes(b"")  # zero bytes
    (lab / "buildings_AOI_2_Vegas_img5.geojson").write_text(geojson_text([]))  # no features
    x0, y0 = -115.30 + 6 * TILE_DEG, 36.20
    import shapely

    bowtie = shapely.Polygon([(x0 + 1e-4, y0 - 1e-4), (x0 + 5e-4, y0 - 5e-4),
                              (x0 + 5e-4, y0 - 1e-4), (x0 + 1e-4, y0 - 5e-4)])
    (lab / "buildings_AOI_2_Vegas_img6.geojson").write_text(geojson_text([bowtie]))
    far = shapely.box(x0 + 1, y0 + 1, x0 + 1.0001, y0 + 1.0001)  # wholly outside
    (lab / "buildings_AOI_2_Vegas_img7.geojson").write_text(geojson_text([far]))
    x8 = -115.30 + 8 * TILE_DEG
    in8 = shapely.box(x8 + 1e-4, y0 - 3e-4, x8 + 3e-4, y0 - 1e-4)
    (lab / "buildings_AOI_2_Vegas_img8.geojson").write_text(
        geojson_text([in8, shapely.box(x8 - 1, y0, x8 - 0.999, y0 + 0.001)]))  # one outside
    x9 = -115.30 + 9 * TILE_DEG  # labels declared and stored in Web Mercator
    in9 = shapely.box(x9 + 1e-4, y0 - 3e-4, x9 + 3e-4, y0 - 1e-4)
    merc = geo.reproject_geoms([in9], "EPSG:4326", "EPSG:3857")
    (lab / "buildings_AOI_2_Vegas_img9.geojson").write_text(
        geojson_text(merc, crs="urn:ogc:def:crs:EPSG::3857"))
    with rasterio.open(a / "MUL" / "MUL_AOI_2_Vegas_img10.tif", "r+") as ds:  # footprint off
        t = ds.transform
        ds.transform = rasterio.Affine(t.a, t.b, t.c + 0.01, t.d, t.e, t.f)
    (a / "MUL-PanSharpen" / "MUL-PanSharpen_AOI_2_Vegas_img11.tif").unlink()  # type missing
    (lab / "buildings_AOI_2_Vegas_img12.geojson").write_text("{broken")  # bad JSON
    (a / "scratch").mkdir()  # unknown folder
    out = tmp_path_factory.mktemp("bad_out")
    result = _run(root, out)
    cli = _cli(f"--data_dir={root}", f"--output_dir={tmp_path_factory.mktemp('bad_cli')}",
               "--num_workers=2")
    return out, result, cli, {"inside9": in9}


def _skip_reason(result, n):
    hits = [s.reason for s in result.info.skipped if s.tile_id == f"AOI_2_Vegas_img{n}"]
    return hits[0] if hits else None


def _notes(result, n):
    return " | ".join(x.note for x in result.info.notes
                      if x.tile_id == f"AOI_2_Vegas_img{n}")


def test_bad_tiles_are_skipped_with_file_and_reason(bad):
    _, result, _, _ = bad
    assert result.exit_code == converter.EXIT_SKIPPED
    assert "PAN_AOI_2_Vegas_img1.tif: not a readable GeoTIFF" in _skip_reason(result, 1)
    assert "PAN_AOI_2_Vegas_img2.tif" in _skip_reason(result, 2)
    assert "no label file" in _skip_reason(result, 3)
    assert "all 1 polygons fall outside the tile" in _skip_reason(result, 7)
    assert "buildings_AOI_2_Vegas_img7.geojson" in _skip_reason(result, 7)
    assert "MUL_AOI_2_Vegas_img10.tif: footprint" in _skip_reason(result, 10)
    assert "image type MUL-PanSharpen is missing" in _skip_reason(result, 11)
    assert "img12.geojson: not valid JSON" in _skip_reason(result, 12)
    skipped = {s.tile_id for s in result.info.skipped}
    assert skipped == {f"AOI_2_Vegas_img{n}" for n in (1, 2, 3, 7, 10, 11, 12)}


def test_bad_labels_converted_with_notes(bad):
    out, result, _, polys = bad
    tiles = {t["tile_id"]: t for t in read_examples(out)}
    assert "0 bytes" in _notes(result, 4)
    assert tiles["AOI_2_Vegas_img4"]["labels"]["MUL-PanSharpen"]["mask"].sum() == 0
    assert "no features" in _notes(result, 5)
    assert "repaired" in _notes(result, 6)
    assert tiles["AOI_2_Vegas_img6"]["labels"]["MUL-PanSharpen"]["mask"].sum() > 0
    assert "outside the MUL-PanSharpen grid dropped" in _notes(result, 8)
    assert len(tiles["AOI_2_Vegas_img8"]["labels"]["MUL-PanSharpen"]["polygons_px"]) == 1
    assert "reprojected from EPSG:3857 to EPSG:4326" in _notes(result, 9)
    img9 = tiles["AOI_2_Vegas_img9"]
    gt = img9["images"]["MUL-PanSharpen"]["transform_gdal"]
    want = labels.rasterize_mask(geo.map_to_pixel([polys["inside9"]], gt), 130, 130)
    np.testing.assert_array_equal(img9["labels"]["MUL-PanSharpen"]["mask"], want)
    assert any("scratch: unknown folder" in w for w in result.info.layout_warnings)


def test_cli_reports_skips_without_traceback(bad):
    _, _, cli, _ = bad
    assert cli.returncode == converter.EXIT_SKIPPED
    assert "Traceback" not in cli.stderr + cli.stdout
    assert "SKIPPED 7 tile(s)" in cli.stdout
    assert "PAN_AOI_2_Vegas_img1.tif: not a readable GeoTIFF" in cli.stdout


def test_cli_fatal_errors(tmp_path):
    r = _cli(f"--data_dir={tmp_path / 'nope'}", f"--output_dir={tmp_path / 'o'}")
    assert r.returncode == converter.EXIT_FATAL and "not a directory" in r.stderr
    assert "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = _cli(f"--data_dir={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'o'}")
    assert r.returncode == converter.EXIT_FATAL and "no SpaceNet AOI folder" in r.stderr


# ---- other sources and grids -----------------------------------------------------------
def test_hdf5_lab_files_as_source(tmp_path):
    import h5py

    data = tmp_path / "data"
    expected = make_sn2_aoi(data, numbers=(3, 5), types=("MUL-PanSharpen",))
    folder = data / "AOI_2_Vegas_Train" / "MUL-PanSharpen"
    layers = {}
    with h5py.File(folder / "vegas_8_band_label_layers.h5", "w") as f:
        for tile_id, polys in expected.items():
            img, _ = geo.read_raster(folder / f"MUL-PanSharpen_{tile_id}.tif")
            mask = labels.rasterize_mask(polys, 130, 130)
            dist = labels.distance_to_boundary(mask)
            f[tile_id.split("_")[-1]] = np.dstack([img + 1, mask, dist.astype(np.uint16)])
            layers[tile_id] = (img + 1, mask)
    result = _run(data, tmp_path / "out", source="hdf5", splits=(("train", 1.0),))
    assert result.exit_code == 0, result.info.skipped
    for tile in read_examples(tmp_path / "out"):
        img = tile["images"]["MUL-PanSharpen"]
        np.testing.assert_array_equal(img["data"], layers[tile["tile_id"]][0])  # from HDF5
        assert img["crs"] == "EPSG:4326"  # georeference from the GeoTIFF beside it
        np.testing.assert_array_equal(tile["labels"]["MUL-PanSharpen"]["mask"],
                                      layers[tile["tile_id"]][1])


def test_resample_to_puts_mul_on_the_pansharpened_grid(tmp_path):
    data = tmp_path / "data"
    make_sn2_aoi(data, numbers=(2,), types=("MUL", "MUL-PanSharpen"))
    result = _run(data, tmp_path / "out", resample_to="MUL-PanSharpen",
                  splits=(("train", 1.0),))
    tile = next(read_examples(tmp_path / "out"))
    res = tile["images"]["MUL@MUL-PanSharpen"]
    assert res["data"].shape == (130, 130, 8) and res["data"].dtype == np.uint16
    assert res["transform_gdal"] == tile["images"]["MUL-PanSharpen"]["transform_gdal"]
    assert res["label_grid"] == "MUL-PanSharpen"
    assert tile["images"]["MUL"]["data"].shape == (33, 33, 8)  # native kept too
    assert "MUL@MUL-PanSharpen" in result.info.band_stats
    assert result.info.aois["AOI_2_Vegas"].image_types == ("MUL", "MUL-PanSharpen",
                                                           "MUL@MUL-PanSharpen")


# ---- the synthetic SpaceNet sample, both layouts ---------------------------------------
@pytest.fixture(scope="module")
def sample_converted(tmp_path_factory):
    from sn_tf.spacenet.synthetic import write_sample

    data = tmp_path_factory.mktemp("sample")
    manifest = write_sample(data, aois=("AOI_2_Vegas", "AOI_1_Rio"), tiles_per_aoi=3, seed=1,
                            pan_dtype="float64")
    out = tmp_path_factory.mktemp("sample_out")
    result = _run(data, out, num_workers=2)
    return data, manifest, out, result


def test_sample_round_trip_both_layouts(sample_converted):
    data, manifest, out, result = sample_converted
    assert result.exit_code == converter.EXIT_OK, result.info.skipped
    by_id = {t["tile_id"]: t for t in manifest["tiles"]}
    seen = 0
    for tile in read_examples(out):
        spec = by_id[tile["tile_id"]]
        assert set(tile["images"]) == set(spec["images"])
        for itype, rel in spec["images"].items():
            src, h = geo.read_raster(data / rel)
            img = tile["images"][itype]
            assert img["data"].dtype == src.dtype and img["data"].shape == src.shape
            np.testing.assert_array_equal(img["data"], src)
            assert img["transform_gdal"] == h.transform_gdal and img["crs"] == h.crs
        seen += 1
    assert seen == len(manifest["tiles"])
    assert result.info.image_type("PAN").dtype == "float64"  # whatever dtype the file has
    assert set(result.info.label_grids) == {"MUL-PanSharpen", "MUL", "3band", "8band"}
    assert result.info.split("train").aois.keys() <= {"AOI_2_Vegas", "AOI_1_Rio"}


def test_sample_labels_agree_with_the_summary_csv(sample_converted):
    """Our pixel polygons vs the dataset's own PolygonWKT_Pix (2 decimals): same buildings."""
    import csv

    import shapely

    data, manifest, out, _ = sample_converted
    csv_polys = {}
    for aoi in manifest["aois"]:
        for row in csv.DictReader(open(data / aoi["summary_csv"])):
            if row["BuildingId"] != "-1":
                csv_polys.setdefault(row["ImageId"], []).append(
                    shapely.from_wkt(row["PolygonWKT_Pix"]))
    for tile in read_examples(out):
        grid = "3band" if "3band" in tile["labels"] else "MUL-PanSharpen"
        lab = tile["labels"][grid]
        ref = [p for g in csv_polys.get(tile["tile_id"], []) for p in geo.repair_polygon(g)]
        mine = shapely.union_all(lab["polygons_px"]) if lab["polygons_px"] else shapely.Polygon()
        theirs = shapely.union_all(ref) if ref else shapely.Polygon()
        if theirs.is_empty:
            assert mine.is_empty
            continue
        iou = mine.intersection(theirs).area / mine.union(theirs).area
        assert iou > 0.995, (tile["tile_id"], iou)
        h, w = lab["height"], lab["width"]
        diff = (lab["mask"] != labels.rasterize_mask(ref, h, w)).mean()
        assert diff < 0.002, (tile["tile_id"], diff)  # 2-decimal rounding flips a few centres
