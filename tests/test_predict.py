"""Tests of sn_tf.predict (sn_tf.serving): windows, stitching, strip polygons, inputs, outputs, scoring, CLI.

Models: an exact "oracle" FCN of 1x1 convs (footprint logit = band 1, sdf = band 2 of a
float32 image, so predicted polygons are known), a DetectNet-like model whose cells see only
their own 16x16 pixels (grid stitching must be exact), and the tiny untrained FCN of
tests/test_export.py (stitching within tolerance when its receptive field fits the overlap,
and plumbing on the synthetic SpaceNet sample).
"""

import copy
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from scipy import ndimage

from sn_tf.dataset import converter
from sn_tf.head import polygons
from sn_tf.spacenet.buildings import Building
from sn_tf.serving import exporter, headpool, sources, windows, writers
from sn_tf.serving.predictor import (Predictor, predict_image, predict_images, predict_tfrecords,
                                     stitch_outputs)
from sn_tf.spacenet import geo, scoring, synthetic
from sn_tf.spacenet.building_readers import read_buildings
from sn_tf.spacenet.crs import PIXEL_CRS_WKT
from sn_tf.training import model_dir as md
from fixtures.models import RGB, cell_detectnet, make_model_dir, oracle_fcn, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[1]
UTM_TRANSFORM = from_origin(500000.0, 4000000.0, 0.3, 0.3)
ORACLE_TYPE = "RGB-PanSharpen"


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"oracle", "cells", "tiny"}: Predictors of exported models (see the module docstring)."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    oracle = make_model_dir(root / "oracle", oracle_fcn(2), kind="fcn", stride=8,
                            bands={ORACLE_TYPE: [1, 2]}, input_dtypes={ORACLE_TYPE: "float32"},
                            mean=[0.0, 0.0], std=[1.0, 1.0])
    cells = make_model_dir(root / "cells", cell_detectnet(3), kind="detectnet", stride=16,
                           postprocess={"threshold": 0.3, "group_threshold": 0})
    tilted = make_model_dir(root / "tilted", cell_detectnet(3, oriented=True), kind="detectnet",
                            stride=16, postprocess={"threshold": 0.3, "group_threshold": 0,
                                                    "grouping": "clusters", "eps": 0.2})
    tiny = make_model_dir(root / "tiny", tiny_model("fcn"), kind="fcn", stride=4)
    for name, mdir in (("oracle", oracle), ("cells", cells), ("tilted", tilted),
                       ("tiny", tiny)):
        out[name] = Predictor(exporter.export_model(mdir, root / f"{name}_export"))
    return out


def oracle_scene(height: int, width: int) -> tuple[np.ndarray, list]:
    """float32 [H, W, 2] (band 1 = footprint logit +-4, band 2 = sdf) and the buildings.

    Buildings (each a list of pixel boxes (x0, y0, x1, y1) whose union it is): a tall block
    crossing many window rows, a U whose arms only join near its bottom, two buildings sharing
    a wall (split by the sdf), one cut by the bottom-right image corner, one of 16 px (dropped
    by min_area). The sdf of a building is its inner distance to its own outline + 0.3.
    """
    buildings = [[(10, 5, 30, 170)],
                 [(50, 20, 58, 108), (72, 20, 80, 108), (50, 100, 80, 108)],
                 [(95, 30, 115, 50)], [(115, 30, 135, 50)],
                 [(width - 12, height - 9, width, height)],
                 [(100, 120, 104, 124)]]
    sdf = np.full((height, width), -3.0, np.float32)
    for parts in buildings:
        mask = np.zeros((height, width), bool)
        for x0, y0, x1, y1 in parts:
            mask[y0:y1, x0:x1] = True
        inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] + 0.3
        sdf = np.where(mask, np.maximum(sdf, inside), sdf)
    logit = np.where(sdf > 0, 4.0, -4.0).astype(np.float32)
    return np.stack([logit, sdf], axis=-1).astype(np.float32), buildings


def write_tif(path, array_hwc: np.ndarray, transform=UTM_TRANSFORM, crs="EPSG:32611"):
    """A GeoTIFF of ``array_hwc`` (georeferenced unless transform and crs are None)."""
    kwargs = {} if transform is None else {"transform": transform, "crs": crs}
    with rasterio.open(path, "w", driver="GTiff", width=array_hwc.shape[1],
                       height=array_hwc.shape[0], count=array_hwc.shape[2],
                       dtype=array_hwc.dtype.name, **kwargs) as ds:
        ds.write(np.moveaxis(array_hwc, -1, 0))
    return pathlib.Path(path)


def building_key(buildings) -> list:
    """Sorted (normalised WKT, confidence to 6 digits) of building records."""
    return sorted((shapely.normalize(b.polygon).wkt, round(b.confidence, 6)) for b in buildings)


@pytest.fixture(scope="module")
def spacenet(tmp_path_factory):
    """Synthetic SpaceNet folder (2 Vegas tiles) and its conversion (one 'val' split)."""
    root = tmp_path_factory.mktemp("spacenet")
    manifest = synthetic.write_sample(root / "data", aois=("AOI_2_Vegas",), tiles_per_aoi=2)
    cfg = converter.ConvertConfig(num_workers=1, progress=False, splits=(("val", 1.0),),
                                  image_types=(RGB,))
    converter.convert(root / "data", root / "converted", cfg)
    return root / "data", root / "converted", manifest


# --------------------------------------------------------------------------- windows, ramps

@pytest.mark.parametrize("length", [1, 40, 64, 65, 100, 650, 1000, 5003])
@pytest.mark.parametrize("window,overlap,stride", [(64, 16, 16), (512, 64, 32), (100, 30, 4)])
def test_axis_windows_cover_with_overlap_on_stride(length, window, overlap, stride):
    wins = windows.axis_windows(length, window, overlap, stride)
    starts = [s for s, _ in wins]
    assert starts[0] == 0 and sum(wins[-1]) == length
    assert starts == sorted(set(starts))
    rounded = -(-window // stride) * stride
    for (s0, n0), (s1, n1) in zip(wins, wins[1:]):
        assert s1 % stride == 0 and s0 + n0 - s1 >= overlap
    if length > rounded:
        assert all(n <= rounded + 2 * stride for _, n in wins)
    else:
        assert wins == [(0, length)]


def test_ramp_weights_positive_somewhere_and_one_at_image_borders():
    assert windows.ramp(40, 1, False, False, 64).tolist() == [1.0] * 40
    w = windows.ramp(128, 1, True, True, 64)
    assert w[:16].max() == 0 and w[-16:].max() == 0 and w[48:80].min() == 1
    assert np.all(np.diff(w[:48]) >= 0)
    grid = windows.ramp(128, 16, True, False, 64)  # cell centres 8, 24, 40, 56, ...
    np.testing.assert_allclose(grid[:4], [0.0, 0.25, 0.75, 1.0])
    with pytest.raises(ValueError, match="less than one stride"):
        windows.axis_windows(100, 64, 60, 16)


# ------------------------------------------------------------------------------- stitching

def test_stitching_is_exact_for_a_1x1_model(models):
    image, _ = oracle_scene(150, 130)
    reader = sources.ArrayImage("x", image)
    whole = stitch_outputs(models["oracle"], reader, window=None)
    np.testing.assert_array_equal(whole["footprint"][..., 0], image[..., 0])
    tiled = stitch_outputs(models["oracle"], reader, window=48, overlap=16, batch_size=3)
    for name in ("footprint", "sdf"):
        np.testing.assert_allclose(tiled[name], whole[name], rtol=1e-6, atol=1e-6)


def test_stitching_matches_whole_image_when_receptive_field_fits_overlap(models):
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal([310, 420, 515], [95, 120, 80], (150, 131, 3)), 0, 2047)
    reader = sources.ArrayImage("x", image.astype(np.uint16))
    tiny = models["tiny"]
    whole = stitch_outputs(tiny, reader, window=None)
    tiled = stitch_outputs(tiny, reader, window=160, overlap=96, batch_size=2)
    coarse = stitch_outputs(tiny, reader, window=64, overlap=16, batch_size=2)
    for name in ("footprint", "sdf"):
        scale = np.abs(whole[name]).max()
        assert tiled[name].shape == whole[name].shape == (150, 131, 1)
        np.testing.assert_allclose(tiled[name], whole[name], atol=1e-4 * scale)
        # with too little overlap the seams show: the comparison above is not vacuous
        assert np.abs(coarse[name] - whole[name]).max() > 1e-3 * scale


def test_row_accumulator_reuses_its_buffers_and_equals_a_whole_canvas():
    # rows of windows down a tall, narrow image, popped row strip by row strip as the
    # stream does: the same float32 sums as one whole-image canvas, bit for bit, and the
    # buffers never hold more rows than one row of windows spans
    rng = np.random.default_rng(5)
    height, width, factor = 1000, 70, 2
    rows = windows.axis_windows(height, 96, 32, 16)
    cols = windows.axis_windows(width, 96, 32, 16)
    acc = windows._RowAccumulator(factor, width, {"a": 2, "b": 1})
    canvas = {"a": np.zeros((500, 35, 2), np.float32), "b": np.zeros((500, 35, 1), np.float32)}
    weights = np.zeros((500, 35), np.float32)
    strips, capacity = [], 0
    for k, (y0, h) in enumerate(rows):
        for x0, w in cols:
            wy = windows.ramp(h, factor, y0 > 0, y0 + h < height, 32)
            wx = windows.ramp(w, factor, x0 > 0, x0 + w < width, 32)
            weight = wy[:, None] * wx[None, :]
            values = {n: rng.normal(size=weight.shape + (c,)).astype(np.float32)
                      for n, c in (("a", 2), ("b", 1))}
            acc.add(y0, x0, weight, values)
            r, c = y0 // factor, x0 // factor
            weights[r:r + weight.shape[0], c:c + weight.shape[1]] += weight
            for n, v in values.items():
                canvas[n][r:r + weight.shape[0], c:c + weight.shape[1]] += v * weight[..., None]
            capacity = max(capacity, acc.weight.shape[0])
        end = rows[k + 1][0] if k + 1 < len(rows) else height
        strips.append(acc.pop(-(-end // factor)))
    assert capacity == max(-(-h // factor) for _, h in rows)
    for n in ("a", "b"):
        whole = canvas[n] / np.where(weights[..., None] > 0, weights[..., None], 1.0)
        np.testing.assert_array_equal(np.concatenate([s[n] for s in strips]), whole)


def test_detectnet_grid_stitching_is_exact_on_the_stride_16_grid(models):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 2048, (150, 190, 3)).astype(np.uint16)
    reader = sources.ArrayImage("x", image)
    cells = models["cells"]
    whole = stitch_outputs(cells, reader, window=None)
    tiled = stitch_outputs(cells, reader, window=64, overlap=32, batch_size=4)
    assert whole["coverage"].shape == (10, 12, 1) and whole["bbox"].shape == (10, 12, 4)
    for name in ("coverage", "bbox"):  # equal up to float summation order in the convs
        scale = np.abs(whole[name]).max()
        np.testing.assert_allclose(tiled[name], whole[name], rtol=0, atol=1e-5 * scale)
    got = predict_image(cells, reader, window=64, overlap=32)
    want = polygons.outputs_to_buildings("detectnet", whole, "x", image_size=(150, 190),
                                         params=cells.params)
    assert len(want) > 0 and len(got.buildings) == len(want)
    for a, b in zip(sorted(got.buildings, key=lambda b: b.polygon.bounds),
                    sorted(want, key=lambda b: b.polygon.bounds)):
        np.testing.assert_allclose(a.polygon.bounds, b.polygon.bounds, atol=1e-3)


def test_oriented_detectnet_predicts_the_rectangles_of_one_whole_image_call(models):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 2048, (150, 190, 3)).astype(np.uint16)
    reader = sources.ArrayImage("x", image)
    tilted = models["tilted"]
    assert tilted.outputs == ("coverage", "bbox", "orient")
    assert models["cells"].outputs == ("coverage", "bbox")
    whole = stitch_outputs(tilted, reader, window=None)
    tiled = stitch_outputs(tilted, reader, window=64, overlap=32, batch_size=4)
    assert whole["orient"].shape == (10, 12, 3)
    np.testing.assert_allclose(tiled["orient"], whole["orient"], rtol=0, atol=1e-5)
    got = predict_image(tilted, reader, window=64, overlap=32)
    want = polygons.outputs_to_buildings("detectnet", whole, "x", image_size=(150, 190),
                                         params=tilted.params)
    assert len(want) > 0 and len(got.buildings) == len(want)
    key = lambda b: b.polygon.bounds
    for a, b in zip(sorted(got.buildings, key=key), sorted(want, key=key)):
        np.testing.assert_allclose(np.asarray(a.polygon.exterior.coords),
                                   np.asarray(b.polygon.exterior.coords), atol=1e-3)
    # rotated rectangles, not boxes
    assert any(b.polygon.area < 0.99 * shapely.box(*b.polygon.bounds).area for b in want)


def test_strip_polygons_equal_one_whole_image_call(models):
    image, _ = oracle_scene(180, 150)
    oracle = models["oracle"]
    want = polygons.outputs_to_buildings(
        "fcn", {"footprint": image[..., :1], "sdf": image[..., 1:]}, "x", image_size=(180, 150),
        params=oracle.params)
    assert len(want) == 5  # tall, U, two sharing a wall, corner; the 16 px one is dropped
    for window, overlap in ((32, 8), (48, 16), (None, 0)):
        got = predict_image(oracle, sources.ArrayImage("x", image), window=window,
                            overlap=overlap, batch_size=3)
        assert building_key(got.buildings) == building_key(want), window


# ------------------------------------------------------------------------- inputs, outputs

def test_geotiff_outputs_csv_and_geojson_in_the_image_crs(models, tmp_path):
    image, boxes = oracle_scene(180, 150)
    write_tif(tmp_path / f"{ORACLE_TYPE}_AOI_2_Vegas_img5.tif", image)
    write_tif(tmp_path / f"{ORACLE_TYPE}_AOI_2_Vegas_img6.tif", image[:100, :120])
    write_tif(tmp_path / "PAN_AOI_2_Vegas_img5.tif", image[..., :1])  # other type: ignored
    preds = predict_images(models["oracle"], [str(tmp_path / "*.tif")], window=64,
                           overlap=16)
    assert [p.image_id for p in preds] == ["AOI_2_Vegas_img5", "AOI_2_Vegas_img6"]
    out = tmp_path / "out"
    paths = writers.write_predictions(preds, out)
    assert sorted(p.name for p in paths) == ["AOI_2_Vegas_img5.geojson",
                                             "AOI_2_Vegas_img6.geojson", "predictions.csv"]
    from_csv = read_buildings(out / "predictions.csv")
    assert building_key(from_csv) == building_key(preds[0].buildings + preds[1].buildings)
    doc = json.loads((out / "AOI_2_Vegas_img5.geojson").read_text())
    assert doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32611"
    west, south, east, north = rasterio.transform.array_bounds(180, 150, UTM_TRANSFORM)
    bounds = shapely.box(west, south, east, north)
    from_geojson = read_buildings(out / "AOI_2_Vegas_img5.geojson")
    geoms = [b.polygon for b in from_geojson if not b.is_empty]
    assert len(geoms) == len(preds[0].buildings) == 5
    assert all(bounds.covers(g) for g in geoms)
    tall = geo.pixel_to_map(shapely.box(*boxes[0][0]), UTM_TRANSFORM)
    assert any(g.symmetric_difference(tall).area < 1e-6 for g in geoms)
    single = writers.write_predictions(preds[:1], tmp_path / "one.geojson")
    assert json.loads(single[0].read_text()) == doc
    with pytest.raises(sources.PredictError, match="holds one image but there are 2"):
        writers.write_predictions(preds, tmp_path / "two.geojson")
    writers.write_predictions(preds, tmp_path / "all.csv")
    assert (tmp_path / "all.csv").read_text() == (out / "predictions.csv").read_text()


def test_wrong_bands_dtype_and_empty_files_are_clear_errors(models, tmp_path):
    image, _ = oracle_scene(64, 64)
    one_band = write_tif(tmp_path / "one_band.tif", image[..., :1])
    with pytest.raises(sources.PredictError, match="one_band.tif: has 1 band.* reads bands"):
        predict_image(models["oracle"], one_band)
    ints = write_tif(tmp_path / "ints.tif", image.astype(np.int16))
    with pytest.raises(sources.PredictError, match="ints.tif: pixels are int16 .* float32"):
        predict_image(models["oracle"], ints)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(sources.PredictError, match="empty.tif: file is empty"):
        predict_image(models["oracle"], tmp_path / "empty.tif")
    with pytest.raises(sources.PredictError, match="matches no file"):
        sources.find_images([str(tmp_path / "nothing*.tif")], models["oracle"].info)
    info = md.ModelInfo.load(models["tiny"].export_dir)
    info.image_types, info.bands = ["PAN", RGB], {"PAN": [1], RGB: [1, 2]}
    with pytest.raises(sources.PredictError, match="cannot tell which of the model's image"):
        sources.find_images([str(one_band)], info)
    write_tif(tmp_path / f"{RGB}_AOI_2_Vegas_img1.tif", image)
    with pytest.raises(sources.PredictError, match="AOI_2_Vegas_img1: no PAN file"):
        sources.find_images([str(tmp_path / f"{RGB}_AOI_2_Vegas_img1.tif")], info)


def test_band_count_other_than_the_training_data_is_refused(models, tmp_path, monkeypatch):
    import dataclasses

    image, _ = oracle_scene(64, 64)
    three = write_tif(tmp_path / "three_bands.tif", np.concatenate([image, image[..., :1]], -1))
    two = write_tif(tmp_path / "two_bands.tif", image)
    oracle = models["oracle"]
    predict_image(oracle, three)  # unknown training count: bands 1-2 exist, accepted
    monkeypatch.setattr(oracle, "info",
                        dataclasses.replace(oracle.info, source_bands={ORACLE_TYPE: 2}))
    with pytest.raises(sources.PredictError,
                       match="three_bands.tif: has 3 band.* trained on 2-band RGB-PanSharpen"):
        predict_image(oracle, three)
    assert predict_image(oracle, two).buildings  # the training count is fine


def test_image_without_georeference_gets_pixel_coordinates_and_a_warning(models, tmp_path):
    image, boxes = oracle_scene(180, 150)
    path = write_tif(tmp_path / "plain.tif", image, transform=None, crs=None)
    with pytest.warns(sources.PredictWarning, match="plain.tif: no georeference"):
        pred = predict_image(models["oracle"], path, window=64, overlap=16)
    assert pred.image_id == "plain" and pred.transform is None and pred.crs == ""
    writers.write_predictions([pred], tmp_path / "plain.geojson")
    doc = json.loads((tmp_path / "plain.geojson").read_text())
    # pixel coordinates are named as such (issue 14), so GDAL does not take them for WGS84
    assert doc["crs"]["properties"]["name"] == PIXEL_CRS_WKT
    geoms = [b.polygon for b in read_buildings(tmp_path / "plain.geojson")
             if not b.is_empty]
    assert building_key([Building("plain", g) for g in geoms]) == building_key(
        [Building("plain", b.polygon) for b in pred.buildings])
    assert any(g.equals(shapely.box(*boxes[2][0])) for g in geoms)


def test_overlays_are_pngs_of_the_image(models, tmp_path):
    image, _ = oracle_scene(90, 70)
    path = write_tif(tmp_path / "scene.tif", image)
    pred = predict_image(models["oracle"], path, overlays_dir=tmp_path / "png",
                         overlay_channels=[1, 1, 0], overlay_max_size=50)
    assert pred.buildings
    with rasterio.open(tmp_path / "png" / "scene.png") as ds:
        assert ds.driver == "PNG" and ds.count == 3 and (ds.height, ds.width) == (45, 35)
        rgb = np.moveaxis(ds.read(), 0, -1)
    assert np.all(rgb == (255, 230, 0), axis=-1).any()


def test_overlays_with_truth_colour_each_polygon_by_its_outcome(models, tmp_path):
    from sn_tf.head import render

    image, boxes = oracle_scene(90, 150)
    path = write_tif(tmp_path / "scene.tif", image)
    plain = predict_image(models["oracle"], path)
    # truth: the tall block (found), the two wall-sharing squares as ONE building (each
    # predicted square then has IoU 0.5 with it: both false positives, the merged truth
    # missed), and a building nobody predicted (missed)
    truth = [Building("scene", shapely.box(*boxes[0][0])),
             Building("scene", shapely.box(95, 30, 135, 50)),
             Building("scene", shapely.box(5, 175 - 100, 9, 85))]
    t_out, p_out = scoring.match_outcomes(truth, plain.buildings)
    assert t_out == ["tp", "fn", "fn"]
    assert p_out.count("tp") == 1 and p_out.count("fp") >= 2
    pred = predict_image(models["oracle"], path, overlays_dir=tmp_path / "png",
                         overlay_channels=[1, 1, 0], truth=truth)
    assert [b.polygon.wkt for b in pred.buildings] == [b.polygon.wkt for b in plain.buildings]
    with rasterio.open(tmp_path / "png" / "scene.png") as ds:
        rgb = np.moveaxis(ds.read(), 0, -1)
    for kind in ("tp", "fp", "fn"):
        assert np.all(rgb == render.OUTCOME_COLORS[kind], axis=-1).any(), kind
    assert not np.all(rgb == render.OUTLINE_COLOR, axis=-1).any()


def test_match_outcomes_are_parallel_to_the_inputs():
    v = "AOI_2_Vegas_img1"
    truth = [Building(v, None), Building(v, shapely.box(0, 0, 10, 10)),
             Building(v, shapely.box(20, 0, 30, 10)),
             Building(v, shapely.box(50, 0, 53, 3))]          # 9 px: not scored
    props = [Building(v, shapely.box(40, 0, 50, 10), 0.9),
             Building(v, shapely.box(0, 0, 10, 9), 0.8),
             Building(v, shapely.box(60, 0, 62, 2), 0.7)]    # 4 px: not scored
    assert scoring.match_outcomes(truth, props) == (
        ["not scored", "tp", "fn", "not scored"], ["fp", "tp", "not scored"])


# ---------------------------------------------------------- SpaceNet folders and TFRecords

def test_spacenet_folder_truth_and_tfrecords_mode(models, spacenet, tmp_path):
    data, converted, manifest = spacenet
    tiny = models["tiny"]
    preds = predict_images(tiny, [str(data)], window=384, overlap=64)
    ids = sorted(t["tile_id"] for t in manifest["tiles"])
    assert sorted(p.image_id for p in preds) == ids
    assert all(p.crs == "EPSG:4326" and (p.height, p.width) == (650, 650) for p in preds)
    tf_preds, tf_truth = predict_tfrecords(tiny, converted, "val")
    pooled, pooled_truth = predict_tfrecords(tiny, converted, "val", head_workers=1)
    assert [(p.image_id, building_key(p.buildings)) for p in pooled] == \
        [(p.image_id, building_key(p.buildings)) for p in tf_preds]
    assert [(r.image_id, r.is_empty or r.polygon.wkb) for r in pooled_truth] == \
        [(r.image_id, r.is_empty or r.polygon.wkb) for r in tf_truth]
    assert sorted(p.image_id for p in tf_preds) == ids
    for a in tf_preds:
        b = next(p for p in preds if p.image_id == a.image_id)
        assert a.transform == pytest.approx(b.transform) and a.crs == b.crs
    # truth read from the label GeoJSONs (lon/lat -> pixels) equals the stored pixel polygons
    label_dir = data / "AOI_2_Vegas_Train" / "geojson" / "buildings"
    from_geojson = writers.read_truth(label_dir, preds)
    def count(records):
        return {i: sum(1 for r in records if r.image_id == i and not r.is_empty) for i in ids}

    assert count(tf_truth) == count(from_geojson)
    # (an invalid ring repaired into parts counts once per part)
    assert sum(count(tf_truth).values()) >= sum(t["n_buildings"] for t in manifest["tiles"]) > 0
    self_score = scoring.score_polygons(tf_truth, [r for r in from_geojson if not r.is_empty])
    assert self_score.overall.fp == 0 and self_score.overall.fn == 0
    result = writers.score(tf_preds, tf_truth)
    kept = sum(1 for r in tf_truth if not r.is_empty and r.polygon.area >= 20)
    assert result.overall.tp + result.overall.fn == kept
    assert set(result.images) == set(ids)


def test_cli_predicts_scores_and_fails_without_traceback(models, spacenet, tmp_path):
    data, converted, _ = spacenet
    env = dict(os.environ, PYTHONPATH=str(REPO))
    export_dir = models["tiny"].export_dir
    summary = data / "AOI_2_Vegas_Train" / "summaryData" / "AOI_2_Vegas_Train_Building_Solution.csv"
    run = subprocess.run(
        [sys.executable, "-m", "sn_tf.predict", f"--saved_model={export_dir}",
         f"--images={data}", f"--output={tmp_path / 'out'}", f"--truth={summary}",
         f"--overlays={tmp_path / 'png'}", "--window=384", "--noprogress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "SpaceNet score (mean city F1)" in run.stdout
    score = json.loads((tmp_path / "out" / "score.json").read_text())
    assert score["overall"]["n_images"] == 2
    assert len(list((tmp_path / "png").glob("*.png"))) == 2
    assert (tmp_path / "out" / "predictions.csv").is_file()
    tf_run = subprocess.run(
        [sys.executable, "-m", "sn_tf.predict", f"--saved_model={export_dir}",
         f"--from_tfrecords={converted}", "--split=val", f"--output={tmp_path / 'tf.csv'}",
         "--noprogress", "--low_memory"], capture_output=True, text=True, env=env,
        timeout=300)  # --low_memory: glibc returns freed memory, the same run otherwise
    assert tf_run.returncode == 0, tf_run.stderr
    assert (tmp_path / "score.json").is_file() and (tmp_path / "tf.csv").is_file()
    bad_tif = write_tif(tmp_path / "two_bands.tif", np.zeros((40, 40, 2), np.uint16))
    bad = subprocess.run(
        [sys.executable, "-m", "sn_tf.predict", f"--saved_model={export_dir}",
         f"--images={bad_tif}", f"--output={tmp_path / 'bad'}", "--noprogress"],
        capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1
    assert "sn_tf.predict: error:" in bad.stderr and "two_bands.tif: has 2 band(s)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_fcn_contact_and_interior_outputs_reach_the_head(tmp_path):
    """An exported FCN with contact and interior heads serves them, the Predictor hands them
    to the polygon head, and the polygons equal the head's on the model's own outputs."""
    import keras

    from sn_tf.serving import exporter
    from sn_tf import modeling

    keras.utils.set_random_seed(3)
    model = modeling.build_model("fcn", 3, width=4, depth=2, blocks=1, contact=True,
                                 interior=True)
    mdir = make_model_dir(tmp_path / "m", model, kind="fcn", stride=4)
    predictor = Predictor(exporter.export_model(mdir, tmp_path / "e"))
    assert predictor.outputs == ("footprint", "sdf", "contact", "interior")
    image = np.random.default_rng(0).uniform(200, 600, (40, 44, 3)).astype(np.uint16)
    pred = predict_image(predictor, image, window=None)
    outputs = predictor(image[None].astype(np.float32))
    want = polygons.outputs_to_buildings("fcn", {k: v[0] for k, v in outputs.items()}, "image",
                                         image_size=(40, 44), params=predictor.params)
    assert [b.polygon.wkt for b in pred.buildings] == [b.polygon.wkt for b in want]


# ------------------------------------------------------------------- head worker processes

def _written(predictions, folder) -> dict:
    """{file name: bytes} of ``write_predictions`` into ``folder``."""
    writers.write_predictions(predictions, folder)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def generated_scenes(tmp_path_factory):
    """GeoTIFFs of oracle scenes of several sizes (float32, 2 bands) and of random uint16
    3-band images for the DetectNet-like model."""
    root = tmp_path_factory.mktemp("scenes")
    (root / "fcn").mkdir()
    (root / "det").mkdir()
    fcn, det = [], []
    for i, (h, w) in enumerate(((180, 150), (97, 211), (240, 64), (130, 130))):
        image, _ = oracle_scene(h, w)
        fcn.append(write_tif(root / "fcn" / f"{ORACLE_TYPE}_AOI_2_Vegas_img{i}.tif", image))
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 2048, (h, w, 3)).astype(np.uint16)
        det.append(write_tif(root / "det" / f"{RGB}_AOI_2_Vegas_img{i}.tif", pixels))
    return {"oracle": fcn, "cells": det, "tilted": det}


@pytest.mark.parametrize("model", ["oracle", "cells", "tilted"])
def test_head_workers_write_the_same_bytes_in_the_same_order(models, generated_scenes,
                                                             model, tmp_path):
    predictor, files = models[model], list(map(str, generated_scenes[model]))
    got = {}
    for workers in (0, 1, 2):
        preds = predict_images(predictor, files, window=64, overlap=16, batch_size=3,
                               head_workers=workers)
        got[workers] = _written(preds, tmp_path / f"w{workers}")
        assert [p.image_id for p in preds] == [f"AOI_2_Vegas_img{i}" for i in range(4)]
        assert all(p.buildings for p in preds)
    assert got[1] == got[0] and got[2] == got[0]


@pytest.mark.parametrize("low_memory", [False, True])
def test_a_pool_is_reused_across_calls_and_single_images(models, generated_scenes,
                                                         low_memory):
    """... and workers that return freed memory (``--low_memory``) find the same."""
    oracle, files = models["oracle"], generated_scenes["oracle"]
    with headpool.HeadPool(2, max_pending=1, low_memory=low_memory) as pool:
        for path in files[:2]:
            want = predict_image(oracle, path, window=48, overlap=16)
            got = predict_image(oracle, path, window=48, overlap=16, head_workers=pool)
            assert [b.polygon.wkb for b in got.buildings] == [b.polygon.wkb for b in want.buildings]
            assert [b.confidence for b in got.buildings] == [b.confidence for b in want.buildings]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_head_error_names_the_image_and_does_not_hang(models, generated_scenes, workers):
    broken = copy.copy(models["oracle"])
    broken.params = dict(broken.params, min_seed_area="many")  # int() fails in the head
    files = list(map(str, generated_scenes["oracle"]))
    with pytest.raises(sources.PredictError,
                       match=r"AOI_2_Vegas_img0\.tif: the polygon head failed: ValueError"):
        predict_images(broken, files, window=64, overlap=16, head_workers=workers)


def test_a_dead_head_worker_is_an_error_naming_the_image():
    with headpool.HeadPool(1) as pool:
        part = pool.submit(os._exit, 3)
        with pytest.raises(sources.PredictError, match="scene.tif: a polygon-head worker "
                                                       "process died"):
            pool.gather([part], "scene.tif")


def test_a_read_error_in_the_read_ahead_thread_names_the_file(models, generated_scenes,
                                                                tmp_path):
    files = list(map(str, generated_scenes["oracle"]))
    bad = tmp_path / f"{ORACLE_TYPE}_AOI_2_Vegas_img9.tif"
    bad.write_bytes(pathlib.Path(files[0]).read_bytes()[:4000])  # header only: pixels cut
    with pytest.raises(sources.PredictError, match="img9.tif"):
        predict_images(models["oracle"], files + [str(bad)], window=64, overlap=16,
                       head_workers=1)
