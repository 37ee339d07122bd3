"""Model targets built in TensorFlow from augmented labels (contract: BUILD_NOTES.md, 1).

Segmentation (``segmentation_targets``, ``segmentation_targets_from_sdf``):
  ``footprint`` float32 [B, H, W, 1] in {0, 1}; ``sdf`` float32 [B, H, W, 1] in pixels,
  ``+distance`` inside the footprint, ``-distance`` outside, clipped to ``[-T, T]``,
  where distance is the stored distance to the nearest boundary pixel times the
  augmentation scale. So ``sdf >= 0`` exactly where ``footprint == 1``.

DetectNet (``detectnet_targets``), cell size S (``sn_tf.input.cells``; 16 or 8 pixels), grid
``h = H / S``, ``w = W / S``, cell
(i, j) centred at ``(cx, cy) = ((j + 0.5) S, (i + 0.5) S)`` pixels:
  ``coverage`` float32 [B, h, w, 1]: 1 in cells whose centre lies in the box shrunk about
  its centre by ``cvg_scale`` (closed interval: ``|cx - bx| <= cvg_scale * w_box / 2`` and
  the same for y); a box that claims no cell that way claims the cell containing its
  centre (``floor(bx / S), floor(by / S)``, clipped to the grid). Where several boxes
  claim a cell, the one with the smallest area owns it (equal areas: the first box). A
  box can end up owning no cell when a smaller box takes all of its cells.
  ``bbox`` float32 [B, h, w, 9]: ``(x1 - cx, y1 - cy, x2 - cx, y2 - cy)`` of the owning
  box, then ``(1/w_box, 1/h_box, 1/w_box, 1/h_box)``, then ``1 / (cells owned by that
  box)``; all zero where coverage is 0.

``decode_detectnet_targets`` (numpy, used by tests and tools) inverts the DetectNet
targets into the boxes that own at least one cell.
"""

from __future__ import annotations

import numpy as np

from sn_tf.input.cells import DEFAULT_CELL_SIZE
from sn_tf.input import rects as rect_ops
from sn_tf.input.rects import DEFAULT_GATE
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()

BBOX_CHANNELS = 9
#: ``orient`` target channels: alpha, beta, r, gliding weight, obliquity weight.
ORIENT_CHANNELS = 5
#: Shapes that claim coverage cells: the shrunk box, or the shrunk rotated rectangle.
CVG_SHAPES = ("box", "rect")
#: Pixels a building's rotated rectangle may reach outside the image and still count as
#: not cut by the crop (rectangles of polygons clipped to the tile can poke out by rounding).
CUT_TOLERANCE = 1.0


# ---- segmentation ------------------------------------------------------------------------
def segmentation_targets(mask, distance, scale, truncation: float):
    """Footprint and signed distance targets from mask and distance (any equal shapes).

    mask: 0/1 (any real dtype); distance: pixels of the source grid (any float dtype);
    scale: output pixels per source pixel (scalar or broadcastable; None = 1);
    truncation: T. Returns ``{"footprint": float32, "sdf": float32}`` shaped like ``mask``.
    """
    footprint = tf.cast(mask > 0, tf.float32)
    dist = tf.cast(distance, tf.float32)
    if scale is not None:
        dist = dist * tf.cast(scale, tf.float32)
    sdf = tf.clip_by_value(tf.where(footprint > 0, dist, -dist), -truncation, truncation)
    return {"footprint": footprint, "sdf": sdf}


def segmentation_targets_from_sdf(sdf, scale, truncation: float):
    """Footprint and signed distance targets from a stored (truncated) sdf (any shape).

    The footprint is ``sdf >= 0`` (the stored sdf is >= 0 exactly on the mask); the sdf
    is scaled by ``scale`` (None = 1) and clipped to [-T, T]. Exact when the stored
    truncation times the smallest scale is >= T (see ``sn_tf.input.pipeline``).
    """
    sdf = tf.cast(sdf, tf.float32)
    footprint = tf.cast(sdf >= 0, tf.float32)
    if scale is not None:
        sdf = sdf * tf.cast(scale, tf.float32)
    return {"footprint": footprint, "sdf": tf.clip_by_value(sdf, -truncation, truncation)}


def boundary_weights(sdf, weight: float, sigma: float):
    """Weight map ``1 + weight * exp(-sdf^2 / (2 sigma^2))``: float32 like ``sdf``.

    Emphasises pixels within a few ``sigma`` pixels of a footprint boundary (|sdf| is the
    distance to it); 1 far from any building.
    """
    return 1.0 + weight * tf.exp(-tf.square(sdf) / (2.0 * sigma * sigma))


#: Pixels over which the ``core_weight`` ramps up inside the interior level
#: (``segmentation_element``).
CORE_RAMP_PX = 4.0


def segmentation_element(batch: dict, contact_layer, sample_weights: bool,
                         boundary_weight: float | None = None, boundary_sigma: float = 3.0,
                         contact_weight: float | None = None,
                         interior_level: float | None = None, core_weight: float | None = None):
    """The Keras targets (and per-pixel weights) of a segmentation batch.

    batch: ``footprint``, ``sdf`` float32 [B, H, W, 1] (``segmentation_targets*``), optional
    ``contact`` float32 [B, H, W, 1] (a target), ``valid`` float32 [B, H, W, 1] (1 on real
    pixels; needed with ``sample_weights``). contact_layer: float32 [B, H, W, 1] in {0, 1}
    for the contact weights (None without ``contact_weight``).
    Returns ``targets`` or ``(targets, weights)``, dicts of float32 [B, H, W, 1]: targets
    ``footprint``, ``sdf``, ``contact`` when the batch has it, and with ``interior_level`` k
    ``interior = sdf > k``; weights (the same map for every target) ``valid`` x (``1 +
    boundary_weight * exp(-sdf^2 / (2 sigma^2))``, or 1, ``+ contact_weight *
    contact_layer``), the ``interior`` weights plus ``valid * core_weight * clip((sdf - k) /
    CORE_RAMP_PX, 0, 1)`` with ``core_weight``. Built on the host by the pipeline, or in the
    train step (``sn_tf.input.packed``): the same ops either way.
    """
    targets = {k: batch[k] for k in ("footprint", "sdf", "contact") if k in batch}
    if interior_level is not None:
        targets["interior"] = tf.cast(batch["sdf"] > interior_level, tf.float32)
    if not sample_weights:
        return targets
    w = batch["valid"]
    if boundary_weight is not None or contact_weight is not None:
        m = (1.0 if boundary_weight is None
             else boundary_weights(batch["sdf"], boundary_weight, boundary_sigma))
        if contact_weight is not None:
            m = m + contact_weight * contact_layer
        w = w * m
    weights = {k: w for k in targets}
    if core_weight and interior_level is not None:
        depth = tf.clip_by_value((batch["sdf"] - interior_level) / CORE_RAMP_PX, 0.0, 1.0)
        weights["interior"] = w + batch["valid"] * core_weight * depth
    return targets, weights


# ---- DetectNet ---------------------------------------------------------------------------
def _box_parts(boxes):
    """Split [B, N, 4] xyxy boxes into coordinates, centres, sizes and validity ([B, N])."""
    x1, y1, x2, y2 = tf.unstack(boxes, num=4, axis=-1)
    bw, bh = x2 - x1, y2 - y1
    return x1, y1, x2, y2, 0.5 * (x1 + x2), 0.5 * (y1 + y2), bw, bh, (bw > 0) & (bh > 0)


def _rect_frames(rects):
    """Centre [B, N, 2], adjacent edges u = p1 - p0 and v = p3 - p0 [B, N, 2] and area [B, N]
    of rectangles [B, N, 8] (vertices in ring order; area 0 for padding rows)."""
    shape = tf.shape(rects)
    p = tf.reshape(rects, tf.concat([shape[:2], [4, 2]], 0))
    u, v = p[..., 1, :] - p[..., 0, :], p[..., 3, :] - p[..., 0, :]
    area = tf.abs(u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0])
    return tf.reduce_mean(p, axis=-2), u, v, area


def _centres(grid_h, grid_w, cell_size: int):
    """Cell centres: x float32 [w], y float32 [h] (pixels)."""
    cx = (tf.cast(tf.range(grid_w), tf.float32) + 0.5) * cell_size
    cy = (tf.cast(tf.range(grid_h), tf.float32) + 0.5) * cell_size
    return cx, cy


def _rect_claims(rects, grid_h, grid_w, cell_size: int, cvg_scale: float):
    """bool [B, N, h, w]: cells whose centre lies in the rectangle shrunk by ``cvg_scale``
    about its centre (closed), and bool [B, N]: the rectangle has a positive area."""
    centre, u, v, area = _rect_frames(rects)
    cx, cy = _centres(grid_h, grid_w, cell_size)
    dx = cx[None, None, None, :] - centre[..., 0, None, None]  # [B, N, 1, w]
    dy = cy[None, None, :, None] - centre[..., 1, None, None]  # [B, N, h, 1]

    def inside(e):  # |projection of (q - centre) on edge e| <= cvg_scale / 2 (edge units)
        length2 = tf.maximum(tf.reduce_sum(e * e, axis=-1), 1e-12)[..., None, None]
        t = (dx * e[..., 0, None, None] + dy * e[..., 1, None, None]) / length2
        return tf.abs(t) <= 0.5 * cvg_scale

    valid = area > 0
    return inside(u) & inside(v) & valid[..., None, None], valid


def _claims(boxes, grid_h, grid_w, cell_size: int, cvg_scale: float, rects=None):
    """bool [B, N, h, w]: cells each building claims (shrunk box, or shrunk rotated
    rectangle where ``rects`` [B, N, 8] has one of positive area; else the cell containing
    its box centre) and float32 [B, N] the area of the claiming shape (ownership)."""
    _, _, _, _, bx, by, bw, bh, valid = _box_parts(boxes)
    cx, cy = _centres(grid_h, grid_w, cell_size)
    half_w = (0.5 * cvg_scale * bw)[..., None]
    half_h = (0.5 * cvg_scale * bh)[..., None]
    in_x = tf.abs(cx - bx[..., None]) <= half_w  # [B, N, w]
    in_y = tf.abs(cy - by[..., None]) <= half_h  # [B, N, h]
    claim = in_y[..., :, None] & in_x[..., None, :] & valid[..., None, None]
    area = bw * bh
    if rects is not None:
        rect_claim, has_rect = _rect_claims(rects, grid_h, grid_w, cell_size, cvg_scale)
        use = has_rect & valid
        claim = tf.where(use[..., None, None], rect_claim, claim)
        area = tf.where(use, _rect_frames(rects)[3], area)
    none = valid & ~tf.reduce_any(claim, axis=[2, 3])
    ci = tf.clip_by_value(tf.cast(tf.floor(by / cell_size), tf.int32), 0, grid_h - 1)
    cj = tf.clip_by_value(tf.cast(tf.floor(bx / cell_size), tf.int32), 0, grid_w - 1)
    centre = (tf.one_hot(ci, grid_h, on_value=True, off_value=False)[..., :, None]
              & tf.one_hot(cj, grid_w, on_value=True, off_value=False)[..., None, :])
    return claim | (centre & none[..., None, None]), area


def gliding_targets(boxes, rects, height, width, gate: float = DEFAULT_GATE,
                    cut_tolerance: float = CUT_TOLERANCE):
    """Per-building orientation targets float32 [B, N, 5] (``ORIENT_CHANNELS``).

    boxes: [B, N, 4] xyxy (the buildings' boxes, clipped to the image); rects: [B, N, 8]
    rotated rectangles (4 (x, y) vertices in ring order, not clipped). Channels:
    ``alpha = (x_top - x1) / w`` and ``beta = (y_right - y1) / h`` measured on the box and
    clipped to [0, 1] (top vertex: smallest y, then smallest x; right vertex: largest x,
    then smallest y; as ``sn_tf.input.rects.gliding_from_rects``), the obliquity
    ``r = area(rect) / area(rect's own box)`` in [0, 1], the gliding weight (1 when the
    building has a rectangle of positive area lying inside the image up to
    ``cut_tolerance`` pixels, i.e. not cut by the crop, and ``r < gate``) and the obliquity
    weight (the same without the gate).
    """
    x1, y1, x2, y2, _, _, bw, bh, valid = _box_parts(boxes)
    shape = tf.shape(rects)
    p = tf.reshape(rects, tf.concat([shape[:2], [4, 2]], 0))
    px, py = p[..., 0], p[..., 1]  # [B, N, 4]
    top_y = tf.reduce_min(py, axis=-1, keepdims=True)
    x_top = tf.reduce_min(tf.where(py <= top_y, px, np.inf), axis=-1)
    right_x = tf.reduce_max(px, axis=-1, keepdims=True)
    y_right = tf.reduce_min(tf.where(px >= right_x, py, np.inf), axis=-1)
    alpha = tf.clip_by_value(tf.math.divide_no_nan(x_top - x1, bw), 0.0, 1.0)
    beta = tf.clip_by_value(tf.math.divide_no_nan(y_right - y1, bh), 0.0, 1.0)
    lo_x, hi_x = tf.reduce_min(px, axis=-1), tf.reduce_max(px, axis=-1)
    lo_y, hi_y = tf.reduce_min(py, axis=-1), tf.reduce_max(py, axis=-1)
    box_area = (hi_x - lo_x) * (hi_y - lo_y)
    area = _rect_frames(rects)[3]
    r = tf.clip_by_value(tf.where(box_area > 0, tf.math.divide_no_nan(area, box_area), 1.0),
                         0.0, 1.0)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    tol = float(cut_tolerance)
    inside = (lo_x >= -tol) & (lo_y >= -tol) & (hi_x <= w + tol) & (hi_y <= h + tol)
    weight = tf.cast(valid & (area > 0) & inside, tf.float32)
    glide = weight * tf.cast(r < gate, tf.float32)
    return tf.stack([alpha, beta, r, glide, weight], axis=-1)


def detectnet_targets(boxes, height, width, cell_size: int = DEFAULT_CELL_SIZE,
                      cvg_scale: float = 0.4,
                      rects=None, cvg_shape: str = "box", gate: float = DEFAULT_GATE):
    """DetectNet ``coverage`` [B, h, w, 1] and ``bbox`` [B, h, w, 9] targets (float32), and
    with ``rects`` the ``orient`` [B, h, w, 5] targets.

    boxes: float32 [B, N, 4] xyxy pixels (rows with non-positive width or height are
    padding and ignored); height, width: image size (multiples of ``cell_size``; int or
    scalar tensor). rects: optional float32 [B, N, 8], each building's rotated rectangle
    (4 vertices, pixels, ring order; zero rows: none). cvg_shape "box" claims cells with
    the shrunk boxes, "rect" with the shrunk rectangles (needs ``rects``; buildings without
    a rectangle use their box). gate: obliquity gate of the gliding targets. Rules in the
    module docstring.
    """
    if cvg_shape not in CVG_SHAPES:
        raise ValueError(f"cvg_shape must be one of {CVG_SHAPES}, got {cvg_shape!r}")
    if cvg_shape == "rect" and rects is None:
        raise ValueError("cvg_shape='rect' needs the rotated rectangles (rects)")
    boxes = tf.cast(boxes, tf.float32)
    batch = tf.shape(boxes)[0]
    # one padding box so that every reduction over boxes has at least one element
    boxes = tf.concat([boxes, tf.zeros([batch, 1, 4], tf.float32)], axis=1)
    if rects is not None:
        rects = tf.concat([tf.reshape(tf.cast(rects, tf.float32), [batch, -1, 8]),
                           tf.zeros([batch, 1, 8], tf.float32)], axis=1)
    grid_h = tf.cast(height, tf.int32) // cell_size
    grid_w = tf.cast(width, tf.int32) // cell_size
    claim, area = _claims(boxes, grid_h, grid_w, cell_size, cvg_scale,
                          rects if cvg_shape == "rect" else None)  # [B, N, h, w], [B, N]
    owner = tf.argmin(tf.where(claim, area[..., None, None], np.inf), axis=1,
                      output_type=tf.int32)  # [B, h, w]
    covered = tf.reduce_any(claim, axis=1)  # [B, h, w]
    n_boxes = tf.shape(boxes)[1]
    owned = tf.one_hot(owner, n_boxes) * tf.cast(covered, tf.float32)[..., None]
    counts = tf.reduce_sum(owned, axis=[1, 2])  # [B, N]
    own_box = tf.gather(boxes, owner, batch_dims=1)  # [B, h, w, 4]
    own_count = tf.gather(counts, owner, batch_dims=1)  # [B, h, w]
    cx, cy = _centres(grid_h, grid_w, cell_size)
    centres = tf.stack(tf.meshgrid(cx, cy), axis=-1)  # [h, w, 2] (cx, cy)
    offsets = own_box - tf.tile(centres, [1, 1, 2])[None]
    size = tf.stack([own_box[..., 2] - own_box[..., 0], own_box[..., 3] - own_box[..., 1]], -1)
    cov = tf.cast(covered, tf.float32)[..., None]
    inv_size = tf.math.divide_no_nan(cov, tf.tile(size, [1, 1, 1, 2]))
    inv_count = tf.math.divide_no_nan(cov, own_count[..., None])
    bbox = tf.concat([offsets * cov, inv_size, inv_count], axis=-1)
    out = {"coverage": cov, "bbox": bbox}
    if rects is not None:
        per_building = gliding_targets(boxes, rects, height, width, gate)  # [B, N, 5]
        out["orient"] = tf.gather(per_building, owner, batch_dims=1) * cov
    return out


def held_cells(contact, cell_size: int):
    """uint8 [B, h, w, 1] in {0, 1}: cells of ``cell_size`` pixels holding a contact pixel
    of ``contact`` [B, H, W, 1] (any dtype, > 0 = contact; H, W multiples of
    ``cell_size``). An any-reduction over a reshape: TF's CPU ``max_pool2d`` over the
    one-channel [B, 512, 512, 1] layer took ~5 ms a crop."""
    shape = tf.shape(contact)
    h, w = shape[1] // cell_size, shape[2] // cell_size
    hit = tf.reshape(contact > 0, [shape[0], h, cell_size, w, cell_size])
    return tf.cast(tf.reduce_any(hit, axis=[2, 4]), tf.uint8)[..., None]


def near_cells(held):
    """float32 [B, h, w, 1] in {0, 1}: cells that are ``held`` (any real dtype, > 0) or
    have an 8-connected neighbour that is (a 3 x 3 max over the small cell grid)."""
    return tf.nn.max_pool2d(tf.cast(held, tf.float32), 3, 1, "SAME")


def detectnet_weights(cells, names, contact_weight: float | None = None, held=None):
    """Per-cell weights of DetectNet targets: ``{name: float32 [B, h, w, 1]}`` for each
    of ``names``, all the same map: ``cells`` (float32 [B, h, w, 1], 1 on cells with a
    valid pixel) times ``1 + contact_weight`` where ``near_cells(held)`` (the cells within
    one cell of a shared wall; ``held`` [B, h, w, 1] from ``held_cells``), when
    ``contact_weight`` is given."""
    if contact_weight is not None:
        cells = cells * (1.0 + contact_weight * near_cells(held))
    return {name: cells for name in names}


def valid_cells(heights, widths, grid_h, grid_w, cell_size: int):
    """float32 [B, h, w, 1]: 1 for cells that overlap each image's valid (unpadded) region.

    heights, widths: int [B] sizes of the unpadded images; grid_h, grid_w: grid size. A
    cell (i, j) covers pixels [j S, (j + 1) S) x [i S, (i + 1) S); it is valid when
    ``j S < width`` and ``i S < height`` (a box at the tile edge can own such a cell even
    when its centre lies in the padding).
    """
    top = tf.range(grid_h) * cell_size
    left = tf.range(grid_w) * cell_size
    in_y = top[None, :] < tf.cast(heights, tf.int32)[:, None]
    in_x = left[None, :] < tf.cast(widths, tf.int32)[:, None]
    return tf.cast(in_y[:, :, None] & in_x[:, None, :], tf.float32)[..., None]


# ---- numpy decoder -----------------------------------------------------------------------
def decode_detectnet_targets(coverage, bbox, cell_size: int = DEFAULT_CELL_SIZE,
                             threshold: float = 0.5):
    """Boxes encoded in one image's DetectNet targets (numpy).

    coverage: [h, w] or [h, w, 1]; bbox: [h, w, >= 4] (channels 0..3 = corner offsets).
    Returns float32 [K, 4] xyxy pixels, one row per distinct box (cells of one box decode
    to the same box up to float rounding), sorted by (x1, y1, x2, y2), and int [K] the
    number of cells of each box.
    """
    cov = np.asarray(coverage, np.float64).reshape(np.shape(coverage)[:2])
    bb = np.asarray(bbox, np.float64)
    rows, cols = np.nonzero(cov >= threshold)
    cx, cy = (cols + 0.5) * cell_size, (rows + 0.5) * cell_size
    off = bb[rows, cols, :4]
    boxes = np.column_stack([cx + off[:, 0], cy + off[:, 1], cx + off[:, 2], cy + off[:, 3]])
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, int)
    uniq, counts = np.unique(np.round(boxes, 3), axis=0, return_counts=True)
    return uniq.astype(np.float32), counts


def decode_oriented_targets(coverage, bbox, orient, cell_size: int = DEFAULT_CELL_SIZE,
                            threshold: float = 0.5,
                            gate: float = DEFAULT_GATE):
    """Rectangles encoded in one image's oriented DetectNet targets (numpy).

    coverage: [h, w] or [h, w, 1]; bbox: [h, w, >= 4]; orient: [h, w, >= 3] (alpha, beta,
    r). Each covered cell's box and gliding parameters decode to a rectangle
    (``sn_tf.input.rects.rects_from_gliding``: the box where r >= ``gate``). Returns float32
    [K, 4, 2] (x, y) vertices, one per distinct rectangle (rounded to 1e-3 px), sorted by
    their flattened vertices, and int [K] the number of cells of each.
    """
    cov = np.asarray(coverage, np.float64).reshape(np.shape(coverage)[:2])
    rows, cols = np.nonzero(cov >= threshold)
    if len(rows) == 0:
        return np.zeros((0, 4, 2), np.float32), np.zeros(0, int)
    cx, cy = (cols + 0.5) * cell_size, (rows + 0.5) * cell_size
    off = np.asarray(bbox, np.float64)[rows, cols, :4]
    boxes = np.column_stack([cx + off[:, 0], cy + off[:, 1], cx + off[:, 2], cy + off[:, 3]])
    o = np.asarray(orient, np.float64)[rows, cols]
    quads = rect_ops.rects_from_gliding(boxes, o[:, 0], o[:, 1], o[:, 2], gate)
    uniq, counts = np.unique(np.round(quads.reshape(-1, 8), 3), axis=0, return_counts=True)
    return uniq.reshape(-1, 4, 2).astype(np.float32), counts
