"""DetectNet and segmentation targets (sn_tf.input.targets) against hand cases and a loop reference."""

import numpy as np
import pytest

from sn_tf.input import targets as tg
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
S = 16


def reference_detectnet(boxes, height, width, stride=S, cvg_scale=0.4):
    """Plain-Python DetectNet targets of one image, straight from the BUILD_NOTES.md rules."""
    h, w = height // stride, width // stride
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    claims, areas = [], []
    for x1, y1, x2, y2 in boxes:
        bw, bh = x2 - x1, y2 - y1
        areas.append(bw * bh)
        if bw <= 0 or bh <= 0:
            claims.append(set())
            continue
        bx, by = (x1 + x2) / 2, (y1 + y2) / 2
        cells = {(i, j) for i in range(h) for j in range(w)
                 if abs((j + 0.5) * stride - bx) <= cvg_scale * bw / 2
                 and abs((i + 0.5) * stride - by) <= cvg_scale * bh / 2}
        if not cells:
            cells = {(min(max(int(by // stride), 0), h - 1), min(max(int(bx // stride), 0), w - 1))}
        claims.append(cells)
    owner = {}
    for i in range(h):
        for j in range(w):
            cands = [n for n, c in enumerate(claims) if (i, j) in c]
            if cands:
                owner[(i, j)] = min(cands, key=lambda n: (areas[n], n))
    counts = {n: sum(1 for o in owner.values() if o == n) for n in set(owner.values())}
    cov = np.zeros((h, w, 1), np.float32)
    bbox = np.zeros((h, w, 9), np.float32)
    for (i, j), n in owner.items():
        x1, y1, x2, y2 = boxes[n]
        cx, cy = (j + 0.5) * stride, (i + 0.5) * stride
        cov[i, j] = 1
        bbox[i, j] = [x1 - cx, y1 - cy, x2 - cx, y2 - cy, 1 / (x2 - x1), 1 / (y2 - y1),
                      1 / (x2 - x1), 1 / (y2 - y1), 1 / counts[n]]
    return cov, bbox, sorted(set(owner.values()))


def _targets(boxes, height, width, **kw):
    out = tg.detectnet_targets(tf.constant(np.asarray(boxes, np.float32)), height, width, **kw)
    return out["coverage"].numpy(), out["bbox"].numpy()


def test_single_box_cells_offsets_and_normalisers():
    box = [8.0, 8.0, 56.0, 40.0]  # 48 x 32 box centred at (32, 24) in a 64 x 64 image
    cov, bbox = _targets([[box]], 64, 64)
    # shrunk by 0.4: |cx - 32| <= 9.6 -> columns with centres 24, 40; |cy - 24| <= 6.4 -> row 1
    expected = np.zeros((4, 4), np.float32)
    expected[1, 1:3] = 1
    np.testing.assert_array_equal(cov[0, ..., 0], expected)
    np.testing.assert_allclose(bbox[0, 1, 1], [8 - 24, 8 - 24, 56 - 24, 40 - 24, 1 / 48, 1 / 32,
                                               1 / 48, 1 / 32, 0.5], rtol=1e-6)
    assert np.all(bbox[0][expected == 0] == 0)


def test_box_without_cell_centre_claims_the_cell_of_its_centre():
    cov, bbox = _targets([[[37.0, 2.0, 43.0, 9.0]]], 64, 64)  # centre (40, 5.5) -> cell (0, 2)
    assert cov[0, ..., 0].sum() == 1 and cov[0, 0, 2, 0] == 1
    np.testing.assert_allclose(bbox[0, 0, 2, :4], [37 - 40, 2 - 8, 43 - 40, 9 - 8])
    assert bbox[0, 0, 2, 8] == 1


def test_smaller_box_wins_shared_cells_and_padding_rows_are_ignored():
    big = [0.0, 0.0, 64.0, 64.0]
    small = [16.0, 16.0, 48.0, 48.0]
    cov, bbox = _targets([[big, small, [0, 0, 0, 0]]], 64, 64, cvg_scale=1.0)
    assert cov.sum() == 16
    inner = bbox[0, 1:3, 1:3]
    np.testing.assert_allclose(inner[..., 4], 1 / 32)  # owned by the small box
    np.testing.assert_allclose(inner[..., 8], 1 / 4)
    np.testing.assert_allclose(bbox[0, 0, 0, 4], 1 / 64)
    np.testing.assert_allclose(bbox[0, 0, 0, 8], 1 / 12)


def test_empty_batch_gives_zero_targets():
    cov, bbox = _targets(np.zeros((2, 0, 4)), 32, 48)
    assert cov.shape == (2, 2, 3, 1) and bbox.shape == (2, 2, 3, 9)
    assert not cov.any() and not bbox.any()


def test_random_boxes_match_the_loop_reference_and_decode_back():
    rng = np.random.default_rng(3)
    batch = []
    for _ in range(4):
        n = rng.integers(0, 14)
        xy = rng.uniform(-10, 100, (n, 2))
        wh = rng.uniform(2, 45, (n, 2))
        boxes = np.clip(np.concatenate([xy, xy + wh], 1), 0, 96)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        batch.append(np.vstack([boxes, np.zeros((14 - len(boxes), 4))]).astype(np.float32))
    batch = np.stack(batch)
    cov, bbox = _targets(batch, 96, 96)
    for b in range(len(batch)):
        ref_cov, ref_bbox, owners = reference_detectnet(batch[b], 96, 96)
        np.testing.assert_array_equal(cov[b], ref_cov)
        np.testing.assert_allclose(bbox[b], ref_bbox, rtol=1e-5, atol=1e-5)
        decoded, counts = tg.decode_detectnet_targets(cov[b], bbox[b], S)
        want = np.unique(np.round(batch[b][owners], 3), axis=0)
        np.testing.assert_allclose(decoded, want, atol=1e-3)
        # the 1/count channel sums to one over each box's cells
        for box, k in zip(decoded, counts, strict=True):
            sel = np.all(np.isclose(_cell_boxes(cov[b], bbox[b]), box, atol=1e-3), axis=-1)
            np.testing.assert_allclose(bbox[b][sel][:, 8].sum(), 1.0, rtol=1e-5)
            assert sel.sum() == k


def _cell_boxes(cov, bbox):
    h, w = cov.shape[:2]
    cx = (np.arange(w) + 0.5) * S
    cy = (np.arange(h) + 0.5) * S
    centres = np.stack(np.meshgrid(cx, cy), -1)
    boxes = bbox[..., :4] + np.tile(centres, 2)
    boxes[cov[..., 0] == 0] = np.nan
    return boxes


def test_segmentation_targets_sign_scale_and_truncation():
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[0, 2:6, 2:6] = 1
    dist = np.abs(np.arange(8) - 3.5)[None, :, None, None] * np.ones((1, 8, 8, 1)) * 10
    out = tg.segmentation_targets(tf.constant(mask), tf.constant(dist, tf.float32),
                                  tf.constant([0.5]), truncation=12.0)
    sdf = out["sdf"].numpy()
    np.testing.assert_array_equal(out["footprint"].numpy(), mask)
    np.testing.assert_array_equal(sdf >= 0, mask > 0)
    assert np.abs(sdf).max() == 12.0
    np.testing.assert_allclose(sdf[0, 3, 0, 0], -0.5 * 5.0)  # row 3: |3 - 3.5| * 10 * 0.5


def test_boundary_weights_peak_on_the_boundary():
    sdf = tf.constant([0.0, 1.0, -3.0, 30.0])
    w = tg.boundary_weights(sdf, 4.0, 3.0).numpy()
    np.testing.assert_allclose(w, 1 + 4 * np.exp(-np.array([0, 1, 9, 900]) / 18), rtol=1e-6)


def test_valid_cells_are_cells_overlapping_the_image():
    cells = tg.valid_cells(tf.constant([40, 64]), tf.constant([64, 20]), 4, 4, S).numpy()
    assert cells[0, :, :, 0].sum(axis=1).tolist() == [4, 4, 4, 0]  # rows from 0, 16, 32 < 40
    assert cells[1, 0, :, 0].tolist() == [1, 1, 0, 0]  # columns from 0, 16 < 20


@pytest.mark.parametrize("threshold", [0.5, 0.06])
def test_decoder_ignores_cells_below_threshold(threshold):
    cov = np.zeros((2, 2, 1), np.float32)
    cov[0, 1] = 0.05
    bbox = np.zeros((2, 2, 9), np.float32)
    decoded, counts = tg.decode_detectnet_targets(cov, bbox, S, threshold)
    assert decoded.shape == (0, 4) and counts.shape == (0,)
