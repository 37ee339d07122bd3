"""Tests of sn_tf.head.polygons: rasters/boxes -> polygons, and the CSV / GeoJSON writers."""

import json
import math

import numpy as np
import pytest
import shapely
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon, box

from sn_tf.head import detections, polygons as P, rasters
from sn_tf.spacenet.buildings import Building, tile_id_from_name
from sn_tf.spacenet.building_writers import (geojson_feature_collection, write_geojson, write_spacenet_csv)
from sn_tf.spacenet.crs import crs_name
from sn_tf.spacenet.geo import as_gdal_transform, map_to_pixel, pixel_area, pixel_to_map, repair_polygon, to_affine
from sn_tf.spacenet.building_readers import read_geojson, read_spacenet_csv
from sn_tf.spacenet.scoring import score_polygons

MVOI_GT = (737201.0, 0.5, 0.0, 3736839.0, 0.0, -0.5)
KHARTOUM_GT = (32.5525284, 2.7e-6, 0.0, 15.6647412, 0.0, -2.7e-6)


def geoms(buildings):
    return [b.polygon for b in buildings]


def same_set(actual, expected):
    """True when both lists hold the same polygons (any order, exact topological equality)."""
    if len(actual) != len(expected):
        return False
    remaining = list(expected)
    for g in actual:
        hit = next((k for k, e in enumerate(remaining) if g.equals(e)), None)
        if hit is None:
            return False
        remaining.pop(hit)
    return True


# ---------------------------------------------------------------------------------- transforms


def test_transform_forms_agree_and_round_trip():
    from affine import Affine

    assert as_gdal_transform(Affine(0.5, 0, 737201, 0, -0.5, 3736839)) == MVOI_GT
    assert as_gdal_transform("737201,0.5,0,3736839,0,-0.5") == MVOI_GT
    assert to_affine(MVOI_GT) == Affine(0.5, 0, 737201, 0, -0.5, 3736839)
    assert pixel_area(MVOI_GT) == 0.25
    sheared = (10.0, 2.0, 0.5, 20.0, 0.25, -3.0)
    poly = Polygon([(0, 0), (7, 1), (3, 9)])
    mapped = pixel_to_map(poly, sheared)
    assert mapped.exterior.coords[1] == pytest.approx((10 + 14 + 0.5, 20 + 1.75 - 3))
    assert map_to_pixel(mapped, sheared).equals_exact(poly, 1e-12)


@pytest.mark.parametrize("text, problem", [("1,2,3", "expected 6"), ("1,2,x,4,5,6", "not all"),
                                           ("0,1,0,0,0,0", "singular"), ("0,1,0,0,0,nan", "finite")])
def test_bad_transforms_are_clear_errors(text, problem):
    with pytest.raises(ValueError, match=problem):
        as_gdal_transform(text)


def test_tile_id_from_name():
    assert tile_id_from_name("/a/RGB-PanSharpen_AOI_5_Khartoum_img924.tif") == "AOI_5_Khartoum_img924"
    assert tile_id_from_name("buildings_AOI_2_Vegas_img3457.geojson") == "AOI_2_Vegas_img3457"
    assert tile_id_from_name("/x/pred.geojson") == "pred"


# ---------------------------------------------------------------------------------- rasters


def test_hand_made_mask_gives_exact_polygons():
    mask = np.zeros((8, 10), dtype=np.uint8)
    mask[1:3, 1:4] = 1          # 3x2 rectangle
    mask[5:8, 0:3] = 1          # 3x3 square with a hole in the middle
    mask[6, 1] = 0
    mask[1, 6] = 1              # two pixels touching only diagonally: 2 polygons
    mask[2, 7] = 1
    mask[4:6, 6:9] = 1          # L shape
    mask[6:8, 8] = 1
    out = rasters.polygons_from_raster(mask, "img", kind="mask")
    expected = [
        box(1, 1, 4, 3),
        Polygon([(0, 5), (3, 5), (3, 8), (0, 8)], [[(1, 6), (2, 6), (2, 7), (1, 7)]]),
        box(6, 1, 7, 2),
        box(7, 2, 8, 3),
        Polygon([(6, 4), (9, 4), (9, 8), (8, 8), (8, 6), (6, 6)]),
    ]
    assert same_set(geoms(out), expected)
    assert sorted(b.polygon.area for b in out) == sorted([6.0, 8.0, 1.0, 1.0, 8.0])
    assert all(b.image_id == "img" and b.confidence == 1.0 for b in out)
    assert sum(b.polygon.area for b in out) == mask.sum()


def test_threshold_is_strict_and_min_area_drops_small():
    raster = np.zeros((6, 6), dtype=np.float32)
    raster[0:2, 0:2] = 0.5      # exactly the threshold: not a building
    raster[3:6, 3:6] = 0.9
    raster[0, 5] = 0.8
    out = rasters.polygons_from_raster(raster, kind="probability", threshold=0.5)
    assert sorted(b.polygon.area for b in out) == [1.0, 9.0]
    out = rasters.polygons_from_raster(raster, kind="probability", min_area=9.0)
    assert [b.polygon.area for b in out] == [9.0]      # 9 kept (not < 9), 1 dropped
    assert out[0].confidence == pytest.approx(0.9)


def test_confidence_per_kind():
    logits = np.full((4, 4), -5.0)
    logits[1:3, 1:3] = [[1.0, 2.0], [3.0, 4.0]]
    (b,) = rasters.polygons_from_raster(logits, kind="logit")
    assert b.confidence == pytest.approx(np.mean(1 / (1 + np.exp(-np.array([1.0, 2, 3, 4])))))
    (b,) = rasters.polygons_from_raster(logits, kind="logit", probability=np.full((4, 4), 0.25))
    assert b.confidence == 0.25
    (b,) = rasters.polygons_from_raster(logits[..., None], kind="mask")   # [H, W, 1] accepted
    assert b.confidence == 1.0
    with pytest.raises(ValueError, match="kind"):
        rasters.polygons_from_raster(logits, kind="bogus")
    with pytest.raises(ValueError, match="shape"):
        rasters.polygons_from_raster(np.zeros((2, 3, 2)))


def test_transform_gives_map_polygons_and_map_unit_min_area():
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[2:4, 2:5] = 1     # 6 px = 1.5 m2 at 0.5 m
    mask[6:10, 6:10] = 1   # 16 px = 4 m2
    out = rasters.polygons_from_raster(mask, kind="mask", transform=MVOI_GT, min_area=1.6)
    assert len(out) == 1
    assert out[0].polygon.equals(box(737201 + 3, 3736839 - 5, 737201 + 5, 3736839 - 3))
    assert out[0].polygon.area == 4.0


def _two_touching_squares():
    """Two 10x10 squares sharing an edge, and a model-like sdf (per-building inner distance)."""
    left = np.zeros((14, 26), dtype=bool)
    left[2:12, 2:12] = True
    right = np.zeros_like(left)
    right[2:12, 12:22] = True
    sdf = np.maximum(ndimage.distance_transform_edt(left), ndimage.distance_transform_edt(right))
    sdf[~(left | right)] = -1.0
    return (left | right).astype(np.float32), sdf


def test_touching_squares_merge_without_sdf_and_split_with_sdf():
    mask, sdf = _two_touching_squares()
    merged = rasters.polygons_from_raster(mask, kind="mask")
    assert same_set(geoms(merged), [box(2, 2, 22, 12)])
    split = rasters.polygons_from_raster(mask, kind="mask", sdf=sdf, sdf_level=2.0)
    assert same_set(geoms(split), [box(2, 2, 12, 12), box(12, 2, 22, 12)])
    # the sdf itself as the raster (kind="sdf"): threshold 0 keeps the footprint
    split = rasters.polygons_from_raster(sdf, kind="sdf", sdf=sdf)
    assert same_set(geoms(split), [box(2, 2, 12, 12), box(12, 2, 22, 12)])
    # seeds need sdf > level: with a level above every value nothing splits
    assert len(rasters.polygons_from_raster(mask, kind="mask", sdf=sdf, sdf_level=10)) == 1


def test_sdf_split_never_gives_pixels_to_a_seed_of_another_component():
    """A thin seedless tail of building C runs close to the core of building D (separated by
    background): the tail must stay with C, the only seed of its own component."""
    mask = np.zeros((16, 24), dtype=bool)
    mask[2:12, 0:10] = True      # C: square
    mask[12:14, 0:2] = True      # C: connector
    mask[13, 0:22] = True        # C: thin tail passing under D
    mask[2:12, 12:22] = True     # D: square (row 12 is background between D and the tail)
    sdf = ndimage.distance_transform_edt(mask)
    out = rasters.polygons_from_raster(mask.astype(np.float32), kind="mask", sdf=sdf, sdf_level=2)
    c = np.zeros_like(mask)
    c[2:12, 0:10] = c[12:14, 0:2] = c[13, 0:22] = True
    assert sorted(b.polygon.area for b in out) == sorted([float(c.sum()), 100.0])
    assert any(b.polygon.equals(box(12, 2, 22, 12)) for b in out)


def test_repair_splits_bow_tie_and_simplify_reduces_vertices():
    bow = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    parts = repair_polygon(bow)
    assert len(parts) == 2 and all(p.is_valid for p in parts)
    assert sum(p.area for p in parts) == pytest.approx(50.0)
    staircase = np.tril(np.ones((20, 20), dtype=np.uint8))
    (raw,) = rasters.polygons_from_raster(staircase, kind="mask")
    (simple,) = rasters.polygons_from_raster(staircase, kind="mask", simplify=1.0)
    assert len(simple.polygon.exterior.coords) < len(raw.polygon.exterior.coords)
    assert simple.polygon.is_valid
    assert simple.polygon.symmetric_difference(raw.polygon).area < 0.1 * raw.polygon.area


@pytest.mark.realdata
def test_mvoi_logits_reproduce_the_169_solaris_polygons_and_their_score(realdata):
    import rasterio

    out_dir = realdata / "solaris_tutorials" / "xdxd_inference_out"
    with rasterio.open(out_dir / "MVOI_nadir10_test_sample.tif") as ds:
        logits = ds.read(1)
    out = rasters.polygons_from_raster(logits, "MVOI", kind="logit", threshold=0.0, min_area=40.0,
                                       transform=MVOI_GT)
    expected = read_geojson(out_dir / "MVOI_nadir10_predictions.geojson")
    expected = [b.polygon for b in expected if not b.is_empty]
    assert len(out) == len(expected) == 169
    ours = np.array(geoms(out), dtype=object)
    theirs = np.array(expected, dtype=object)
    pi, ti = shapely.STRtree(theirs).query(ours, predicate="intersects")
    equal = shapely.equals(ours[pi], theirs[ti])
    assert len(set(pi[equal])) == 169 and len(set(ti[equal])) == 169
    assert shapely.area(shapely.symmetric_difference(ours[pi[equal]], theirs[ti[equal]])).max() == 0
    truth = realdata / "solaris_tutorials" / "data" / "MVOI_data" / "MVOI_nadir10_test_sample.geojson"
    result = score_polygons(truth, [("MVOI_nadir10_test_sample", b.polygon, b.confidence) for b in out],
                            min_area=0)
    assert (result.overall.tp, result.overall.fp, result.overall.fn) == (140, 29, 46)
    assert result.overall.f1 == 0.7887323943661972


@pytest.mark.realdata
def test_khartoum_logits_reproduce_the_solaris_polygon(realdata):
    import rasterio

    out_dir = realdata / "solaris_tutorials" / "xdxd_inference_out"
    with rasterio.open(out_dir / "RGB-PanSharpen_AOI_5_Khartoum_img924.tif") as ds:
        logits = ds.read(1)
    out = rasters.polygons_from_raster(logits, "AOI_5_Khartoum_img924", kind="logit", min_area=1e-10,
                                       transform=KHARTOUM_GT)
    expected = [b.polygon for b in read_geojson(out_dir / "Khartoum_img924.geojson") if not b.is_empty]
    assert len(out) == len(expected) == 1
    # the file holds 7-decimal degrees: back in pixels its vertices are integers to 1e-6 px
    exp_px = map_to_pixel(expected[0], KHARTOUM_GT)
    coords = shapely.get_coordinates(exp_px)
    assert np.abs(coords - np.round(coords)).max() < 1e-6
    ours_px = map_to_pixel(out[0].polygon, KHARTOUM_GT)
    assert shapely.transform(ours_px, np.round).equals(shapely.transform(exp_px, np.round))
    assert out[0].polygon.symmetric_difference(expected[0]).area < 1e-9 * expected[0].area


# ---------------------------------------------------------------------------------- DetectNet


def test_detectnet_candidates_decode_hand_grid():
    coverage = np.zeros((2, 3), dtype=np.float32)
    coverage[0, 1] = 0.9
    coverage[1, 2] = 0.06     # threshold itself is kept (>=)
    coverage[1, 0] = 0.0599   # below
    bbox = np.zeros((2, 3, 4), dtype=np.float32)
    bbox[0, 1] = [-5, -6, 7, 8]        # centre (24, 8)
    bbox[1, 2] = [-10, -3, 30, 4]      # centre (40, 24): x2 = 70 is clipped to 48
    bbox[1, 0] = [-1, -1, 1, 1]
    boxes, scores = detections.detectnet_candidates(coverage[..., None], bbox, cell_size=16,
                                                    threshold=0.06)
    np.testing.assert_array_equal(boxes, np.array([[19, 2, 31, 16], [30, 21, 48, 28]], np.float32))
    np.testing.assert_array_equal(scores, np.array([0.9, 0.06], np.float32))
    assert boxes.dtype == np.float32
    with pytest.raises(ValueError, match="bbox"):
        detections.detectnet_candidates(coverage, bbox[..., :3])


def test_group_rectangles_merges_near_identical_and_drops_isolated():
    near = np.array([[100, 100, 150, 160], [100.5, 100, 150.5, 160],
                     [100, 100.5, 150, 160.5], [100.5, 100.5, 150, 160]], dtype=np.float64)
    isolated = np.array([[300, 300, 340, 330], [10, 10, 30, 40]], dtype=np.float64)
    boxes, counts, scores = detections.group_rectangles(np.vstack([near, isolated]),
                                                        [0.5, 0.7, 0.9, 0.3, 1.0, 1.0], 3, 0.02)
    np.testing.assert_allclose(boxes, [near.mean(axis=0)], rtol=0, atol=1e-4)
    assert counts.tolist() == [4]
    assert scores[0] == pytest.approx(0.6)
    # exactly group_threshold members is not enough (clusters with <= threshold are dropped)
    assert len(detections.group_rectangles(near[:3], None, 3, 0.02)[0]) == 0
    assert len(detections.group_rectangles(near[:3], None, 2, 0.02)[0]) == 1
    # group_threshold 0: OpenCV returns the rectangles unchanged
    assert len(detections.group_rectangles(near, None, 0, 0.02)[0]) == 4
    # similarity needs every edge within eps*(min w + min h)/2 = 0.02*(50+60)/2 = 1.1
    apart = near.copy()
    apart[:2] += [1.2, 0, 1.2, 0]     # left/right edges >= 1.2 px away from the other two
    boxes, counts, _ = detections.group_rectangles(apart, None, 1, 0.02)
    assert counts.tolist() == [2, 2]


def test_group_rectangles_chains_transitively_and_suppresses_inner_boxes():
    chain = np.array([[0, 0, 100, 100], [1, 0, 101, 100], [2, 0, 102, 100], [3, 0, 103, 100]], float)
    boxes, counts, _ = detections.group_rectangles(chain, None, 1, 0.015)   # delta 1.5: 0-1-2-3 chain
    assert counts.tolist() == [4] and boxes[0].tolist() == [1.5, 0, 101.5, 100]
    big = np.repeat([[0, 0, 100, 100]], 5, axis=0).astype(float)
    small = np.repeat([[10, 10, 30, 30]], 2, axis=0).astype(float)
    boxes, counts, _ = detections.group_rectangles(np.vstack([big, small]), None, 1, 0.02)
    assert counts.tolist() == [5]                      # 2-box cluster inside a 5-box one: gone
    boxes, counts, _ = detections.group_rectangles(np.vstack([big[:2], small, small]), None, 1, 0.02)
    assert sorted(counts.tolist()) == [2, 4]           # stronger inner cluster survives


def _dense_group_rectangles(boxes, group_threshold, eps):
    """Reference: the former O(N^2) implementation (dense similarity and inside matrices)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(boxes)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    delta = eps * (np.minimum(w[:, None], w[None, :]) + np.minimum(h[:, None], h[None, :])) * 0.5
    similar = np.ones((n, n), dtype=bool)
    for k in range(4):
        similar &= np.abs(boxes[:, None, k] - boxes[None, :, k]) <= delta
    i, j = np.nonzero(similar)
    _, labels = connected_components(coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)))
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(first.size, dtype=int)
    rank[np.argsort(first)] = np.arange(first.size)
    labels = rank[labels]
    k = labels.max() + 1
    counts = np.bincount(labels, minlength=k)
    r = np.stack([np.bincount(labels, boxes[:, c], k) for c in range(4)], 1) / counts[:, None]
    dx, dy = eps * (r[:, 2] - r[:, 0]), eps * (r[:, 3] - r[:, 1])
    inside = ((r[:, None, 0] >= r[None, :, 0] - dx[None, :])
              & (r[:, None, 1] >= r[None, :, 1] - dy[None, :])
              & (r[:, None, 2] <= r[None, :, 2] + dx[None, :])
              & (r[:, None, 3] <= r[None, :, 3] + dy[None, :]))
    dominant = (counts[None, :] > np.maximum(3, counts[:, None])) | (counts[:, None] < 3)
    strong = counts > group_threshold
    suppressed = (inside & dominant & strong[None, :] & ~np.eye(k, dtype=bool)).any(axis=1)
    keep = strong & ~suppressed
    return r[keep].astype(np.float32), counts[keep]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_rectangles_matches_the_dense_reference_on_many_boxes(seed):
    # ~2000 noisy proposals of ~250 buildings (some nested, some chained, integer ties in seed 0)
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 900, (250, 2))
    size = rng.uniform(4, 90, (250, 2))
    corner[:40] = corner[40:80] + size[40:80] * 0.2        # boxes nested in others
    size[:40] = size[40:80] * 0.5
    pick = rng.integers(0, 250, 2000)
    boxes = np.column_stack([corner[pick], corner[pick] + size[pick]])
    boxes += rng.normal(0, [0.5, 2.0, 5.0][seed], boxes.shape)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    if seed == 0:
        boxes = np.round(boxes)
    for group_threshold, eps in [(1, 0.02), (1, 0.2), (3, 0.2), (2, 0.5), (1, 0.0)]:
        expected, expected_counts = _dense_group_rectangles(boxes, group_threshold, eps)
        got, counts, _ = detections.group_rectangles(boxes, None, group_threshold, eps)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(counts, expected_counts)


def test_group_rectangles_rejects_inverted_or_non_finite_boxes():
    with pytest.raises(ValueError, match="not finite"):
        detections.group_rectangles([[10, 0, 5, 8]], None, 1, 0.2)
    with pytest.raises(ValueError, match="not finite"):
        detections.group_rectangles([[0, 0, np.nan, 8]], None, 1, 0.2)
    with pytest.raises(ValueError, match="scores"):
        detections.group_rectangles([[0, 0, 5, 8]], [0.5, 0.5], 1, 0.2)


def test_merge_clusters_keeps_one_cell_clusters_and_skips_suppression():
    near = np.array([[100, 100, 150, 160], [100.5, 100, 150.5, 160]], dtype=np.float64)
    lone = np.array([[300, 300, 340, 330]], dtype=np.float64)
    inner = np.array([[110, 110, 120, 120]], dtype=np.float64)   # inside the merged pair
    boxes, counts, scores = detections.merge_clusters(np.vstack([near, lone, inner]),
                                                      [0.4, 0.8, 0.9, 0.7], 0, 0.02)
    np.testing.assert_allclose(boxes, [near.mean(axis=0), lone[0], inner[0]], atol=1e-4)
    assert counts.tolist() == [2, 1, 1]
    np.testing.assert_allclose(scores, [0.6, 0.9, 0.7], atol=1e-6)
    # group_threshold keeps its meaning: more than that many members
    boxes, counts, _ = detections.merge_clusters(np.vstack([near, lone, inner]), None, 1, 0.02)
    assert counts.tolist() == [2]
    # OpenCV semantics differ exactly there: 0 = no grouping, and inner boxes are suppressed
    assert len(detections.group_rectangles(np.vstack([near, lone, inner]), None, 0, 0.02)[0]) == 4
    assert detections.merge_clusters(np.zeros((0, 4)), None, 0, 0.2)[0].shape == (0, 4)


def test_buildings_from_detectnet_grouping_option():
    coverage = np.zeros((4, 4), dtype=np.float32)
    bbox = np.zeros((4, 4, 4), dtype=np.float32)
    for i, j in [(0, 0), (0, 1)]:               # a two-cell building
        coverage[i, j] = 0.9
        bbox[i, j] = np.array([4, 2, 30, 14]) - [(j + 0.5) * 16, 8, (j + 0.5) * 16, 8]
    coverage[3, 3] = 0.8                        # a one-cell building
    bbox[3, 3] = [-6, -7, 6, 7]
    opencv = detections.buildings_from_detectnet(coverage, bbox, group_threshold=1, eps=0.2,
                                                 min_height=0)
    clusters = detections.buildings_from_detectnet(coverage, bbox, group_threshold=0, eps=0.2,
                                                   min_height=0, grouping="clusters")
    assert same_set(geoms(opencv), [box(4, 2, 30, 14)])
    assert same_set(geoms(clusters), [box(4, 2, 30, 14), box(50, 49, 62, 63)])
    with pytest.raises(ValueError, match="grouping"):
        detections.buildings_from_detectnet(coverage, bbox, grouping="nms")
    params = P.postprocess_params("detectnet", {"grouping": "clusters", "group_threshold": 0})
    out = P.outputs_to_buildings("detectnet", {"coverage": coverage[..., None], "bbox": bbox},
                                 "x", image_size=(64, 64), params={**params, "min_height": 0})
    assert same_set(geoms(out), geoms(clusters))


def test_buildings_from_detectnet_end_to_end():
    coverage = np.zeros((4, 4), dtype=np.float32)
    bbox = np.zeros((4, 4, 4), dtype=np.float32)
    target = np.array([8, 10, 40, 44], dtype=np.float32)   # one building over 4 cells
    for i, j, cov in [(0, 0, 0.9), (0, 1, 0.8), (1, 0, 0.7), (1, 1, 0.6)]:
        cx, cy = (j + 0.5) * 16, (i + 0.5) * 16
        coverage[i, j] = cov
        bbox[i, j] = target - [cx, cy, cx, cy]
    coverage[3, 3] = 0.95            # a lone cell: dropped by the group threshold
    bbox[3, 3] = [-4, -4, 4, 4]
    out = detections.buildings_from_detectnet(coverage, bbox, "AOI_1_RIO_img1")
    assert len(out) == 1
    assert out[0].polygon.equals(box(8, 10, 40, 44))
    assert out[0].confidence == pytest.approx(0.75)
    assert out[0].image_id == "AOI_1_RIO_img1"
    assert detections.buildings_from_detectnet(coverage, bbox, min_height=35) == []
    mapped = detections.buildings_from_detectnet(coverage, bbox, transform=MVOI_GT)
    assert mapped[0].polygon.equals(pixel_to_map(box(8, 10, 40, 44), MVOI_GT))


def test_buildings_from_detectnet_caps_boxes_by_score():
    coverage = np.zeros((8, 8), dtype=np.float32)
    bbox = np.zeros((8, 8, 4), dtype=np.float32)
    for k in range(8):                      # 8 well-separated 1-cell boxes, scores rising with k
        coverage[k, k] = 0.1 + 0.1 * k
        bbox[k, k] = [-8, -8, 8, 8]
    out = detections.buildings_from_detectnet(coverage, bbox, group_threshold=0, min_height=0, max_boxes=3)
    assert [round(b.confidence, 3) for b in out] == [0.8, 0.7, 0.6]


# ---------------------------------------------------------------------------------- writers


def test_csv_round_trip_holes_multipolygons_and_empty_images(tmp_path):
    holed = Polygon([(0, 0), (30, 0), (30, 30), (0, 30)], [[(10, 10), (20, 10), (20, 20), (10, 20)]])
    multi = MultiPolygon([box(40, 40, 50, 50), box(60, 40, 70, 52.25)])
    buildings = [Building("AOI_2_Vegas_img1", holed, 0.875),
                 Building("AOI_2_Vegas_img1", multi, 0.5),
                 Building("AOI_2_Vegas_img2", box(-0.0, 1.5, 3.25, 9), 1.0)]
    path = tmp_path / "out.csv"
    n = write_spacenet_csv(buildings, path, image_ids=["AOI_2_Vegas_img1", "AOI_2_Vegas_img3"])
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == "ImageId,BuildingId,PolygonWKT_Pix,Confidence"
    assert n == len(lines) - 1 == 5
    assert "MULTIPOLYGON" not in text and "), (" not in text and "-0" not in text
    assert lines[1] == ('AOI_2_Vegas_img1,0,"POLYGON ((0 0, 30 0, 30 30, 0 30, 0 0),'
                        '(10 10, 20 10, 20 20, 10 20, 10 10))",0.875')
    assert lines[-1] == "AOI_2_Vegas_img3,-1,POLYGON EMPTY,1.0"
    back = read_spacenet_csv(path)
    polys = [b for b in back if not b.is_empty]
    assert [b.image_id for b in back] == ["AOI_2_Vegas_img1"] * 3 + ["AOI_2_Vegas_img2", "AOI_2_Vegas_img3"]
    expected = [holed, multi.geoms[0], multi.geoms[1], box(0, 1.5, 3.25, 9)]
    assert all(b.polygon.equals_exact(e, 0) for b, e in zip(polys, expected))
    assert [b.confidence for b in polys] == [0.875, 0.5, 0.5, 1.0]
    assert [b.building_id for b in back] == [0, 1, 2, 0, -1]
    write_spacenet_csv(buildings[:1], path, holes="drop", decimals=2)
    assert path.read_text().splitlines()[1] == (
        'AOI_2_Vegas_img1,0,"POLYGON ((0.00 0.00, 30.00 0.00, 30.00 30.00, 0.00 30.00, 0.00 0.00))",0.875')


def test_csv_writer_rejects_ids_that_break_the_format(tmp_path):
    with pytest.raises(ValueError, match="comma"):
        write_spacenet_csv([Building("a,b", box(0, 0, 5, 5))], tmp_path / "x.csv")


def test_geojson_round_trip_through_a_transform(tmp_path):
    pixel = [Building("AOI_5_Khartoum_img924", box(10, 20, 40, 65), 0.25),
             Building("AOI_5_Khartoum_img924",
                      Polygon([(0, 0), (9, 0), (9, 9), (0, 9)], [[(3, 3), (6, 3), (6, 6), (3, 6)]]), 0.5)]
    path = tmp_path / "out.geojson"
    assert write_geojson(pixel, path, transform=KHARTOUM_GT, crs="EPSG:4326") == 2
    data = json.loads(path.read_text())
    assert data["crs"]["properties"]["name"] == "urn:ogc:def:crs:OGC:1.3:CRS84"
    assert data["features"][1]["properties"] == {"image_id": "AOI_5_Khartoum_img924",
                                                 "building_id": 1, "confidence": 0.5}
    lon, lat = data["features"][0]["geometry"]["coordinates"][0][0]   # box() starts at (x2, y1)
    assert math.isclose(lon, KHARTOUM_GT[0] + 40 * 2.7e-6, rel_tol=1e-15)
    assert math.isclose(lat, KHARTOUM_GT[3] - 20 * 2.7e-6, rel_tol=1e-15)
    back = [b for b in read_geojson(path) if not b.is_empty]
    assert [b.image_id for b in back] == ["AOI_5_Khartoum_img924"] * 2
    for b, original in zip(back, pixel):
        assert map_to_pixel(b.polygon, KHARTOUM_GT).equals_exact(original.polygon, 1e-6)
        assert b.confidence == original.confidence
    assert crs_name("EPSG:32616") == "urn:ogc:def:crs:EPSG::32616"
    assert "crs" not in geojson_feature_collection(pixel)


def test_outputs_to_buildings_fcn_crops_padding_and_splits_with_sdf():
    from sn_tf.dataset import labels

    lab = labels.compute_labels([box(5, 5, 15, 15), box(15, 5, 25, 15)], 40, 48)  # touching
    mask, sdf = lab["mask"], lab["sdf"]
    logits = np.where(mask > 0, 4.0, -4.0)
    pad = ((0, 8), (0, 16))  # the model saw a padded 48 x 64 input
    outputs = {"footprint": np.pad(logits, pad, constant_values=4.0)[..., None],
               "sdf": np.pad(sdf, pad, constant_values=5.0)[..., None]}
    merged = P.outputs_to_buildings("fcn", outputs, "AOI_2_Vegas_img1", image_size=(40, 48),
                                    params={"split_with_sdf": False})
    assert [round(b.polygon.area) for b in merged] == [200]
    split = P.outputs_to_buildings("fcn", outputs, "AOI_2_Vegas_img1", image_size=(40, 48),
                                   params={"sdf_level": 1.5})
    assert sorted(round(b.polygon.area) for b in split) == [100, 100]
    with pytest.raises(ValueError, match="unknown fcn post-processing"):
        P.postprocess_params("fcn", {"treshold": 1})


def test_contact_raster_splits_touching_buildings_with_or_without_sdf():
    """The stored contact layer of two squares sharing a wall, as a model's contact output:
    seeds leave the contact band out, and each band pixel joins its nearest seed."""
    from sn_tf.dataset import labels

    lab = labels.compute_labels([box(5, 5, 15, 15), box(15, 5, 25, 15)], 40, 48)
    logits = np.where(lab["mask"] > 0, 4.0, -4.0)
    contact = np.where(lab["contact"] > 0, 3.0, -3.0)
    flat_sdf = np.where(lab["mask"] > 0, 5.0, -5.0)  # an sdf that does not dip at the wall
    outputs = {"footprint": logits[..., None], "sdf": flat_sdf[..., None]}
    merged = P.outputs_to_buildings("fcn", outputs, "t", image_size=(40, 48))
    assert [round(b.polygon.area) for b in merged] == [200]
    outputs["contact"] = contact[..., None]
    split = P.outputs_to_buildings("fcn", outputs, "t", image_size=(40, 48))
    assert same_set(geoms(split), [box(5, 5, 15, 15), box(15, 5, 25, 15)])
    # a threshold above every contact logit: no barrier, one building again
    high = P.outputs_to_buildings("fcn", outputs, "t", image_size=(40, 48),
                                  params={"contact_threshold": 5.0})
    assert len(high) == 1
    # without the sdf: the contact band alone splits
    alone = rasters.polygons_from_raster(logits, kind="logit", contact=contact)
    assert same_set(geoms(alone), [box(5, 5, 15, 15), box(15, 5, 25, 15)])
    with pytest.raises(ValueError, match="contact shape"):
        rasters.polygons_from_raster(logits, kind="logit", contact=contact[:-1])


def test_interior_logits_seed_the_split():
    """With an interior output the seeds are its cores (logit > interior_threshold), not the
    sdf: two squares sharing a wall whose sdf does not dip are split by their cores."""
    from sn_tf.dataset import labels

    lab = labels.compute_labels([box(5, 5, 15, 15), box(15, 5, 25, 15)], 40, 48)
    logits = np.where(lab["mask"] > 0, 4.0, -4.0)
    interior = np.where(lab["sdf"].astype(np.float32) > 1.5, 3.0, -3.0)
    outputs = {"footprint": logits[..., None],
               "sdf": np.where(lab["mask"] > 0, 5.0, -5.0)[..., None],
               "interior": interior[..., None]}
    split = P.outputs_to_buildings("fcn", outputs, "t", image_size=(40, 48))
    assert same_set(geoms(split), [box(5, 5, 15, 15), box(15, 5, 25, 15)])
    whole = P.outputs_to_buildings("fcn", outputs, "t", image_size=(40, 48),
                                   params={"interior_threshold": 3.5})  # no core: one piece
    assert [round(b.polygon.area) for b in whole] == [200]
    assert len(P.outputs_to_buildings("fcn", outputs, "t", image_size=(40, 48),
                                      params={"split_with_sdf": False})) == 1


def test_outputs_to_buildings_detectnet():
    cov = np.zeros((4, 4, 1), np.float32)
    bbox = np.zeros((4, 4, 4), np.float32)
    box = np.array([16, 16, 48, 48], np.float32)
    for i, j in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        cov[i, j] = 0.9
        cx, cy = (j + 0.5) * 16, (i + 0.5) * 16
        bbox[i, j] = box - [cx, cy, cx, cy]
    out = P.outputs_to_buildings("detectnet", {"coverage": cov, "bbox": bbox}, "x",
                                 image_size=(64, 64))
    assert len(out) == 1 and out[0].polygon.bounds == (16, 16, 48, 48)


def test_detectnet_max_boxes_scales_with_the_image_area():
    # a 3 x 3 tile scene (1950 px) with 3,721 separate 12 px buildings: the cap of 450 per
    # 650 x 650 px becomes 4,050, so none is dropped (it was 450 for the whole scene); one
    # tile's area keeps the cap as given
    stride, size = 16, 1950
    grid = size // stride + 1
    coverage = np.zeros((grid, grid, 1), np.float32)
    coverage[::2, ::2] = 0.9
    bbox = np.tile(np.array([-6.0, -6.0, 6.0, 6.0], np.float32), (grid, grid, 1))
    params = {"threshold": 0.5, "grouping": "clusters", "group_threshold": 0, "eps": 0.2,
              "min_height": 4.0, "max_boxes": 450}
    out = {"coverage": coverage, "bbox": bbox}
    scene = P.outputs_to_buildings("detectnet", out, "scene", image_size=(size, size),
                                  params=params, cell_size=stride)
    assert len(scene) == int((coverage > 0.5).sum()) == 61 * 61
    tile = P.outputs_to_buildings("detectnet", out, "tile", image_size=(650, 650),
                                  params={**params, "max_boxes": 100}, cell_size=stride)
    assert len(tile) == 100


def test_unknown_grouping_is_refused_with_the_parameters():
    with pytest.raises(ValueError, match="grouping must be one of"):
        P.postprocess_params("detectnet", {"grouping": "nms"})
    assert P.postprocess_params("detectnet", {"grouping": "clusters"})["grouping"] == "clusters"


def test_merge_regions_joins_across_a_ridge_not_across_a_wall():
    from sn_tf.head.rasters import merge_regions

    labels = np.zeros((10, 30), np.int32)
    labels[2:8, 2:10], labels[2:8, 10:18], labels[2:8, 18:26] = 1, 2, 3
    value = np.full((10, 30), 3.0)
    value[:, 9:11] = -0.5   # a shallow dip between 1 and 2 (a roof ridge)
    value[:, 17:19] = -4.0  # a deep one between 2 and 3 (a wall shared by two buildings)
    merged, n = merge_regions(labels, value, level=-2.0)
    assert n == 2
    assert merged[5, 3] == merged[5, 15] != merged[5, 20]
    assert set(np.unique(merged)) == {0, 1, 2}  # consecutive labels, background kept
    assert merge_regions(labels, value, level=0.0)[1] == 3   # both dips count as walls
    assert merge_regions(labels, value, level=-5.0)[1] == 1  # transitive: all one


def test_merge_level_in_the_fcn_head_rejoins_a_falsely_split_house():
    from sn_tf.head.polygons import outputs_to_buildings

    footprint = np.full((40, 40, 1), -5.0, np.float32)
    footprint[5:25, 5:35] = 5.0
    interior = np.full((40, 40, 1), -4.0, np.float32)
    interior[8:22, 8:32] = 2.0
    interior[8:22, 19:21] = -0.5  # a ridge across one house: two cores
    out = {"footprint": footprint, "interior": interior, "sdf": np.zeros_like(interior)}
    split = outputs_to_buildings("fcn", out, "t", image_size=(40, 40),
                                 params={"interior_threshold": 0.0})
    joined = outputs_to_buildings("fcn", out, "t", image_size=(40, 40),
                                  params={"interior_threshold": 0.0, "merge_level": -2.0})
    assert len(split) == 2 and len(joined) == 1
    assert joined[0].polygon.area == 20 * 30


def test_seed_erosion_cuts_a_thin_bridge_of_the_cores_across_a_wall():
    """Two houses sharing a wall at x = 20 whose predicted cores leak across it through a
    2 px bridge: one seed (one building) as they are, two after one erosion; the polygons
    then split along the wall, and the erosion leaves a house without a bridge whole."""
    from sn_tf.head.polygons import outputs_to_buildings
    from sn_tf.head.rasters import split_footprint

    footprint = np.full((30, 44, 1), -5.0, np.float32)
    footprint[5:25, 5:35] = 5.0
    interior = np.full((30, 44, 1), -4.0, np.float32)
    interior[8:22, 8:18] = 3.0
    interior[8:22, 22:32] = 3.0
    interior[14:16, 18:22] = 1.0  # the bridge: 2 px high, above the threshold 0
    out = {"footprint": footprint, "interior": interior, "sdf": np.zeros_like(interior)}
    leaked = outputs_to_buildings("fcn", out, "t", image_size=(30, 44))
    cut = outputs_to_buildings("fcn", out, "t", image_size=(30, 44),
                               params={"seed_erosion": 1})
    assert len(leaked) == 1 and leaked[0].polygon.area == 20 * 30
    assert same_set(geoms(cut), [box(5, 5, 20, 25), box(20, 5, 35, 25)])
    # a single core stays one building whatever the erosion (until it vanishes: then the
    # component is one unseeded building)
    one = np.zeros((30, 44), bool)
    one[5:25, 5:35] = True
    for erosion in (0, 1, 3, 20):
        labels, n = split_footprint(one, np.where(one, 5.0, -5.0), 0.0, seed_erosion=erosion)
        assert n == 1 and (labels[one] == 1).all()


def _random_buildings(n=200, seed=0):
    import shapely
    from shapely.geometry import box

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x, y = rng.uniform(-20, 600, 2)
        w, h = rng.uniform(0.5, 60, 2)
        g = shapely.affinity.rotate(box(x, y, x + w, y + h), rng.uniform(0, 90))
        if i % 7 == 0:
            g = g.union(box(x + w + 70, y, x + w + 79, y + 4))  # two parts
        if i % 5 == 0:
            c = g.representative_point()
            g = g.difference(c.buffer(0.2))  # a hole
        out.append(Building(f"AOI_{i % 3}_img{i % 4}", g, float(rng.uniform())))
    return out


def test_geojson_writer_text_parses_to_the_collection(tmp_path):
    """The GEOS-assembled text equals json of geojson_feature_collection, float for float."""
    import json

    from sn_tf.spacenet.building_writers import geojson_feature_collection, write_geojson

    bs = _random_buildings()
    for transform, crs in ((None, None), ((737201.5, 0.3, 0, 3736839.1, 0, -0.3), "EPSG:32616"),
                           ((-115.3, 2.7e-6, 0, 36.2, 0, -2.7e-6), "EPSG:4326")):
        n = write_geojson(bs, tmp_path / "a.geojson", transform=transform, crs=crs)
        doc = json.loads((tmp_path / "a.geojson").read_text())
        assert doc == json.loads(json.dumps(geojson_feature_collection(bs, transform, crs)))
        assert n == len(doc["features"]) > len(bs)  # MultiPolygons give one feature per part
    write_geojson([], tmp_path / "e.geojson")
    assert json.loads((tmp_path / "e.geojson").read_text()) == {"type": "FeatureCollection",
                                                                "features": []}


def test_wkt_texts_round_trip_exactly_in_spacenet_form():
    import shapely

    from sn_tf.spacenet.building_writers import wkt_texts
    from sn_tf.spacenet.geo import polygon_parts

    parts = [p for b in _random_buildings(seed=1) for p in polygon_parts(b.polygon)]
    parts += [shapely.geometry.box(-0.0, -0.0, 2, 1e-7)]
    texts = wkt_texts(parts + [None])
    assert texts[-1] is None
    for part, text in zip(parts, texts):
        assert shapely.from_wkt(text).equals_exact(part, 0), text  # every float exact
        assert "), (" not in text and "-0 " not in text and ".0," not in text
        if len(part.interiors):
            assert "),(" in text
    dropped = wkt_texts(parts, holes="drop")
    assert all(len(shapely.from_wkt(t).interiors) == 0 for t in dropped)
    assert wkt_texts([shapely.geometry.box(0, 0, 1.005, 2)], decimals=2) == \
        ["POLYGON ((1.00 0.00, 1.00 2.00, 0.00 2.00, 0.00 0.00, 1.00 0.00))"]


def test_integer_wkt_is_the_python_formatting():
    """Pixel-corner polygons are written by GEOS's WKT writer (building_writers._integer_wkt):
    the same text as the Python formatting of the other polygons."""
    from sn_tf.spacenet.building_writers import _integer_wkt, wkt_texts

    holed = Polygon([(-0.0, 0), (5, 0), (5, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2), (1, 2)]])
    big = box(2.0 ** 52 - 2, -(2.0 ** 52 - 1), 2.0 ** 52 - 1, 7)
    texts = wkt_texts([holed, None, big, Polygon()])
    assert texts == ["POLYGON ((0 0, 5 0, 5 4, 0 4, 0 0),(1 1, 2 1, 2 2, 1 2, 1 1))", None,
                     "POLYGON ((4503599627370495 -4503599627370495, 4503599627370495 7, "
                     "4503599627370494 7, 4503599627370494 -4503599627370495, "
                     "4503599627370495 -4503599627370495))", "POLYGON EMPTY"]
    assert _integer_wkt(np.array([box(0, 0, 1, 2.5)])) is None  # not integers
    assert _integer_wkt(np.array([box(0, 0, 1, 2.0 ** 52)])) is None  # beyond exact ints
    assert _integer_wkt(np.array([box(0, 0, 1, 2).boundary])) is None  # not a Polygon


def test_only_self_touching_traced_polygons_need_a_validity_check():
    """rasters._self_touching flags the traced polygons that visit a vertex twice; every
    other traced polygon is valid for GEOS (noisy labels, pinches, holes, many labels)."""
    from rasterio import features

    rng = np.random.default_rng(5)
    flagged = 0
    for k in range(20):
        noise = ndimage.gaussian_filter(rng.normal(0, 1, (90, 100)), rng.uniform(0.5, 2.5))
        fp = noise > rng.uniform(-0.3, 0.3)
        labels = np.where(fp, (ndimage.gaussian_filter(rng.normal(0, 1, fp.shape), 3) * 5)
                          .astype(np.int32) % 7 + 1, 0).astype(np.int32)
        for lab in (ndimage.label(fp)[0].astype(np.int32), labels):
            traced = [g for g, _ in features.shapes(lab, mask=lab > 0, connectivity=4)]
            xy, ring_of_point, owner = rasters._traced_arrays(traced)
            touching = rasters._self_touching(xy, ring_of_point, owner, lab.shape)
            polys = rasters._assembled(xy, ring_of_point, owner)
            assert shapely.is_valid(polys[~touching]).all()
            flagged += int(touching.sum())
    assert flagged > 0
    pinch = np.zeros((6, 6), np.int32)
    pinch[1:5, 1:5] = 1
    pinch[2, 2] = pinch[3, 3] = 0  # a hole of two pixels meeting at a corner
    traced = [g for g, _ in features.shapes(pinch, mask=pinch > 0, connectivity=4)]
    assert rasters._self_touching(*rasters._traced_arrays(traced), pinch.shape).tolist() == [True]
