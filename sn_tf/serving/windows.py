"""Window arithmetic and stitching of the prediction stage (numpy only).

Sliding windows and stitching
  Windows are at most ``--window`` pixels (rounded up to a multiple of the model stride; may
  grow by one stride so that n windows cover the image with at least ``--overlap`` pixels
  between neighbours), spread evenly, start on multiples of the model stride (so the
  network's stride-2 stages and DetectNet's 8- or 16-pixel cells line up with a whole-image
  pass)
  and the last window of a row/column ends on the image edge (the serving signature pads
  only where a whole-image pass would pad). Each output is blended with separable linear
  ramps across each interior window side: weight 0 over the outer quarter of the overlap,
  rising linearly to 1 across the middle half; image borders get weight 1. Every pixel has
  a window with positive weight, and where the model's receptive-field radius is at most a
  quarter of the overlap the stitched output equals a whole-image pass up to float rounding.
  Weighted sums and weights are accumulated in float32; DetectNet grids are stitched on
  their grid of ``ModelInfo.cell_size`` pixel cells (window starts are multiples of the input
  multiple 16, hence of the cell size, so cells and their box offsets keep their meaning).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def _ceil_div(a: int, b: int) -> int:
    """ceil(a / b) for integers (b > 0)."""
    return -(-a // b)


# ----------------------------------------------------------------------------------------------
# Windows and blending weights


def axis_windows(length: int, window: int, overlap: int, stride: int) -> list[tuple[int, int]]:
    """(start, size) windows covering [0, length) along one axis.

    ``window`` is rounded up to a multiple of ``stride``. One window when length <= window;
    else n = ceil((length - overlap) / (window - overlap)) windows of a common size (the
    smallest stride multiple letting n windows overlap by >= ``overlap``), starting on
    multiples of ``stride``, the last one extended to end exactly at ``length`` (it may be up to
    stride - 1 pixels larger). Neighbours overlap by at least ``overlap`` pixels.
    """
    if stride < 1 or window < 1 or overlap < 0:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive and "
                         f"overlap ({overlap}) >= 0")
    window = _ceil_div(window, stride) * stride
    if window - overlap < stride:
        raise ValueError(f"overlap {overlap} leaves less than one stride ({stride}) between "
                         f"windows of {window} pixels; use a larger window or smaller overlap")
    if length <= window:
        return [(0, length)]
    n = _ceil_div(length - overlap, window - overlap)
    size = _ceil_div(_ceil_div(length + (n - 1) * overlap, n), stride) * stride
    gap = (size - overlap) // stride * stride
    while gap * (n - 1) + size < length:
        size += stride
        gap = (size - overlap) // stride * stride
    last = (length - size) // stride * stride
    return [(i * gap, size) for i in range(n - 1) if i * gap < last] + [(last, length - last)]


def ramp(size: int, factor: int, start_interior: bool, end_interior: bool,
         overlap: int) -> np.ndarray:
    """float32 [ceil(size / factor)] blending weights of one window along one axis.

    Cell i (pixels [i*f, (i+1)*f) of the window) has its centre at d = (i + 0.5) * f pixels
    from the window start and size - d from its end. For an interior side the weight is
    ``clip((d - m) / (overlap - 2m), 0, 1)`` with m = overlap // 4 (0 in the outer quarter of
    the overlap, 1 beyond three quarters); image-border sides and overlap < 4 give 1.
    """
    cells = _ceil_div(size, factor)
    weight = np.ones(cells, np.float32)
    margin = overlap // 4
    span = overlap - 2 * margin
    if overlap < 4 or span <= 0:
        return weight
    centre = (np.arange(cells, dtype=np.float64) + 0.5) * factor
    if start_interior:
        weight = np.minimum(weight, np.clip((centre - margin) / span, 0.0, 1.0))
    if end_interior:
        weight = np.minimum(weight, np.clip((size - centre - margin) / span, 0.0, 1.0))
    return weight.astype(np.float32)


class _RowAccumulator:
    """float32 weighted sums and weight sums of the outputs of one grid stride ``f``.

    Holds output rows (cells) [base, base + rows) over the full width ceil(W / f); rows are
    appended as windows reach them and removed by :meth:`pop` once final. The buffers
    (``weight`` float32 [capacity, W'], ``sums`` {name: float32 [capacity, W', c]}) are
    reused: their capacity grows to the tallest span of rows held at once (one row of
    windows) and no further, and rows past ``rows`` are kept zero, so a row appended
    starts from zero as before.
    """

    def __init__(self, factor: int, width: int, channels: dict[str, int]):
        self.factor = factor
        self.width = _ceil_div(width, factor)
        self.base = 0
        self.rows = 0
        self.sums = {k: np.zeros((0, self.width, c), np.float32) for k, c in channels.items()}
        self.weight = np.zeros((0, self.width), np.float32)

    def _buffers(self) -> list[np.ndarray]:
        """The weight buffer and the sum buffers (rows first)."""
        return [self.weight, *self.sums.values()]

    def _ensure(self, end: int) -> None:
        """Hold output rows [base, end): zero rows are appended, growing the buffers when
        their capacity is short."""
        extra = end - self.base - self.weight.shape[0]
        if extra > 0:
            self.weight = np.concatenate([self.weight, np.zeros((extra, self.width), np.float32)])
            for k, s in self.sums.items():
                self.sums[k] = np.concatenate([s, np.zeros((extra,) + s.shape[1:], np.float32)])
        self.rows = max(self.rows, end - self.base)

    def add(self, y0: int, x0: int, weight: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Accumulate one window: pixel origin (y0, x0) (multiples of f), weight [h', w'],
        values {name: [h', w', c]} on this grid."""
        r0, c0 = y0 // self.factor - self.base, x0 // self.factor
        h, w = weight.shape
        self._ensure(self.base + r0 + h)
        self.weight[r0:r0 + h, c0:c0 + w] += weight
        for k, v in values.items():
            self.sums[k][r0:r0 + h, c0:c0 + w] += v * weight[..., None]

    def pop(self, end: int) -> dict[str, np.ndarray]:
        """Normalised outputs {name: float32 [end - base, W', c]} (new arrays) of rows
        [base, end), which are then dropped: the rows after them move to the top of the
        buffers and the rows they leave are zeroed."""
        self._ensure(end)
        n = end - self.base
        weight = self.weight[:n, :, None]
        out = {k: s[:n] / np.where(weight > 0, weight, 1.0) for k, s in self.sums.items()}
        kept = self.rows - n
        for buffer in self._buffers():
            buffer[:kept] = buffer[n:self.rows]
            buffer[kept:self.rows] = 0
        self.rows = kept
        self.base = end
        return out


# ----------------------------------------------------------------------------------------------
# Stitching


def window_grid(height: int, width: int, stride: int, window: int | None, overlap: int
                ) -> tuple[list, list]:
    """(row windows, column windows) as (start, size) lists; window None = whole image."""
    if window is None:
        window = _ceil_div(max(height, width), stride) * stride
        overlap = 0
    return (axis_windows(height, window, overlap, stride),
            axis_windows(width, window, overlap, stride))


def _shape_batches(windows: list, batch_size: int) -> Iterator[list]:
    """Windows (y0, x0, h, w) grouped by shape, in chunks of at most ``batch_size``."""
    by_shape: dict[tuple[int, int], list] = {}
    for win in windows:
        by_shape.setdefault((win[2], win[3]), []).append(win)
    for group in by_shape.values():
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]
