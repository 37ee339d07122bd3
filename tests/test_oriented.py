"""Oriented DetectNet: gliding-vertex rectangles (sn_tf.input.rects), their targets under every
augmentation (sn_tf.input.targets, sn_tf.input.augment), the loss and the polygon head.

Hand-made rectangles use 3-4-5 triangles so that every vertex, box and parameter is exact.
Pixels: x = column, y = row, origin at the top-left corner (BUILD_NOTES.md section 1).
"""

import itertools

import numpy as np
import pytest
import shapely

from sn_tf.input import augment as aug
from sn_tf.head import detections, polygons
from sn_tf.input import rects as R
from sn_tf.input import targets as tg
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
S = 16

# a 20 x 15 rectangle rotated by atan(3/4): edges u = (16, 12), v = (-9, 12)
TILTED = np.array([[20, 4], [36, 16], [27, 28], [11, 16]], np.float64)
# two row houses sharing a wall (u = (16, 12) wide, v = (-24, 32) deep) and a flat house
ROW_A = np.array([[40, 4], [56, 16], [32, 48], [16, 36]], np.float64)
ROW_B = ROW_A + [16, 12]
FLAT = np.array([[70, 66], [90, 66], [90, 80], [70, 80]], np.float64)


def _box(rect):
    rect = np.asarray(rect, np.float64)
    return np.concatenate([rect.min(0), rect.max(0)])


def _targets(rects, size, **kw):
    """Oriented targets of one image from rectangles [N, 4, 2] (boxes = their boxes)."""
    rects = np.asarray(rects, np.float32).reshape(-1, 4, 2)
    boxes = np.array([_box(r) for r in rects], np.float32).reshape(-1, 4)
    out = tg.detectnet_targets(tf.constant(boxes[None]), size, size,
                               rects=tf.constant(rects.reshape(1, -1, 8)), **kw)
    return {k: v.numpy()[0] for k, v in out.items()}


def _iou(a, b):
    a, b = shapely.Polygon(a), shapely.Polygon(b)
    return a.intersection(b).area / a.union(b).area


def _same_rects(got, want, atol=1e-3):
    """Rectangles [K, 4, 2] equal to ``want`` as sets of vertex sets (any ring start)."""
    key = lambda r: np.round(np.asarray(r)[np.lexsort(np.asarray(r).T[::-1])], 2).tobytes()
    got = sorted(np.asarray(got, np.float64).reshape(-1, 4, 2), key=key)
    want = sorted(np.asarray(want, np.float64).reshape(-1, 4, 2), key=key)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g[np.lexsort(g.T[::-1])], w[np.lexsort(w.T[::-1])],
                                   atol=atol)


# ---- sn_tf.input.rects ---------------------------------------------------------------------------
def test_gliding_parameters_of_a_hand_made_rectangle():
    alpha, beta, r = R.gliding_from_rects(TILTED[None])
    # box x 11..36 (w 25), y 4..28 (h 24); top vertex (20, 4), right vertex (36, 16)
    np.testing.assert_allclose([alpha[0], beta[0], r[0]], [9 / 25, 12 / 24, 300 / 600])
    back = R.rects_from_gliding(_box(TILTED)[None], alpha, beta)
    _same_rects(back, TILTED[None])


def test_axis_aligned_rectangles_are_their_box_whatever_the_ring_start():
    flat = np.roll(FLAT, 2, axis=0)[None]
    alpha, beta, r = R.gliding_from_rects(flat)
    np.testing.assert_array_equal([alpha[0], beta[0], r[0]], [0.0, 0.0, 1.0])
    _same_rects(R.rects_from_gliding(_box(FLAT)[None], alpha, beta), FLAT[None])
    # (1, 1) is the same box; above the gate any parameters give the box
    _same_rects(R.rects_from_gliding(_box(FLAT)[None], [1.0], [1.0]), FLAT[None])
    _same_rects(R.rects_from_gliding(_box(FLAT)[None], [0.4], [0.7], [0.95], gate=0.9),
                FLAT[None])


def test_random_rectangles_round_trip_and_parallelograms_become_rectangles():
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = rng.uniform(2, 60, 2)
        th = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        rect = np.array([[0, 0], [w, 0], [w, h], [0, h]]) @ rot.T + rng.uniform(0, 99, 2)
        a, b, r = R.gliding_from_rects(rect[None])
        assert r[0] == pytest.approx(w * h / np.prod(np.ptp(rect, axis=0)))
        assert _iou(R.rects_from_gliding(_box(rect)[None], a, b)[0], rect) > 1 - 1e-9
    quad = R.parallelograms([[0, 0, 10, 10]], [0.2], [0.5])  # not a rectangle
    fixed = R.closest_rectangles(quad)[0]
    sides = np.linalg.norm(np.roll(fixed, -1, axis=0) - fixed, axis=1)
    edges = np.roll(fixed, -1, axis=0) - fixed
    assert abs(np.dot(edges[0], edges[1])) < 1e-9 and sides[0] == pytest.approx(sides[2])
    np.testing.assert_allclose(fixed.mean(0), quad[0].mean(0))


# ---- targets -------------------------------------------------------------------------------
def test_exact_oriented_targets_of_a_hand_made_rectangle():
    t = _targets([TILTED], 64, cvg_scale=1.0, cvg_shape="rect")
    # cell centres inside the rectangle: (24, 8) and (24, 24), i.e. cells (0, 1), (1, 1)
    want = np.zeros((4, 4), np.float32)
    want[0:2, 1] = 1
    np.testing.assert_array_equal(t["coverage"][..., 0], want)
    for i, j in [(0, 1), (1, 1)]:
        cx, cy = (j + 0.5) * S, (i + 0.5) * S
        np.testing.assert_allclose(t["bbox"][i, j, :4], [11 - cx, 4 - cy, 36 - cx, 28 - cy])
        np.testing.assert_allclose(t["orient"][i, j], [9 / 25, 0.5, 0.5, 1, 1], rtol=1e-6)
    assert not t["orient"][want == 0].any()


def test_near_axis_and_cut_rectangles_get_no_gliding_target():
    nearly = np.array([[10, 30], [40, 31], [39.4, 49], [9.4, 48]], np.float64)  # r 0.93
    cut = TILTED + [-14, 0]  # reaches x = -3: cut by the image edge
    t = _targets([nearly, cut], 64, cvg_scale=1.0, cvg_shape="rect")
    decoded_r = R.gliding_from_rects(nearly[None])[2][0]
    assert decoded_r > 0.9
    near_cells = t["orient"][2:, :, :]
    covered = t["coverage"][..., 0] > 0
    assert covered[2:].any() and covered[:2].any()
    # near-axis: obliquity learnt (weight 1), gliding not (weight 0)
    np.testing.assert_allclose(near_cells[covered[2:]][:, 2:], [[decoded_r, 0, 1]] *
                               int(covered[2:].sum()), rtol=1e-5)
    # cut: neither
    assert not t["orient"][:2][covered[:2]][:, 3:].any()


def test_rectangle_coverage_keeps_touching_rotated_units_apart():
    t = _targets([ROW_A, ROW_B], 96, cvg_scale=1.0, cvg_shape="rect")
    rects = tg.decode_oriented_targets(t["coverage"], t["bbox"], t["orient"])[0]
    _same_rects(rects, [ROW_A, ROW_B])
    # every covered cell's centre lies in the rectangle of the building owning it
    for i, j in zip(*np.nonzero(t["coverage"][..., 0])):
        centre = shapely.Point((j + 0.5) * S, (i + 0.5) * S)
        owner = ROW_A if t["bbox"][i, j, 0] + (j + 0.5) * S == 16 else ROW_B
        assert shapely.Polygon(owner).buffer(1e-6).contains(centre)
    # the boxes overlap so much that box coverage gives A's cells to B or loses them
    boxes = tg.detectnet_targets(tf.constant([[_box(ROW_A), _box(ROW_B)]], tf.float32), 96,
                                 96, cvg_scale=1.0)
    assert not np.array_equal(boxes["coverage"].numpy()[0], t["coverage"])


def _dihedral_grid(x, t, flr, fud):
    if t:
        x = np.swapaxes(x, 0, 1)
    if flr:
        x = x[:, ::-1]
    if fud:
        x = x[::-1]
    return x


SCENE = [TILTED + [0, 2], ROW_A + [30, 40], ROW_B + [30, 40],
         np.array([[4, 70], [30, 70], [30, 92], [4, 92]], np.float64),
         np.array([[30, 50], [38, 56], [29, 68], [21, 62]], np.float64)]


@pytest.mark.parametrize("t,flr,fud", list(itertools.product([False, True], repeat=3)))
def test_targets_of_a_flipped_or_rotated_example_are_the_moved_targets(t, flr, fud):
    size = 112
    args = [tf.constant(v) for v in (t, flr, fud)]
    rects = np.array(SCENE, np.float32).reshape(-1, 8)
    boxes = np.array([_box(r) for r in SCENE], np.float32)
    moved_rects = aug.dihedral_rects(tf.constant(rects), size, *args).numpy()
    moved_boxes = aug.dihedral_boxes(tf.constant(boxes), size, *args).numpy()
    np.testing.assert_allclose(moved_boxes, [_box(r) for r in moved_rects.reshape(-1, 4, 2)])
    before = _targets(rects, size, cvg_scale=1.0, cvg_shape="rect")
    after = _targets(moved_rects, size, cvg_scale=1.0, cvg_shape="rect")
    np.testing.assert_array_equal(after["coverage"],
                                  _dihedral_grid(before["coverage"], t, flr, fud))
    for c in (2, 3, 4):  # obliquity and both weights move with the cells
        np.testing.assert_allclose(after["orient"][..., c],
                                   _dihedral_grid(before["orient"][..., c], t, flr, fud),
                                   atol=1e-6)
    # gliding parameters: each flip maps (alpha, beta) -> (1 - alpha, 1 - beta), the
    # transpose -> (1 - beta, 1 - alpha)
    a, b = before["orient"][..., 0], before["orient"][..., 1]
    if t:
        a, b = 1 - b, 1 - a
    for flip in (flr, fud):
        if flip:
            a, b = 1 - a, 1 - b
    oblique = after["orient"][..., 3] > 0
    assert oblique.sum() >= 4
    np.testing.assert_allclose(after["orient"][..., 0][oblique],
                               _dihedral_grid(a, t, flr, fud)[oblique], atol=1e-5)
    np.testing.assert_allclose(after["orient"][..., 1][oblique],
                               _dihedral_grid(b, t, flr, fud)[oblique], atol=1e-5)
    decoded = tg.decode_oriented_targets(after["coverage"], after["bbox"], after["orient"])[0]
    _same_rects(decoded, moved_rects)


@pytest.mark.parametrize("y0,x0,win", [(40, 0, 64), (40, 16, 48)])
def test_targets_of_a_crop_are_the_moved_rectangles_and_cut_ones_have_no_orientation(
        y0, x0, win):
    crop = 64
    rects = np.array(SCENE, np.float32).reshape(-1, 8)
    boxes = np.array([_box(r) for r in SCENE], np.float32)
    got_boxes, got_rects = aug.crop_boxes_and_rects(tf.constant(boxes), tf.constant(rects),
                                                    y0, x0, win, crop, 0.25)
    got_boxes, got_rects = got_boxes.numpy(), got_rects.numpy()
    np.testing.assert_array_equal(got_boxes, aug.crop_boxes(boxes, y0, x0, win, crop,
                                                            0.25).numpy())
    scale = crop / win
    moved = (rects.reshape(-1, 4, 2) - [x0, y0]) * scale
    clipped = np.array([np.clip(_box(m), 0, crop) for m in moved])
    kept = [k for k in range(len(SCENE))
            if np.any(np.all(np.abs(got_boxes - clipped[k]) < 1e-4, axis=1))]
    np.testing.assert_allclose(got_rects.reshape(-1, 4, 2), moved[kept], atol=1e-4)
    out = tg.detectnet_targets(tf.constant(got_boxes[None]), crop, crop, cvg_scale=1.0,
                               rects=tf.constant(got_rects[None]), cvg_shape="rect")
    out = {k: v.numpy()[0] for k, v in out.items()}
    inside = [k for k in kept if moved[k].min() >= 0 and moved[k].max() <= crop]
    cut = [k for k in kept if k not in inside]
    assert inside and cut  # both cases happen in this window
    covered = out["coverage"][..., 0] > 0
    decoded = 0
    owners = out["bbox"][..., :4] + np.tile(
        np.stack(np.meshgrid((np.arange(4) + 0.5) * S, (np.arange(4) + 0.5) * S), -1), 2)
    for k in kept:
        cells = covered & np.all(np.abs(owners - clipped[k]) < 1e-3, -1)
        if not cells.any():
            continue
        weights = out["orient"][cells][:, 4]
        np.testing.assert_array_equal(weights, float(k in inside))
        if k in inside:
            rect = tg.decode_oriented_targets(cells[..., None].astype(np.float32),
                                              out["bbox"], out["orient"])[0]
            _same_rects(rect, moved[k][None], atol=1e-3)
            decoded += 1
    assert decoded >= 1


# ---- loss ----------------------------------------------------------------------------------
def test_orient_loss_weights_gliding_and_obliquity_per_cell():
    from sn_tf.modeling import OrientLoss, losses_for

    y_true = np.zeros((1, 1, 3, 5), np.float32)
    y_true[0, 0, 0] = [0.2, 0.6, 0.5, 1, 1]  # oblique
    y_true[0, 0, 1] = [0.0, 0.0, 0.95, 0, 1]  # near axis: to a box encoding, and r
    y_true[0, 0, 2] = [0.3, 0.3, 0.6, 0, 0]  # cut by the crop: nothing
    y_pred = np.array([[[[0.5, 0.5, 0.5], [0.9, 0.7, 0.5], [0.0, 1.0, 0.0]]]], np.float32)
    loss = OrientLoss(weight=2.0, obliquity_weight=3.0, flat_weight=0.5)
    # cell 0: |0.3| + |0.1| + 3 * 0; cell 1: 0.5 * min(1.6, 0.4) + 3 * 0.45; cell 2: 0;
    # times h*w = 3, weight 2, mean over the 3 cells
    want = 2.0 * 3 * ((0.3 + 0.1) + 0.5 * 0.4 + 3 * 0.45) / 3
    assert float(loss(y_true, y_pred)) == pytest.approx(want, rel=1e-5)
    assert isinstance(losses_for("detectnet", orient_weight=1.0)["orient"], OrientLoss)
    assert "orient" not in losses_for("detectnet")
    again = OrientLoss.from_config(loss.get_config())
    assert (again.obliquity_weight, again.flat_weight, again.weight) == (3.0, 0.5, 2.0)


# ---- the polygon head ------------------------------------------------------------------------
def _outputs(rects, size, noise=0.0, seed=0):
    """Model-like outputs from the targets of ``rects``: box offsets with +-noise px."""
    t = _targets(rects, size, cvg_scale=1.0, cvg_shape="rect")
    rng = np.random.default_rng(seed)
    bbox = t["bbox"][..., :4] + rng.uniform(-noise, noise, t["bbox"][..., :4].shape)
    cov = t["coverage"] * 0.9
    return {"coverage": cov, "bbox": bbox * (cov > 0), "orient": t["orient"][..., :3]}


@pytest.mark.parametrize("grouping", ["clusters", "rotated_nms"])
@pytest.mark.parametrize("noise", [0.0, 1.5])
def test_head_keeps_two_touching_rotated_units_apart(noise, grouping):
    out = _outputs([ROW_A, ROW_B, FLAT], 96, noise)
    found = polygons.outputs_to_buildings(
        "detectnet", out, "img", image_size=(96, 96),
        params={"threshold": 0.5, "grouping": grouping, "group_threshold": 0, "eps": 0.35,
                "nms_iou": 0.1, "min_height": 6.0})
    assert len(found) == 3  # one polygon per building: the two units are not merged
    for want in (ROW_A, ROW_B, FLAT):  # each matched (+-1.5 px boxes: IoU > 0.6)
        best = max(_iou(b.polygon.exterior.coords[:4], want) for b in found)
        assert best > (0.999 if noise == 0 else 0.6)
    assert all(b.confidence == pytest.approx(0.9) for b in found)


@pytest.mark.parametrize("grouping", ["clusters", "rotated_nms"])
def test_head_names_non_finite_orient_parameters(grouping):
    out = _outputs([ROW_A, ROW_B], 96)
    cells = np.argwhere(out["coverage"][..., 0] > 0.5)
    out["orient"] = out["orient"].copy()
    out["orient"][tuple(cells[3])] = [np.nan, 0.2, 0.5]
    with pytest.raises(ValueError, match=r"orient: 1 candidate cell\(s\) have non-finite"):
        polygons.outputs_to_buildings(
            "detectnet", out, "img", image_size=(96, 96),
            params={"threshold": 0.5, "grouping": grouping, "group_threshold": 0,
                    "eps": 0.35, "nms_iou": 0.1})


def test_head_without_orient_output_gives_boxes_and_gate_zero_too():
    out = _outputs([ROW_A, ROW_B], 96)
    params = {"threshold": 0.5, "grouping": "clusters", "group_threshold": 0, "eps": 0.35}
    plain = polygons.outputs_to_buildings("detectnet", {k: out[k] for k in ("coverage", "bbox")},
                                          "img", image_size=(96, 96), params=params)
    boxes = polygons.outputs_to_buildings("detectnet", out, "img", image_size=(96, 96),
                                          params={**params, "rect_gate": 0.0})
    for found in (plain, boxes):
        got = sorted(tuple(np.round(b.polygon.bounds, 3).tolist()) for b in found)
        assert got == sorted([tuple(_box(ROW_A).tolist()), tuple(_box(ROW_B).tolist())])
        assert all(b.polygon.area == shapely.box(*b.polygon.bounds).area for b in found)
    with pytest.raises(ValueError, match="clusters"):
        polygons.outputs_to_buildings("detectnet", out, "img", image_size=(96, 96),
                                      params={**params, "grouping": "opencv"})


def test_rotated_nms_takes_overlapping_cells_without_chaining_neighbours():
    # A and B share a wall; cell 2 straddles them (IoU ~1/3 with each) with less coverage
    quads = [ROW_A, ROW_B, (ROW_A + ROW_B) / 2, ROW_B + [0.5, 0]]
    boxes = np.array([_box(q) for q in quads])
    params = np.array([R.gliding_from_rects(np.asarray(q)[None]) for q in quads])[..., 0]
    got_boxes, got_params, counts, scores = detections.rotated_nms(
        boxes, params, [0.9, 0.8, 0.5, 0.7], iou=0.2)
    # seed A takes the straddling cell; B and its near-copy form the second group
    np.testing.assert_array_equal(counts, [2, 2])
    np.testing.assert_allclose(scores, [0.7, 0.75], rtol=1e-6)
    rects = R.rects_from_gliding(got_boxes, *got_params.T)
    assert _iou(rects[1], ROW_B) > 0.95 and _iou(rects[0], ROW_A) > 0.5
    # the transitive clusters of similar boxes join all four into one building
    assert len(detections.merge_oriented_clusters(boxes, params, [0.9, 0.8, 0.5, 0.7],
                                                  eps=0.35)[2]) == 1


def test_cluster_parameters_are_coverage_weighted_means():
    boxes = np.array([[0, 0, 10, 10], [0.5, 0, 10, 10.5]], np.float64)
    orient = np.array([[0.2, 0.4, 0.5], [0.5, 0.1, 0.8]])
    got_boxes, got_orient, counts, scores = detections.merge_oriented_clusters(
        boxes, orient, [0.9, 0.3], eps=0.2)
    np.testing.assert_array_equal(counts, [2])
    np.testing.assert_allclose(got_boxes[0], (0.9 * boxes[0] + 0.3 * boxes[1]) / 1.2,
                               rtol=1e-6)
    np.testing.assert_allclose(got_orient[0], (0.9 * orient[0] + 0.3 * orient[1]) / 1.2,
                               rtol=1e-6)
    assert scores[0] == pytest.approx(0.6)


def test_records_without_rectangles_fall_back_to_the_box_corners():
    import types

    from sn_tf.input import decode
    from sn_tf.dataset import schema

    plan = types.SimpleNamespace(grid="G")
    boxes = tf.constant([[1.0, 2.0, 5.0, 7.0], [0.0, 0.0, 3.0, 3.0]])
    key = schema.label_key("G", "rects_px")
    empty = tf.sparse.SparseTensor(tf.zeros([0, 1], tf.int64), tf.zeros([0]), [0])
    corners = decode._rects({key: empty}, plan, boxes).numpy()  # schema version < 3
    np.testing.assert_array_equal(corners[0], [1, 2, 5, 2, 5, 7, 1, 7])
    a, b, r = R.gliding_from_rects(corners)
    np.testing.assert_array_equal([a, b, r], [[0, 0], [0, 0], [1, 1]])  # axis-aligned
    stored = tf.sparse.from_dense(tf.constant(np.arange(16, dtype=np.float32) + 1))
    np.testing.assert_array_equal(decode._rects({key: stored}, plan, boxes).numpy(),
                                  (np.arange(16) + 1).reshape(2, 8))


@pytest.mark.parametrize("iou", [0.0, 0.1, 0.3, 0.6])
def test_lazy_rotated_nms_groups_equal_the_full_pair_graph(iou):
    """rotated_nms computes only the IoUs the suppression reads; its groups equal greedy
    suppression over every overlapping pair (the earlier implementation)."""
    rng = np.random.default_rng(7)
    n = 400
    centre = np.repeat(rng.uniform(20, 300, (40, 2)), 10, axis=0) + rng.normal(0, 3, (n, 2))
    half = np.repeat(rng.uniform(5, 25, (40, 2)), 10, axis=0) + rng.normal(0, 2, (n, 2))
    boxes = np.c_[centre - np.abs(half), centre + np.abs(half)]
    params = rng.uniform(0, 1, (n, 3))
    scores = rng.uniform(0.5, 1, n)
    quads = R.rects_from_gliding(boxes, params[:, 0], params[:, 1], params[:, 2], 0.7)
    quads[::50] = quads[::50, [0, 0, 2, 2]]  # degenerate quads: decided by GEOS
    polys = shapely.polygons(quads)
    i, j = detections._overlapping_pairs(polys, iou)
    want = detections._greedy_groups(n, i, j, scores)
    np.testing.assert_array_equal(detections._lazy_greedy_groups(polys, scores, iou), want)
    # the numpy decisions, a batch of seeds at a time
    np.testing.assert_array_equal(detections._lazy_greedy_groups(polys, scores, iou, quads),
                                  want)
    assert want.max() + 1 < n  # groups formed


def test_convex_overlap_areas_match_geos():
    """The numpy clipping behind rotated_nms's decisions gives GEOS's intersection areas of
    rectangles (touching, identical, nested, apart, either orientation) to rounding."""
    rng = np.random.default_rng(3)
    n = 2000
    centre, half = rng.uniform(0, 650, (n, 2)), rng.uniform(1, 25, (n, 2))
    params = rng.uniform(0, 1, (n, 3))
    a = R.rects_from_gliding(np.c_[centre - half, centre + half], *params.T, 0.7)
    c2 = centre + rng.normal(0, 4, (n, 2))
    h2 = np.abs(half + rng.normal(0, 3, (n, 2))) + 0.5
    b = R.rects_from_gliding(np.c_[c2 - h2, c2 + h2], *params.T, 0.7)
    b[::9] = a[::9]  # identical
    b[1::9] = a[1::9] + 0.5  # shifted
    b[2::9] = a[2::9, ::-1]  # reversed ring
    b[3::9] = a[3::9] + [[60.0, 0.0]]  # apart
    box = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 3.0]])
    a[4], b[4] = box, box + [4.0, 0.0]  # sharing a side
    a[5], b[5] = box, box * 0.5 + 1.0  # nested
    area, sound = detections._convex_overlap_areas(a, b)
    want = shapely.area(shapely.intersection(shapely.polygons(a), shapely.polygons(b)))
    assert sound.all()
    np.testing.assert_allclose(area, want, rtol=0, atol=1e-9)
