"""Joint augmentation of image, label rasters and boxes, in TensorFlow graph ops (and one
numpy twin: ``focus_corner``, the focus move where ``sn_tf.input.ranged`` reads a batch).

Every geometric operation is applied identically to the image, the label rasters (the
stored signed distance, or footprint mask and distance to the boundary) and the boxes,
so the labels stay on the buildings. Coordinates follow BUILD_NOTES.md: pixel (c, r)
covers [c, c+1) x [r, r+1), x = column, y = row, boxes are float32
``(x_min, y_min, x_max, y_max)`` in pixels.

Randomness is stateless and reproducible: each example gets a key
``example_key(seed, tile_id, draw)`` (a function of the seed, the tile id and the draw
index only: the epoch, or ``epoch * k + i`` for the i-th of k crops per tile; so an
example's augmentation does not depend on the order in which examples arrive or on the
number of parallel calls), from which every draw is derived (``split_key``).

Operations (in the order the pipeline applies them):

1. Window (``draw_window``): a square window of ``win`` pixels at a random integer
   offset ``(y0, x0)``; ``win = crop`` without scale jitter, else
   ``win = round(crop / s)`` with s log-uniform in ``scale_range`` (clamped to the tile),
   and the effective scale is ``crop / win`` exactly.
2. Boxes (``crop_boxes``): shifted by the window, scaled, clipped to ``[0, crop]``; a box
   is kept when its clipped area is > 0 and at least ``min_box_visible`` of its area
   before clipping (i.e. boxes mostly cropped away are dropped). Each building's rotated
   rectangle (4 vertices, ``crop_boxes_and_rects``) follows its box: same shift and scale,
   same keep rule, but never clipped.
3. Scale (``resize_window``, only with scale jitter): image bilinear, label rasters
   nearest neighbour (so the mask stays binary and mask/distance stay consistent); the
   pipeline multiplies distances by the scale.
4. Dihedral (``dihedral``, ``dihedral_boxes``, ``dihedral_rects``): optional transpose,
   then optional left-right flip, then optional up-down flip; with ``flips`` and ``rot90`` all 8
   symmetries of the square are drawn uniformly, with ``rot90`` alone the 4 rotations,
   with ``flips`` alone the 4 flip combinations. (Fusing the flips into the crop as one
   negative-stride slice was measured 4x slower than slice + ``tf.reverse``.) Without
   scale jitter the pipeline applies the same symmetry as a row flip done while decoding
   (rows read in reverse order, free) then ``flip_transpose`` (``split_dihedral``);
   one ``tf.gather`` of all pixels was measured 1.6x slower than reverse + transpose.
5. Radiometric (image only; ``radiometric_coefficients``, ``affine_bands``, ``add_noise``):
   on the normalised image z, per-band gain ``1 + U(-gain, gain)``, per-band offset
   ``N(0, offset_std)``, per-pixel noise ``N(0, noise_std)``:
   ``z' = z * gain + offset + noise``; normalisation, gain and offset are one fused
   multiply-add per pixel.

Everything here runs per example inside the parallel map, before batching: on CPU,
element-wise ops on a [B, 512, 512, 8] batch cost about 3x more per image than on one
image (fresh 64 MB buffers are page-faulted in on every batch), so only work that is
naturally vectorised over a batch (DetectNet targets over boxes) runs after batching.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation options (see the module docstring for the exact operations).

    flips: random left-right and up-down flips. rot90: random 90-degree rotations.
    scale_range: ``(s_min, s_max)`` scale jitter (s > 1 zooms in), or None.
    gain: per-band gain drawn in ``[1 - gain, 1 + gain]`` (0 = off).
    offset_std: std of the per-band additive offset, normalised units (0 = off).
    noise_std: std of per-pixel Gaussian noise, normalised units (0 = off).
    min_box_visible: fraction of a box's area that must remain inside the crop to keep it.
    focus: probability that a training window is moved onto a random contact pixel of the
      tile (one of the pixels near two different buildings: shared walls, narrow gaps; the
      converter's contact layer, schema version >= 3), at a uniform position inside the
      window; tiles without contact pixels keep the uniform window. 0 = off. Touching
      buildings are a few percent of the pixels: ~17 % of 128 px crops of the demo sample
      hold any, so most steps never see a wall.
    """

    flips: bool = True
    rot90: bool = True
    scale_range: tuple[float, float] | None = None
    gain: float = 0.0
    offset_std: float = 0.0
    noise_std: float = 0.0
    min_box_visible: float = 0.25
    focus: float = 0.0

    def __post_init__(self):
        if self.scale_range is not None:
            lo, hi = (float(v) for v in self.scale_range)
            if not (0 < lo <= hi):
                raise ValueError(f"augment scale_range must be (s_min, s_max) with "
                                 f"0 < s_min <= s_max, got {self.scale_range}")
            object.__setattr__(self, "scale_range", (lo, hi))
        for name in ("gain", "offset_std", "noise_std"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"augment {name} must be >= 0, got {getattr(self, name)}")
        if self.gain >= 1:
            raise ValueError(f"augment gain must be < 1 (gains in [1-g, 1+g]), got {self.gain}")
        if not 0 <= self.min_box_visible <= 1:
            raise ValueError(f"augment min_box_visible must be in [0, 1], "
                             f"got {self.min_box_visible}")
        if not 0 <= self.focus <= 1:
            raise ValueError(f"augment focus must be a probability in [0, 1], got {self.focus}")

    @property
    def radiometric(self) -> bool:
        """True when any image-only (radiometric) augmentation is on."""
        return self.gain > 0 or self.offset_std > 0 or self.noise_std > 0


NO_AUGMENT = AugmentConfig(flips=False, rot90=False)


def augment_config(augment: Any) -> AugmentConfig:
    """Normalise the ``augment`` argument of ``make_dataset``.

    None -> ``AugmentConfig()`` (flips and 90-degree rotations); False -> no augmentation
    (random crop only); a dict -> ``AugmentConfig(**dict)``; an AugmentConfig as is.
    """
    if augment is None or augment is True:
        return AugmentConfig()
    if augment is False:
        return NO_AUGMENT
    if isinstance(augment, AugmentConfig):
        return augment
    if isinstance(augment, Mapping):
        unknown = set(augment) - {f.name for f in dataclasses.fields(AugmentConfig)}
        if unknown:
            raise ValueError(f"unknown augment option(s) {sorted(unknown)}; known: "
                             f"{[f.name for f in dataclasses.fields(AugmentConfig)]}")
        return AugmentConfig(**augment)
    raise ValueError(f"augment must be None, a bool, a dict or an AugmentConfig, "
                     f"got {type(augment).__name__}")


# ---- keys --------------------------------------------------------------------------------
def example_key(seed: int, tile_id, epoch):
    """int64 [2] stateless key of one example: (seed, hash of tile id and epoch).

    tile_id: scalar string tensor; epoch: scalar int64 tensor, the draw index (the epoch,
    or ``epoch * k + i`` for the i-th of k crops per tile).
    """
    text = tf.strings.join([tile_id, tf.strings.as_string(epoch)], separator="#")
    h = tf.strings.to_hash_bucket_fast(text, 2 ** 62)
    return tf.stack([tf.constant(int(seed), tf.int64), h])


def split_key(key, num: int):
    """``num`` independent int64 [2] keys derived from ``key``."""
    return tf.unstack(tf.random.experimental.stateless_split(key, num=num), num=num)


# ---- draws -------------------------------------------------------------------------------
def draw_window(key, height, width, crop: int, scale_range=None):
    """Random square window of a ``height`` x ``width`` tile.

    Returns int32 scalars ``(y0, x0, win)``: rows ``[y0, y0 + win)``, columns
    ``[x0, x0 + win)``. Without ``scale_range`` ``win = crop``; with it
    ``win = round(crop / s)``, s log-uniform in ``scale_range``, clamped to
    ``[1, min(height, width)]``. The tile must be at least ``crop`` on each side.
    """
    k_scale, k_y, k_x = split_key(key, 3)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    tf.debugging.assert_greater_equal(
        tf.minimum(height, width), crop,
        message=f"tile smaller than crop_size={crop}: crops need tiles of at least that size")
    if scale_range is None:
        win = tf.constant(crop, tf.int32)
    else:
        lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
        log_s = tf.random.stateless_uniform([], k_scale, lo, hi if hi > lo else lo + 1e-12)
        win = tf.cast(tf.round(crop / tf.exp(log_s)), tf.int32)
        win = tf.clip_by_value(win, 1, tf.minimum(height, width))
    y0 = tf.random.stateless_uniform([], k_y, 0, height - win + 1, dtype=tf.int32)
    x0 = tf.random.stateless_uniform([], k_x, 0, width - win + 1, dtype=tf.int32)
    return y0, x0, win


def focus_draws(key, win, probability: float):
    """The draws of :func:`focus_window` from its ``key``: ``use`` (bool scalar, true with
    ``probability``), ``bits`` (uint32 scalar: the point is the ``bits mod N``-th of the
    tile's N), ``dy``, ``dx`` (int32 scalars in ``[0, win)``: the point's place in the
    window). ``bits mod N`` is the draw ``stateless_uniform([], k, 0, N, tf.int32)`` makes
    with the same key; drawing the bits lets the pick be made where N is known
    (:func:`focus_corner`, in numpy)."""
    k_use, k_pick, k_y, k_x = split_key(key, 4)
    use = tf.random.stateless_uniform([], k_use) < probability
    bits = tf.random.stateless_uniform([], k_pick, None, None, dtype=tf.uint32)
    dy = tf.random.stateless_uniform([], k_y, 0, win, dtype=tf.int32)
    dx = tf.random.stateless_uniform([], k_x, 0, win, dtype=tf.int32)
    return use, bits, dy, dx


def focus_window(key, window, points, height, width, probability: float):
    """``window = (y0, x0, win)`` moved, with ``probability``, so that one of ``points``
    (int64 [N, 2] pixel (row, column) positions, drawn uniformly) lies at a uniform position
    inside it, clipped to the tile; unchanged when ``points`` is empty or the draw says no.
    The draws are :func:`focus_draws`'s; :func:`focus_corner` is the same move in numpy.

    Returns int32 scalars ``(y0, x0, win)`` as :func:`draw_window`.
    """
    y0, x0, win = window
    use, bits, dy, dx = focus_draws(key, win, probability)
    n = tf.shape(points)[0]
    use = use & (n > 0)
    pick = tf.cast(tf.math.floormod(bits, tf.cast(tf.maximum(n, 1), tf.uint32)), tf.int32)
    padded = tf.concat([tf.cast(points, tf.int32), tf.zeros([1, 2], tf.int32)], 0)  # n may be 0
    point = padded[pick]
    fy = tf.clip_by_value(point[0] - dy, 0, tf.cast(height, tf.int32) - win)
    fx = tf.clip_by_value(point[1] - dx, 0, tf.cast(width, tf.int32) - win)
    return tf.where(use, fy, y0), tf.where(use, fx, x0), win


def focus_corner(points: np.ndarray, height: int, width: int, y0: int, x0: int, win: int,
                 use, bits, dy, dx) -> tuple[int, int]:
    """:func:`focus_window` in numpy, for one window of a ``height`` x ``width`` tile whose
    contact pixels are ``points`` (int [N] row-major flat indices, in the order of
    ``tf.where`` on the layer): ``(y0, x0)`` moved by the draws ``use, bits, dy, dx`` of
    :func:`focus_draws`, or unchanged."""
    if not use or len(points) == 0:
        return y0, x0
    row, col = divmod(int(points[int(bits) % len(points)]), width)
    return (min(max(row - int(dy), 0), height - win), min(max(col - int(dx), 0), width - win))


def draw_dihedral(key, flips: bool, rot90: bool):
    """Random symmetry as bool scalars ``(transpose, flip_lr, flip_ud)``.

    flips and rot90: uniform over the 8 symmetries; rot90 only: the 4 rotations
    (k * 90 degrees counter-clockwise as ``tf.image.rot90``); flips only: the 4 flip
    combinations; neither: identity.
    """
    false = tf.constant(False)
    if flips and rot90:
        bits = tf.random.stateless_uniform([3], key, 0, 2, dtype=tf.int32) > 0
        return bits[0], bits[1], bits[2]
    if flips:
        bits = tf.random.stateless_uniform([2], key, 0, 2, dtype=tf.int32) > 0
        return false, bits[0], bits[1]
    if rot90:
        k = tf.random.stateless_uniform([], key, 0, 4, dtype=tf.int32)
        # k=1: transpose + flip_ud, k=2: flip_lr + flip_ud, k=3: transpose + flip_lr
        table = tf.constant([[False, False, False], [True, False, True],
                             [False, True, True], [True, True, False]])
        row = table[k]
        return row[0], row[1], row[2]
    return false, false, false


def draw_radiometric(key, channels: int, cfg: AugmentConfig):
    """Per-band ``(gain, offset)``, float32 [C] each (1 and 0 where disabled)."""
    k_gain, k_off = split_key(key, 2)
    gain = tf.ones([channels], tf.float32)
    offset = tf.zeros([channels], tf.float32)
    if cfg.gain > 0:
        gain = tf.random.stateless_uniform([channels], k_gain, 1 - cfg.gain, 1 + cfg.gain)
    if cfg.offset_std > 0:
        offset = tf.random.stateless_normal([channels], k_off, stddev=cfg.offset_std)
    return gain, offset


# ---- geometric ops -----------------------------------------------------------------------
def _cropped_boxes(boxes, y0, x0, win, crop: int, min_visible: float):
    """(clipped boxes float32 [N, 4] in crop pixels, keep bool [N]) of ``crop_boxes``."""
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    moved = tf.reshape(crop_points(tf.reshape(boxes, [-1, 2, 2]), y0, x0, win, crop), [-1, 4])
    clipped = tf.clip_by_value(moved, 0.0, float(crop))
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    return clipped, (visible > 0) & (visible >= min_visible * area)


def crop_boxes(boxes, y0, x0, win, crop: int, min_visible: float):
    """Boxes of a tile -> boxes of the window ``[y0, y0+win) x [x0, x0+win)`` resized to crop.

    boxes: float32 [N, 4] tile pixels. Returns float32 [M, 4] in crop pixels
    (``(x - x0) * crop / win``), clipped to ``[0, crop]``; a box is kept when its clipped
    area is > 0 and >= ``min_visible`` times its unclipped area.
    """
    clipped, keep = _cropped_boxes(boxes, y0, x0, win, crop, min_visible)
    return tf.boolean_mask(clipped, keep)


def crop_points(points, y0, x0, win, crop: int):
    """(x, y) points [..., 2] of a tile -> points of the window resized to crop (float32):
    ``((x - x0) * crop / win, (y - y0) * crop / win)``, not clipped."""
    scale = tf.cast(crop, tf.float32) / tf.cast(win, tf.float32)
    shift = tf.cast(tf.stack([x0, y0]), tf.float32)
    return (tf.cast(points, tf.float32) - shift) * scale


def crop_boxes_and_rects(boxes, rects, y0, x0, win, crop: int, min_visible: float):
    """``crop_boxes`` plus the buildings' rotated rectangles, kept in step.

    boxes: float32 [N, 4]; rects: float32 [N, 8] (four (x, y) vertices per building, tile
    pixels). Returns (boxes [M, 4] clipped as ``crop_boxes``, rects [M, 8] moved and
    scaled the same way but NOT clipped: a building cut by the window keeps its whole
    rectangle, which then reaches outside ``[0, crop]``; ``sn_tf.input.targets`` gives such
    buildings no orientation target).
    """
    clipped, keep = _cropped_boxes(boxes, y0, x0, win, crop, min_visible)
    moved = crop_points(tf.reshape(rects, [-1, 4, 2]), y0, x0, win, crop)
    return tf.boolean_mask(clipped, keep), tf.boolean_mask(tf.reshape(moved, [-1, 8]), keep)


def resize_window(image, labels, crop: int):
    """Resize a window to ``crop`` x ``crop``: image bilinear (float32), labels nearest.

    image: [win, win, C] any real dtype; labels: [win, win, L] float32 or None.
    """
    image = tf.image.resize(tf.cast(image, tf.float32), [crop, crop], method="bilinear")
    if labels is not None:
        labels = tf.image.resize(labels, [crop, crop], method="nearest")
    return image, labels


_PIXEL_UINTS = {1: tf.uint8, 2: tf.uint16, 4: tf.uint32, 8: tf.uint64}


def _pixel_view(x):
    """(view, back): a 2-D [S, S] view of an [S, S, C] tensor whose pixels are 1, 2, 4 or 8
    bytes (C = 1, or C channels bitcast into one unsigned int), else ``x`` itself.

    TF reverses and transposes a 3-D [S, S, C] tensor with one small copy per pixel; on the
    2-D view it runs vectorised: measured 2-5x faster for [512, 512, 1] float16 (the sdf),
    [512, 512, 2] float16 and [512, 512, 4] uint16. (16-byte pixels, e.g. 8 uint16 bands,
    gain nothing from a complex128 view.)
    """
    if len(x.shape) != 3 or x.shape[2] is None or x.dtype == tf.bool:
        return x, lambda y: y
    channels = int(x.shape[2])
    wide = _PIXEL_UINTS.get(channels * x.dtype.size)
    if wide is None:
        return x, lambda y: y
    if channels == 1:
        return x[..., 0], lambda y: y[..., None]
    dtype = x.dtype
    return tf.bitcast(x, wide), lambda y: tf.bitcast(y, dtype)


def dihedral(x, transpose, flip_lr, flip_ud):
    """Apply a symmetry to a square [S, S, ...] tensor: transpose, then flip_lr, then flip_ud.

    transpose swaps rows and columns; flip_lr reverses columns (x -> S - x); flip_ud
    reverses rows (y -> S - y). Untaken branches cost nothing (``tf.cond``).
    """
    x, back = _pixel_view(x)
    rank = len(x.shape)
    perm = [1, 0] + list(range(2, rank))
    x = tf.cond(transpose, lambda: tf.transpose(x, perm), lambda: tf.identity(x))
    x = tf.cond(flip_lr, lambda: tf.reverse(x, [1]), lambda: tf.identity(x))
    x = tf.cond(flip_ud, lambda: tf.reverse(x, [0]), lambda: tf.identity(x))
    return back(x)


def split_dihedral(transpose, flip_lr, flip_ud):
    """The symmetry of ``dihedral`` as (row flip, column flip) applied BEFORE the transpose.

    ``dihedral(x, t, lr, ud) == flip_transpose(x[::-1] if rows else x, cols, t)`` with
    ``(rows, cols) = split_dihedral(t, lr, ud)`` (flipping the rows of a transposed
    square flips the columns of the original and vice versa). The pipeline applies the row
    flip for free while decoding (rows read in reverse order).
    """
    return tf.where(transpose, flip_lr, flip_ud), tf.where(transpose, flip_ud, flip_lr)


def flip_transpose(x, flip_cols, transpose):
    """Optional column flip (reverse axis 1), then optional transpose of [S, S, ...] ``x``."""
    x, back = _pixel_view(x)
    rank = len(x.shape)
    x = tf.cond(flip_cols, lambda: tf.reverse(x, [1]), lambda: tf.identity(x))
    x = tf.cond(transpose, lambda: tf.transpose(x, [1, 0] + list(range(2, rank))),
                lambda: tf.identity(x))
    return back(x)


def dihedral_boxes(boxes, size: int, transpose, flip_lr, flip_ud):
    """The symmetry of ``dihedral`` applied to boxes [N, 4] in an ``size`` x ``size`` square."""
    s = float(size)
    x1, y1, x2, y2 = tf.unstack(boxes, num=4, axis=-1)
    x1, y1, x2, y2 = (tf.where(transpose, y1, x1), tf.where(transpose, x1, y1),
                      tf.where(transpose, y2, x2), tf.where(transpose, x2, y2))
    x1, x2 = tf.where(flip_lr, s - x2, x1), tf.where(flip_lr, s - x1, x2)
    y1, y2 = tf.where(flip_ud, s - y2, y1), tf.where(flip_ud, s - y1, y2)
    return tf.stack([x1, y1, x2, y2], axis=-1)


def dihedral_points(points, size: int, transpose, flip_lr, flip_ud):
    """The symmetry of ``dihedral`` applied to (x, y) points [..., 2] in a ``size`` square:
    transpose swaps x and y, then flip_lr maps x -> size - x, then flip_ud y -> size - y."""
    s = float(size)
    x, y = tf.unstack(tf.cast(points, tf.float32), num=2, axis=-1)
    x, y = tf.where(transpose, y, x), tf.where(transpose, x, y)
    x = tf.where(flip_lr, s - x, x)
    y = tf.where(flip_ud, s - y, y)
    return tf.stack([x, y], axis=-1)


def dihedral_rects(rects, size: int, transpose, flip_lr, flip_ud):
    """``dihedral_points`` on rectangles [N, 8] (four (x, y) vertices each; ring order is
    kept, so consecutive vertices stay adjacent). Returns float32 [N, 8]."""
    points = dihedral_points(tf.reshape(rects, [-1, 4, 2]), size, transpose, flip_lr, flip_ud)
    return tf.reshape(points, [-1, 8])


# ---- radiometric (per example, image only) -------------------------------------------------
def radiometric_coefficients(scale, bias, gain, offset):
    """Per-band ``(scale', bias')`` such that ``x * scale' + bias'`` equals
    ``(x * scale + bias) * gain + offset``.

    scale, bias: float32 [C] (normalisation); gain, offset: float32 [C] (draws).
    """
    return scale * gain, bias * gain + offset


def affine_bands(image, scale, bias):
    """float32 ``image * scale + bias`` per band; image [H, W, C] any real dtype, scale/bias [C].

    Computed on the [H, W * C] view with the coefficients tiled along W: one long
    contiguous broadcast, about 3x faster on CPU than broadcasting a [C] vector.
    """
    shape = tf.shape(image)
    flat = tf.reshape(tf.cast(image, tf.float32), [shape[0], -1])
    out = flat * tf.tile(scale, [shape[1]]) + tf.tile(bias, [shape[1]])
    return tf.reshape(out, shape)


def add_noise(image, noise_std: float, key):
    """``image + N(0, noise_std)`` per pixel; image float32, key int64 [2]."""
    return image + tf.random.stateless_normal(tf.shape(image), key, stddev=noise_std)
