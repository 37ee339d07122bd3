"""Subprocess tests of the CLIs ``python -m sn_tf.score`` and ``python -m sn_tf.polygonize``."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
MVOI_GT = "737201,0.5,0,3736839,0,-0.5"


def run(*args):
    """Run ``python <args>`` in the repository; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def write_csv(path, rows):
    path.write_text("ImageId,BuildingId,PolygonWKT_Pix,Confidence\n" + "".join(r + "\n" for r in rows))
    return path


SQUARE = '"POLYGON ((0 0,10 0,10 10,0 10,0 0))"'
FAR = '"POLYGON ((100 100,110 100,110 110,100 110,100 100))"'


def test_score_cli_prints_table_and_writes_json(tmp_path):
    truth = write_csv(tmp_path / "truth.csv", [f"AOI_2_Vegas_img1,0,{SQUARE},1",
                                               f"AOI_3_Paris_img2,0,{SQUARE},1"])
    props = write_csv(tmp_path / "props.csv", [f"AOI_2_Vegas_img1,0,{SQUARE},0.9",
                                               f"AOI_3_Paris_img2,0,{FAR},0.8"])
    out = tmp_path / "score.json"
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={props}", f"--json={out}")
    assert proc.returncode == 0, proc.stderr
    assert "AOI_2_Vegas" in proc.stdout and "AOI_3_Paris" in proc.stdout
    assert "mean city F1): 0.500000" in proc.stdout
    data = json.loads(out.read_text())
    assert data["overall"]["tp"] == 1 and data["overall"]["fp"] == 1 and data["overall"]["fn"] == 1
    assert data["overall"]["mean_city_f1"] == 0.5
    assert data["cities"]["AOI_3_Paris"]["f1"] == 0.0
    assert data["images"]["AOI_2_Vegas_img1"]["truth_best_iou"] == [1.0]
    # the options reach the scorer: min_area above 100 drops every polygon
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={props}", f"--json={out}",
               "--min_area=101", "--iou=0.3", "--iou_inclusive", "--norepair_proposals",
               "--touch_distance=2.5", "--size_classes=50,500,5000")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["overall"]["tp"] + data["overall"]["fp"] + data["overall"]["fn"] == 0
    assert data["settings"] == {"iou_threshold": 0.3, "iou_inclusive": True, "min_area": 101.0,
                                "repair_proposals": False, "touch_distance": 2.5,
                                "size_classes": [50.0, 500.0, 5000.0], "crs": "pixel",
                                "units": "pixel"}
    assert list(data["breakdown"]["overall"]) == [
        "touching", "isolated", "area<50", "area 50-500", "area 500-5000", "area>=5000"]


def test_score_cli_reports_touching_recall(tmp_path):
    """Two squares sharing a wall and one isolated square; one proposal merges the pair."""
    rows = [f"AOI_3_Paris_img1,1,\"POLYGON ((0 0,10 0,10 10,0 10,0 0))\",1",
            f"AOI_3_Paris_img1,2,\"POLYGON ((10 0,20 0,20 10,10 10,10 0))\",1",
            f"AOI_3_Paris_img1,3,\"POLYGON ((50 50,70 50,70 70,50 70,50 50))\",1"]
    truth = write_csv(tmp_path / "truth.csv", rows)
    props = write_csv(tmp_path / "props.csv", [
        f"AOI_3_Paris_img1,1,\"POLYGON ((0 0,20 0,20 10,0 10,0 0))\",0.9",
        f"AOI_3_Paris_img1,2,\"POLYGON ((50 50,70 50,70 70,50 70,50 50))\",0.8"])
    out = tmp_path / "score.json"
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={props}", f"--json={out}")
    assert proc.returncode == 0, proc.stderr
    assert "recall by truth building" in proc.stdout
    overall = json.loads(out.read_text())["breakdown"]["overall"]
    assert overall["touching"] == {"n": 2, "found": 0, "recall": 0.0}
    assert overall["isolated"] == {"n": 1, "found": 1, "recall": 1.0}
    assert overall["area 100-1000"] == {"n": 3, "found": 1, "recall": 1 / 3}
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={props}",
               "--touch_distance=-1")
    assert proc.returncode == 1 and "touch_distance" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_score_cli_missing_file_is_a_clear_error(tmp_path):
    truth = write_csv(tmp_path / "truth.csv", [f"AOI_2_Vegas_img1,0,{SQUARE},1"])
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={tmp_path / 'missing.csv'}")
    assert proc.returncode == 1
    assert "missing.csv" in proc.stderr and "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    proc = run("-m", "sn_tf.score", f"--truth={truth}")
    assert proc.returncode == 1 and "--proposals" in proc.stderr and "Traceback" not in proc.stderr


def test_score_cli_malformed_row_errors_or_is_skipped(tmp_path):
    truth = write_csv(tmp_path / "truth.csv", [f"AOI_2_Vegas_img1,0,{SQUARE},1"])
    props = write_csv(tmp_path / "props.csv", [f"AOI_2_Vegas_img1,0,{SQUARE},1",
                                               'AOI_2_Vegas_img1,1,"POLYGON ((0 0,",1'])
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={props}")
    assert proc.returncode == 1
    assert "props.csv: line 3: cannot parse WKT" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={props}", "--skip_malformed")
    assert proc.returncode == 0, proc.stderr
    assert "warning: skipped" in proc.stderr and "line 3" in proc.stderr
    assert "1.0000" in proc.stdout


def test_score_cli_never_imports_tensorflow(tmp_path):
    truth = write_csv(tmp_path / "truth.csv", [f"AOI_2_Vegas_img1,0,{SQUARE},1"])
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['sn_tf.score', '--truth={truth}', '--proposals={truth}']\n"
        "try:\n"
        "    runpy.run_module('sn_tf.score', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print('HEAVY', heavy)\n")
    proc = run("-c", script)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "AOI_2_Vegas" in proc.stdout      # it really scored


def _write_tif(path, array, transform=None, crs=None):
    import rasterio
    from affine import Affine

    profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1,
               "dtype": array.dtype.name}
    if transform is not None:
        profile.update(transform=Affine.from_gdal(*transform), crs=crs)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array, 1)
    return path


def test_polygonize_cli_csv_geojson_and_sdf_split(tmp_path):
    from scipy import ndimage

    mask = np.zeros((20, 30), dtype=np.float32)
    mask[2:12, 2:12] = 1
    mask[2:12, 12:22] = 1
    left = np.zeros(mask.shape, bool)
    left[2:12, 2:12] = True
    right = np.zeros(mask.shape, bool)
    right[2:12, 12:22] = True
    sdf = np.maximum(ndimage.distance_transform_edt(left), ndimage.distance_transform_edt(right))
    raster = _write_tif(tmp_path / "mask_AOI_2_Vegas_img7.tif", mask)
    sdf_tif = _write_tif(tmp_path / "sdf.tif", sdf.astype(np.float32))
    out = tmp_path / "out.csv"
    proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", "--kind=mask", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "ImageId,BuildingId,PolygonWKT_Pix,Confidence" and len(rows) == 2
    assert rows[1].startswith("AOI_2_Vegas_img7,0,")
    proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", "--kind=mask", f"--sdf_raster={sdf_tif}",
               "--sdf_level=2", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 3
    # georeferenced GeoJSON; min_area in m2 (0.25 m2 pixels: 100 px = 25 m2, keep >= 25)
    gj = tmp_path / "out.geojson"
    proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", "--kind=mask", f"--sdf_raster={sdf_tif}",
               f"--transform={MVOI_GT}", "--crs=EPSG:32616", "--min_area=25", f"--output={gj}")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(gj.read_text())
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32616"
    assert len(data["features"]) == 2
    assert data["features"][0]["geometry"]["coordinates"][0][0][0] > 737201
    proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", "--kind=mask", f"--sdf_raster={sdf_tif}",
               f"--transform={MVOI_GT}", "--crs=EPSG:32616", "--min_area=25.01", f"--output={gj}")
    assert len(json.loads(gj.read_text())["features"]) == 0
    # an empty tile still gets its POLYGON EMPTY row in CSV
    empty = _write_tif(tmp_path / "AOI_2_Vegas_img8.tif", np.zeros((5, 5), np.float32))
    proc = run("-m", "sn_tf.polygonize", f"--raster={empty}", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().splitlines()[1] == "AOI_2_Vegas_img8,-1,POLYGON EMPTY,1.0"


def test_polygonize_cli_errors_are_clear(tmp_path):
    good = _write_tif(tmp_path / "r.tif", np.zeros((5, 5), np.float32))
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("hello")
    cases = [
        ([f"--raster={tmp_path / 'absent.tif'}", f"--output={tmp_path / 'o.csv'}"], "absent.tif: raster file not found"),
        ([f"--raster={not_raster}", f"--output={tmp_path / 'o.csv'}"], "notes.tif: cannot read raster"),
        ([f"--raster={good}", "--transform=1,2,3", f"--output={tmp_path / 'o.csv'}"], "--transform"),
        ([f"--raster={good}", "--band=2", f"--output={tmp_path / 'o.csv'}"], "band 2 out of range"),
        ([f"--raster={good}", f"--output={tmp_path / 'o.shp'}"], ".geojson, .json or .csv"),
    ]
    for args, message in cases:
        proc = run("-m", "sn_tf.polygonize", *args)
        assert proc.returncode == 1, args
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.realdata
def test_polygonize_then_score_mvoi(realdata, tmp_path):
    raster = realdata / "solaris_tutorials" / "xdxd_inference_out" / "MVOI_nadir10_test_sample.tif"
    truth = realdata / "solaris_tutorials" / "data" / "MVOI_data" / "MVOI_nadir10_test_sample.geojson"
    out = tmp_path / "MVOI_pred.geojson"
    proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", "--threshold=0", "--min_area=40",
               f"--transform={MVOI_GT}", "--crs=EPSG:32616", f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 169 polygons" in proc.stdout
    score_json = tmp_path / "score.json"
    proc = run("-m", "sn_tf.score", f"--truth={truth}", f"--proposals={out}", "--min_area=0",
               f"--json={score_json}")
    assert proc.returncode == 0, proc.stderr
    overall = json.loads(score_json.read_text())["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"]) == (140, 29, 46)


@pytest.mark.realdata
def test_polygonize_khartoum_csv(realdata, tmp_path):
    raster = realdata / "solaris_tutorials" / "xdxd_inference_out" / "RGB-PanSharpen_AOI_5_Khartoum_img924.tif"
    out = tmp_path / "k.csv"
    proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", "--min_area=1e-10",
               "--transform=32.5525284,2.7e-6,0,15.6647412,0,-2.7e-6", "--crs=EPSG:4326",
               f"--output={out}")
    assert proc.returncode == 0, proc.stderr
    rows = out.read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith('AOI_5_Khartoum_img924,0,"POLYGON ((')


# ---- issue 14: polygonize tells the truth ------------------------------------------------
def _nan_building():
    """A 10 x 10 building (probability 0.9) with a 2 x 2 NaN speck inside, and a NaN strip
    along the left edge of the raster (outside every building)."""
    prob = np.zeros((20, 20), np.float32)
    prob[4:14, 4:14] = 0.9
    prob[7:9, 7:9] = np.nan
    prob[:, 0] = np.nan
    return prob


def test_nan_inside_a_building_is_no_hole_unless_asked():
    from sn_tf.head.rasters import polygons_from_raster

    (b,) = polygons_from_raster(_nan_building(), "AOI_2_Vegas_img1", kind="probability")
    assert b.polygon.area == 100 and not b.polygon.interiors
    assert b.confidence == pytest.approx(0.9)          # NaN pixels do not vote
    (h,) = polygons_from_raster(_nan_building(), "AOI_2_Vegas_img1", kind="probability",
                                nan="background")
    assert h.polygon.area == 96 and len(h.polygon.interiors) == 1
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        polygons_from_raster(_nan_building(), kind="probability", threshold=float("nan"))


def test_polygonize_cli_nan_warnings_flags_and_crs(tmp_path):
    raster = _write_tif(tmp_path / "AOI_2_Vegas_img3.tif", _nan_building())
    gj = tmp_path / "o.geojson"
    proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", "--kind=probability",
               f"--output={gj}")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(gj.read_text())
    assert len(data["features"]) == 1 and len(data["features"][0]["geometry"]["coordinates"]) == 1
    # pixel coordinates are marked with sn_tf's engineering CRS, which GDAL parses as such
    from rasterio.crs import CRS

    from sn_tf.spacenet.crs import PIXEL_CRS_WKT
    name = data["crs"]["properties"]["name"]
    assert name == PIXEL_CRS_WKT
    parsed = CRS.from_user_input(name)
    assert not parsed.is_geographic and not parsed.is_projected
    # all NaN, all background: written, with a warning
    all_nan = _write_tif(tmp_path / "AOI_2_Vegas_img4.tif", np.full((5, 5), np.nan, np.float32))
    proc = run("-m", "sn_tf.polygonize", f"--raster={all_nan}", f"--output={gj}")
    assert proc.returncode == 0 and "warning:" in proc.stderr and "all NaN" in proc.stderr
    low = _write_tif(tmp_path / "AOI_2_Vegas_img5.tif", np.full((5, 5), -3, np.float32))
    proc = run("-m", "sn_tf.polygonize", f"--raster={low}", f"--output={gj}")
    assert proc.returncode == 0 and "no pixel of band 1 is above the threshold 0" in proc.stderr
    for args, message in [
            (["--threshold=nan"], "--threshold=nan: must be a finite number"),
            (["--min_area=-1"], "--min_area=-1.0: must be a finite number >= 0"),
            ([f"--transform={MVOI_GT}"], "--transform without a CRS: give --crs")]:
        proc = run("-m", "sn_tf.polygonize", f"--raster={raster}", *args, f"--output={gj}")
        assert proc.returncode == 1 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # a geotransform without a CRS in the file itself: refused too
    no_crs = tmp_path / "nocrs.tif"
    import rasterio
    from affine import Affine

    with rasterio.open(no_crs, "w", driver="GTiff", width=20, height=20, count=1,
                       dtype="float32", transform=Affine.from_gdal(*map(float, MVOI_GT.split(",")))) as ds:
        ds.write(_nan_building(), 1)
    proc = run("-m", "sn_tf.polygonize", f"--raster={no_crs}", f"--output={gj}")
    assert proc.returncode == 1 and "has a geotransform but no CRS: give --crs" in proc.stderr
