"""The ONE polygon head: model outputs (rasters or DetectNet grids) -> building polygons -> files.

Every producer of buildings in sn_tf (the FCN, DetectNet, users' own rasters) goes through this
module, and every consumer (the SpaceNet CSV / GeoJSON writers here, ``sn_tf.scoring``) reads
the same record type, :class:`Building`.

Coordinate conventions (BUILD_NOTES.md section 1):

* pixel coordinates: ``x`` = column, ``y`` = row, origin at the top-left CORNER of the top-left
  pixel; pixel (c, r) covers [c, c+1) x [r, r+1). A polygon traced from a raster therefore has
  integer vertices and its area equals its pixel count.
* a transform is either a GDAL geotransform tuple ``(GT0, .., GT5)`` with
  ``x_map = GT0 + col*GT1 + row*GT2`` and ``y_map = GT3 + col*GT4 + row*GT5``, or a rasterio
  ``Affine`` (``a, b, c, d, e, f = GT1, GT2, GT0, GT4, GT5, GT3``). With a transform, polygons
  come out in map coordinates and areas (``min_area``) are in map units (m2 in a UTM CRS).

Heavy dependencies (rasterio, scipy) are imported inside the functions that need them, so that
``sn_tf.scoring`` (numpy + shapely only) can import :class:`Building` from here cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry import Polygon

from sn_tf import rects as rect_ops
from sn_tf.cells import DEFAULT_CELL_SIZE
from sn_tf.geo import (  # noqa: F401  (re-exported: the head's coordinate helpers)
    as_gdal_transform, map_to_pixel, pixel_area, pixel_to_map, polygon_parts, repair_polygon,
    to_affine)

# SpaceNet tile id inside a file name, e.g. "RGB-PanSharpen_AOI_5_Khartoum_img924.tif".
TILE_ID_RE = re.compile(r"AOI_\d+_[A-Za-z]+_img\d+")

# Default threshold per raster kind (a pixel is building where value > threshold).
DEFAULT_THRESHOLDS = {"probability": 0.5, "logit": 0.0, "mask": 0.0, "sdf": 0.0}

CSV_HEADER = "ImageId,BuildingId,PolygonWKT_Pix,Confidence"


@dataclasses.dataclass(frozen=True)
class Building:
    """One building (truth or proposal) of one image.

    Attributes:
      image_id: tile id, e.g. ``"AOI_2_Vegas_img3457"`` (no image-type prefix).
      polygon: shapely geometry in pixel coordinates (x=col, y=row) or map coordinates. An EMPTY
        geometry (or ``None``) adds no building; it only registers the image (a tile with no
        buildings). Readers may also return a MultiPolygon proposal, which scores as one
        building; the writers split MultiPolygons into one row per part.
      confidence: score used to order proposals (higher first); 1.0 for truth.
      building_id: optional id from the source file (informational; writers renumber).
    """

    image_id: str
    polygon: object
    confidence: float = 1.0
    building_id: int | None = None

    @property
    def is_empty(self) -> bool:
        """True when this record only registers its image (no polygon)."""
        return self.polygon is None or self.polygon.is_empty


# ----------------------------------------------------------------------------------------------
# Names and transforms


def tile_id_from_name(name: str | os.PathLike) -> str:
    """Tile id (``AOI_<n>_<City>_img<N>``) found in a file name, else the file stem.

    >>> tile_id_from_name("/x/RGB-PanSharpen_AOI_5_Khartoum_img924.tif")
    'AOI_5_Khartoum_img924'
    """
    base = os.path.basename(os.fspath(name))
    match = TILE_ID_RE.search(base)
    if match:
        return match.group(0)
    stem = base
    for suffix in (".geojson", ".json", ".csv", ".tif", ".tiff"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return os.path.splitext(stem)[0]


# ----------------------------------------------------------------------------------------------
# Rasters -> polygons


def _as_2d(array, name: str) -> np.ndarray:
    """[H, W] or [H, W, 1] array -> [H, W] numpy array; anything else is a ValueError."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"{name}: expected shape [H, W] or [H, W, 1], got {array.shape}")
    return array


def confidence_map(raster: np.ndarray, kind: str) -> np.ndarray:
    """Per-pixel building probability (float64 [H, W]) used for polygon confidences.

    ``kind``: ``"probability"`` -> the values themselves; ``"logit"`` -> sigmoid(values);
    ``"sdf"`` (signed distance in pixels, positive inside) -> sigmoid(values), i.e. 0.5 on the
    boundary and close to 1 a few pixels inside; ``"mask"`` -> 1 everywhere.
    """
    raster = np.asarray(raster, dtype=np.float64)
    if kind == "probability":
        return raster
    if kind in ("logit", "sdf"):
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-raster))
    if kind == "mask":
        return np.ones_like(raster)
    raise ValueError(f"kind must be one of {sorted(DEFAULT_THRESHOLDS)}, got {kind!r}")


def _nearest_seed(seeds: np.ndarray) -> np.ndarray:
    """Label (int [H, W]) of the nearest seed pixel (Euclidean, pixel centres) of every pixel."""
    from scipy import ndimage

    _, (rows, cols) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    return seeds[rows, cols]


def split_footprint(footprint: np.ndarray, sdf: np.ndarray | None, level: float,
                    min_seed_area: int = 0, barrier: np.ndarray | None = None
                    ) -> tuple[np.ndarray, int]:
    """Label a footprint, splitting touching buildings with a signed-distance raster and/or
    a barrier (contact) mask.

    Args:
      footprint: bool [H, W], True on building pixels.
      sdf: float [H, W] signed distance (pixels, positive inside buildings), or None (no
        sdf condition on the seeds).
      level: seeds (markers) are the 4-connected regions of ``footprint & (sdf > level)``
        (and ``~barrier``).
      min_seed_area: seeds with fewer pixels are ignored (noise in a predicted sdf would
        otherwise cut one building into pieces).
      barrier: optional bool [H, W]: pixels that never seed, e.g. predicted contact pixels
        (near two buildings): a shared wall then separates two seeds.

    Returns:
      (labels int32 [H, W], n): 0 = background, 1..n = one building each.

    A distance-based watershed restricted to the footprint: every pixel of a 4-connected
    footprint component joins the nearest seed (Euclidean distance between pixel centres)
    of the SAME component, so the cut between two touching buildings falls midway between
    their cores (the sdf valley). A component without any seed stays one building.
    Labels may be non-4-connected; tracing then gives one polygon per 4-connected piece.
    """
    labels, n, _ = _split_footprint(footprint, sdf, level, min_seed_area, barrier)
    return labels, n


def _split_footprint(footprint, sdf, level, min_seed_area, barrier):
    """:func:`split_footprint` plus [(window slices, bool mask of the component in it)] of
    the components that were split (several seeds): the only places where two labels touch."""
    from scipy import ndimage

    cross = ndimage.generate_binary_structure(2, 1)
    components, n_comp = ndimage.label(footprint, structure=cross)
    seed_mask = footprint if sdf is None else footprint & (np.asarray(sdf) > level)
    if barrier is not None:
        seed_mask = seed_mask & ~np.asarray(barrier, bool)
    seeds, n_seeds = ndimage.label(seed_mask, structure=cross)
    if n_seeds and min_seed_area > 1:
        # dropping whole seeds keeps the others' scan order: renumber by lookup, no relabel
        big = np.bincount(seeds.ravel(), minlength=n_seeds + 1) >= min_seed_area
        big[0] = False
        renumber = np.zeros(n_seeds + 1, dtype=np.int32)
        n_seeds = int(big.sum())
        renumber[big] = np.arange(1, n_seeds + 1, dtype=np.int32)
        seeds = renumber[seeds]
    if n_seeds == 0:
        return components.astype(np.int32), int(n_comp), []
    where = seeds > 0
    seed_component = np.zeros(n_seeds + 1, dtype=np.int64)
    seed_component[seeds[where]] = components[where]
    per_comp = np.bincount(seed_component[1:], minlength=n_comp + 1)
    # label of each component's pixels: its one seed; none: a label after the seeds' (in
    # component order); several: decided per pixel below. Labels stay consecutive: every
    # seed keeps at least its own pixels.
    comp_label = np.zeros(n_comp + 1, dtype=np.int32)
    single = per_comp[seed_component[1:]] == 1
    comp_label[seed_component[1:][single]] = np.arange(1, n_seeds + 1, dtype=np.int32)[single]
    unseeded = np.flatnonzero(per_comp[1:] == 0) + 1
    comp_label[unseeded] = n_seeds + 1 + np.arange(unseeded.size, dtype=np.int32)
    labels = comp_label[components]
    multi = np.flatnonzero(per_comp[1:] > 1) + 1
    windows = []
    if multi.size:
        boxes = ndimage.find_objects(components)
        for comp in multi:  # every pixel joins the nearest seed of its own component
            window = boxes[comp - 1]
            own = components[window] == comp
            nearest = _nearest_seed(np.where(own, seeds[window], 0))
            labels[window][own] = nearest[own]
            windows.append((window, own))
    return labels, n_seeds + int(unseeded.size), windows


def merge_regions(labels: np.ndarray, value: np.ndarray, level: float, windows=None
                  ) -> tuple[np.ndarray, int]:
    """Merge 4-adjacent regions whose shared boundary does not dip below ``level``.

    Args:
      labels: int [H, W], 0 = background, 1..n regions, every label present (e.g.
        :func:`split_footprint`).
      value: float [H, W], the raster the regions were seeded from (e.g. interior logits
        or the signed distance): low on a wall between two buildings.
      level: two regions merge when the median, over the pixel pairs of their shared
        boundary, of the mean ``value`` of the pair is > ``level`` (a shallow dip, such as
        a roof ridge, rather than a wall); merging is transitive.
      windows: optional [(window slices, bool mask)] holding every place where two labels
        touch (what ``_split_footprint`` returns): only those pixels are read.

    Returns:
      (labels int32 [H, W] with consecutive labels 1..m, m).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = np.asarray(labels)
    value = np.asarray(value)
    n = int(labels.max()) if labels.size else 0
    keys, vals = [], []
    for window, own in (windows if windows is not None else [(np.s_[:, :], labels > 0)]):
        lab, val = labels[window], value[window].astype(np.float64)
        for a, b, va, vb, inside in (
                (lab[:, :-1], lab[:, 1:], val[:, :-1], val[:, 1:], own[:, :-1] & own[:, 1:]),
                (lab[:-1], lab[1:], val[:-1], val[1:], own[:-1] & own[1:])):
            edge = inside & (a != b)
            lo, hi = np.minimum(a[edge], b[edge]), np.maximum(a[edge], b[edge])
            keys.append(lo.astype(np.int64) * (n + 1) + hi)
            vals.append((va[edge] + vb[edge]) / 2)
    keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    vals = np.concatenate(vals) if vals else np.zeros(0)
    if keys.size == 0:
        return labels.astype(np.int32), n
    order = np.lexsort((vals, keys))
    keys, vals = keys[order], vals[order]
    pair, start, count = np.unique(keys, return_index=True, return_counts=True)
    median = vals[start + (count - 1) // 2]
    join = pair[median > level]
    if join.size == 0:
        return labels.astype(np.int32), n
    graph = coo_matrix((np.ones(join.size), (join // (n + 1), join % (n + 1))),
                       shape=(n + 1, n + 1))
    _, comp = connected_components(graph, directed=False)
    # merged groups -> consecutive labels in the order of their smallest label; 0 stays 0
    used = np.unique(comp[1:])
    lookup = np.zeros(comp.max() + 1, dtype=np.int32)
    lookup[used] = np.arange(1, used.size + 1, dtype=np.int32)
    table = lookup[comp]
    table[0] = 0
    return table[labels], int(used.size)


def label_footprint(raster: np.ndarray, threshold: float, sdf: np.ndarray | None = None,
                    sdf_level: float = 2.0, min_seed_area: int = 0,
                    contact: np.ndarray | None = None, contact_threshold: float = 0.0,
                    merge_level: float | None = None) -> tuple[np.ndarray, int]:
    """Threshold ``raster`` (value > threshold; NaN is background) and label its buildings.

    Without ``sdf`` and ``contact``: 4-connected components. With either:
    :func:`split_footprint`, whose seeds leave out the pixels where ``contact`` (a raster
    like ``raster``, e.g. contact logits) > ``contact_threshold``; with ``sdf`` and a
    ``merge_level``, split regions whose boundary stays above it in ``sdf`` are joined
    again (:func:`merge_regions`).
    Returns (labels int32 [H, W], number of labels).
    """
    from scipy import ndimage

    footprint = np.asarray(raster) > threshold
    if sdf is not None or contact is not None:
        if sdf is not None:
            sdf = _as_2d(sdf, "sdf")
            if sdf.shape != footprint.shape:
                raise ValueError(f"sdf shape {sdf.shape} differs from raster shape "
                                 f"{footprint.shape}")
        barrier = None
        if contact is not None:
            contact = _as_2d(contact, "contact")
            if contact.shape != footprint.shape:
                raise ValueError(f"contact shape {contact.shape} differs from raster shape "
                                 f"{footprint.shape}")
            barrier = contact > contact_threshold
        labels, n, windows = _split_footprint(footprint, sdf, sdf_level, min_seed_area, barrier)
        if sdf is not None and merge_level is not None and windows:
            labels, n = merge_regions(labels, sdf, merge_level, windows)
        return labels, n
    labels, n = ndimage.label(footprint, structure=ndimage.generate_binary_structure(2, 1))
    return labels.astype(np.int32), int(n)


def polygons_from_raster(raster, image_id: str = "", *, threshold: float | None = None,
                         kind: str = "probability", min_area: float = 0.0,
                         simplify: float = 0.0, sdf=None, sdf_level: float = 2.0,
                         min_seed_area: int = 0, probability=None,
                         transform=None, contact=None,
                         contact_threshold: float = 0.0, nan: str = "fill",
                         merge_level: float | None = None) -> list[Building]:
    """Building polygons from a raster model output.

    NaN rule: NaN (nodata) is never building by itself. With ``nan="fill"`` (default) NaN
    pixels enclosed by building pixels (inside the filled footprint) count as building, so a
    NaN speck never punches a hole into a building; every other NaN pixel is background.
    ``nan="background"``: every NaN pixel is background (enclosed NaN then makes a hole).
    NaN pixels do not enter the confidences.

    Args:
      raster: [H, W] or [H, W, 1] numeric array (probability, logit, mask or signed distance).
      image_id: tile id stored in every record.
      threshold: building where ``raster > threshold``; default per ``kind``
        (probability 0.5, logit 0, mask 0, sdf 0).
      kind: ``"probability" | "logit" | "mask" | "sdf"``; decides the default threshold and the
        confidence (see :func:`confidence_map`).
      min_area: polygons with area < min_area are dropped (area in output units: pixels, or
        map units when ``transform`` is given).
      simplify: Douglas-Peucker tolerance (output units) applied after the area filter, with
        topology preserved; 0 = none.
      sdf: optional signed-distance raster [H, W] (pixels, positive inside) used to split
        touching buildings (seeds where sdf > ``sdf_level``, then the distance-based watershed of
        :func:`split_footprint`). May be ``raster`` itself when kind == "sdf".
      min_seed_area: seeds smaller than this (pixels) are ignored when splitting.
      contact: optional raster [H, W] (e.g. the FCN's contact logits): pixels where it is
        > ``contact_threshold`` never seed, so a predicted shared wall splits two buildings
        (with or without ``sdf``).
      merge_level: optional; with ``sdf``, regions split apart whose shared boundary has a
        median ``sdf`` above it are merged again (:func:`merge_regions`: a roof ridge dips
        the predicted interior less than a wall between two buildings).
      probability: optional per-pixel probability raster [H, W] for the confidences; default
        ``confidence_map(raster, kind)``.
      transform: optional GDAL tuple or Affine; polygons are then in map coordinates.

    Returns:
      One :class:`Building` per polygon, in rasterio's tracing order. Polygons are traced with
      ``rasterio.features.shapes`` (4-connected, pixel-corner vertices, holes kept), repaired
      with ``make_valid`` when invalid (a MultiPolygon result gives one building per part).
      ``confidence`` = mean of the probability raster over the pixels of the building's label
      (its 4-connected region, or its sdf-split region).
    """
    from rasterio import features
    from scipy import ndimage

    raster = _as_2d(raster, "raster")
    if kind not in DEFAULT_THRESHOLDS:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_THRESHOLDS)}, got {kind!r}")
    if nan not in ("fill", "background"):
        raise ValueError(f"nan must be 'fill' or 'background', got {nan!r}")
    threshold = DEFAULT_THRESHOLDS[kind] if threshold is None else float(threshold)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    source = raster
    if np.issubdtype(raster.dtype, np.floating) and nan == "fill":
        missing = np.isnan(raster)
        if missing.any():
            enclosed = ndimage.binary_fill_holes(raster > threshold) & missing
            if enclosed.any():
                raster = raster.copy()
                raster[enclosed] = np.nextafter(raster.dtype.type(threshold), np.inf)
                if sdf is source:
                    sdf = raster
    labels, n = label_footprint(raster, threshold, sdf, sdf_level, min_seed_area, contact,
                                contact_threshold, merge_level)
    if n == 0:
        return []
    prob = confidence_map(source, kind) if probability is None else _as_2d(probability, "probability")
    if prob.shape != raster.shape:
        raise ValueError(f"probability shape {prob.shape} differs from raster shape {raster.shape}")
    prob = np.asarray(prob, dtype=np.float64)
    means = np.zeros(n + 1, dtype=np.float64)
    index = np.arange(1, n + 1)
    if np.isnan(prob).any():   # NaN pixels (filled into buildings) do not vote
        counts = ndimage.sum(~np.isnan(prob), labels, index)
        means[1:] = ndimage.sum(np.nan_to_num(prob), labels, index) / np.maximum(counts, 1)
    else:
        means[1:] = ndimage.mean(prob, labels, index)
    affine = to_affine(transform) if transform is not None else None
    kwargs = {"transform": affine} if affine is not None else {}
    traced = list(features.shapes(labels, mask=labels > 0, connectivity=4, **kwargs))
    polys = traced_polygons([geojson for geojson, _ in traced])
    valid = shapely.is_valid(polys)
    areas = shapely.area(polys)
    out = []
    for polygon, (_, value), ok, area in zip(polys, traced, valid, areas):
        if ok:  # the common case, decided for all polygons at once
            if area < min_area:
                continue
            parts = [polygon]
        else:
            parts = [q for q in repair_polygon(polygon) if q.area >= min_area]
        for part in parts:
            if simplify > 0:
                part = shapely.simplify(part, simplify, preserve_topology=True)
            out.append(Building(image_id, part, float(means[int(value)])))
    return out


def traced_polygons(geojsons: Sequence[dict]) -> np.ndarray:
    """shapely Polygons (object array [N]) of GeoJSON-like Polygon dicts, e.g. what
    ``rasterio.features.shapes`` yields: all rings assembled in two vectorised calls
    (``shapely.linearrings`` and ``shapely.polygons`` with indices), not one
    ``shapely.geometry.shape`` per polygon (7x faster on a tile's ~80 polygons)."""
    if not geojsons:
        return np.empty(0, dtype=object)
    rings = [ring for g in geojsons for ring in g["coordinates"]]
    xy = np.array([point for ring in rings for point in ring], dtype=np.float64)[:, :2]
    ring_of_point = np.repeat(np.arange(len(rings)), [len(ring) for ring in rings])
    owner = np.repeat(np.arange(len(geojsons)), [len(g["coordinates"]) for g in geojsons])
    return shapely.polygons(shapely.linearrings(xy, indices=ring_of_point), indices=owner)


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
      cell_size: pixels per cell S (``sn_tf.cells``: the model's ``cell_size``, 16 or 8).
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
      orient: [N, 3] gliding parameters (alpha, beta, r) of each box (``sn_tf.rects``).
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


def rotated_nms(boxes, orient, scores, iou: float = 0.1,
                gate: float = rect_ops.DEFAULT_GATE) -> tuple[np.ndarray, ...]:
    """Group oriented candidates by greedy non-maximum suppression on their rectangles,
    with coverage-weighted voting.

    Each candidate's rectangle is ``sn_tf.rects.rects_from_gliding`` of its box and
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
    i, j = _overlapping_pairs(shapely.polygons(quads), iou)
    means, params, counts, mean_scores = _weighted_groups(
        _greedy_groups(len(boxes), i, j, scores), boxes, orient, scores)
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
    """float64 [N, 3] (alpha, beta, r) of the candidate cells (row, col) [N, 2]."""
    orient = np.asarray(orient, dtype=np.float64)
    if orient.ndim != 3 or orient.shape[:2] != tuple(shape) or orient.shape[2] < 3:
        raise ValueError(f"orient: expected shape {tuple(shape) + (3,)}, got {orient.shape}")
    return orient[cells[:, 0], cells[:, 1], :3]


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
    and obliquity r of each cell's box, ``sn_tf.rects``) makes the buildings rotated
    rectangles: grouping must then be "clusters" (:func:`merge_oriented_clusters`, with
    ``group_threshold`` and ``eps``) or "rotated_nms" (:func:`rotated_nms` with IoU
    ``nms_iou``), both coverage-weighted means of boxes and parameters, and each group's
    rectangle is ``sn_tf.rects.rects_from_gliding`` of its mean box and parameters (its
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


# ----------------------------------------------------------------------------------------------
# Writers


def polygon_wkt(polygon: Polygon, holes: str = "keep", decimals: int | None = None) -> str:
    """SpaceNet WKT of one Polygon: ``POLYGON ((x y, ...),(x y, ...))``, 2D.

    Rings are separated by ``),(`` with no space (what the official tester parses);
    ``holes="drop"`` writes the exterior ring only. Empty -> ``POLYGON EMPTY``.
    """
    if holes not in ("keep", "drop"):
        raise ValueError(f"holes must be 'keep' or 'drop', got {holes!r}")
    if polygon.is_empty:
        return "POLYGON EMPTY"
    return wkt_texts([polygon], holes, decimals)[0]


def _rows(buildings: Iterable[Building], image_ids: Sequence[str] | None):
    """(image_id, building_id, polygon or None, confidence) rows, grouped by image.

    Images keep their first-appearance order (then ``image_ids`` order for the rest); each
    building's Polygon parts get consecutive BuildingIds from 0 per image; images without a
    polygon get one ``(image_id, -1, None, 1.0)`` row.
    """
    per_image: dict[str, list[tuple[Polygon, float]]] = {}
    for b in buildings:
        parts = per_image.setdefault(str(b.image_id), [])
        for part in polygon_parts(b.polygon):
            parts.append((part, float(b.confidence)))
    for image_id in image_ids or ():
        per_image.setdefault(str(image_id), [])
    for image_id, parts in per_image.items():
        if not parts:
            yield image_id, -1, None, 1.0
        for k, (part, conf) in enumerate(parts):
            yield image_id, k, part, conf


def write_spacenet_csv(buildings: Iterable[Building], path: str | os.PathLike,
                       image_ids: Sequence[str] | None = None, holes: str = "keep",
                       decimals: int | None = None) -> int:
    """Write a SpaceNet submission CSV; returns the number of data rows written.

    Header ``ImageId,BuildingId,PolygonWKT_Pix,Confidence``; WKT in double quotes; polygons
    must be in PIXEL coordinates. MultiPolygons (and collections) are split into one row per
    Polygon part, never written as MULTIPOLYGON. Pass the full list of tile ids in
    ``image_ids`` to get an ``ImageId,-1,POLYGON EMPTY,1`` row for each tile without buildings.
    ``decimals``: None = shortest exact float text, else fixed decimals (SpaceNet uses 2).
    """
    rows = list(_rows(buildings, image_ids))
    for image_id in {r[0] for r in rows}:
        if "," in image_id or '"' in image_id:
            raise ValueError(f"image id {image_id!r} contains a comma or quote")
    texts = wkt_texts([r[2] for r in rows], holes, decimals)
    lines = [f'{image_id},{bid},"{text}",{float(conf)!r}' if polygon is not None
             else f"{image_id},{bid},POLYGON EMPTY,{float(conf)!r}"
             for (image_id, bid, polygon, conf), text in zip(rows, texts)]
    with open(path, "w", newline="") as f:
        f.write(CSV_HEADER + "\n")
        if lines:
            f.write("\n".join(lines) + "\n")
    return len(lines)


def wkt_texts(polygons: Sequence, holes: str = "keep", decimals: int | None = None) -> list:
    """:func:`polygon_wkt` of many Polygons at once; ``None`` entries give None.

    Coordinates: shortest round-trip text (``repr``, "3" for 3.0; decimals None) or fixed
    decimals, 2D, no ``-0``; rings joined by ``),(``. The rings and coordinates come out of
    GEOS in one vectorised call each; only the number formatting is Python (GEOS's own WKT
    writer does not round-trip every float exactly).
    """
    if holes not in ("keep", "drop"):
        raise ValueError(f"holes must be 'keep' or 'drop', got {holes!r}")
    out = [None] * len(polygons)
    index = [i for i, g in enumerate(polygons) if g is not None]
    if not index:
        return out
    geoms = np.asarray([polygons[i] for i in index], dtype=object)
    if holes == "keep":
        rings, ring_owner = shapely.get_rings(geoms, return_index=True)
    else:
        rings, ring_owner = shapely.get_exterior_ring(geoms), np.arange(len(geoms))
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    coords = coords + 0.0  # -0.0 -> 0.0
    flat = coords.ravel()
    if decimals is None and np.array_equal(flat, np.round(flat)) and np.abs(flat).max() < 2 ** 52:
        numbers = list(map(str, flat.astype(np.int64).tolist()))  # pixel corners: integers
    elif decimals is None:
        numbers = [t[:-2] if t.endswith(".0") else t for t in map(repr, flat.tolist())]
    else:
        fmt = f"{{:.{int(decimals)}f}}"
        numbers = [fmt.format(v) for v in flat.tolist()]
        numbers = ["0" if float(t) == 0 and t.startswith("-") else t for t in numbers]
    points = [f"{x} {y}" for x, y in zip(numbers[::2], numbers[1::2])]
    ring_end = np.cumsum(np.bincount(coord_ring, minlength=len(rings))).tolist()
    ring_text = ["(" + ", ".join(points[a:b]) + ")"
                 for a, b in zip([0] + ring_end[:-1], ring_end)]
    per_polygon: list[list[str]] = [[] for _ in index]
    for owner, text in zip(ring_owner.tolist(), ring_text):
        per_polygon[owner].append(text)
    for i, (k, texts) in enumerate(zip(index, per_polygon)):
        out[k] = "POLYGON (" + ",".join(texts) + ")" if texts else "POLYGON EMPTY"
    return out


def crs_name(crs) -> str | None:
    """GeoJSON ``crs`` name for a CRS (string such as ``"EPSG:32616"`` or a rasterio CRS).

    EPSG:4326 (written lon, lat) -> ``urn:ogc:def:crs:OGC:1.3:CRS84``; EPSG:n ->
    ``urn:ogc:def:crs:EPSG::n``; anything else -> its string form.
    """
    if crs is None:
        return None
    text = crs if isinstance(crs, str) else (crs.to_string() if hasattr(crs, "to_string") else str(crs))
    match = re.fullmatch(r"\s*(?:EPSG|epsg):(\d+)\s*", text)
    if match:
        code = int(match.group(1))
        return "urn:ogc:def:crs:OGC:1.3:CRS84" if code == 4326 else f"urn:ogc:def:crs:EPSG::{code}"
    return text


def geojson_feature_collection(buildings: Iterable[Building], transform=None, crs=None) -> dict:
    """GeoJSON FeatureCollection dict of the buildings' Polygon parts.

    With ``transform``, the (pixel) polygons are mapped to map coordinates; without it they are
    written as they are. Properties: ``image_id``, ``building_id`` (0.. per image, as in the
    CSV), ``confidence``. ``crs`` adds a named ``crs`` member (see :func:`crs_name`).
    """
    features = []
    for image_id, bid, polygon, conf in _rows(buildings, None):
        if polygon is None:
            continue
        if transform is not None:
            polygon = pixel_to_map(polygon, transform)
        features.append({
            "type": "Feature",
            "properties": {"image_id": image_id, "building_id": bid, "confidence": conf},
            "geometry": shapely.geometry.mapping(polygon),
        })
    collection = {"type": "FeatureCollection"}
    name = crs_name(crs)
    if name is not None:
        collection["crs"] = {"type": "name", "properties": {"name": name}}
    collection["features"] = features
    return collection


def write_geojson(buildings: Iterable[Building], path: str | os.PathLike, transform=None,
                  crs=None) -> int:
    """Write :func:`geojson_feature_collection` to ``path``; returns the number of features.

    The text is assembled from GEOS's GeoJSON writer (vectorised), not ``json.dump`` of
    dicts (~5x faster); ``json.load`` of the file equals the collection.
    """
    rows = [r for r in _rows(buildings, None) if r[2] is not None]
    geoms = np.asarray([r[2] for r in rows], dtype=object)
    if transform is not None and len(rows):
        geoms = pixel_to_map(geoms, transform)
    geometry = shapely.to_geojson(geoms) if len(rows) else []
    ids = {image_id: json.dumps(image_id) for image_id in {r[0] for r in rows}}
    features = [f'{{"type": "Feature", "properties": {{"image_id": {ids[image_id]}, '
                f'"building_id": {bid}, "confidence": {json.dumps(float(conf))}}}, '
                f'"geometry": {text}}}'
                for (image_id, bid, _, conf), text in zip(rows, geometry)]
    head = '{"type": "FeatureCollection", '
    name = crs_name(crs)
    if name is not None:
        head += f'"crs": {{"type": "name", "properties": {{"name": {json.dumps(name)}}}}}, '
    with open(path, "w") as f:
        f.write(head + '"features": [' + ", ".join(features) + "]}\n")
    return len(features)


# ----------------------------------------------------------------------------------------------
# Model outputs -> buildings (the one path used by training validation, predict and the demo)

# DetectNet's ``max_boxes`` is per SpaceNet tile area (650 x 650 px): ``outputs_to_buildings``
# scales it with the image area, so a whole scene is not capped at one tile's count.
MAX_BOXES_AREA = 650 * 650

DEFAULT_POSTPROCESS = {
    "fcn": {"threshold": 0.0, "split_with_sdf": True, "sdf_level": 2.0, "min_seed_area": 12,
            "min_area": 20.0, "simplify": 0.0, "contact_threshold": 0.0,
            "interior_threshold": 0.0, "merge_level": None},
    "detectnet": {"threshold": 0.06, "group_threshold": 3, "eps": 0.02, "min_height": 10.0,
                  "max_boxes": 450, "grouping": "opencv", "rect_gate": rect_ops.DEFAULT_GATE,
                  "nms_iou": 0.1},
}


def postprocess_params(kind: str, overrides: dict | None = None) -> dict:
    """Default post-processing of a model kind, updated with ``overrides``."""
    if kind not in DEFAULT_POSTPROCESS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(DEFAULT_POSTPROCESS)}")
    params = dict(DEFAULT_POSTPROCESS[kind])
    unknown = set(overrides or {}) - set(params)
    if unknown:
        raise ValueError(f"unknown {kind} post-processing parameter(s) {sorted(unknown)}; "
                         f"known: {sorted(params)}")
    params.update(overrides or {})
    known = sorted(set(GROUPINGS) | set(ORIENTED_GROUPINGS))
    if kind == "detectnet" and params["grouping"] not in known:  # fail at config time
        raise ValueError(f"grouping must be one of {known}, got {params['grouping']!r}")
    return params


def outputs_to_buildings(kind: str, outputs: dict, image_id: str, *,
                         image_size: tuple[int, int], params: dict | None = None,
                         cell_size: int = DEFAULT_CELL_SIZE) -> list[Building]:
    """One image's raw model outputs -> building records in PIXEL coordinates.

    kind "fcn": ``outputs["footprint"]`` logits [H', W', 1] (and ``outputs["sdf"]`` [H', W', 1]
    in pixels, used to split touching buildings: seeds where sdf > ``sdf_level``; with an
    ``outputs["interior"]`` [H', W', 1] (logits of the building cores) the seeds are instead
    where interior > ``interior_threshold``; ``outputs["contact"]`` logits [H', W', 1]
    when the model has them: pixels with contact logit > ``contact_threshold`` never seed;
    ``merge_level`` (None: off) joins split regions whose boundary stays above it in the
    seed raster; ``split_with_sdf`` False: no splitting);
    kind "detectnet": ``outputs["coverage"]``
    [h, w, 1] and ``outputs["bbox"]`` [h, w, 4], and for an oriented model
    ``outputs["orient"]`` [h, w, 3] (then the buildings are rotated rectangles, see
    :func:`buildings_from_detectnet`) on a grid of ``cell_size`` pixel cells (the model's,
    ``ModelInfo.cell_size``; FCN outputs ignore it). ``image_size`` = (H, W) of the valid image
    (outputs of padded inputs are cropped to it). ``params``: ``postprocess_params(kind)``
    overrides; ``min_area`` is in pixels; DetectNet's ``max_boxes`` counts per
    ``MAX_BOXES_AREA`` pixels of the image (never fewer than ``max_boxes``). Map coordinates
    come later, from the writers.
    """
    p = postprocess_params(kind, params)
    height, width = image_size
    if kind == "fcn":
        logits = np.asarray(outputs["footprint"])[:height, :width, 0]
        # seeds: the interior head's cores (logit > interior_threshold) when the model has
        # one, else the sdf's (sdf > sdf_level)
        seeds, level = None, float(p["sdf_level"])
        if p["split_with_sdf"]:
            if outputs.get("interior") is not None:
                seeds, level = outputs["interior"], float(p["interior_threshold"])
            else:
                seeds = outputs["sdf"]
            seeds = np.asarray(seeds)[:height, :width, 0]
        contact = outputs.get("contact")
        if contact is not None:
            contact = np.asarray(contact)[:height, :width, 0]
        return polygons_from_raster(logits, image_id, threshold=p["threshold"], kind="logit",
                                    min_area=p["min_area"], simplify=p["simplify"], sdf=seeds,
                                    sdf_level=level,
                                    min_seed_area=int(p["min_seed_area"]), contact=contact,
                                    contact_threshold=float(p["contact_threshold"]),
                                    merge_level=None if p["merge_level"] is None
                                    else float(p["merge_level"]))
    return buildings_from_detectnet(
        outputs["coverage"], outputs["bbox"], image_id, cell_size=cell_size,
        threshold=p["threshold"], group_threshold=p["group_threshold"], eps=p["eps"],
        min_height=p["min_height"], grouping=p["grouping"], image_size=(height, width),
        max_boxes=max(int(p["max_boxes"]),
                      math.ceil(p["max_boxes"] * height * width / MAX_BOXES_AREA)),
        orient=outputs.get("orient"), rect_gate=p["rect_gate"], nms_iou=p["nms_iou"])
