"""Label layers from pixel-coordinate building polygons (numpy, scipy, rasterio; no TF).

All functions work on one grid of ``height`` x ``width`` pixels with polygons in pixel
coordinates (x = column, y = row, (0, 0) the top-left corner of the top-left pixel).

* ``mask``: uint8 [H, W], 1 where the pixel CENTRE is inside a footprint (rasterio's
  ``all_touched=False`` rule).
* boundary: footprint pixels with a 4-neighbour (inside the image) that is background or
  ANOTHER building, so touching buildings (shared walls) are separated by a zero line in
  the sdf: what lets the polygon head split them.
* ``distance``: float32 [H, W], Euclidean distance in pixels (centre to centre) to the
  nearest boundary pixel; ``H + W`` everywhere on a tile without buildings.
* ``sdf``: float32 [H, W], +distance inside the mask, -distance outside, 0 on the boundary,
  clipped to [-truncation, truncation].
* ``contact``: uint8 [H, W], 1 where the (2r+1) x (2r+1) pixel window centred on the pixel
  (r = ``contact_radius``, clipped to the tile) holds pixels of two different buildings:
  a band of width 2r along every shared wall (r pixels into each building) and across every
  gap of up to 2r - 1 pixels between two buildings. The pixels a model must get right to
  keep touching buildings apart (the SpaceNet 4 winners' "contact" channel, extended to
  walls shared without a gap).
* ``boxes_xyxy_px``: float32 [N, 4], axis-aligned bounds of each polygon, clipped to the tile.
* ``rects_px``: float32 [N, 4, 2], the four (x, y) vertices of each polygon's minimum rotated
  rectangle (``shapely.oriented_envelope``), in the envelope ring's order from its first
  vertex; the oriented box a rotated building needs (an axis-aligned box of a building
  turned 45 degrees can miss IoU 0.5 with it).
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage

from sn_tf.spacenet.geo import polygon_parts

_CROSS = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def clip_to_tile(polygons_px, height: int, width: int) -> tuple[list, int]:
    """Clip polygons to the tile [0, W] x [0, H]; returns (kept Polygon parts, n dropped).

    A polygon wholly outside the tile (or touching it only along an edge) is dropped.
    """
    if len(polygons_px) == 0:
        return [], 0
    tile = shapely.box(0, 0, width, height)
    clipped = shapely.intersection(np.asarray(list(polygons_px), dtype=object), tile)
    kept, dropped = [], 0
    for geom in clipped:
        parts = [p for p in polygon_parts(geom) if p.area > 0]
        kept += parts
        dropped += not parts
    return kept, dropped


def rasterize_mask(polygons_px, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] footprint mask, pixel-centre rule (rasterio.features.rasterize)."""
    from rasterio import features

    if len(polygons_px) == 0:
        return np.zeros((height, width), np.uint8)
    return features.rasterize(
        ((p, 1) for p in polygons_px), out_shape=(height, width), fill=0,
        all_touched=False, dtype="uint8")


def rasterize_instances(polygons_px, height: int, width: int) -> np.ndarray:
    """int32 [H, W]: 0 background, i + 1 inside polygon i (pixel-centre rule; later wins)."""
    from rasterio import features

    if len(polygons_px) == 0:
        return np.zeros((height, width), np.int32)
    return features.rasterize(
        ((p, i + 1) for i, p in enumerate(polygons_px)), out_shape=(height, width), fill=0,
        all_touched=False, dtype="int32")


def instance_boundary(instances: np.ndarray) -> np.ndarray:
    """bool [H, W]: building pixels with a 4-neighbour of another id (background included)."""
    ids = instances
    b = np.zeros(ids.shape, bool)
    b[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    b[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    b[:-1, :] |= ids[:-1, :] != ids[1:, :]
    b[1:, :] |= ids[1:, :] != ids[:-1, :]
    return b & (ids > 0)


#: Default ``contact_radius`` (pixels) of the converter.
CONTACT_RADIUS = 2


def _contact_full(ids: np.ndarray, radius: int) -> np.ndarray:
    """bool ``contact_mask`` of int32 ids over the whole array (rank filters)."""
    size = 2 * radius + 1
    top = ndimage.maximum_filter(ids, size=size, mode="constant", cval=0)
    big = np.int32(np.iinfo(np.int32).max)
    low = ndimage.minimum_filter(np.where(ids > 0, ids, big), size=size, mode="constant",
                                 cval=big)
    return (top > 0) & (low < top)


def _merge_windows(windows: list) -> list:
    """Merge (y0, y1, x0, x1) windows until none overlaps another (their union is covered)."""
    merged = list(windows)
    changed = True
    while changed:
        changed, out = False, []
        for win in merged:
            for k, other in enumerate(out):
                if win[0] < other[1] and other[0] < win[1] and win[2] < other[3] \
                        and other[2] < win[3]:
                    out[k] = (min(win[0], other[0]), max(win[1], other[1]),
                              min(win[2], other[2]), max(win[3], other[3]))
                    changed = True
                    break
            else:
                out.append(win)
        merged = out
    return merged


def _contact_windows(extents: np.ndarray, radius: int, height: int, width: int) -> list:
    """Merged (y0, y1, x0, x1) windows covering every place where two buildings' pixel
    extents (int [N, 4] rows y0..y1, columns x0..x1, end exclusive) grown by ``radius``
    overlap: the only places a contact pixel can be."""
    grown = extents + np.array([-radius, radius, -radius, radius])
    y0 = np.maximum(grown[:, None, 0], grown[None, :, 0])
    y1 = np.minimum(grown[:, None, 1], grown[None, :, 1])
    x0 = np.maximum(grown[:, None, 2], grown[None, :, 2])
    x1 = np.minimum(grown[:, None, 3], grown[None, :, 3])
    i, j = np.nonzero(np.triu((y0 < y1) & (x0 < x1), k=1))
    windows = [(max(int(y0[a, b]), 0), min(int(y1[a, b]), height),
                max(int(x0[a, b]), 0), min(int(x1[a, b]), width)) for a, b in zip(i, j)]
    return _merge_windows([w for w in windows if w[0] < w[1] and w[2] < w[3]])


def contact_mask(instances: np.ndarray, radius: int = CONTACT_RADIUS,
                 boxes_xyxy_px: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H, W]: 1 where the (2 radius + 1)-pixel square window around the pixel (clipped
    to the grid) holds pixels of two different buildings (``instances``: int [H, W], 0 =
    background, k > 0 = building k). ``radius`` >= 1.

    Two rank filters (largest and smallest building id in the window: the window holds two
    buildings exactly when they differ), run only where two buildings' extents grown by
    ``radius`` overlap; equal to running them over the whole grid (tested). The extents
    come from ``boxes_xyxy_px`` (float [K, 4] for buildings 1..K, e.g. the polygons' clipped
    bounds: ~0.5 ms for a 650 px grid of ~50 buildings instead of 4.6 ms for the whole
    grid) or, without them, from ``scipy.ndimage.find_objects`` (+1 ms).
    """
    radius = int(radius)
    if radius < 1:
        raise ValueError(f"contact radius must be >= 1, got {radius}")
    ids = np.asarray(instances).astype(np.int32, copy=False)
    h, w = ids.shape
    out = np.zeros((h, w), bool)
    if boxes_xyxy_px is None:
        if ids.max(initial=0) == 0:
            return out.view(np.uint8)
        extents = np.array([(s[0].start, s[0].stop, s[1].start, s[1].stop)
                            for s in ndimage.find_objects(ids) if s is not None], np.int64)
    else:  # a pixel centre inside a polygon lies within its bounds' floor/ceil range
        b = np.asarray(boxes_xyxy_px, np.float64).reshape(-1, 4)
        extents = np.stack([np.floor(b[:, 1]), np.ceil(b[:, 3]), np.floor(b[:, 0]),
                            np.ceil(b[:, 2])], axis=1).astype(np.int64)
    for y0, y1, x0, x1 in _contact_windows(extents.reshape(-1, 4), radius, h, w):
        # the window plus ``radius`` of context: every window pixel sees its whole square
        cy0, cy1 = max(y0 - radius, 0), min(y1 + radius, h)
        cx0, cx1 = max(x0 - radius, 0), min(x1 + radius, w)
        local = _contact_full(ids[cy0:cy1, cx0:cx1], radius)
        out[y0:y1, x0:x1] |= local[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
    return out.view(np.uint8)


def rotated_rects_px(polygons_px) -> np.ndarray:
    """float32 [N, 4, 2]: vertices (x, y) of each polygon's minimum rotated rectangle
    (``shapely.oriented_envelope``: the ring's first four vertices). A degenerate envelope
    (a line or point, never from a polygon of area > 0) repeats its points."""
    if len(polygons_px) == 0:
        return np.zeros((0, 4, 2), np.float32)
    env = shapely.oriented_envelope(np.asarray(list(polygons_px), dtype=object))
    out = np.zeros((len(env), 4, 2), np.float32)
    for k, geom in enumerate(env):
        ring = geom.exterior.coords if geom.geom_type == "Polygon" else geom.coords
        pts = np.asarray(ring, np.float64)[:, :2]
        pts = pts[:-1] if len(pts) == 5 else pts
        out[k] = pts[np.arange(4) % len(pts)]
    return out


def boundary_mask(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: mask pixels with a 4-neighbour outside the mask (image edges excluded)."""
    inside = mask.astype(bool)
    eroded = ndimage.binary_erosion(inside, structure=_CROSS, border_value=1)
    return inside & ~eroded


_root16 = np.zeros(0, np.float16)  # float16(float32 sqrt(n)) for n < size (grown on demand)


def _root_table16(size: int) -> np.ndarray:
    """float16 [>= size]: entry n = float16(sqrt_float32(n)); cached for the process."""
    global _root16
    if _root16.size < size:
        _root16 = np.sqrt(np.arange(size, dtype=np.int32), dtype=np.float32).astype(np.float16)
    return _root16


def edt_to(boundary: np.ndarray, dtype=np.float32) -> np.ndarray:
    """[H, W] of ``dtype``: Euclidean distance (px, centre to centre) to the nearest True pixel.

    ``boundary``: bool [H, W] with at least one True pixel. ``dtype`` float32 equals
    ``scipy.ndimage.distance_transform_edt(~boundary).astype(np.float32)`` bit for bit, at
    about 3/5 of its cost: scipy's feature transform gives the nearest pixel, the squared
    distances are exact int32, and the float32 square root of an integer below 2**24 is
    the float32 rounding of its float64 square root (checked for every such integer).
    float16 equals that float32 result cast to float16, looked up in a table of roots of
    every squared distance (cheaper than computing and casting float32).
    """
    h, w = boundary.shape
    # scipy's feature transform of the transposed view is ~15 % faster (its passes then
    # run along memory); squared distances do not depend on the orientation
    fx, fy = ndimage.distance_transform_edt(~boundary.T, return_distances=False,
                                            return_indices=True)  # int32 [2, W, H]
    fx -= np.arange(w, dtype=np.int32)[:, None]
    fy -= np.arange(h, dtype=np.int32)
    np.multiply(fx, fx, out=fx)
    np.multiply(fy, fy, out=fy)
    fx += fy
    d2 = fx.T  # int32 [H, W] view
    largest = (h - 1) ** 2 + (w - 1) ** 2
    if largest >= 2 ** 24:
        return np.sqrt(d2, dtype=np.float64, order="C").astype(np.float32).astype(dtype)
    if np.dtype(dtype) == np.float16:
        return np.take(_root_table16(largest + 1), d2)
    return np.sqrt(d2, dtype=np.float32, order="C").astype(dtype, copy=False)


def distance_to_boundary(mask: np.ndarray, boundary: np.ndarray | None = None,
                         dtype=np.float32) -> np.ndarray:
    """[H, W] float32 (or ``dtype`` float16, = the float32 result cast): Euclidean distance
    (px) to the nearest boundary pixel, capped at H+W.

    ``boundary`` defaults to ``boundary_mask(mask)`` (use ``instance_boundary`` when the
    buildings are known, so shared walls count as boundary). The cap only applies to a
    grid without boundary pixels (H+W everywhere): two pixels of one grid are always less
    than H+W apart.
    """
    h, w = mask.shape
    if boundary is None:
        boundary = boundary_mask(mask)
    if not boundary.any():
        return np.full((h, w), np.float32(h + w), dtype)
    return edt_to(boundary, dtype)


def signed_distance(mask: np.ndarray, truncation: float | None = None,
                    distance: np.ndarray | None = None) -> np.ndarray:
    """[H, W] signed distance: + inside, - outside, 0 on the boundary (pixels).

    ``distance`` (from ``distance_to_boundary``) is reused when given; ``truncation``
    clips the result to [-truncation, truncation]. float32, or float16 when ``distance``
    is float16: then equal to the float32 result cast to float16 (rounding is monotonic,
    so it commutes with the clip and the sign), computed on the bit patterns.
    """
    if distance is None:
        distance = distance_to_boundary(mask)
    inside = mask.astype(bool)
    distance = np.asarray(distance)
    half = distance.dtype == np.float16
    if half:
        bits = distance.view(np.uint16)
        if bits.size and bits.max() <= 0x7C00:  # +0 .. +inf: bit order is value order
            if truncation is not None:
                limit = np.float32(truncation).astype(np.float16).view(np.uint16)
                bits = np.minimum(bits, limit)
            out = bits | np.uint16(0x8000)  # the sign bit: -distance
            np.copyto(out, bits, where=inside)
            return out.view(np.float16)
    distance = np.asarray(distance, np.float32)
    sdf = np.negative(distance)
    np.copyto(sdf, distance, where=inside)
    if truncation is not None:
        np.clip(sdf, -truncation, truncation, out=sdf)
    return sdf.astype(np.float16) if half else sdf


def boxes_xyxy_px(polygons_px, height: int, width: int) -> np.ndarray:
    """float32 [N, 4] (x_min, y_min, x_max, y_max) of each polygon, clipped to the tile."""
    if len(polygons_px) == 0:
        return np.zeros((0, 4), np.float32)
    b = shapely.bounds(np.asarray(list(polygons_px), dtype=object))
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b.astype(np.float32)


def compute_labels(polygons_px, height: int, width: int,
                   sdf_truncation: float | None = 32.0, dtype=np.float32,
                   contact_radius: int = CONTACT_RADIUS) -> dict:
    """Every label layer of one grid, as the ``labels`` entry of the schema's tile dict.

    ``polygons_px`` must already be valid and clipped to the tile (``clip_to_tile``).
    ``dtype`` of distance and sdf: float32, or float16 (what the schema stores), equal to
    the float32 layers cast to float16 and cheaper than casting them.
    """
    instances = rasterize_instances(polygons_px, height, width)
    mask = (instances > 0).astype(np.uint8)
    distance = distance_to_boundary(mask, instance_boundary(instances), dtype)
    boxes = boxes_xyxy_px(polygons_px, height, width)
    return {
        "mask": mask,
        "distance": distance,
        "sdf": signed_distance(mask, sdf_truncation, distance),
        "contact": contact_mask(instances, contact_radius, boxes),
        "boxes_xyxy_px": boxes,
        "rects_px": rotated_rects_px(polygons_px),
        "polygons_px": list(polygons_px),
        "height": int(height),
        "width": int(width),
    }


def labels_from_mask(mask: np.ndarray, distance: np.ndarray | None = None,
                     sdf_truncation: float | None = 32.0,
                     contact_radius: int = CONTACT_RADIUS) -> dict:
    """Label layers when only a footprint mask is known (e.g. lab HDF5 files).

    Buildings are the 4-connected components of the mask, traced into pixel polygons with
    rasterio.features.shapes; ``distance`` (if the source has one) is kept as given. The
    contact layer sees the components as the buildings (buildings touching in the mask are
    one component: no contact between them).
    """
    from rasterio import features

    mask = (np.asarray(mask) > 0).astype(np.uint8)
    h, w = mask.shape
    polys = [shapely.geometry.shape(g) for g, v in
             features.shapes(mask, mask=mask.astype(bool), connectivity=4) if v == 1]
    polys = [p for poly in polys for p in polygon_parts(poly.buffer(0))]
    dist = distance_to_boundary(mask) if distance is None else np.asarray(distance, np.float32)
    return {
        "mask": mask,
        "distance": dist,
        "sdf": signed_distance(mask, sdf_truncation, distance_to_boundary(mask)),
        "contact": contact_mask(ndimage.label(mask, structure=_CROSS)[0], contact_radius),
        "boxes_xyxy_px": boxes_xyxy_px(polys, h, w),
        "rects_px": rotated_rects_px(polys),
        "polygons_px": polys,
        "height": int(h),
        "width": int(w),
    }
