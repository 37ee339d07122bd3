"""Tests of sn_tf.spacenet.scoring: readers, the SpaceNet metric rule by rule, and real known answers."""

import csv
import json

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

import sn_tf
from sn_tf.spacenet.buildings import Building
from sn_tf.spacenet.buildings import city_of
from sn_tf.spacenet.building_readers import (ReadIssue, SpaceNetFormatError, read_buildings, read_geojson, read_spacenet_csv)
from sn_tf.spacenet.scoring import score_polygons

V = "AOI_2_Vegas_img1"


def counts(result, image=None):
    c = result.images[image] if image else result.overall
    return c.tp, c.fp, c.fn


# ---------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_solaris_gt_vs_pred_geojson(realdata):
    result = score_polygons(realdata / "solaris" / "gt.geojson", realdata / "solaris" / "pred.geojson",
                            min_area=0)
    assert counts(result) == (8, 20, 20)
    assert result.overall.precision == result.overall.recall == 0.2857142857142857
    assert result.overall.f1 == 0.2857142857142857
    assert list(result.images) == ["gt"]         # one file each: the same image
    best = result.images["gt"].truth_best_iou
    assert len(best) == 28 and sum(v > 0.5 for v in best) == 8


@pytest.mark.realdata
def test_solaris_sample_csv_pair(realdata):
    result = score_polygons(realdata / "solaris" / "sample_truth.csv",
                            realdata / "solaris" / "sample_preds.csv")
    assert counts(result) == (151, 0, 0)
    assert result.overall.f1 == 1.0


@pytest.mark.realdata
def test_solaris_competition_pair_matches_every_tile(realdata):
    folder = realdata / "solaris"
    result = score_polygons(folder / "sample_truth_competition.csv",
                            folder / "sample_preds_competition.csv")
    assert counts(result) == (2319, 0, 0)
    with open(folder / "competition_test_results_full.csv", newline="") as f:
        expected = {row["imageID"]: row for row in csv.DictReader(f)}
    assert set(expected) == set(result.images) and len(expected) == 33
    for image_id, row in expected.items():
        got = result.images[image_id]
        assert (got.tp, got.fp, got.fn) == (int(row["TruePos"]), int(row["FalsePos"]),
                                            int(row["FalseNeg"])), image_id
        assert got.f1 == float(row["F1Score"])


@pytest.mark.realdata
def test_mvoi_truth_vs_solaris_predictions(realdata):
    truth = realdata / "solaris_tutorials" / "data" / "MVOI_data" / "MVOI_nadir10_test_sample.geojson"
    preds = realdata / "solaris_tutorials" / "xdxd_inference_out" / "MVOI_nadir10_predictions.geojson"
    result = score_polygons(truth, preds, min_area=0)
    assert counts(result) == (140, 29, 46)
    assert result.overall.f1 == 0.7887323943661972
    result = score_polygons(truth, preds, iou_threshold=0.75, min_area=0)
    assert counts(result) == (99, 70, 87)
    assert result.overall.f1 == 0.5577464788732394


def _independent_solution_sample_summary(path):
    """Per-city count of polygons scored in solution-sample.csv, straight from the text:
    data lines, minus comments/blank/EMPTY, repaired with buffer(0), area >= 20."""
    per_city, rows, images = {}, 0, set()
    for line in path.read_text().splitlines()[1:]:
        if not line.strip() or line.startswith("#"):
            continue
        rows += 1
        image_id, _, rest = line.partition(",")
        images.add(image_id)
        wkt = rest.split(",", 1)[1].rsplit(",", 1)[0].strip('"')
        if wkt == "POLYGON EMPTY":
            continue
        poly = shapely.from_wkt(wkt).buffer(0)
        if poly.area >= 20:
            city = "_".join(image_id.split("_")[:3])
            per_city[city] = per_city.get(city, 0) + 1
    return rows, images, per_city


@pytest.mark.realdata
def test_topcoder_solution_sample_reads_and_scores_against_itself(realdata):
    path = realdata / "topcoder_visualizer" / "solution-sample.csv"
    records = read_spacenet_csv(path)
    rows, images, per_city = _independent_solution_sample_summary(path)
    assert len(records) == rows == 706
    assert sum(r.is_empty for r in records) == 10
    assert sum(not r.polygon.is_valid for r in records if not r.is_empty) == 91
    assert all(r.confidence == 1.0 for r in records)     # numeric "1", or "POLYGON EMPTY" -> 1
    assert all(shapely.get_coordinate_dimension(r.polygon) == 2 for r in records if not r.is_empty)
    result = score_polygons(path, path)
    assert set(result.images) == images and len(images) == 39
    assert sorted(result.cities) == ["AOI_2_Vegas", "AOI_3_Paris", "AOI_4_Shanghai", "AOI_5_Khartoum"]
    for city, n in per_city.items():
        assert counts_of(result.cities[city]) == (n, 0, 0), city
        assert result.cities[city].f1 == 1.0
    assert result.overall.tp == sum(per_city.values()) == 674
    assert result.mean_city_f1 == 1.0
    # without repair the 91 self-intersecting proposals no longer all meet their repaired truth
    raw = score_polygons(path, path, repair_proposals=False)
    assert raw.overall.tp < result.overall.tp and raw.overall.fn > 0


def counts_of(c):
    return c.tp, c.fp, c.fn


# ---------------------------------------------------------------------------------- rule by rule


def test_min_area_20_is_kept_and_19_99_dropped_on_both_sides():
    a20 = box(0, 0, 4, 5)                       # area 20
    big = box(10, 0, 14, 15)                    # area 60, never proposed: a false negative
    small = box(20, 0, 24, 4.9975)              # area 19.99
    assert a20.area == 20 and small.area == pytest.approx(19.99)
    truth = [(V, a20), (V, big), (V, small)]
    proposals = [(V, a20), (V, small), (V, box(40, 40, 43, 46.6633))]   # last: 19.999 alone
    result = score_polygons(truth, proposals)
    assert counts(result) == (1, 0, 1)          # small truth is not an FN; small props not FPs
    assert result.images[V].truth_best_iou == [1.0, 0.0]
    assert counts(score_polygons(truth, proposals, min_area=0)) == (2, 1, 1)


def test_iou_exactly_half_is_a_miss_and_a_hit_with_inclusive():
    truth = [(V, box(0, 0, 10, 10))]
    proposals = [(V, box(0, 0, 10, 20))]         # intersection 100, union 200
    result = score_polygons(truth, proposals)
    assert counts(result) == (0, 1, 1)
    assert result.images[V].truth_best_iou == [0.5]
    assert counts(score_polygons(truth, proposals, iou_inclusive=True)) == (1, 0, 0)
    assert counts(score_polygons(truth, proposals, iou_threshold=0.49)) == (1, 0, 0)


# T1/T2 overlap; P_a has the SAME IoU (2/3) with both; P_b == T1 (IoU 1, and 3/7 with T2).
T1, T2 = box(0, 0, 10, 10), box(4, 0, 14, 10)
PA, PB = box(2, 0, 12, 10), box(0, 0, 10, 10)


def test_equal_confidences_keep_input_order_and_ties_go_to_first_truth():
    # P_a first: takes T1 (tie -> first truth); P_b then only has T2 at 3/7 -> FP
    assert counts(score_polygons([(V, T1), (V, T2)], [(V, PA, 0.7), (V, PB, 0.7)])) == (1, 1, 1)
    # P_b first: takes T1; P_a then takes T2 at 2/3
    assert counts(score_polygons([(V, T1), (V, T2)], [(V, PB, 0.7), (V, PA, 0.7)])) == (2, 0, 0)
    # truth order decides the tie: T2 first -> P_a takes T2, P_b takes T1
    assert counts(score_polygons([(V, T2), (V, T1)], [(V, PA, 0.7), (V, PB, 0.7)])) == (2, 0, 0)


def test_proposals_are_taken_by_confidence_highest_first():
    assert counts(score_polygons([(V, T1), (V, T2)], [(V, PA, 0.4), (V, PB, 0.9)])) == (2, 0, 0)
    assert counts(score_polygons([(V, T1), (V, T2)], [(V, PB, 0.4), (V, PA, 0.9)])) == (1, 1, 1)


def test_empty_image_and_image_only_in_proposals():
    truth = [Building(V, box(0, 0, 10, 10)), Building("AOI_2_Vegas_img2", None)]
    proposals = [Building(V, box(0, 0, 10, 10)), Building("AOI_2_Vegas_img2", Polygon()),
                 Building("AOI_2_Vegas_img9", box(0, 0, 10, 10)),
                 Building("AOI_2_Vegas_img9", box(20, 0, 30, 10))]
    result = score_polygons(truth, proposals)
    assert counts(result, "AOI_2_Vegas_img2") == (0, 0, 0)
    assert result.images["AOI_2_Vegas_img2"].f1 == 0.0            # nothing scored, not 1
    assert counts(result, "AOI_2_Vegas_img9") == (0, 2, 0)        # no truth: all FP
    assert counts(result) == (1, 2, 0)
    assert list(result.images) == [V, "AOI_2_Vegas_img2", "AOI_2_Vegas_img9"]


def test_building_id_minus_one_only_registers_the_image():
    truth = [Building(V, box(0, 0, 10, 10), building_id=-1)]
    result = score_polygons(truth, [Building(V, box(0, 0, 10, 10))])
    assert counts(result) == (0, 1, 0)


def test_score_is_the_mean_of_city_f1_not_the_pooled_f1():
    truth = [("AOI_2_Vegas_img1", box(0, 0, 10, 10)), ("AOI_2_Vegas_img1", box(20, 0, 30, 10)),
             ("AOI_3_Paris_img7", box(0, 0, 10, 10))]
    proposals = [("AOI_2_Vegas_img1", box(0, 0, 10, 10)), ("AOI_2_Vegas_img1", box(50, 0, 60, 10)),
                 ("AOI_3_Paris_img7", box(0, 0, 10, 10))]
    result = score_polygons(truth, proposals)
    assert counts_of(result.cities["AOI_2_Vegas"]) == (1, 1, 1)
    assert result.cities["AOI_2_Vegas"].f1 == 0.5
    assert result.cities["AOI_3_Paris"].f1 == 1.0
    assert result.mean_city_f1 == 0.75
    assert result.overall.f1 == pytest.approx(2 / 3)
    assert result.to_dict()["overall"]["mean_city_f1"] == 0.75


def test_city_with_no_truth_and_no_proposals_scores_zero_and_counts_in_the_mean():
    truth = [("AOI_2_Vegas_img1", box(0, 0, 10, 10)), ("AOI_5_Khartoum_img3", Polygon())]
    proposals = [("AOI_2_Vegas_img1", box(0, 0, 10, 10))]
    result = score_polygons(truth, proposals)
    assert counts_of(result.cities["AOI_5_Khartoum"]) == (0, 0, 0)
    k = result.to_dict()["cities"]["AOI_5_Khartoum"]
    assert (k["precision"], k["recall"], k["f1"]) == (0.0, 0.0, 0.0)
    assert result.mean_city_f1 == 0.5


def test_city_is_first_three_tokens():
    assert city_of("AOI_2_Vegas_img3457") == "AOI_2_Vegas"
    assert city_of("Atlanta_nadir10_catid_1030010003CAF100_740801_3728289") == "Atlanta_nadir10_catid"
    assert city_of("gt") == "gt"


def test_invalid_proposals_repaired_by_default_and_scored_raw_on_request():
    bow = Polygon([(0, 0), (20, 20), (20, 0), (0, 10)])          # self-intersecting
    lobe = bow.buffer(0)
    truth = [(V, lobe)]
    assert counts(score_polygons(truth, [(V, bow)], min_area=0)) == (1, 0, 0)
    raw = score_polygons(truth, [(V, bow)], min_area=0, repair_proposals=False)
    assert counts(raw) == (0, 1, 1)                # GEOS cannot intersect it: IoU 0
    # an invalid TRUTH polygon is always repaired
    assert counts(score_polygons([(V, bow)], [(V, lobe)], min_area=0)) == (1, 0, 0)


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="iou_threshold"):
        score_polygons([], [], iou_threshold=0)
    with pytest.raises(ValueError, match="min_area"):
        score_polygons([], [], min_area=-1)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        score_polygons("/nope.csv", [])


def test_package_exports_score_polygons_lazily():
    assert sn_tf.score_polygons is score_polygons


def _naive(truth, proposals, threshold=0.5, min_area=20.0):
    """Straightforward reference: every pair by shapely, per image, in Python."""
    tp = fp = fn = 0
    images = {i for i, _, _ in truth} | {i for i, _, _ in proposals}
    for img in images:
        ts = [g for i, g, _ in truth if i == img and g.area >= min_area]
        ps = [(g, c) for i, g, c in proposals if i == img and g.area >= min_area]
        ps.sort(key=lambda gc: -gc[1])
        used = [False] * len(ts)
        for g, _ in ps:
            best, bi = -1.0, -1
            for k, t in enumerate(ts):
                if not used[k]:
                    iou = g.intersection(t).area / g.union(t).area
                    if iou > best:
                        best, bi = iou, k
            if bi >= 0 and best > threshold:
                used[bi] = True
                tp += 1
            else:
                fp += 1
        fn += used.count(False)
    return tp, fp, fn


def test_vectorised_scorer_agrees_with_a_naive_pairwise_loop():
    rng = np.random.default_rng(7)
    truth, proposals = [], []
    for img in range(6):
        image_id = f"AOI_{2 + img % 3}_City_img{img}"
        for _ in range(30):
            x, y = rng.uniform(0, 600, 2)
            w, h = rng.uniform(3, 40, 2)
            truth.append((image_id, box(x, y, x + w, y + h), 1.0))
            if rng.random() < 0.8:
                dx, dy, dw, dh = rng.normal(0, 0.2, 4) * [w, h, w, h]
                proposals.append((image_id, box(x + dx, y + dy, x + w + dw, y + h + dh),
                                  float(rng.choice([0.5, 0.7, 0.9]))))
        for _ in range(5):
            x, y = rng.uniform(0, 600, 2)
            proposals.append((image_id, box(x, y, x + 20, y + 25), float(rng.random())))
    result = score_polygons(truth, proposals)
    assert counts(result) == _naive(truth, proposals)
    assert 0 < result.overall.tp < len(truth)


# ---------------------------------------------------------------------------------- readers


def test_csv_reader_tolerates_comments_blank_lines_z_and_negative_zero(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text(
        "ImageId,BuildingId,PolygonWKT_Pix,PolygonWKT_Geo\n"
        "\n"
        "# a comment, with a comma\n"
        f'{V},1,"POLYGON ((0 -0.0 0,10 0 0,10 10 0,0 10 0,0 -0.0 0))",0.25\n'
        f"{V},-1,POLYGON EMPTY,POLYGON EMPTY\n"
        f'AOI_2_Vegas_img2,2,"POLYGON ((0 0,10 0,10 10,0 10,0 0),(2 2,4 2,4 4,2 4,2 2))",1\n'
        f'AOI_2_Vegas_img3,3,"POLYGON ((0 0,10 10,10 0,0 10,0 0))",x\n')
    records = read_spacenet_csv(path)
    assert [r.image_id for r in records] == [V, V, "AOI_2_Vegas_img2", "AOI_2_Vegas_img3"]
    assert records[0].polygon.equals(box(0, 0, 10, 10)) and records[0].confidence == 0.25
    assert not shapely.has_z(records[0].polygon)
    assert records[1].is_empty and records[1].building_id == -1
    assert records[2].polygon.area == 96
    assert records[3].confidence == 1.0 and not records[3].polygon.is_valid   # kept as written


def test_csv_reader_confidence_header_and_headerless(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(f'ImageId,BuildingId,PolygonWKT_Pix,Confidence\n{V},0,"POLYGON ((0 0,1 0,1 1,0 0))",0.5\n')
    assert read_spacenet_csv(path)[0].confidence == 0.5
    path.write_text(f'{V},0,"POLYGON ((0 0,1 0,1 1,0 0))",0.75\n')
    assert read_spacenet_csv(path)[0].confidence == 0.75


@pytest.mark.parametrize("row, problem", [
    (f'{V},0,"POLYGON ((0 0,1 0,1 1",1', "cannot parse WKT"),
    (f'{V},0,"LINESTRING (0 0,1 1)",1', "expected a POLYGON"),
    (f'{V},0,"POLYGON ((0 0,1 0,1 1,0 0))",high', "not a finite number"),
    (f'{V},0', "columns"),
    (',0,"POLYGON ((0 0,1 0,1 1,0 0))",1', "empty ImageId"),
])
def test_malformed_rows_raise_with_file_and_line_or_are_skipped(tmp_path, row, problem):
    path = tmp_path / "bad.csv"
    good = f'{V},1,"POLYGON ((0 0,10 0,10 10,0 10,0 0))",1'
    path.write_text(f"ImageId,BuildingId,PolygonWKT_Pix,Confidence\n# note\n{good}\n{row}\n{good}\n")
    with pytest.raises(SpaceNetFormatError, match=rf"bad\.csv: line 4: .*{problem}"):
        read_spacenet_csv(path)
    issues = []
    records = read_spacenet_csv(path, on_error="skip", issues=issues)
    assert len(records) == 2
    assert len(issues) == 1 and issues[0].where == "line 4" and problem in issues[0].message
    result = score_polygons(path, path, on_error="skip")
    assert counts(result) == (2, 0, 0) and len(result.issues) == 2
    assert isinstance(result.issues[0], ReadIssue)


def test_geojson_reader_ids_empty_files_folders_and_pairing(tmp_path):
    truth_dir, prop_dir = tmp_path / "truth", tmp_path / "props"
    truth_dir.mkdir()
    prop_dir.mkdir()
    feature = {"type": "Feature", "properties": {"conf": 0.5},
               "geometry": {"type": "Polygon", "coordinates": [[[0, 0, 0], [10, 0, 0], [10, 10, 0],
                                                                [0, 10, 0], [0, 0, 0]]]}}
    fc = json.dumps({"type": "FeatureCollection", "features": [feature]})
    (truth_dir / "buildings_AOI_3_Paris_img5.geojson").write_text(fc)
    (truth_dir / "buildings_AOI_3_Paris_img6.geojson").write_text("")          # zero bytes
    (prop_dir / "AOI_3_Paris_img5_pred.geojson").write_text(fc)
    (prop_dir / "notes.txt").write_text("ignored")
    empty = read_geojson(truth_dir / "buildings_AOI_3_Paris_img6.geojson")
    assert len(empty) == 1 and empty[0].is_empty and empty[0].image_id == "AOI_3_Paris_img6"
    records = read_buildings(prop_dir)
    assert [r.image_id for r in records if not r.is_empty] == ["AOI_3_Paris_img5"]
    assert records[-1].confidence == 0.5 and not shapely.has_z(records[-1].polygon)
    result = score_polygons(truth_dir, prop_dir, min_area=0)
    assert counts(result) == (1, 0, 0) and set(result.images) == {"AOI_3_Paris_img5", "AOI_3_Paris_img6"}
    # two single files with unrelated names are one image
    (tmp_path / "a.geojson").write_text(fc)
    (tmp_path / "b.geojson").write_text(fc)
    result = score_polygons(tmp_path / "a.geojson", tmp_path / "b.geojson", min_area=0)
    assert counts(result) == (1, 0, 0) and list(result.images) == ["a"]
    # per-feature image ids win over the file name
    feature["properties"]["image_id"] = "AOI_4_Shanghai_img1"
    (tmp_path / "c.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    assert [r.image_id for r in read_geojson(tmp_path / "c.geojson")] == ["AOI_4_Shanghai_img1"]


def test_geojson_reader_reports_bad_json_and_geometries(tmp_path):
    path = tmp_path / "bad.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [\n  {"type": "Feature",, }]}')
    with pytest.raises(SpaceNetFormatError, match=r"bad\.geojson: line 2: invalid JSON"):
        read_geojson(path)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [1, 2]}}]}))
    with pytest.raises(SpaceNetFormatError, match="feature 0: expected a Polygon, got Point"):
        read_geojson(path)
    with pytest.raises(SpaceNetFormatError, match="unknown file type"):
        read_buildings(_touch(tmp_path / "x.txt"))


def _touch(path):
    path.write_text("")
    return path


def test_result_json_shape():
    result = score_polygons([(V, box(0, 0, 10, 10)), (V, box(20, 0, 30, 10))],
                            [(V, box(0, 0, 10, 11), 0.9)])
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) >= {"overall", "cities", "images"}
    for part in (data["overall"], data["cities"]["AOI_2_Vegas"], data["images"][V]):
        assert set(part) >= {"tp", "fp", "fn", "precision", "recall", "f1"}
    assert data["overall"]["mean_city_f1"] == pytest.approx(2 / 3)
    assert data["images"][V]["truth_best_iou"] == [pytest.approx(100 / 110), 0.0]
    assert "AOI_2_Vegas" in result.format_table()


# ---------------------------------------------------------------------------------- breakdown


def test_breakdown_two_squares_sharing_a_wall_merged_proposal_misses_both():
    pair = [box(0, 0, 10, 10), box(10, 0, 20, 10)]          # share the wall x = 10
    lone = box(50, 50, 70, 70)
    truth = [(V, pair[0]), (V, pair[1]), (V, lone)]
    merged = score_polygons(truth, [(V, box(0, 0, 20, 10), 0.9), (V, lone, 0.8)])
    assert counts(merged) == (1, 1, 2)
    b = merged.breakdown["overall"]
    assert (b["touching"].n, b["touching"].found) == (2, 0)
    assert (b["isolated"].n, b["isolated"].found) == (1, 1)
    assert merged.images[V].truth_touching == [True, True, False]
    assert merged.images[V].truth_matched == [False, False, True]
    assert merged.touching_recall() == 0.0
    split = score_polygons(truth, [(V, pair[0], 0.9), (V, pair[1], 0.9), (V, lone, 0.8)])
    assert split.touching_recall() == 1.0 and split.touching_recall("AOI_2_Vegas") == 1.0
    assert "recall by truth building" in split.format_table()


def test_breakdown_touch_distance_sizes_and_cities():
    paris = "AOI_3_Paris_img7"
    truth = [(V, box(0, 0, 10, 10)), (V, box(10.5, 0, 20, 10)),      # gap 0.5: touching at 1
             (V, box(40, 0, 50, 10)), (V, box(52, 0, 90, 40)),       # gap 2: touching at 2 only
             (V, box(100, 0, 104, 4)), (V, box(104, 0, 140, 10)),    # touches a 16 px sliver
             (paris, box(0, 0, 5, 5))]
    result = score_polygons(truth, [(V, box(52, 0, 90, 40))])
    assert result.images[V].truth_touching == [True, True, False, False, True]
    assert result.images[paris].truth_touching == [False]
    assert result.breakdown["AOI_2_Vegas"]["touching"].n == 3
    assert result.breakdown["AOI_3_Paris"]["isolated"].n == 1
    sizes = {k: (v.n, v.found) for k, v in result.breakdown["overall"].items()
             if k.startswith("area")}
    assert sizes == {"area<100": (2, 0), "area 100-1000": (3, 0), "area>=1000": (1, 1)}
    wide = score_polygons(truth, [(V, box(52, 0, 90, 40))], touch_distance=2.0)
    assert wide.images[V].truth_touching == [True, True, True, True, True]
    assert wide.breakdown["overall"]["touching"].found == 1
    custom = score_polygons(truth, [], size_classes=[50])
    assert list(custom.breakdown["overall"]) == ["touching", "isolated", "area<50", "area>=50"]
    for bad in ({"touch_distance": -1}, {"touch_distance": float("nan")},
                {"size_classes": [100, 50]}, {"size_classes": [float("inf")]}):
        with pytest.raises(ValueError):
            score_polygons(truth, [], **bad)
