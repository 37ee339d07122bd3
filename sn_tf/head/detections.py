"""DetectNet grids -> boxes or rotated rectangles -> building polygons (TensorFlow-free).

``detectnet_candidates`` decodes the covered cells' boxes; the groupings (``GROUPINGS``:
OpenCV's ``group_rectangles`` or ``merge_clusters``; ``ORIENTED_GROUPINGS``:
``merge_oriented_clusters`` or ``rotated_nms`` of gliding-vertex rectangles,
``sn_tf.input.rects``) merge them into detections; ``buildings_from_detectnet`` is the whole
path. Coordinate conventions: ``sn_tf.head.polygons``.
"""

from __future__ import annotations


import numpy as np
import shapely

from sn_tf.input import rects as rect_ops
from sn_tf.input.cells import DEFAULT_CELL_SIZE
from sn_tf.spacenet.buildings import Building
from sn_tf.spacenet.geo import pixel_to_map
from sn_tf.head.rasters import _as_2d


# ----------------------------------------------------------------------------------------------
# DetectNet grids -> boxes -> polygons


def detectnet_candidates(coverage, bbox, cell_size: int = DEFAULT_CELL_SIZE,
                         threshold: float = 0.06, image_size: tuple[int, int] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Decode a DetectNet output grid into candidate boxes.

    Args:
      coverage: [h, w] or [h, w, 1] probabilities of cell (i, j) (row i, column j).
      bbox: [h, w, 4] predicted corner offsets in pixels (x1 - cx, y1 - cy, x2 - cx, y2 - cy)
        from the cell centre (cx, cy) = ((j + 0.5) * cell_size, (i + 0.5) * cell_size).
      cell_size: pixels per cell S (``sn_tf.input.cells``: the model's ``cell_size``, 16 or 8).
      threshold: cells with coverage >= threshold (compared in coverage's float dtype) give a
        candidate.
      image_size: (H, W) of the tile in pixels for clipping; default
        (h * cell_size, w * cell_size).

    Returns:
      (boxes_xyxy_px float32 [N, 4], scores float32 [N]) in row-major cell order; boxes are
      clipped to the tile and those with non-positive width or height after clipping dropped.
    """
    boxes, scores, _ = _candidate_cells(coverage, bbox, cell_size, threshold, image_size)
    return boxes, scores


def _candidate_cells(coverage, bbox, cell_size: int, threshold: float, image_size):
    """:func:`detectnet_candidates` plus the (row, col) int [N, 2] of each box's cell."""
    coverage = _as_2d(coverage, "coverage")
    if not np.issubdtype(coverage.dtype, np.floating):
        coverage = coverage.astype(np.float64)
    bbox = np.asarray(bbox, dtype=np.float64)
    if bbox.shape != coverage.shape + (4,):
        raise ValueError(f"bbox: expected shape {coverage.shape + (4,)}, got {bbox.shape}")
    h, w = coverage.shape
    height, width = image_size if image_size is not None else (h * cell_size, w * cell_size)
    # compare in the coverage dtype, so a float32 0.06 passes threshold=0.06
    rows, cols = np.nonzero(coverage >= np.asarray(threshold, dtype=coverage.dtype))
    cx = (cols + 0.5) * cell_size
    cy = (rows + 0.5) * cell_size
    off = bbox[rows, cols]
    boxes = np.column_stack([cx + off[:, 0], cy + off[:, 1], cx + off[:, 2], cy + off[:, 3]])
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return (boxes[keep].astype(np.float32), coverage[rows, cols][keep].astype(np.float32),
            np.column_stack([rows, cols])[keep])


# Rectangles queried per STRtree call when collecting candidate pairs: bounds the transient
# candidate arrays (pairs of one chunk) whatever the number of boxes.
_PAIR_CHUNK = 4096


def _points_in_rects(px, py, lo_x, lo_y, hi_x, hi_y, pad: float):
    """Yield candidate pairs ``(i, j)`` (int64 arrays): point i lies in rectangle j.

    Points ``(px[i], py[i])``; rectangles ``[lo_x[j] - pad, hi_x[j] + pad] x [lo_y[j] - pad,
    hi_y[j] + pad]`` (boundary included). A shapely STRtree of the points answers
    ``_PAIR_CHUNK`` rectangles at a time, so memory grows with the pairs of one chunk, not
    with N x M. Callers test their exact predicate on the yielded pairs (``pad`` > 0 keeps
    float rounding from losing a pair the predicate accepts).
    """
    tree = shapely.STRtree(shapely.points(px, py))
    for start in range(0, len(lo_x), _PAIR_CHUNK):
        part = slice(start, start + _PAIR_CHUNK)
        rects = shapely.box(lo_x[part] - pad, lo_y[part] - pad, hi_x[part] + pad,
                            hi_y[part] + pad)
        j, i = tree.query(rects)
        yield i.astype(np.int64), j.astype(np.int64) + start


def _pad(boxes: np.ndarray) -> float:
    """Query margin (pixels) far above float64 rounding of the coordinates of ``boxes``."""
    return 1e-9 * (1.0 + float(np.abs(boxes).max(initial=0.0)))


def _clusters(boxes: np.ndarray, eps: float) -> np.ndarray:
    """Cluster label (int [N], 0..K-1 in order of first member) of OpenCV's similarity predicate.

    Boxes i, j are similar when all four edges differ by at most
    ``delta = eps * (min(w_i, w_j) + min(h_i, h_j)) / 2``; clusters are the connected
    components (transitive closure, as OpenCV's union-find ``partition``).

    Memory-bounded: since ``delta <= eps * (w_i + h_i) / 2 = r_i``, a box similar to box i has
    its top-left corner within r_i of box i's, so candidate pairs come from an STRtree of
    corners (:func:`_points_in_rects`, chunked); the exact predicate then keeps the similar
    pairs, and scipy's ``connected_components`` runs on that sparse graph. Memory is
    O(N + similar pairs), not O(N^2): the k cells of one building propose near-identical
    boxes (~k^2 / 2 pairs), boxes of different buildings are rarely similar.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(boxes)
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    reach = np.maximum(eps * (w + h) * 0.5, 0.0)
    x1, y1 = boxes[:, 0], boxes[:, 1]
    edges_i, edges_j = [], []
    for i, j in _points_in_rects(x1, y1, x1 - reach, y1 - reach, x1 + reach, y1 + reach,
                                 _pad(boxes)):
        i, j = i[i < j], j[i < j]  # each similar pair is found from both ends
        delta = eps * (np.minimum(w[i], w[j]) + np.minimum(h[i], h[j])) * 0.5
        similar = np.all(np.abs(boxes[i] - boxes[j]) <= delta[:, None], axis=1)
        edges_i.append(i[similar])
        edges_j.append(j[similar])
    i = np.concatenate(edges_i) if edges_i else np.zeros(0, np.int64)
    j = np.concatenate(edges_j) if edges_j else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber clusters by their first member, for a deterministic order
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels]


def _suppressed(r: np.ndarray, counts: np.ndarray, strong: np.ndarray, eps: float) -> np.ndarray:
    """bool [K]: averaged box i lies inside a strong box j (j != i) enlarged by eps, and j
    dominates it (``n_j > max(3, n_i) or n_i < 3``) - OpenCV's step 3.

    ``r``: [K, 4] averaged xyxy boxes (x_min <= x_max, y_min <= y_max); ``counts``: [K]
    members; ``strong``: [K] clusters kept by the group threshold. Candidates come from an
    STRtree of top-left corners queried with the enlarged strong boxes (memory-bounded, as
    :func:`_clusters`); the exact inside test runs on those pairs only.
    """
    dx = eps * (r[:, 2] - r[:, 0])
    dy = eps * (r[:, 3] - r[:, 1])
    out = np.zeros(len(r), dtype=bool)
    cand = np.flatnonzero(strong)
    rs, dxs, dys = r[cand], dx[cand], dy[cand]
    for i, jj in _points_in_rects(r[:, 0], r[:, 1], rs[:, 0] - dxs, rs[:, 1] - dys,
                                  rs[:, 2] + dxs, rs[:, 3] + dys, _pad(r)):
        j = cand[jj]
        inside = ((r[i, 0] >= r[j, 0] - dx[j]) & (r[i, 1] >= r[j, 1] - dy[j])
                  & (r[i, 2] <= r[j, 2] + dx[j]) & (r[i, 3] <= r[j, 3] + dy[j]))
        dominant = (counts[j] > np.maximum(3, counts[i])) | (counts[i] < 3)
        out[i[inside & dominant & (i != j)]] = True
    return out


def _checked_boxes(boxes, scores, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 boxes [N, 4] and scores [N] (default 1); ValueError naming ``caller`` on
    non-finite or inverted boxes or scores of another length."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.ones(len(boxes)) if scores is None else np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(boxes),):
        raise ValueError(f"{caller}: {len(boxes)} boxes but scores of shape {scores.shape}")
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < boxes[:, 0]) \
        | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        raise ValueError(f"{caller}: {int(bad.sum())} box(es) are not finite "
                         f"(x_min, y_min, x_max, y_max) with x_min <= x_max, y_min <= y_max, "
                         f"e.g. {boxes[bad][0].tolist()}")
    return boxes, scores


def _cluster_means(boxes: np.ndarray, scores: np.ndarray, eps: float):
    """Mean box float64 [K, 4], member count int [K] and mean score float64 [K] of each
    cluster of :func:`_clusters` (cluster order)."""
    labels = _clusters(boxes, eps)
    k = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=k)
    means = np.stack([np.bincount(labels, boxes[:, c], k) for c in range(4)], 1) / counts[:, None]
    return means, counts, np.bincount(labels, scores, k) / counts


def group_rectangles(boxes, scores=None, group_threshold: int = 3,
                     eps: float = 0.02) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV ``groupRectangles`` semantics on float boxes (numpy, no OpenCV).

    1. Cluster similar boxes (:func:`_clusters`).
    2. Drop clusters with <= ``group_threshold`` members; average the rest (mean edges).
    3. Drop an averaged box r1 (n1 members) lying inside another kept box r2 (n2 members)
       enlarged by (eps * w2, eps * h2) on each side when ``n2 > max(3, n1) or n1 < 3``.
    ``group_threshold <= 0`` returns the input unchanged (each box its own group), as OpenCV.
    Unlike OpenCV (integer ``cv::Rect``), nothing is rounded. Memory grows with the number
    of boxes and of similar pairs (:func:`_clusters`), not with N^2: 10^5 boxes of a dense
    5000 px scene group in well under a second and ~70 MB.

    Args:
      boxes: [N, 4] (x_min, y_min, x_max, y_max) pixels, finite, x_min <= x_max, y_min <= y_max.
      scores: [N] per-box scores (default 1); a group's score is the mean of its members'.

    Returns:
      (boxes float32 [M, 4], member counts int64 [M], scores float32 [M]) in cluster order.

    Raises:
      ValueError: on non-finite or inverted boxes, or scores of another length.
    """
    boxes, scores = _checked_boxes(boxes, scores, "group_rectangles")
    if group_threshold <= 0 or len(boxes) == 0:
        return (boxes.astype(np.float32), np.ones(len(boxes), dtype=np.int64),
                scores.astype(np.float32))
    means, counts, mean_scores = _cluster_means(boxes, scores, eps)
    strong = counts > group_threshold
    keep = strong & ~_suppressed(means, counts, strong, eps)
    return (means[keep].astype(np.float32), counts[keep].astype(np.int64),
            mean_scores[keep].astype(np.float32))


def merge_clusters(boxes, scores=None, group_threshold: int = 0,
                   eps: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every cluster of similar boxes (:func:`_clusters`) with > ``group_threshold`` members
    becomes its mean box; no inner-box suppression.

    The alternative to :func:`group_rectangles` for native-resolution tiles, where a small
    building owns a single coverage cell: there OpenCV's rule "more than group_threshold
    members, and group_threshold 0 means no grouping at all" forces a choice between losing
    every one-cell building and keeping every cell's box as a duplicate. Here
    ``group_threshold`` 0 keeps one-cell clusters and still merges the rest. Same arguments,
    returns and errors as :func:`group_rectangles`.
    """
    boxes, scores = _checked_boxes(boxes, scores, "merge_clusters")
    if len(boxes) == 0:
        return (boxes.astype(np.float32), np.zeros(0, dtype=np.int64),
                scores.astype(np.float32))
    means, counts, mean_scores = _cluster_means(boxes, scores, eps)
    keep = counts > group_threshold
    return (means[keep].astype(np.float32), counts[keep].astype(np.int64),
            mean_scores[keep].astype(np.float32))


GROUPINGS = {"opencv": group_rectangles, "clusters": merge_clusters}


def _weighted_groups(labels: np.ndarray, boxes: np.ndarray, orient: np.ndarray,
                     scores: np.ndarray):
    """Per group k = 0..K-1 of ``labels`` (int [N]): the ``scores``-weighted mean box
    float64 [K, 4] and parameters [K, 3], the member count int [K] and mean score [K]."""
    k = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=k)
    weight = np.bincount(labels, scores, k)
    values = np.concatenate([boxes, orient], axis=1) * scores[:, None]
    means = np.stack([np.bincount(labels, values[:, c], k) for c in range(7)], 1)
    means /= np.where(weight > 0, weight, 1.0)[:, None]
    return means[:, :4], means[:, 4:], counts, weight / counts


def _oriented_inputs(boxes, orient, scores, caller: str):
    boxes, scores = _checked_boxes(boxes, scores, caller)
    orient = np.asarray(orient, dtype=np.float64).reshape(len(boxes), 3)
    return boxes, orient, scores


def _empty_oriented(boxes, orient, scores):
    return (boxes.astype(np.float32), orient.astype(np.float32), np.zeros(0, dtype=np.int64),
            scores.astype(np.float32))


def merge_oriented_clusters(boxes, orient, scores, group_threshold: int = 0,
                            eps: float = 0.2) -> tuple[np.ndarray, ...]:
    """:func:`merge_clusters` for oriented candidates: each cluster of similar boxes
    (:func:`_clusters`) with > ``group_threshold`` members becomes the coverage-weighted
    mean of its members' boxes and gliding parameters.

    Args:
      boxes: [N, 4] xyxy pixels (as :func:`group_rectangles`).
      orient: [N, 3] gliding parameters (alpha, beta, r) of each box (``sn_tf.input.rects``).
      scores: [N] coverage of each candidate (> 0): the weights, and the cluster's score
        is their plain mean.

    Returns:
      (boxes float32 [M, 4], orient float32 [M, 3], member counts int64 [M], scores
      float32 [M]) in cluster order.
    """
    boxes, orient, scores = _oriented_inputs(boxes, orient, scores, "merge_oriented_clusters")
    if len(boxes) == 0:
        return _empty_oriented(boxes, orient, scores)
    means, params, counts, mean_scores = _weighted_groups(_clusters(boxes, eps), boxes,
                                                          orient, scores)
    keep = counts > group_threshold
    return (means[keep].astype(np.float32), params[keep].astype(np.float32),
            counts[keep].astype(np.int64), mean_scores[keep].astype(np.float32))


def _overlapping_pairs(polys: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """int64 arrays (i, j), i < j: pairs of polygons [N] with IoU > ``min_iou``.

    Candidate pairs come from an STRtree of the polygons, ``_PAIR_CHUNK`` queries at a
    time (memory grows with the intersecting pairs, not with N^2)."""
    tree = shapely.STRtree(polys)
    area = shapely.area(polys)
    out_i, out_j = [], []
    for start in range(0, len(polys), _PAIR_CHUNK):
        q, t = tree.query(polys[start:start + _PAIR_CHUNK], predicate="intersects")
        i, j = q.astype(np.int64) + start, t.astype(np.int64)
        i, j = i[i < j], j[i < j]
        inter = shapely.area(shapely.intersection(polys[i], polys[j]))
        union = area[i] + area[j] - inter
        close = inter > min_iou * np.where(union > 0, union, np.inf)
        out_i.append(i[close])
        out_j.append(j[close])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def _greedy_groups(n: int, i: np.ndarray, j: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Group label (int [n], 0.. in seed order) of greedy suppression: in decreasing score
    order (stable), each candidate not yet taken seeds a group with every not yet taken
    candidate paired with it (pairs (i, j), either way round)."""
    from scipy.sparse import coo_matrix

    graph = coo_matrix((np.ones(2 * i.size, np.int8), (np.r_[i, j], np.r_[j, i])),
                       shape=(n, n)).tocsr()
    labels = np.full(n, -1, dtype=np.int64)
    group = 0
    for seed in np.argsort(-scores, kind="stable"):
        if labels[seed] >= 0:
            continue
        members = graph.indices[graph.indptr[seed]:graph.indptr[seed + 1]]
        members = members[labels[members] < 0]
        labels[seed] = group
        labels[members] = group
        group += 1
    return labels


def _lazy_greedy_groups(polys: np.ndarray, scores: np.ndarray, min_iou: float,
                        quads: np.ndarray | None = None) -> np.ndarray:
    """:func:`_greedy_groups` of the pairs :func:`_overlapping_pairs` would find, computing
    only the IoUs the suppression reads: each seed's with the candidates not yet taken whose
    envelopes meet its own (a candidate taken early is never paired again). Each IoU is
    GEOS's intersection of (lower index, higher index), as in :func:`_overlapping_pairs`, so
    the groups are the same; ~4x fewer intersections on a tile of 8 px cells.

    With ``quads`` (float64 [N, 4, 2], the convex vertices of ``polys``) and ``min_iou`` >= 0
    the pairs' decisions come from :func:`_quad_decisions` instead, a batch of seeds at a
    time (:func:`_batched_greedy`): the same groups, GEOS only for the rare pair too close
    to the threshold to be decided without it.

    polys: object [N] of polygons; scores: [N]. Returns int64 [N] group labels in seed order.
    """
    n = len(polys)
    tree = shapely.STRtree(polys)
    # envelope overlaps suffice when min_iou >= 0: a pair kept has a positive intersection
    q, t = tree.query(polys, predicate=None if min_iou >= 0 else "intersects")
    other = q != t
    q, t = q[other].astype(np.int64), t[other].astype(np.int64)
    order = np.argsort(q, kind="stable")
    q, t = q[order], t[order]
    start = np.searchsorted(q, np.arange(n + 1))
    area = shapely.area(polys)

    def close(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """GEOS's decision for pairs (i < j): IoU > min_iou."""
        inter = shapely.area(shapely.intersection(polys[i], polys[j]))
        union = area[i] + area[j] - inter
        return inter > min_iou * np.where(union > 0, union, np.inf)

    if quads is not None and min_iou >= 0:
        decide = lambda i, j: _quad_decisions(quads, area, i, j, min_iou)  # noqa: E731
        return _batched_greedy(scores, t, start, decide, close)
    labels = np.full(n, -1, dtype=np.int64)
    group = 0
    for seed in np.argsort(-scores, kind="stable"):
        if labels[seed] >= 0:
            continue
        near = t[start[seed]:start[seed + 1]]
        near = near[labels[near] < 0]
        if near.size:
            labels[near[close(np.minimum(seed, near), np.maximum(seed, near))]] = group
        labels[seed] = group
        group += 1
    return labels


def _convex_overlap_areas(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersection areas (float64 [M]) of convex quadrilaterals p and q (float64 [M, 4, 2],
    vertices in ring order, either orientation) and whether each is sound (bool [M]).

    Sutherland-Hodgman in numpy on fixed-size arrays: p's boundary is held as 8 directed
    edges (a, b) (its 4 sides, then one closing edge per clip, zero-length edges where
    none), clipped in turn by the 4 half-planes of q; the area is the shoelace sum over the
    edges. Coordinates are taken relative to q's first vertex. Not sound (a rounding-born
    non-convex boundary, more than one exit from a half-plane) is left to the caller.
    """
    ref = q[:, :1, :]
    qa = q - ref
    qe = np.roll(qa, -1, axis=1) - qa
    orient = np.sign(np.sum(qa[:, :, 0] * np.roll(qa[:, :, 1], -1, 1)
                            - np.roll(qa[:, :, 0], -1, 1) * qa[:, :, 1], axis=1))[:, None]
    m = len(p)
    ax, ay, bx, by = (np.zeros((m, 8)) for _ in range(4))
    pa = p - ref
    ax[:, :4], ay[:, :4] = pa[:, :, 0], pa[:, :, 1]
    bx[:, :4], by[:, :4] = np.roll(pa[:, :, 0], -1, 1), np.roll(pa[:, :, 1], -1, 1)
    sound = orient[:, 0] != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in range(4):
            e = slice(0, 4 + k)  # the edges so far; column 4 + k takes this clip's closing edge
            ox, oy = qa[:, k, :1], qa[:, k, 1:]
            ex, ey = qe[:, k, :1] * orient, qe[:, k, 1:] * orient
            x0, y0, x1, y1 = ax[:, e], ay[:, e], bx[:, e], by[:, e]
            da = ex * (y0 - oy) - ey * (x0 - ox)  # >= 0: inside (left of q's side)
            db = ex * (y1 - oy) - ey * (x1 - ox)
            ia, ib = da >= 0, db >= 0
            leave, enter = ia & ~ib, ~ia & ib
            frac = da / (da - db)
            cx, cy = x0 + (x1 - x0) * frac, y0 + (y1 - y0) * frac
            n_leave = leave.sum(1)
            sound &= (n_leave == enter.sum(1)) & (n_leave <= 1)
            ax[:, 4 + k] = np.where(leave, cx, 0.0).sum(1)
            ay[:, 4 + k] = np.where(leave, cy, 0.0).sum(1)
            bx[:, 4 + k] = np.where(enter, cx, 0.0).sum(1)
            by[:, 4 + k] = np.where(enter, cy, 0.0).sum(1)
            gone = ~(ia | ib)
            bx[:, e] = np.where(leave, cx, np.where(gone, x0, x1))
            by[:, e] = np.where(leave, cy, np.where(gone, y0, y1))
            ax[:, e] = np.where(enter, cx, x0)
            ay[:, e] = np.where(enter, cy, y0)
    area = 0.5 * np.abs(np.sum(ax * by - bx * ay, axis=1))
    return area, sound & np.isfinite(area)


def _quad_decisions(quads: np.ndarray, area: np.ndarray, i: np.ndarray, j: np.ndarray,
                    min_iou: float) -> np.ndarray:
    """int8 [M]: 1 where pair (i, j) of convex quads (float64 [N, 4, 2], GEOS areas [N])
    overlaps with IoU > ``min_iou`` (>= 0), 0 where not, -1 where undecided.

    Decided from :func:`_convex_overlap_areas` where its area is sound and the margin of
    ``inter > min_iou * union`` exceeds ``1e-7 * scale**2`` (scale: the largest
    coordinate, + 1), a million times the rounding of either computation, so the decision
    is GEOS's; pairs with a quad of area below that tolerance are undecided too.
    """
    out = np.full(i.size, -1, dtype=np.int8)
    if i.size == 0:
        return out
    inter, sound = _convex_overlap_areas(quads[i], quads[j])
    scale = 1.0 + float(np.abs(quads).max(initial=0.0))
    tol = 1e-7 * scale * scale
    margin = inter * (1.0 + min_iou) - min_iou * (area[i] + area[j])
    sure = sound & (np.abs(margin) > tol) & (np.minimum(area[i], area[j]) > tol)
    out[sure] = margin[sure] > 0
    return out


# Seeds whose pairs are decided in one vectorised batch by _batched_greedy: a batch holds
# candidates that an earlier seed of the same batch then takes (wasted pairs), a small one
# costs numpy's per-call overhead more often; 16 measured best on 8 px cell tiles.
_SEED_BATCH = 16


def _batched_greedy(scores: np.ndarray, t: np.ndarray, start: np.ndarray, decide, close
                    ) -> np.ndarray:
    """Group labels (int64 [N], 0.. in seed order) of greedy suppression, as
    :func:`_lazy_greedy_groups`, deciding pairs ``_SEED_BATCH`` seeds at a time.

    ``t[start[k]:start[k + 1]]`` (int64) are candidate k's envelope neighbours;
    ``decide(i, j)`` (int64 [M], i < j) -> int8 [M]: 1 / 0 the pair overlaps enough or
    not, -1 undecided; ``close(i, j)`` -> bool [M], the exact decision, called for the
    undecided pairs a seed reads. The next ``_SEED_BATCH`` candidates not yet taken (in
    decreasing score order, stable) have their pairs with the candidates not yet taken
    decided at once; a pair's decision depends on the pair only, so reading it later
    changes nothing, and the suppression then walks the batch as the one-seed loop does.
    """
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    labels = np.full(n, -1, dtype=np.int64)
    group, pos = 0, 0
    while pos < n:
        rest = np.flatnonzero(labels[order[pos:]] < 0)[:_SEED_BATCH]
        if rest.size == 0:
            break
        batch = order[pos + rest]
        pos += int(rest[-1]) + 1
        counts = start[batch + 1] - start[batch]
        member = np.repeat(np.arange(batch.size), counts)
        near = t[np.repeat(start[batch] - np.cumsum(counts) + counts, counts)
                 + np.arange(counts.sum())]
        free = labels[near] < 0
        member, near = member[free], near[free]
        seed_of = batch[member]
        verdict = decide(np.minimum(seed_of, near), np.maximum(seed_of, near))
        ends = np.searchsorted(member, np.arange(batch.size + 1)).tolist()
        for k, seed in enumerate(batch.tolist()):
            if labels[seed] >= 0:
                continue
            mine, said = near[ends[k]:ends[k + 1]], verdict[ends[k]:ends[k + 1]]
            free = labels[mine] < 0
            mine, said = mine[free], said[free]
            take = said > 0
            open_ = said < 0
            if open_.any():
                take[open_] = close(np.minimum(seed, mine[open_]), np.maximum(seed, mine[open_]))
            labels[mine[take]] = group
            labels[seed] = group
            group += 1
    return labels


def rotated_nms(boxes, orient, scores, iou: float = 0.1,
                gate: float = rect_ops.DEFAULT_GATE) -> tuple[np.ndarray, ...]:
    """Group oriented candidates by greedy non-maximum suppression on their rectangles,
    with coverage-weighted voting.

    Each candidate's rectangle is ``sn_tf.input.rects.rects_from_gliding`` of its box and
    parameters (its box where r >= ``gate``). In decreasing score order, a candidate not
    yet taken takes every remaining candidate whose rectangle overlaps its own with IoU
    > ``iou``; the group becomes the ``scores``-weighted mean of its members' boxes and
    parameters. Unlike the transitive clusters of :func:`merge_oriented_clusters`, a chain
    of overlapping candidates across a shared wall cannot join two buildings into one
    group unless the seed's own rectangle overlaps both. Same arguments and returns as
    :func:`merge_oriented_clusters` (groups in seed order).
    """
    boxes, orient, scores = _oriented_inputs(boxes, orient, scores, "rotated_nms")
    if len(boxes) == 0:
        return _empty_oriented(boxes, orient, scores)
    quads = rect_ops.rects_from_gliding(boxes, orient[:, 0], orient[:, 1], orient[:, 2], gate)
    labels = _lazy_greedy_groups(shapely.polygons(quads), scores, iou, quads)
    means, params, counts, mean_scores = _weighted_groups(labels, boxes, orient, scores)
    return (means.astype(np.float32), params.astype(np.float32), counts.astype(np.int64),
            mean_scores.astype(np.float32))


#: Groupings of oriented candidates (DetectNet with an ``orient`` output).
ORIENTED_GROUPINGS = ("clusters", "rotated_nms")


def buildings_from_boxes(boxes, scores, image_id: str = "", transform=None) -> list[Building]:
    """Rectangle polygons (pixel xyxy boxes [N, 4], scores [N]) as :class:`Building` records.

    With ``transform`` the rectangles are mapped to map coordinates.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    polygons = shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], ccw=False)
    if transform is not None:
        polygons = pixel_to_map(polygons, transform)
    return [Building(image_id, p, float(s)) for p, s in zip(polygons, scores)]


def buildings_from_rects(rects, scores, image_id: str = "", transform=None) -> list[Building]:
    """Quadrilateral polygons (pixel vertices [N, 4, 2] in ring order, scores [N]) as
    :class:`Building` records; with ``transform`` mapped to map coordinates."""
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(rects) != len(scores):
        raise ValueError(f"{len(rects)} rectangles but {len(scores)} scores")
    polygons = shapely.polygons(rects) if len(rects) else []
    if transform is not None and len(rects):
        polygons = pixel_to_map(polygons, transform)
    return [Building(image_id, p, float(s)) for p, s in zip(polygons, scores)]


def _orient_cells(orient, cells: np.ndarray, shape) -> np.ndarray:
    """float64 [N, 3] (alpha, beta, r) of the candidate cells (row, col) [N, 2]; ValueError
    when ``orient`` has another shape or a candidate's parameters are not finite."""
    orient = np.asarray(orient, dtype=np.float64)
    if orient.ndim != 3 or orient.shape[:2] != tuple(shape) or orient.shape[2] < 3:
        raise ValueError(f"orient: expected shape {tuple(shape) + (3,)}, got {orient.shape}")
    params = orient[cells[:, 0], cells[:, 1], :3]
    bad = ~np.isfinite(params).all(axis=1)
    if bad.any():  # a NaN would reach GEOS as an open ring
        raise ValueError(f"orient: {int(bad.sum())} candidate cell(s) have non-finite "
                         f"gliding parameters (alpha, beta, r), e.g. {params[bad][0].tolist()} "
                         f"at cell (row, col) {cells[bad][0].tolist()}")
    return params


def buildings_from_detectnet(coverage, bbox, image_id: str = "", *,
                             cell_size: int = DEFAULT_CELL_SIZE,
                             threshold: float = 0.06, group_threshold: int = 3,
                             eps: float = 0.02, min_height: float = 10.0, max_boxes: int = 450,
                             grouping: str = "opencv",
                             image_size: tuple[int, int] | None = None,
                             transform=None, orient=None,
                             rect_gate: float = rect_ops.DEFAULT_GATE,
                             nms_iou: float = 0.1) -> list[Building]:
    """DetectNet grid -> merged boxes (or oriented rectangles) -> building records.

    :func:`detectnet_candidates`, then ``grouping`` "opencv" (:func:`group_rectangles`, as
    DIGITS) or "clusters" (:func:`merge_clusters`), then boxes shorter than ``min_height``
    pixels are dropped and at most ``max_boxes`` boxes are kept (highest score first,
    stable). Confidence = mean coverage of the cells of the group.

    ``orient`` (an oriented model's ``[h, w, 3]`` output: gliding parameters alpha, beta
    and obliquity r of each cell's box, ``sn_tf.input.rects``) makes the buildings rotated
    rectangles: grouping must then be "clusters" (:func:`merge_oriented_clusters`, with
    ``group_threshold`` and ``eps``) or "rotated_nms" (:func:`rotated_nms` with IoU
    ``nms_iou``), both coverage-weighted means of boxes and parameters, and each group's
    rectangle is ``sn_tf.input.rects.rects_from_gliding`` of its mean box and parameters (its
    box where the mean r >= ``rect_gate``; ``rect_gate`` 0 gives boxes only).
    """
    known = ORIENTED_GROUPINGS if orient is not None else tuple(GROUPINGS)
    if grouping not in known:
        raise ValueError(f"grouping must be one of {sorted(known)} for "
                         f"{'oriented' if orient is not None else 'box'} outputs, got "
                         f"{grouping!r}")
    boxes, scores, cells = _candidate_cells(coverage, bbox, cell_size, threshold, image_size)
    if orient is None:
        boxes, _, scores = GROUPINGS[grouping](boxes, scores, group_threshold, eps)
    else:
        params = _orient_cells(orient, cells, np.shape(coverage)[:2])
        if grouping == "clusters":
            boxes, params, _, scores = merge_oriented_clusters(boxes, params, scores,
                                                               group_threshold, eps)
        else:
            boxes, params, _, scores = rotated_nms(boxes, params, scores, nms_iou,
                                                   rect_gate)
    keep = (boxes[:, 3] - boxes[:, 1]) >= min_height
    order = np.flatnonzero(keep)[np.argsort(-scores[keep], kind="stable")[:max_boxes]]
    if orient is None:
        return buildings_from_boxes(boxes[order], scores[order], image_id, transform)
    quads = rect_ops.rects_from_gliding(boxes[order], params[order, 0], params[order, 1],
                                        params[order, 2], rect_gate)
    return buildings_from_rects(quads, scores[order], image_id, transform)
