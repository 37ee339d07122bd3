"""Model targets built in TensorFlow from augmented labels (contract: BUILD_NOTES.md, 1).

Segmentation (``segmentation_targets``, ``segmentation_targets_from_sdf``):
  ``footprint`` float32 [B, H, W, 1] in {0, 1}; ``sdf`` float32 [B, H, W, 1] in pixels,
  ``+distance`` inside the footprint, ``-distance`` outside, clipped to ``[-T, T]``,
  where distance is the stored distance to the nearest boundary pixel times the
  augmentation scale. So ``sdf >= 0`` exactly where ``footprint == 1``.

DetectNet (``detectnet_targets``), stride S, grid ``h = H / S``, ``w = W / S``, cell
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

from sn_tf.tfimport import tensorflow

tf = tensorflow()

BBOX_CHANNELS = 9


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
    truncation times the smallest scale is >= T (see ``sn_tf.pipeline``).
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


# ---- DetectNet ---------------------------------------------------------------------------
def _box_parts(boxes):
    """Split [B, N, 4] xyxy boxes into coordinates, centres, sizes and validity ([B, N])."""
    x1, y1, x2, y2 = tf.unstack(boxes, num=4, axis=-1)
    bw, bh = x2 - x1, y2 - y1
    return x1, y1, x2, y2, 0.5 * (x1 + x2), 0.5 * (y1 + y2), bw, bh, (bw > 0) & (bh > 0)


def _claims(boxes, grid_h, grid_w, stride: int, cvg_scale: float):
    """bool [B, N, h, w]: cells each box claims (shrunk box, or its centre cell)."""
    _, _, _, _, bx, by, bw, bh, valid = _box_parts(boxes)
    cx = (tf.cast(tf.range(grid_w), tf.float32) + 0.5) * stride  # [w]
    cy = (tf.cast(tf.range(grid_h), tf.float32) + 0.5) * stride  # [h]
    half_w = (0.5 * cvg_scale * bw)[..., None]
    half_h = (0.5 * cvg_scale * bh)[..., None]
    in_x = tf.abs(cx - bx[..., None]) <= half_w  # [B, N, w]
    in_y = tf.abs(cy - by[..., None]) <= half_h  # [B, N, h]
    claim = in_y[..., :, None] & in_x[..., None, :] & valid[..., None, None]
    none = valid & ~tf.reduce_any(claim, axis=[2, 3])
    ci = tf.clip_by_value(tf.cast(tf.floor(by / stride), tf.int32), 0, grid_h - 1)
    cj = tf.clip_by_value(tf.cast(tf.floor(bx / stride), tf.int32), 0, grid_w - 1)
    centre = (tf.one_hot(ci, grid_h, on_value=True, off_value=False)[..., :, None]
              & tf.one_hot(cj, grid_w, on_value=True, off_value=False)[..., None, :])
    return claim | (centre & none[..., None, None])


def detectnet_targets(boxes, height, width, stride: int = 16, cvg_scale: float = 0.4):
    """DetectNet ``coverage`` [B, h, w, 1] and ``bbox`` [B, h, w, 9] targets (float32).

    boxes: float32 [B, N, 4] xyxy pixels (rows with non-positive width or height are
    padding and ignored); height, width: image size (multiples of ``stride``; int or
    scalar tensor). Rules in the module docstring.
    """
    boxes = tf.cast(boxes, tf.float32)
    batch = tf.shape(boxes)[0]
    # one padding box so that every reduction over boxes has at least one element
    boxes = tf.concat([boxes, tf.zeros([batch, 1, 4], tf.float32)], axis=1)
    grid_h = tf.cast(height, tf.int32) // stride
    grid_w = tf.cast(width, tf.int32) // stride
    claim = _claims(boxes, grid_h, grid_w, stride, cvg_scale)  # [B, N, h, w]
    x1, y1, x2, y2, _, _, bw, bh, _ = _box_parts(boxes)
    area = (bw * bh)[..., None, None]
    owner = tf.argmin(tf.where(claim, area, np.inf), axis=1, output_type=tf.int32)  # [B,h,w]
    covered = tf.reduce_any(claim, axis=1)  # [B, h, w]
    n_boxes = tf.shape(boxes)[1]
    owned = tf.one_hot(owner, n_boxes) * tf.cast(covered, tf.float32)[..., None]
    counts = tf.reduce_sum(owned, axis=[1, 2])  # [B, N]
    own_box = tf.gather(boxes, owner, batch_dims=1)  # [B, h, w, 4]
    own_count = tf.gather(counts, owner, batch_dims=1)  # [B, h, w]
    cx = (tf.cast(tf.range(grid_w), tf.float32) + 0.5) * stride
    cy = (tf.cast(tf.range(grid_h), tf.float32) + 0.5) * stride
    centres = tf.stack(tf.meshgrid(cx, cy), axis=-1)  # [h, w, 2] (cx, cy)
    offsets = own_box - tf.tile(centres, [1, 1, 2])[None]
    size = tf.stack([own_box[..., 2] - own_box[..., 0], own_box[..., 3] - own_box[..., 1]], -1)
    cov = tf.cast(covered, tf.float32)[..., None]
    inv_size = tf.math.divide_no_nan(cov, tf.tile(size, [1, 1, 1, 2]))
    inv_count = tf.math.divide_no_nan(cov, own_count[..., None])
    bbox = tf.concat([offsets * cov, inv_size, inv_count], axis=-1)
    return {"coverage": cov, "bbox": bbox}


def valid_cells(heights, widths, grid_h, grid_w, stride: int):
    """float32 [B, h, w, 1]: 1 for cells that overlap each image's valid (unpadded) region.

    heights, widths: int [B] sizes of the unpadded images; grid_h, grid_w: grid size. A
    cell (i, j) covers pixels [j S, (j + 1) S) x [i S, (i + 1) S); it is valid when
    ``j S < width`` and ``i S < height`` (a box at the tile edge can own such a cell even
    when its centre lies in the padding).
    """
    top = tf.range(grid_h) * stride
    left = tf.range(grid_w) * stride
    in_y = top[None, :] < tf.cast(heights, tf.int32)[:, None]
    in_x = left[None, :] < tf.cast(widths, tf.int32)[:, None]
    return tf.cast(in_y[:, :, None] & in_x[:, None, :], tf.float32)[..., None]


# ---- numpy decoder -----------------------------------------------------------------------
def decode_detectnet_targets(coverage, bbox, stride: int = 16, threshold: float = 0.5):
    """Boxes encoded in one image's DetectNet targets (numpy).

    coverage: [h, w] or [h, w, 1]; bbox: [h, w, >= 4] (channels 0..3 = corner offsets).
    Returns float32 [K, 4] xyxy pixels, one row per distinct box (cells of one box decode
    to the same box up to float rounding), sorted by (x1, y1, x2, y2), and int [K] the
    number of cells of each box.
    """
    cov = np.asarray(coverage, np.float64).reshape(np.shape(coverage)[:2])
    bb = np.asarray(bbox, np.float64)
    rows, cols = np.nonzero(cov >= threshold)
    cx, cy = (cols + 0.5) * stride, (rows + 0.5) * stride
    off = bb[rows, cols, :4]
    boxes = np.column_stack([cx + off[:, 0], cy + off[:, 1], cx + off[:, 2], cy + off[:, 3]])
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, int)
    uniq, counts = np.unique(np.round(boxes, 3), axis=0, return_counts=True)
    return uniq.astype(np.float32), counts
