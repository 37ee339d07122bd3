"""Rasters -> building polygons: the FCN's outputs, or any model's raster (TensorFlow-free).

``polygons_from_raster`` thresholds a probability / logit / mask / signed-distance raster,
splits touching buildings with seeds (``split_footprint``: sdf > level, or interior
components), joins regions split along a roof ridge (``merge_regions``) and traces one
polygon per building (``traced_polygons``), with the mean confidence inside it.
Coordinate conventions: ``sn_tf.head.polygons``.
"""

from __future__ import annotations

import math
from itertools import chain
from typing import Sequence

import numpy as np
import shapely

from sn_tf.spacenet.buildings import Building
from sn_tf.spacenet.geo import repair_polygon, to_affine



# Default threshold per raster kind (a pixel is building where value > threshold).
DEFAULT_THRESHOLDS = {"probability": 0.5, "logit": 0.0, "mask": 0.0, "sdf": 0.0}

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
    if kind in ("logit", "sdf"):  # 1 / (1 + exp(-x)) in float64, in one new array
        out = np.negative(np.asarray(raster), dtype=np.float64)
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        np.add(out, 1.0, out=out)
        return np.divide(1.0, out, out=out)
    raster = np.asarray(raster, dtype=np.float64)
    if kind == "probability":
        return raster
    if kind == "mask":
        return np.ones_like(raster)
    raise ValueError(f"kind must be one of {sorted(DEFAULT_THRESHOLDS)}, got {kind!r}")


def _has_nan(array: np.ndarray) -> bool:
    """Whether a numeric array holds a NaN (its minimum is NaN: no [H, W] bool temporary)."""
    return (np.issubdtype(array.dtype, np.floating) and array.size > 0
            and bool(np.isnan(array.min())))


def _label_means(labels: np.ndarray, mask: np.ndarray, n: int, source: np.ndarray, kind: str,
                 probability=None, source_nan: bool | None = None) -> np.ndarray:
    """float64 [n + 1]: mean probability per label (index 0 unused, 0.0) over the labelled
    pixels only (``mask`` = labels > 0, [H, W] bool).

    The probability is ``confidence_map(source, kind)`` or the ``probability`` raster [H, W],
    evaluated at the labelled pixels alone; sums are ``np.bincount`` over them in raster
    order, which is what ``scipy.ndimage.mean`` / ``sum`` add up over the whole raster
    (the background only feeds bin 0), so the means are the same bits. NaN rule as before:
    when the probability raster holds a NaN anywhere, NaN pixels do not vote (mean over the
    others, 0 when none is left). ``source_nan``: whether ``source`` holds a NaN, when
    already known (else checked here).
    """
    lab = labels[mask]
    if probability is None:
        values = confidence_map(source[mask], kind)
        any_nan = kind != "mask" and (_has_nan(source) if source_nan is None else source_nan)
    else:
        prob = _as_2d(probability, "probability")
        if prob.shape != labels.shape:
            raise ValueError(f"probability shape {prob.shape} differs from raster shape "
                             f"{labels.shape}")
        values = np.asarray(prob[mask], dtype=np.float64)
        any_nan = _has_nan(prob)
    means = np.zeros(n + 1, dtype=np.float64)
    if any_nan:   # NaN pixels (filled into buildings) do not vote
        valid = ~np.isnan(values)
        counts = np.bincount(lab, weights=valid, minlength=n + 1)[1:]
        sums = np.bincount(lab, weights=np.nan_to_num(values), minlength=n + 1)[1:]
        means[1:] = sums / np.maximum(counts, 1)
    else:
        counts = np.bincount(lab, minlength=n + 1)[1:]
        means[1:] = np.bincount(lab, weights=values, minlength=n + 1)[1:] / counts
    return means


def _nearest_seed(seeds: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Label (int [K]) of the nearest seed pixel (Euclidean, pixel centres) of the K pixels
    where ``where`` (bool [H, W]) is True, in raster order; ``seeds``: int [H, W], 0 = none."""
    from scipy import ndimage

    rows, cols = ndimage.distance_transform_edt(seeds == 0, return_distances=False,
                                                return_indices=True)
    return seeds[rows[where], cols[where]]


def split_footprint(footprint: np.ndarray, sdf: np.ndarray | None, level: float,
                    min_seed_area: int = 0, barrier: np.ndarray | None = None,
                    seed_erosion: int = 0) -> tuple[np.ndarray, int]:
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
      seed_erosion: the seed mask is eroded this many times (4-neighbour cross) before its
        regions are labelled: a bridge at most ``2 * seed_erosion`` pixels wide, where a
        predicted core leaks across a shared wall, no longer joins two seeds (0 = off).
        ``min_seed_area`` counts the eroded seed's pixels.

    Returns:
      (labels int32 [H, W], n): 0 = background, 1..n = one building each.

    A distance-based watershed restricted to the footprint: every pixel of a 4-connected
    footprint component joins the nearest seed (Euclidean distance between pixel centres)
    of the SAME component, so the cut between two touching buildings falls midway between
    their cores (the sdf valley). A component without any seed stays one building.
    Labels may be non-4-connected; tracing then gives one polygon per 4-connected piece.
    """
    labels, n, _ = _split_footprint(footprint, sdf, level, min_seed_area, barrier, seed_erosion)
    return labels, n


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal runs of the True pixels of a bool [H, W] mask, in raster order.

    Returns (start, stop), intp [R] each, as keys ``row * (W + 1) + column``: the run's
    first pixel and one past its last (stop <= W, so a row's keys stay below the next
    row's). Two extra columns of False pad every row, so no run crosses a row end.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=bool)
    padded[:, 1:-1] = mask
    edges = np.flatnonzero(padded[:, 1:] != padded[:, :-1])  # [H, W + 1] flat
    return edges[::2], edges[1::2]


def _run_components(run_sets: Sequence[tuple[np.ndarray, np.ndarray]], stride: int
                    ) -> list[tuple[int, np.ndarray]]:
    """4-connected components of each set of :func:`_runs` runs (keys with ``stride`` =
    W + 1), all sets in one graph: [(n, label of each run, intp [R] in 1..n)].

    Labels follow the raster order of each component's first pixel, as ``ndimage.label``
    numbers them. Run b touches the runs of the row above whose columns overlap its own:
    those with stop > start_b - stride and start < stop_b - stride, a contiguous range.
    The sets are stacked below one another, an empty row apart, so they never touch.
    """
    starts, stops, shift = [], [], 0
    for start, stop in run_sets:
        starts.append(start + shift)
        stops.append(stop + shift)
        if start.size:
            shift = (int(stops[-1][-1]) // stride + 2) * stride
    start, stop = np.concatenate(starts), np.concatenate(stops)
    lo = np.searchsorted(stop, start - stride, "right")
    count = np.maximum(np.searchsorted(start, stop - stride, "left") - lo, 0)
    lower = np.repeat(np.arange(start.size), count)  # touching pairs (upper, lower)
    before = np.cumsum(count)
    upper = np.arange(lower.size) + np.repeat(lo - before + count, count)
    labels = _component_numbers(start.size, upper, lower)
    out = []
    for part in np.split(labels, np.cumsum([s.size for s in starts])[:-1]):
        low = int(part.min()) if part.size else 0  # the sets' components never mix
        out.append((int(part.max()) - low + 1 if part.size else 0, part - low + 1))
    return out


def _component_numbers(size: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the graph of nodes 0..size-1 and edges (a[i], b[i]) (int
    [E] each): intp [size], 0.. numbered in the order of each component's smallest node.

    Union-find in numpy: the larger root of every edge hooks to the smaller, then every
    node jumps to its root, until no edge spans two trees (a root survives a round only as
    a local minimum: O(log size) rounds); a root is its component's smallest node."""
    parent = np.arange(size)
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(ra[differ], rb[differ]),
                      np.minimum(ra[differ], rb[differ]))
        while True:  # every node straight to its root
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    return (np.cumsum(parent == np.arange(size)) - 1)[parent]


def _painted(shape: tuple[int, int], origin: tuple[int, int], start: np.ndarray,
             stop: np.ndarray, stride: int, values, dtype) -> np.ndarray:
    """[h, w] array of ``dtype``, 0 outside the runs (:func:`_runs` keys with ``stride``)
    and ``values`` (one per run, or a scalar) on them; ``origin`` (row, column) is the
    array's top-left pixel in the runs' raster (every run must lie inside)."""
    out = np.zeros(shape, dtype=dtype)
    lengths = stop - start
    before = np.cumsum(lengths) - lengths  # pixels of the runs before each run
    # flat index in ``out`` of each run's first pixel: row * W + column, from the origin
    first = start - (start // stride) * (stride - shape[1]) - origin[0] * shape[1] - origin[1]
    pixels = np.arange(int(lengths.sum())) + np.repeat(first - before, lengths)
    out.ravel()[pixels] = values if np.ndim(values) == 0 else np.repeat(values, lengths)
    return out


def _split_footprint(footprint, sdf, level, min_seed_area, barrier, seed_erosion=0):
    """:func:`split_footprint` plus [(window slices, bool mask of the component in it)] of
    the components that were split (several seeds): the only places where two labels touch.

    Footprint and seeds are labelled as runs of pixels (:func:`_runs`, same numbering as
    ``ndimage.label``): the tables, bounding boxes and windows come from the runs, and the
    label raster is written once."""
    from scipy import ndimage

    footprint = np.asarray(footprint, dtype=bool)
    seed_mask = footprint if sdf is None else footprint & (np.asarray(sdf) > level)
    if barrier is not None:
        seed_mask = seed_mask & ~np.asarray(barrier, bool)
    if seed_erosion > 0:
        seed_mask = ndimage.binary_erosion(seed_mask,
                                           structure=ndimage.generate_binary_structure(2, 1),
                                           iterations=int(seed_erosion))
    shape, stride = footprint.shape, footprint.shape[1] + 1
    f_start, f_stop = _runs(footprint)
    s_start, s_stop = _runs(seed_mask)
    (n_comp, comp_of_run), (n_seeds, seed_of_run) = _run_components(
        [(f_start, f_stop), (s_start, s_stop)], stride)
    # seeds lie inside the footprint: a seed run's component is that of the run holding it
    comp_of_seed_run = comp_of_run[np.searchsorted(f_start, s_start, "right") - 1]
    if n_seeds and min_seed_area > 1:
        # dropping whole seeds keeps the others' scan order: renumber by lookup
        big = np.bincount(seed_of_run, weights=s_stop - s_start,
                          minlength=n_seeds + 1) >= min_seed_area
        big[0] = False
        renumber = np.zeros(n_seeds + 1, dtype=np.intp)
        n_seeds = int(big.sum())
        renumber[big] = np.arange(1, n_seeds + 1, dtype=np.intp)
        seed_of_run = renumber[seed_of_run]
    if n_seeds == 0:
        return _painted(shape, (0, 0), f_start, f_stop, stride, comp_of_run, np.int32), \
            int(n_comp), []
    seed_component = np.zeros(n_seeds + 1, dtype=np.int64)
    seed_component[seed_of_run] = comp_of_seed_run
    per_comp = np.bincount(seed_component[1:], minlength=n_comp + 1)
    # label of each component's pixels: its one seed; none: a label after the seeds' (in
    # component order); several: decided per pixel below. Labels stay consecutive: every
    # seed keeps at least its own pixels.
    comp_label = np.zeros(n_comp + 1, dtype=np.int32)
    single = per_comp[seed_component[1:]] == 1
    comp_label[seed_component[1:][single]] = np.arange(1, n_seeds + 1, dtype=np.int32)[single]
    unseeded = np.flatnonzero(per_comp[1:] == 0) + 1
    comp_label[unseeded] = n_seeds + 1 + np.arange(unseeded.size, dtype=np.int32)
    multi = per_comp > 1
    multi[0] = False
    comp_label[multi] = -np.flatnonzero(multi)  # until their pixels are decided: -component
    labels = _painted(shape, (0, 0), f_start, f_stop, stride, comp_label[comp_of_run],
                      np.int32)
    windows = []
    comp_runs = _grouped(comp_of_run, multi)
    seed_runs = _grouped(np.where(seed_of_run > 0, comp_of_seed_run, 0), multi)
    for (comp, runs), (_, seed_runs_of_comp) in zip(comp_runs, seed_runs):
        # every pixel joins the nearest seed of its own component, inside its bounding box
        start, stop = f_start[runs], f_stop[runs]
        row = start // stride
        top, left = int(row[0]), int((start - row * stride).min())
        window = (slice(top, int(row[-1]) + 1), slice(left, int((stop - row * stride).max())))
        size = (window[0].stop - top, window[1].stop - left)
        own = labels[window] == -comp
        local = _painted(size, (top, left), s_start[seed_runs_of_comp],
                         s_stop[seed_runs_of_comp], stride, seed_of_run[seed_runs_of_comp],
                         np.intp)
        labels[window][own] = _nearest_seed(local, own)
        windows.append((window, own))
    return labels, n_seeds + int(unseeded.size), windows


def _grouped(group: np.ndarray, wanted: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """[(g, indices (intp, ascending) of the items of group g)] for the groups g with
    ``wanted[g]`` (bool [G]) that hold items, in increasing g; ``group``: int [N]."""
    items = np.flatnonzero(wanted[group])
    items = items[np.argsort(group[items], kind="stable")]
    ids, first = np.unique(group[items], return_index=True)
    return list(zip(ids.tolist(), np.split(items, first[1:])))


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
    labels = np.asarray(labels)
    table, m = _merge_table(labels, value, level, windows)
    return (labels.astype(np.int32) if table is None else np.take(table, labels)), m


def _merge_table(labels: np.ndarray, value, level: float, windows=None, n: int | None = None):
    """:func:`merge_regions`' relabelling: (table int32 [n + 1] from old to new labels, m),
    or (None, n) when no two regions merge (the labels stay as they are); ``n``: the
    largest label when known (else read from ``labels``)."""
    value = np.asarray(value)
    if n is None:
        n = int(labels.max()) if labels.size else 0
    if windows is None:
        windows = [((slice(None), slice(None)), labels > 0)]
    lab, val, own, below = _stacked_windows(labels, value, windows)
    upper = np.flatnonzero(own)  # vertical pairs: pixels of a window and the one below
    lower = upper + below[upper]
    upper, lower = upper[lower < own.size], lower[lower < own.size]
    keys, vals = [], []
    for a, b, va, vb, inside in (
            (lab[:-1], lab[1:], val[:-1], val[1:], own[:-1] & own[1:]),
            (lab[upper], lab[lower], val[upper], val[lower], own[lower])):
        edge = inside & (a != b)
        lo, hi = np.minimum(a[edge], b[edge]), np.maximum(a[edge], b[edge])
        keys.append(lo.astype(np.int64) * (n + 1) + hi)
        vals.append((va[edge] + vb[edge]) / 2)
    keys, vals = np.concatenate(keys), np.concatenate(vals)
    if keys.size == 0:
        return None, n
    order = np.lexsort((vals, keys))
    keys, vals = keys[order], vals[order]
    pair, start, count = np.unique(keys, return_index=True, return_counts=True)
    median = vals[start + (count - 1) // 2]
    join = pair[median > level]
    if join.size == 0:
        return None, n
    # merged groups -> consecutive labels in the order of their smallest label; 0 stays 0
    table = _component_numbers(n + 1, join // (n + 1), join % (n + 1)).astype(np.int32)
    return table, int(table.max())


def _stacked_windows(labels: np.ndarray, value: np.ndarray, windows
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The windows' labels, values (float64) and masks [(window slices, bool mask)], each
    window padded with a masked-out column and row and flattened, one after another:
    (labels, values, mask, below), [S] each; ``below``: how far the pixel below each one
    is (its window's width + 1). Horizontal pixel pairs are neighbours in the flat arrays,
    vertical ones ``below`` apart; no pair of two unmasked pixels spans two windows."""
    shapes = [own.shape for _, own in windows]
    sizes = [(h + 1) * (w + 1) for h, w in shapes]
    lab = np.zeros(sum(sizes), dtype=labels.dtype)
    val = np.zeros(sum(sizes), dtype=np.float64)
    mask = np.zeros(sum(sizes), dtype=bool)
    start = 0
    for (window, own), (h, w), size in zip(windows, shapes, sizes):
        block = (slice(start, start + size),)
        lab[block].reshape(h + 1, w + 1)[:h, :w] = labels[window]
        val[block].reshape(h + 1, w + 1)[:h, :w] = value[window]
        mask[block].reshape(h + 1, w + 1)[:h, :w] = own
        start += size
    return lab, val, mask, np.repeat(np.array([w + 1 for _, w in shapes], np.intp), sizes)


def label_footprint(raster: np.ndarray, threshold: float, sdf: np.ndarray | None = None,
                    sdf_level: float = 2.0, min_seed_area: int = 0,
                    contact: np.ndarray | None = None, contact_threshold: float = 0.0,
                    merge_level: float | None = None, seed_erosion: int = 0
                    ) -> tuple[np.ndarray, int]:
    """Threshold ``raster`` (value > threshold; NaN is background) and label its buildings.

    Without ``sdf`` and ``contact``: 4-connected components. With either:
    :func:`split_footprint`, whose seeds leave out the pixels where ``contact`` (a raster
    like ``raster``, e.g. contact logits) > ``contact_threshold``; with ``sdf`` and a
    ``merge_level``, split regions whose boundary stays above it in ``sdf`` are joined
    again (:func:`merge_regions`); ``seed_erosion``: see :func:`split_footprint`.
    Returns (labels int32 [H, W], number of labels).
    """
    return _labelled(np.asarray(raster) > threshold, sdf, sdf_level, min_seed_area, contact,
                     contact_threshold, merge_level, seed_erosion)


def _labelled(footprint: np.ndarray, sdf, sdf_level, min_seed_area, contact, contact_threshold,
              merge_level, seed_erosion) -> tuple[np.ndarray, int]:
    """:func:`label_footprint` of its thresholded raster ``footprint`` (bool [H, W]). Every
    footprint pixel gets a label: ``labels > 0`` is ``footprint``."""
    from scipy import ndimage

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
        labels, n, windows = _split_footprint(footprint, sdf, sdf_level, min_seed_area,
                                                 barrier, seed_erosion)
        if sdf is not None and merge_level is not None and windows:
            table, n = _merge_table(labels, sdf, merge_level, windows, n)
            if table is not None:  # else the labels stay (no copy)
                labels = np.take(table, labels)
        return labels, n
    labels, n = ndimage.label(footprint, structure=ndimage.generate_binary_structure(2, 1))
    return labels.astype(np.int32), int(n)


def polygons_from_raster(raster, image_id: str = "", *, threshold: float | None = None,
                         kind: str = "probability", min_area: float = 0.0,
                         simplify: float = 0.0, sdf=None, sdf_level: float = 2.0,
                         min_seed_area: int = 0, probability=None,
                         transform=None, contact=None,
                         contact_threshold: float = 0.0, nan: str = "fill",
                         merge_level: float | None = None,
                         seed_erosion: int = 0) -> list[Building]:
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
      seed_erosion: erode the seed mask this many times before labelling it (breaks thin
        bridges of a predicted core across a shared wall; :func:`split_footprint`).
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
    source_nan = _has_nan(raster)
    if nan == "fill" and source_nan:
        enclosed = ndimage.binary_fill_holes(raster > threshold) & np.isnan(raster)
        if enclosed.any():
            raster = raster.copy()
            raster[enclosed] = np.nextafter(raster.dtype.type(threshold), np.inf)
            if sdf is source:
                sdf = raster
    mask = raster > threshold  # = labels > 0
    labels, n = _labelled(mask, sdf, sdf_level, min_seed_area, contact, contact_threshold,
                          merge_level, int(seed_erosion))
    if n == 0:
        return []
    means = _label_means(labels, mask, n, source, kind, probability, source_nan)
    affine = to_affine(transform) if transform is not None else None
    kwargs = {"transform": affine} if affine is not None else {}
    traced = list(features.shapes(labels, mask=mask, connectivity=4, **kwargs))
    xy, ring_of_point, owner = _traced_arrays([geojson for geojson, _ in traced])
    polys = _assembled(xy, ring_of_point, owner)
    if affine is None:  # pixel corners: GEOS only for the polygons that touch themselves
        valid = ~_self_touching(xy, ring_of_point, owner, labels.shape)
        valid[~valid] = shapely.is_valid(polys[~valid])
    else:
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
    return _assembled(*_traced_arrays(geojsons))


def _traced_arrays(geojsons: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points (float64 [P, 2]), ring of each point (int [P]) and polygon of each ring
    (int [R]) of GeoJSON-like Polygon dicts (rings closed, as rasterio's)."""
    rings = [ring for g in geojsons for ring in g["coordinates"]]
    sizes = [len(ring) for ring in rings]
    xy = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64)
    if xy.size == 2 * sum(sizes):  # (x, y) tuples, as rasterio's: 2x faster than np.array
        xy = xy.reshape(-1, 2)
    else:
        xy = np.array([point for ring in rings for point in ring], dtype=np.float64)[:, :2]
    ring_of_point = np.repeat(np.arange(len(rings)), sizes)
    owner = np.repeat(np.arange(len(geojsons)), [len(g["coordinates"]) for g in geojsons])
    return xy, ring_of_point, owner


def _assembled(xy: np.ndarray, ring_of_point: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """shapely Polygons (object [N]) of :func:`_traced_arrays`' points, rings and owners."""
    if owner.size == 0:
        return np.empty(0, dtype=object)
    return shapely.polygons(shapely.linearrings(xy, indices=ring_of_point), indices=owner)


def _self_touching(xy: np.ndarray, ring_of_point: np.ndarray, owner: np.ndarray,
                   shape: tuple[int, int]) -> np.ndarray:
    """bool [N]: polygon n (of :func:`_traced_arrays`' arrays: pixel corners traced by
    ``features.shapes`` from a raster of ``shape`` (H, W)) visits a vertex twice (closing
    points aside), in one ring or two.

    A polygon traced along pixel edges can only touch itself where two of its pixels meet
    diagonally, and its rings turn there: no shared vertex, no contact, so GEOS would
    find it valid (rings of at least 4 pixel corners, holes inside the shell). Only the
    polygons flagged here need ``shapely.is_valid``.
    """
    n = int(owner[-1]) + 1 if owner.size else 0
    out = np.zeros(n, dtype=bool)
    if xy.size == 0:
        return out
    inner = np.r_[ring_of_point[1:] == ring_of_point[:-1], False]  # not a closing point
    x, y = xy[inner, 0].astype(np.int64), xy[inner, 1].astype(np.int64)
    width, height = shape[1] + 1, shape[0] + 1
    key = (owner[ring_of_point[inner]] * height + y) * width + x
    key.sort()
    out[key[1:][key[1:] == key[:-1]] // (width * height)] = True
    return out
