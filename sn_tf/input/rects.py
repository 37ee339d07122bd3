"""Oriented rectangles as "gliding vertices" on their axis-aligned box (numpy only).

Coordinates follow BUILD_NOTES.md section 1: pixels, ``x`` = column, ``y`` = row, origin at
the top-left CORNER of the top-left pixel (y grows downwards). A rectangle is float
``[4, 2]``: its four (x, y) vertices in ring order (either orientation), e.g. a building's
minimum rotated rectangle (``labels.rotated_rects_px``, ``shapely.oriented_envelope``).

Parametrisation (gliding vertices, Xu et al. 2020, "Gliding vertex on the horizontal
bounding box for multi-oriented object detection"): a rectangle touches each side of its box
``(x1, y1, x2, y2)`` (w = x2 - x1, h = y2 - y1) at one vertex:

* top vertex    ``(x1 + alpha * w, y1)``      right vertex ``(x2, y1 + beta * h)``
* bottom vertex ``(x2 - alpha * w, y2)``      left vertex  ``(x1, y2 - beta * h)``

with ``alpha, beta`` in [0, 1] (a parallelogram always has that central symmetry; it is a
rectangle iff ``a (w - a) = b (h - b)``, a = alpha w, b = beta h). The obliquity
``r = area / (w h) = 1 - alpha (1 - beta) - (1 - alpha) beta`` is 1 for an axis-aligned
rectangle, which both ``(alpha, beta) = (0, 0)`` and ``(1, 1)`` describe: near r = 1 the
parameters jump between those two points for a tiny rotation. Detectors therefore predict
r as well and use the plain box where r >= a gate (:data:`DEFAULT_GATE`; the box of a
rectangle with r >= 0.9 overlaps it with IoU r).

Which vertex is "top" or "right" on ties (an edge lying on the box side): the top vertex is
the one with the smallest y, then the smallest x; the right vertex the one with the largest
x, then the smallest y. An axis-aligned rectangle thus gets ``(0, 0)``.
"""

from __future__ import annotations

import numpy as np

from sn_tf.utils import families

#: Obliquity above which a rectangle counts as axis-aligned (its box is used instead): the
#: DetectNet head's default ``rect_gate`` (``sn_tf.utils.families``), also used by the targets.
DEFAULT_GATE = families.DETECTNET.postprocess["rect_gate"]


def as_rects(rects) -> np.ndarray:
    """float64 [N, 4, 2] from [N, 4, 2] or [N, 8] rectangle vertices."""
    return np.asarray(rects, np.float64).reshape(-1, 4, 2)


def rect_boxes(rects) -> np.ndarray:
    """float64 [N, 4] axis-aligned boxes (x1, y1, x2, y2) of rectangles [N, 4, 2]."""
    r = as_rects(rects)
    return np.concatenate([r.min(axis=1), r.max(axis=1)], axis=1)


def _polygon_area(rects: np.ndarray) -> np.ndarray:
    """float64 [N] area of quadrilaterals [N, 4, 2] (shoelace, absolute value)."""
    x, y = rects[..., 0], rects[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))


def gliding_from_rects(rects, boxes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha, beta, r) float64 [N] each of rectangles [N, 4, 2] (module docstring).

    boxes: optional [N, 4] reference boxes (default: the rectangles' own boxes); with other
    boxes (e.g. a polygon's box inside its minimum rotated rectangle's) the vertices are
    measured from that box and alpha, beta clipped to [0, 1]. r = area / area of the
    rectangle's own box (clipped to [0, 1]; 1 for a degenerate box).
    """
    r = as_rects(rects)
    if len(r) == 0:
        empty = np.zeros(0)
        return empty, empty, empty
    own = rect_boxes(r)
    box = own if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    rows = np.arange(len(r))
    top = _argmin_lex(r[..., 1], r[..., 0])
    right = _argmin_lex(-r[..., 0], r[..., 1])
    alpha = np.clip(np.divide(r[rows, top, 0] - box[:, 0], w, out=np.zeros(len(r)),
                              where=w > 0), 0.0, 1.0)
    beta = np.clip(np.divide(r[rows, right, 1] - box[:, 1], h, out=np.zeros(len(r)),
                             where=h > 0), 0.0, 1.0)
    area = (own[:, 2] - own[:, 0]) * (own[:, 3] - own[:, 1])
    obliquity = np.divide(_polygon_area(r), area, out=np.ones(len(r)), where=area > 0)
    return alpha, beta, np.clip(obliquity, 0.0, 1.0)


def _argmin_lex(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """int [N]: per row of [N, 4] keys, the index of the smallest (primary, secondary)."""
    order = np.lexsort((secondary, primary), axis=-1)
    return order[:, 0]


def parallelograms(boxes, alpha, beta) -> np.ndarray:
    """float64 [N, 4, 2]: the gliding-vertex quadrilaterals (top, right, bottom, left)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b.T
    a = np.asarray(alpha, np.float64) * (x2 - x1)
    c = np.asarray(beta, np.float64) * (y2 - y1)
    return np.stack([np.stack([x1 + a, y1], -1), np.stack([x2, y1 + c], -1),
                     np.stack([x2 - a, y2], -1), np.stack([x1, y2 - c], -1)], axis=1)


def closest_rectangles(quads) -> np.ndarray:
    """float64 [N, 4, 2]: the rectangle sharing each parallelogram's centre and diagonal
    directions, with both diagonals of their mean length (a rectangle is a parallelogram
    with equal diagonals; a rectangle is returned unchanged up to rounding)."""
    q = as_rects(quads)
    centre = q.mean(axis=1, keepdims=True)
    d1, d2 = q[:, 2] - q[:, 0], q[:, 3] - q[:, 1]
    n1 = np.linalg.norm(d1, axis=1, keepdims=True)
    n2 = np.linalg.norm(d2, axis=1, keepdims=True)
    half = 0.25 * (n1 + n2)
    u1 = np.divide(d1, n1, out=np.zeros_like(d1), where=n1 > 0)
    u2 = np.divide(d2, n2, out=np.zeros_like(d2), where=n2 > 0)
    corners = np.stack([-half * u1, -half * u2, half * u1, half * u2], axis=1)
    return centre + corners


def rects_from_gliding(boxes, alpha, beta, obliquity=None,
                       gate: float = DEFAULT_GATE) -> np.ndarray:
    """float64 [N, 4, 2] rectangles decoded from boxes [N, 4] and gliding parameters [N].

    Where ``obliquity`` (predicted r, [N]) is given and >= ``gate`` the box itself is
    returned (as the vertices top-left, top-right, bottom-right, bottom-left); elsewhere the
    closest rectangle (:func:`closest_rectangles`) of the gliding-vertex parallelogram.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    alpha = np.clip(np.asarray(alpha, np.float64).reshape(-1), 0.0, 1.0)
    beta = np.clip(np.asarray(beta, np.float64).reshape(-1), 0.0, 1.0)
    if obliquity is not None:
        flat = np.asarray(obliquity, np.float64).reshape(-1) >= gate
        alpha, beta = np.where(flat, 0.0, alpha), np.where(flat, 0.0, beta)
    return closest_rectangles(parallelograms(boxes, alpha, beta))
