"""Label layers on hand-made cases with exact expected values, and on real SpaceNet masks."""

import csv

import numpy as np
import pytest
import shapely
import shapely.affinity
from shapely.geometry import box

from sn_tf.dataset import labels


def test_mask_pixel_centre_rule_exact():
    # Box x in [1.4, 4.6], y in [1.6, 4.2]: column centres 1.5..4.5 (cols 1-4) and row
    # centres 2.5, 3.5 (rows 2-3) are inside; row centre 1.5 < 1.6 is not.
    poly = shapely.box(1.4, 1.6, 4.6, 4.2)
    mask = labels.rasterize_mask([poly], 6, 7)
    expected = np.zeros((6, 7), np.uint8)
    expected[2:4, 1:5] = 1
    np.testing.assert_array_equal(mask, expected)


def test_boundary_excludes_image_edges():
    mask = np.zeros((5, 5), np.uint8)
    mask[:, :3] = 1  # touches the left, top and bottom edges of the image
    b = labels.boundary_mask(mask)
    expected = np.zeros((5, 5), bool)
    expected[:, 2] = True  # only the column next to the background
    np.testing.assert_array_equal(b, expected)


def test_signed_distance_hand_case():
    mask = np.zeros((9, 9), np.uint8)
    mask[2:7, 2:7] = 1  # 5x5 square; boundary ring, interior 3x3, centre (4, 4)
    sdf = labels.signed_distance(mask)
    assert sdf[4, 4] == 2.0  # two pixels from the ring
    assert sdf[3, 3] == 1.0
    assert sdf[2, 2] == 0.0 and sdf[2, 4] == 0.0 and sdf[6, 6] == 0.0
    assert sdf[1, 4] == -1.0 and sdf[0, 4] == -2.0
    assert sdf[0, 0] == pytest.approx(-np.hypot(2, 2))
    sdf_t = labels.signed_distance(mask, truncation=1.5)
    assert sdf_t.min() == -1.5 and sdf_t.max() == 1.5


def test_signed_distance_sign_agrees_with_mask_and_magnitude_is_distance():
    rng = np.random.default_rng(3)
    polys = [shapely.box(x, y, x + w, y + h) for x, y, w, h in
             rng.uniform([0, 0, 4, 4], [50, 50, 20, 20], (8, 4))]
    lab = labels.compute_labels(polys, 64, 64, sdf_truncation=None)
    mask, sdf, dist = lab["mask"].astype(bool), lab["sdf"], lab["distance"]
    assert np.all(mask[sdf > 0]) and not np.any(mask[sdf < 0])
    assert np.all(mask[sdf == 0])
    np.testing.assert_array_equal(np.abs(sdf), dist)
    # magnitude = brute-force distance to the nearest boundary pixel centre
    inst = labels.rasterize_instances(polys, 64, 64)
    by, bx = np.nonzero(labels.instance_boundary(inst))
    yy, xx = np.mgrid[:64, :64]
    brute = np.sqrt((yy[..., None] - by) ** 2 + (xx[..., None] - bx) ** 2).min(-1)
    np.testing.assert_allclose(dist, brute, atol=1e-5)


def test_no_buildings():
    lab = labels.compute_labels([], 10, 12)
    assert lab["mask"].sum() == 0 and lab["boxes_xyxy_px"].shape == (0, 4)
    assert np.all(lab["distance"] == 22)  # capped at H + W
    assert np.all(lab["sdf"] == -22)  # -distance, within the truncation of 32


def test_boxes_and_clip_to_tile():
    inside = shapely.Polygon([(2, 3), (8, 1), (9, 7), (2, 3)])
    crossing = shapely.box(-5, 4, 5, 6)
    outside = shapely.box(20, 20, 30, 30)
    kept, dropped = labels.clip_to_tile([inside, crossing, outside], 10, 10)
    assert dropped == 1 and len(kept) == 2
    boxes = labels.boxes_xyxy_px(kept, 10, 10)
    np.testing.assert_allclose(boxes, [[2, 1, 9, 7], [0, 4, 5, 6]])
    assert boxes.dtype == np.float32


def test_labels_from_mask_recovers_components():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:6, 3:9] = 1
    mask[10:15, 10:12] = 1
    lab = labels.labels_from_mask(mask)
    assert len(lab["polygons_px"]) == 2
    np.testing.assert_array_equal(labels.rasterize_mask(lab["polygons_px"], 20, 20), mask)
    assert sorted(lab["boxes_xyxy_px"].tolist()) == [[3, 2, 9, 6], [10, 10, 12, 15]]


@pytest.mark.realdata
def test_sample_csv_burns_to_solaris_mask(realdata):
    import rasterio

    rows = list(csv.DictReader(open(realdata / "solaris/sample.csv")))
    polys = [shapely.from_wkt(r["PolygonWKT_Pix"]) for r in rows]
    mask = labels.rasterize_mask(polys, 900, 900)
    with rasterio.open(realdata / "solaris/sample_fp_mask.tif") as ds:
        expected = ds.read(1) > 0
    assert expected.sum() == 117996
    np.testing.assert_array_equal(mask.astype(bool), expected)


def test_touching_buildings_are_separated_by_a_zero_line():
    """A shared wall is boundary for both buildings: the sdf dips to 0 between them."""
    left, right = shapely.box(2, 2, 12, 12), shapely.box(12, 2, 22, 12)
    lab = labels.compute_labels([left, right], 14, 24, sdf_truncation=None)
    assert lab["mask"][2:12, 2:22].all()  # one connected footprint
    sdf = lab["sdf"]
    np.testing.assert_array_equal(sdf[2:12, 11], 0)  # last column of the left building
    np.testing.assert_array_equal(sdf[2:12, 12], 0)  # first column of the right one
    assert sdf[7, 7] == 4.0 and sdf[7, 17] == 4.0
    # seeds above 1.5 are two separate regions
    from scipy import ndimage

    assert ndimage.label(sdf > 1.5)[1] == 2


@pytest.mark.parametrize("shape", [(1, 9), (7, 1), (64, 48), (650, 650)])
def test_edt_bit_identical_to_scipy(shape):
    """edt_to == float32(scipy's distance_transform_edt) bit for bit, and so is the sdf."""
    from scipy import ndimage

    rng = np.random.default_rng(sum(shape))
    for density in (1e-4, 0.01, 0.3):
        boundary = rng.random(shape) < density
        boundary.flat[rng.integers(boundary.size)] = True  # at least one pixel
        ref = ndimage.distance_transform_edt(~boundary).astype(np.float32)
        got = labels.edt_to(boundary)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
        mask = rng.random(shape) < 0.5
        sdf_ref = np.clip(np.where(mask, ref, -ref), -8, 8).astype(np.float32)
        np.testing.assert_array_equal(labels.signed_distance(mask, 8.0, got), sdf_ref)


def test_float32_root_of_small_integers_is_the_rounded_float64_root():
    """edt_to's shortcut: for every integer n < 2**24, sqrt_f32(n) == f32(sqrt_f64(n))."""
    n = np.arange(2 ** 24, dtype=np.int32)
    np.testing.assert_array_equal(np.sqrt(n, dtype=np.float32).view(np.uint32),
                                  np.sqrt(n, dtype=np.float64).astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("truncation", [None, 32.0, 7.3, 0.7])
def test_float16_labels_equal_the_cast_float32_labels(truncation):
    """compute_labels(dtype=float16) == its float32 layers cast to float16, bit for bit."""
    rng = np.random.default_rng(7)
    polys = [shapely.box(x, y, x + w, y + h) for x, y, w, h in
             rng.uniform([0, 0, 2, 2], [150, 110, 60, 40], (25, 4))]
    polys += [shapely.box(30, 30, 50, 50), shapely.box(50, 30, 70, 50)]  # a shared wall
    for ps, (h, w) in ((polys, (120, 170)), ([], (9, 13)), (polys[:1], (300, 2))):
        kept, _ = labels.clip_to_tile(ps, h, w)
        ref = labels.compute_labels(kept, h, w, truncation)
        half = labels.compute_labels(kept, h, w, truncation, dtype=np.float16)
        np.testing.assert_array_equal(half["mask"], ref["mask"])
        for field in ("distance", "sdf"):
            assert half[field].dtype == np.float16
            np.testing.assert_array_equal(half[field].view(np.uint16),
                                          ref[field].astype(np.float16).view(np.uint16))


# ---- contact and rotated rectangles (schema version 3) ----------------------------------
def test_contact_of_two_squares_sharing_a_wall_is_exact():
    """A: columns 5..14, B: 15..24, rows 5..14; radius 2: the 5x5 window of a pixel holds
    both exactly for columns 13..16 and rows 3..16."""
    lab = labels.compute_labels([box(5, 5, 15, 15), box(15, 5, 25, 15)], 40, 48)
    want = np.zeros((40, 48), np.uint8)
    want[3:17, 13:17] = 1
    np.testing.assert_array_equal(lab["contact"], want)
    assert lab["contact"].dtype == np.uint8
    wide = labels.contact_mask(labels.rasterize_instances(
        [box(5, 5, 15, 15), box(15, 5, 25, 15)], 40, 48), radius=3)
    assert wide[:, 12:18].any(axis=0).all() and not wide[:, :12].any()


@pytest.mark.parametrize("gap, columns", [(3, [16]), (4, []), (1, [14, 15, 16])])
def test_contact_across_a_gap(gap, columns):
    """A gap of up to 2r - 1 pixels between two buildings is contact (radius 2)."""
    polys = [box(5, 5, 15, 15), box(15 + gap, 5, 25 + gap, 15)]
    contact = labels.compute_labels(polys, 30, 40)["contact"]
    assert np.flatnonzero(contact.any(axis=0)).tolist() == columns


def test_contact_is_the_whole_grid_rank_filter_and_follows_symmetries():
    rng = np.random.default_rng(3)
    polys = []
    for _ in range(40):
        x, y = rng.uniform(0, 90, 2)
        polys.append(shapely.affinity.rotate(box(x, y, x + rng.uniform(3, 15),
                                                 y + rng.uniform(3, 15)), rng.uniform(0, 90)))
    polys, _ = labels.clip_to_tile(polys, 80, 96)
    ids = labels.rasterize_instances(polys, 80, 96)
    full = labels._contact_full(ids, 2).astype(np.uint8)
    assert full.any()
    np.testing.assert_array_equal(labels.contact_mask(ids, 2), full)
    np.testing.assert_array_equal(
        labels.contact_mask(ids, 2, labels.boxes_xyxy_px(polys, 80, 96)), full)
    # a rank filter over a square window commutes with flips and transposes
    for op in (np.fliplr, np.flipud, np.transpose):
        np.testing.assert_array_equal(labels.contact_mask(op(ids), 2), op(full))
    # and a crop sees the same contact away from its edges (radius 2 from them)
    crop = labels.contact_mask(ids[10:60, 20:90], 2)
    np.testing.assert_array_equal(crop[2:-2, 2:-2], full[12:58, 22:88])
    with pytest.raises(ValueError, match="radius"):
        labels.contact_mask(ids, 0)


def test_contact_from_a_mask_treats_components_as_buildings():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:8, 2:10] = 1
    mask[2:8, 12:20] = 1     # 2 px gap: contact at radius 2
    lab = labels.labels_from_mask(mask)
    assert lab["contact"][:, 10:12].all(axis=1)[2:8].all()
    assert lab["rects_px"].shape == (2, 4, 2)


def test_rotated_rects_are_the_minimum_rotated_rectangles():
    square = shapely.affinity.rotate(box(10, 10, 20, 30), 30, origin="centroid")
    rects = labels.rotated_rects_px([square, box(1, 2, 5, 9)])
    assert rects.shape == (2, 4, 2) and rects.dtype == np.float32
    assert shapely.Polygon(rects[0]).equals_exact(square.normalize(), 1e-4) or \
        shapely.Polygon(rects[0]).symmetric_difference(square).area < 1e-3
    assert sorted(map(tuple, rects[1].tolist())) == [(1, 2), (1, 9), (5, 2), (5, 9)]
    l_shape = shapely.Polygon([(0, 0), (10, 0), (10, 4), (4, 4), (4, 10), (0, 10)])
    assert shapely.Polygon(labels.rotated_rects_px([l_shape])[0]).area == pytest.approx(100)
    assert labels.rotated_rects_px([]).shape == (0, 4, 2)
