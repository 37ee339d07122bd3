"""Issue 14, scorer: CRSs, units, warnings and decode errors (each test fails on the scorer
before it: F1 0 without a word, a phantom city, an error naming no file)."""

import json
import subprocess
import sys

import pytest
import shapely
from shapely.geometry import box

from sn_tf.spacenet.geo import reproject_geoms
from sn_tf.spacenet.building_readers import SpaceNetFormatError, read_buildings
from sn_tf.spacenet.crs import PIXEL_CRS_WKT, ScoreInputError
from sn_tf.spacenet.scoring import score_polygons

UTM = "urn:ogc:def:crs:EPSG::32616"
# three 10 m x 8 m buildings near the MVOI sample (Atlanta, EPSG:32616)
UTM_BUILDINGS = [box(737300 + 20 * k, 3736700, 737310 + 20 * k, 3736708) for k in range(3)]


def _write_geojson(path, polygons, crs_name=None, image_id="AOI_6_Atlanta_img1"):
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {"image_id": image_id},
                         "geometry": shapely.geometry.mapping(p)} for p in polygons]}
    if crs_name:
        doc["crs"] = {"type": "name", "properties": {"name": crs_name}}
    path.write_text(json.dumps(doc))
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sn_tf.score", *args], capture_output=True,
                          text=True, timeout=120)


def test_utm_truth_against_lonlat_proposals_is_reprojected(tmp_path):
    truth = _write_geojson(tmp_path / "truth.geojson", UTM_BUILDINGS, UTM)
    lonlat = reproject_geoms(UTM_BUILDINGS, "EPSG:32616", "EPSG:4326")
    props = _write_geojson(tmp_path / "props.geojson", lonlat)          # no crs: CRS84
    result = score_polygons(truth, props)
    assert (result.overall.tp, result.overall.fp, result.overall.fn) == (3, 0, 0)
    assert result.settings["crs"] == "EPSG:32616" and result.settings["units"] == "metre"
    assert any("reprojected from EPSG:4326 to EPSG:32616" in w for w in result.warnings)


def test_lonlat_geojson_against_itself_keeps_buildings_under_the_pixel_rule(tmp_path):
    lonlat = reproject_geoms(UTM_BUILDINGS + [box(737400, 3736700, 737401, 3736701)],
                             "EPSG:32616", "EPSG:4326")   # + a 1 m2 shed: 11 px < 20 px
    path = _write_geojson(tmp_path / "a.geojson", lonlat)
    result = score_polygons(path, path)                  # default min_area=20 (pixels)
    assert (result.overall.tp, result.overall.fp, result.overall.fn) == (3, 0, 0)
    assert result.mean_city_f1 == 1.0 and result.settings["units"] == "degree"
    # 80 m2 at 0.3 m/px = 889 px: size class "area 100-1000"
    assert result.breakdown["overall"]["area 100-1000"].n == 3
    # a coarser pixel (gsd 2 m: 20 px = 80 m2) drops the 80 m2 buildings only just not
    assert score_polygons(path, path, gsd=2.0).overall.tp == 3
    assert score_polygons(path, path, gsd=2.01).overall.tp == 0


def test_pixel_against_map_coordinates_is_refused_naming_both(tmp_path):
    csv = tmp_path / "truth.csv"
    csv.write_text('ImageId,BuildingId,PolygonWKT_Pix,Confidence\n'
                   'AOI_6_Atlanta_img1,1,"POLYGON ((0 0,10 0,10 10,0 10,0 0))",1\n')
    props = _write_geojson(tmp_path / "props.geojson",
                           reproject_geoms(UTM_BUILDINGS, "EPSG:32616", "EPSG:4326"))
    with pytest.raises(ScoreInputError, match=r"props\.geojson is in EPSG:4326 but .*truth\.csv "
                                              r"in pixel coordinates"):
        score_polygons(csv, props)
    proc = _cli(f"--truth={csv}", f"--proposals={props}")
    assert proc.returncode == 1 and "pixel coordinates" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_pixel_geojson_marked_or_unmarked_scores_as_pixels(tmp_path):
    csv = tmp_path / "truth.csv"
    csv.write_text('ImageId,BuildingId,PolygonWKT_Pix,Confidence\n'
                   'AOI_2_Vegas_img1,1,"POLYGON ((300 300,310 300,310 310,300 310,300 300))",1\n')
    marked = _write_geojson(tmp_path / "m.geojson", [box(300, 300, 310, 310)], PIXEL_CRS_WKT,
                            "AOI_2_Vegas_img1")
    assert score_polygons(csv, marked).overall.tp == 1
    unmarked = _write_geojson(tmp_path / "u.geojson", [box(300, 300, 310, 310)],
                              image_id="AOI_2_Vegas_img1")
    result = score_polygons(csv, unmarked)
    assert result.overall.tp == 1
    assert any("read as pixel coordinates" in w for w in result.warnings)


def _truth_csv(path, rows):
    path.write_text("ImageId,BuildingId,PolygonWKT_Pix,Confidence\n" + "".join(
        f'{i},{k},"POLYGON (({x} 0,{x + 10} 0,{x + 10} 10,{x} 10,{x} 0))",1\n'
        for k, (i, x) in enumerate(rows)))
    return path


def test_a_city_only_in_the_proposals_is_not_scored_and_named(tmp_path):
    truth = _truth_csv(tmp_path / "t.csv", [("AOI_2_Vegas_img1", 0), ("AOI_2_Vegas_img1", 20)])
    props = _truth_csv(tmp_path / "p.csv", [("AOI_2_Vegas_img1", 0), ("AOI_2_Vegas_img1", 20),
                                             ("AOI_3_Paris_img9", 0)])
    result = score_polygons(truth, props)
    assert result.mean_city_f1 == 1.0 and list(result.cities) == ["AOI_2_Vegas"]
    assert any("only in the proposals, not scored" in w and "AOI_3_Paris" in w
               for w in result.warnings)
    out = tmp_path / "s.json"
    proc = _cli(f"--truth={truth}", f"--proposals={props}", f"--json={out}")
    assert proc.returncode == 0 and "warning: 1 city(ies) only in the proposals" in proc.stderr
    assert "AOI_3_Paris" in json.loads(out.read_text())["warnings"][0]


def test_images_only_in_the_proposals_and_empty_inputs_warn(tmp_path):
    truth = _truth_csv(tmp_path / "t.csv", [("AOI_2_Vegas_img1", 0)])
    props = _truth_csv(tmp_path / "p.csv", [("AOI_2_Vegas_img1", 0), ("AOI_2_Vegas_img7", 0)])
    result = score_polygons(truth, props)
    assert result.overall.fp == 1
    assert any("1 image(s) only in the proposals" in w and "AOI_2_Vegas_img7" in w
               for w in result.warnings)
    empty = tmp_path / "empty.csv"
    empty.write_text("ImageId,BuildingId,PolygonWKT_Pix,Confidence\n")
    out = tmp_path / "s.json"
    proc = _cli(f"--truth={truth}", f"--proposals={empty}", f"--json={out}")
    assert proc.returncode == 0
    assert "warning: proposals (" in proc.stderr and "holds no building polygon" in proc.stderr
    assert any("holds no building polygon" in w for w in json.loads(out.read_text())["warnings"])
    assert any(w.startswith("truth (") for w in score_polygons(empty, truth).warnings)


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b"ImageId,BuildingId,PolygonWKT_Pix,Confidence\n"
                    b'AOI_2_Vegas_img1,1,"POLYGON ((0 0,10 0,10 10,0 10,0 0))",1\n'
                    b'AOI_2_Vegas_img\xe91,2,"POLYGON ((0 0,10 0,10 10,0 10,0 0))",1\n')
    with pytest.raises(SpaceNetFormatError, match=r"bad\.csv: line 3: not UTF-8 text \(byte 0xe9"):
        read_buildings(csv)
    proc = _cli(f"--truth={csv}", f"--proposals={csv}")
    assert proc.returncode == 1 and "bad.csv: line 3: not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr
    gj = tmp_path / "bad.geojson"
    gj.write_bytes(b'{"type": "FeatureCollection",\n "features": [],\n "name": "\xff"}\n')
    with pytest.raises(SpaceNetFormatError, match=r"bad\.geojson: line 3: not UTF-8"):
        read_buildings(gj)
