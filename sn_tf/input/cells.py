"""The DetectNet output grid: its cell size, with one source of truth (no TF, no numpy).

A DetectNet output (and target) cell (i, j) covers the pixels ``[j S, (j + 1) S) x
[i S, (i + 1) S)`` of its (padded) input, S = the cell size in pixels, and has its centre at
``(cx, cy) = ((j + 0.5) S, (i + 0.5) S)`` (x = column, y = row, pixel corners:
BUILD_NOTES.md section 1). The grid of an ``H x W`` input is ``h = H / S`` by ``w = W / S``.

"Cell size" is not the model's input multiple (``ModelInfo.stride``, ``modeling.stride_for``:
the backbone's total downsampling, 16 for DetectNet): a DetectNet with ``cell_size`` 8 still
needs inputs padded to multiples of 16 and predicts on a grid twice as fine. The recipe key is
``model.cell_size``; it travels to the targets (``make_dataset(cell_size=...)``), the model
(``build_detectnet(cell_size=...)``), ``ModelInfo.cell_size`` and from there to export,
predict and the polygon head.
"""

from __future__ import annotations

import numbers

from sn_tf.utils import families

#: Cell size of DIGITS' DetectNet and of models whose ModelInfo predates ``cell_size``
#: (the DetectNet family's, ``sn_tf.utils.families``).
DEFAULT_CELL_SIZE = families.DETECTNET.cell_size
#: Cell sizes the DetectNet model can produce (divisors of its input multiple 16).
CELL_SIZES = (8, 16)


def check_cell_size(value, key: str = "cell_size") -> int:
    """``value`` as an int if it is one of :data:`CELL_SIZES`, else ValueError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or int(value) not in CELL_SIZES:
        raise ValueError(f"{key} must be one of {CELL_SIZES} (pixels per DetectNet cell), "
                         f"got {value!r}")
    return int(value)

