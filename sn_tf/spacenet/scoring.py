"""The SpaceNet building metric (official SpaceNet 2 tester semantics), numpy + shapely only.

Rules (SPACENET_FACTS.md section 5), all defaults:

1. ``POLYGON EMPTY`` rows and rows with BuildingId -1 add no polygon; they register the image.
2. Truth AND proposal polygons with area < ``min_area`` (20 px) are dropped (20 itself is kept);
   dropped proposals are not false positives.
3. Per image, proposals are ordered by confidence, highest first; ties keep input order.
4. Each proposal in turn takes the still-unmatched truth polygon of its image with the largest
   IoU (the first in truth order on ties); IoU > ``iou_threshold`` (strict; ``>=`` with
   ``iou_inclusive=True``) is a true positive and uses that truth up, otherwise a false positive.
5. Unmatched truth polygons are false negatives.
6. TP/FP/FN are summed per city (first three ``_`` tokens of ImageId); precision, recall and F1
   are each 0 when their denominator is 0 (an image or city with no truth and no proposals
   scores 0, not 1).
7. The SpaceNet 2 score is the plain mean of the F1 of every registered city.

Decisions (documented in the CLI help as well):

* IoU = area(P & T) / (area(P) + area(T) - area(P & T)).
* Invalid (self-intersecting) polygons. Truth polygons are always repaired with ``buffer(0)``
  (official truth files are valid, so this changes nothing there). Proposals are repaired with
  ``buffer(0)`` by default (``repair_proposals=True``): the reference Python scorers (SpaceNet
  utilities, solaris), which produced every published answer we test against, do exactly that,
  and GEOS cannot intersect a self-intersecting ring at all. The official Java tester does not
  repair; with ``repair_proposals=False`` an invalid proposal keeps its raw rings, its area is
  the GEOS area of those rings, and where GEOS cannot compute its overlap with a truth polygon
  that pair counts as IoU 0 (so such a proposal usually becomes a false positive).
* A proposal for an image that has no truth registered is a false positive (its image is
  registered by the proposal and scored with no truth; ``result.warnings`` names such images).
  Proposals of a CITY that has no truth at all are not scored (with a warning): scored, that
  city would enter the mean of city F1 values with F1 0, so one stray ImageId would halve a
  one-city score.
* Coordinate systems. Every input file has a CRS: pixel coordinates for SpaceNet CSVs with
  ``PolygonWKT_Pix`` (and for GeoJSON whose ``crs`` is sn_tf's pixel CRS, :data:`PIXEL_CRS_WKT`),
  EPSG:4326 for CSVs with only ``PolygonWKT_Geo``, the ``crs`` member of a GeoJSON file (CRS84,
  i.e. EPSG:4326, without one, as RFC 7946 says; a GeoJSON without ``crs`` whose coordinates
  leave the longitude/latitude range is read as pixels, with a warning). Files in another map
  CRS than the first truth file are reprojected to it (rasterio, imported only then; a warning
  names both CRSs). Pixel coordinates on one side and map coordinates on the other cannot be
  compared: :class:`ScoreInputError` names both files and CRSs.
* Units. ``min_area``, ``touch_distance`` and ``size_classes`` are in PIXELS, as the SpaceNet
  rule (area >= 20 px). Map inputs are converted with the ground sample distance ``gsd``
  (metres per pixel, default 0.3 = SpaceNet 2): in a projected CRS an area of A m2 is
  A / gsd^2 pixels; in lon/lat degrees, areas are first taken to m2 with the local scale
  (metres per degree squared times cos(latitude)). IoU is a ratio and needs no conversion.
  So GeoJSON in degrees scored against itself keeps its buildings (F1 1), where a 20 deg2 rule
  dropped them all.
* Malformed input (bad WKT, wrong column count, non-numeric Confidence, non-polygon geometry,
  unreadable GeoJSON): ``on_error="raise"`` (default) raises :class:`SpaceNetFormatError`
  naming the file and line (or feature); ``on_error="skip"`` skips the row and records a
  :class:`ReadIssue` in ``ScoreResult.issues``. Comment lines (``#``), blank lines, z values,
  ``-0.0`` and self-intersecting polygons are NOT malformed.

Recall by kind of truth building (``ScoreResult.breakdown``, not part of the official metric):
every kept truth polygon is *touching* when another truth polygon of its image (any truth
polygon, also those dropped by ``min_area``: a merge does not care about the area rule) lies
within ``touch_distance`` of it (default 1 pixel; map inputs converted with ``gsd``),
else *isolated*; and it falls in a size class by its area (``size_classes`` edges, default
100 and 1000: ``area<100``, ``area 100-1000``, ``area>=1000``). For each group, overall and per
city: how many truth buildings it has, how many a proposal matched (TP), and that recall.
A polygon that merges two touching buildings usually matches neither (IoU <= 0.5 with each),
so a low touching recall next to a high isolated recall says the model merges neighbours.

Speed: candidate pairs come from one ``shapely.STRtree`` query per image (vectorised over its
proposals), intersections are one vectorised ``shapely.intersection`` call over all pairs; only
the greedy matching loops in Python, over the sparse candidate lists.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Sequence

import numpy as np
import shapely

from sn_tf.spacenet.buildings import GEOJSON_SUFFIXES, Building, city_of
from sn_tf.spacenet.building_readers import read_buildings, read_files
from sn_tf.spacenet.crs import DEFAULT_GSD, SourceFile, area_to_pixels, to_common_crs, crs_units

#: Default area edges (truth units, pixels for SpaceNet CSVs) of the breakdown's size classes.
SIZE_CLASSES = (100.0, 1000.0)


# ----------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass
class Counts:
    """True/false positives and false negatives with the derived rates (0 on empty denominators)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, other: "Counts") -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    def to_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


@dataclasses.dataclass
class ImageScore(Counts):
    """Counts of one image plus, per kept truth polygon (input order), its best IoU with any
    kept proposal of the image (0 when none overlaps) and its BuildingId (None when unknown)."""

    truth_best_iou: list = dataclasses.field(default_factory=list)
    truth_building_ids: list = dataclasses.field(default_factory=list)
    truth_matched: list = dataclasses.field(default_factory=list)
    truth_touching: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["truth_best_iou"] = [float(v) for v in self.truth_best_iou]
        out["truth_building_ids"] = list(self.truth_building_ids)
        out["truth_matched"] = [bool(v) for v in self.truth_matched]
        out["truth_touching"] = [bool(v) for v in self.truth_touching]
        return out


@dataclasses.dataclass
class GroupRecall:
    """Truth buildings of one group (e.g. touching ones) and how many a proposal matched."""

    n: int = 0
    found: int = 0

    @property
    def recall(self) -> float:
        return self.found / self.n if self.n else 0.0

    def to_dict(self) -> dict:
        return {"n": self.n, "found": self.found, "recall": self.recall}


def size_class_names(edges: Sequence[float]) -> list[str]:
    """Names of the size classes cut at ``edges`` (ascending): ``area<e0``, ``area e0-e1``, ...,
    ``area>=e_last`` (edges printed with ``%g``)."""
    e = [f"{v:g}" for v in edges]
    if not e:
        return ["all sizes"]
    return ([f"area<{e[0]}"] + [f"area {a}-{b}" for a, b in zip(e, e[1:])]
            + [f"area>={e[-1]}"])


def _group_recalls(matched: np.ndarray, touching: np.ndarray, area: np.ndarray,
                   edges: Sequence[float]) -> dict:
    """{group name: GroupRecall} for truth flags ``matched``/``touching`` (bool [N]) and
    ``area`` (float [N]): ``touching``, ``isolated``, then one entry per size class."""
    out = {"touching": GroupRecall(int(touching.sum()), int((matched & touching).sum())),
           "isolated": GroupRecall(int((~touching).sum()), int((matched & ~touching).sum()))}
    size = np.searchsorted(np.asarray(edges, np.float64), area, side="right")
    for k, name in enumerate(size_class_names(edges)):
        inside = size == k
        out[name] = GroupRecall(int(inside.sum()), int((matched & inside).sum()))
    return out


@dataclasses.dataclass
class ScoreResult:
    """Scores per image, per city and overall; ``to_dict()`` is the CLI's JSON."""

    overall: Counts
    cities: dict
    images: dict
    settings: dict
    issues: list = dataclasses.field(default_factory=list)
    breakdown: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)

    @property
    def mean_city_f1(self) -> float:
        """The SpaceNet 2 score: plain mean of the per-city F1 (0 with no city)."""
        return float(np.mean([c.f1 for c in self.cities.values()])) if self.cities else 0.0

    def to_dict(self) -> dict:
        overall = self.overall.to_dict()
        overall["mean_city_f1"] = self.mean_city_f1
        overall["n_images"] = len(self.images)
        overall["n_cities"] = len(self.cities)
        return {"overall": overall,
                "cities": {k: v.to_dict() for k, v in self.cities.items()},
                "images": {k: v.to_dict() for k, v in self.images.items()},
                "breakdown": {scope: {g: v.to_dict() for g, v in groups.items()}
                              for scope, groups in self.breakdown.items()},
                "settings": dict(self.settings),
                "issues": [str(i) for i in self.issues],
                "warnings": list(self.warnings)}

    def touching_recall(self, scope: str = "overall") -> float:
        """Recall over the touching truth buildings of ``scope`` ("overall" or a city)."""
        return self.breakdown[scope]["touching"].recall

    def format_breakdown(self) -> str:
        """Readable table of recall by kind of truth building, one row per city + overall."""
        if not self.breakdown:
            return ""
        groups = list(self.breakdown["overall"])
        scopes = [k for k in self.breakdown if k != "overall"] + ["overall"]
        cells = {scope: [f"{r.recall:.3f} ({r.found}/{r.n})" if r.n else "-"
                         for r in (self.breakdown[scope][g] for g in groups)]
                 for scope in scopes}
        width = 2 + max(len(c) for row in cells.values() for c in row + groups)
        head = f"{'recall by truth building':<28}" + "".join(f"{g:>{width}}" for g in groups)
        lines = [head, "-" * len(head)]
        for scope in scopes:
            if scope == "overall":
                lines.append("-" * len(head))
            lines.append(f"{scope:<28}" + "".join(f"{c:>{width}}" for c in cells[scope]))
        d = self.settings.get("touch_distance")
        lines.append(f"touching: another truth building within {d:g} (truth units) of it")
        return "\n".join(lines)

    def format_table(self) -> str:
        """Readable table: one row per city, then the overall row and the SpaceNet 2 score."""
        head = f"{'city':<28} {'images':>6} {'TP':>7} {'FP':>7} {'FN':>7} {'precision':>9} {'recall':>9} {'F1':>9}"
        lines = [head, "-" * len(head)]
        n_images = {}
        for image_id in self.images:
            n_images[city_of(image_id)] = n_images.get(city_of(image_id), 0) + 1
        rows = list(self.cities.items()) + [("overall", self.overall)]
        for name, c in rows:
            n = n_images.get(name, 0) if name != "overall" else len(self.images)
            if name == "overall":
                lines.append("-" * len(head))
            lines.append(f"{name:<28} {n:>6} {c.tp:>7} {c.fp:>7} {c.fn:>7} "
                         f"{c.precision:>9.4f} {c.recall:>9.4f} {c.f1:>9.4f}")
        lines.append(f"SpaceNet score (mean city F1): {self.mean_city_f1:.6f}")
        if self.breakdown:
            lines += ["", self.format_breakdown()]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Scoring


def _as_records(source, on_error: str, issues: list) -> list[Building]:
    """Records from a path or an iterable of Building / (image_id, polygon[, confidence])."""
    if isinstance(source, (str, os.PathLike)):
        return read_buildings(source, on_error, issues)
    out = []
    for item in source:
        if isinstance(item, Building):
            out.append(item)
        else:
            out.append(Building(str(item[0]), item[1], float(item[2]) if len(item) > 2 else 1.0))
    return out


def _is_single_geojson(source) -> bool:
    return (isinstance(source, (str, os.PathLike)) and pathlib.Path(source).is_file()
            and pathlib.Path(source).suffix.lower() in GEOJSON_SUFFIXES)


@dataclasses.dataclass
class _Side:
    """Kept polygons of one side, sorted by image then input order.

    image: int64 [N] image index; geoms: object [N] shapely geometries; conf: float64 [N];
    area: float64 [N]; valid: bool [N]; bid: list of building ids; start: int64 [n_images + 1]
    CSR offsets of each image's rows; ``every``/``every_start``: the same before the area filter
    (for the touching test of the breakdown).
    """

    image: np.ndarray
    geoms: np.ndarray
    conf: np.ndarray
    area: np.ndarray
    valid: np.ndarray
    bid: list
    start: np.ndarray
    every: np.ndarray = None      # object [M]: every non-empty polygon, also those under min_area
    every_start: np.ndarray = None  # int64 [n_images + 1]: CSR offsets of ``every`` per image
    in_every: np.ndarray = None   # int64 [N]: position of each kept polygon in ``every``
    source: np.ndarray = None     # int64 [N]: index of each kept polygon in the input records
    area_px: np.ndarray = None    # float64 [N]: area in pixels (= area for pixel inputs)


def _prepare(records: Sequence[Building], image_index: dict, repair: bool,
             min_area: float, to_pixels=None) -> _Side:
    """Drop registrations, repair (buffer(0) of invalid polygons) if asked, drop those under
    ``min_area`` pixels (``to_pixels(geoms, area)``: areas in pixels; default: as they are)."""
    kept_at = [k for k, r in enumerate(records) if not r.is_empty and r.building_id != -1]
    keep = [records[k] for k in kept_at]
    geoms = np.empty(len(keep), dtype=object)
    geoms[:] = [r.polygon for r in keep]
    geoms = shapely.force_2d(geoms) if len(keep) else geoms
    image = np.array([image_index[r.image_id] for r in keep], dtype=np.int64)
    conf = np.array([r.confidence for r in keep], dtype=np.float64)
    bid = [r.building_id for r in keep]
    valid = shapely.is_valid(geoms) if len(keep) else np.zeros(0, bool)
    if repair and not valid.all():
        geoms[~valid] = shapely.buffer(geoms[~valid], 0)
        valid = shapely.is_valid(geoms)
    area = shapely.area(geoms) if len(keep) else np.zeros(0)
    area_px = to_pixels(geoms, area) if to_pixels is not None else area
    by_image = np.argsort(image, kind="stable")
    every_start = np.searchsorted(image[by_image], np.arange(len(image_index) + 1))
    in_every = np.flatnonzero(area_px[by_image] >= min_area)
    order = by_image[in_every]
    start = np.searchsorted(image[order], np.arange(len(image_index) + 1))
    return _Side(image[order], geoms[order], conf[order], area[order], valid[order],
                 [bid[k] for k in order], start, geoms[by_image], every_start, in_every,
                 np.asarray(kept_at, np.int64)[order], area_px[order])


def _touching(side: _Side, n_images: int, distance: float) -> np.ndarray:
    """bool [N]: kept polygon k lies within ``distance`` of another polygon of its image (any
    polygon of ``side.every``, also those under the area rule; distance 0 = they intersect)."""
    flags = np.zeros(len(side.geoms), dtype=bool)
    for img in range(n_images):
        k0, k1 = side.start[img], side.start[img + 1]
        e0, e1 = side.every_start[img], side.every_start[img + 1]
        if k1 == k0 or e1 - e0 < 2:
            continue
        tree = shapely.STRtree(side.every[e0:e1])
        qi, ti = tree.query(side.geoms[k0:k1], predicate="dwithin", distance=float(distance))
        other = e0 + ti != side.in_every[k0 + qi]   # not itself
        flags[k0 + qi[other]] = True
    return flags


def _candidate_pairs(truth: _Side, props: _Side, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(proposal index, truth index) int64 arrays of intersecting pairs of the same image."""
    p_parts, t_parts = [], []
    for img in range(n_images):
        t0, t1 = truth.start[img], truth.start[img + 1]
        p0, p1 = props.start[img], props.start[img + 1]
        if t1 == t0 or p1 == p0:
            continue
        tree = shapely.STRtree(truth.geoms[t0:t1])
        pi, ti = tree.query(props.geoms[p0:p1], predicate="intersects")
        p_parts.append(pi + p0)
        t_parts.append(ti + t0)
    if not p_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pi, ti = np.concatenate(p_parts), np.concatenate(t_parts)
    order = np.lexsort((ti, pi))
    return pi[order].astype(np.int64), ti[order].astype(np.int64)


def _intersection_areas(a: np.ndarray, b: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Areas of a[k] & b[k]: vectorised where ``ok`` (both valid), pair by pair elsewhere with
    0 where GEOS cannot intersect the (invalid) geometries."""
    out = np.zeros(len(a), dtype=np.float64)
    if ok.any():
        out[ok] = shapely.area(shapely.intersection(a[ok], b[ok]))
    for k in np.flatnonzero(~ok):
        try:
            out[k] = shapely.area(shapely.intersection(a[k], b[k]))
        except shapely.errors.GEOSException:
            out[k] = 0.0
    return out


def _greedy_match(props: _Side, n_truth: int, pi: np.ndarray, ti: np.ndarray, iou: np.ndarray,
                  n_images: int, threshold: float, inclusive: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(true-positive flag of every proposal bool [n_props], matched flag of every truth
    polygon bool [n_truth]) by the official greedy rule.

    ``pi``/``ti``/``iou`` are the candidate pairs sorted by proposal then truth index.
    """
    hit = np.zeros(len(props.geoms), dtype=bool)
    matched = [False] * n_truth
    pair_start = np.searchsorted(pi, np.arange(len(props.geoms) + 1)).tolist()
    ti_list, iou_list = ti.tolist(), iou.tolist()
    for img in range(n_images):
        p0, p1 = props.start[img], props.start[img + 1]
        if p1 == p0:
            continue
        order = (p0 + np.argsort(-props.conf[p0:p1], kind="stable")).tolist()
        for p in order:
            best, best_t = -1.0, -1
            for k in range(pair_start[p], pair_start[p + 1]):
                t = ti_list[k]
                if not matched[t] and iou_list[k] > best:
                    best, best_t = iou_list[k], t
            if best_t >= 0 and (best > threshold or (inclusive and best >= threshold)):
                matched[best_t] = True
                hit[p] = True
    return hit, np.array(matched, dtype=bool)


def _match(t_side: _Side, p_side: _Side, n_images: int, threshold: float, inclusive: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(proposal hit bool [P], truth matched bool [T], best IoU of each truth float [T]) of
    the kept polygons by the official greedy rule."""
    pi, ti = _candidate_pairs(t_side, p_side, n_images)
    inter = _intersection_areas(p_side.geoms[pi], t_side.geoms[ti], p_side.valid[pi] & t_side.valid[ti])
    union = p_side.area[pi] + t_side.area[ti] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.clip(iou, 0.0, 1.0, out=iou)   # rounding can give 1 + 2e-16 for identical polygons
    hit, matched = _greedy_match(p_side, len(t_side.geoms), pi, ti, iou, n_images,
                                 threshold, inclusive)
    best = np.zeros(len(t_side.geoms))
    np.maximum.at(best, ti, iou)
    return hit, matched, best


def _inputs(source, name: str, on_error: str, issues: list) -> list[SourceFile]:
    if isinstance(source, (str, os.PathLike)):
        return read_files(source, on_error, issues)
    return [SourceFile(f"{name} records", _as_records(source, on_error, issues), None)]


def score_polygons(truth, proposals, iou_threshold: float = 0.5, min_area: float = 20.0, *,
                   iou_inclusive: bool = False, repair_proposals: bool = True,
                   on_error: str = "raise", touch_distance: float = 1.0,
                   size_classes: Sequence[float] = SIZE_CLASSES,
                   gsd: float = DEFAULT_GSD) -> ScoreResult:
    """Score proposals against truth with the SpaceNet rules (see the module docstring).

    Args:
      truth, proposals: a path (SpaceNet CSV, GeoJSON, or a folder of them) or an iterable of
        :class:`Building` / ``(image_id, polygon[, confidence])``. A record with an empty or
        None polygon registers its image only. When both are single GeoJSON files holding one
        image each, they are taken to be the same image (the truth's id).
      iou_threshold: in (0, 1]; a match needs IoU > threshold (>= with ``iou_inclusive``).
      min_area: polygons with area < min_area PIXELS are dropped on both sides (the SpaceNet
        rule). Pixel inputs (SpaceNet CSVs, pixel GeoJSON, in-memory records) are measured as
        they are; map inputs are converted with ``gsd`` (see "Coordinate systems" in the
        module docstring).
      repair_proposals: buffer(0) invalid proposals (default, as the reference Python scorers).
      on_error: "raise" or "skip" malformed rows (skipped rows listed in ``result.issues``).
      touch_distance: >= 0; a truth building within this distance (pixels) of another truth
        building of its image counts as touching in ``result.breakdown``.
      size_classes: ascending area edges (pixels) of the breakdown's size classes.
      gsd: metres per pixel for map inputs (default 0.3, SpaceNet 2 tiles).

    Returns:
      :class:`ScoreResult` (``to_dict()`` for JSON); ``result.warnings`` lists what the score
      should be read with (empty inputs, reprojection, images or cities only in the proposals).

    Raises:
      ScoreInputError: pixel coordinates on one side and map coordinates on the other.
    """
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if not float(min_area) >= 0.0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    if not float(touch_distance) >= 0.0 or math.isinf(float(touch_distance)):
        raise ValueError(f"touch_distance must be a finite number >= 0, got {touch_distance}")
    if not float(gsd) > 0.0 or math.isinf(float(gsd)):
        raise ValueError(f"gsd must be a finite number > 0 (metres per pixel), got {gsd}")
    edges = [float(v) for v in size_classes]
    if any(not math.isfinite(v) or v < 0 for v in edges) or edges != sorted(set(edges)):
        raise ValueError(f"size_classes must be ascending distinct finite areas >= 0, "
                         f"got {list(size_classes)}")
    issues: list = []
    warnings: list = []
    t_files = _inputs(truth, "truth", on_error, issues)
    p_files = _inputs(proposals, "proposal", on_error, issues)
    warnings += [f.note for f in t_files + p_files if f.note]
    crs = to_common_crs(t_files, p_files, warnings)
    units, metres = crs_units(crs)
    truth_records = [r for f in t_files for r in f.records]
    prop_records = [r for f in p_files for r in f.records]
    if _is_single_geojson(truth) and _is_single_geojson(proposals):
        t_ids = {r.image_id for r in truth_records}
        p_ids = {r.image_id for r in prop_records}
        if len(t_ids) == 1 and len(p_ids) <= 1:
            (tid,) = t_ids
            prop_records = [dataclasses.replace(r, image_id=tid) for r in prop_records]
    for name, source, records in (("truth", truth, truth_records),
                                  ("proposals", proposals, prop_records)):
        if not any(not r.is_empty and r.building_id != -1 for r in records):
            where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "records"
            warnings.append(f"{name} ({where}) holds no building polygon")
    prop_records = _drop_phantom_cities(truth_records, prop_records, warnings)
    image_index: dict = {}
    for record in list(truth_records) + list(prop_records):
        image_index.setdefault(record.image_id, len(image_index))
    truth_images = {r.image_id for r in truth_records}
    only_props = [i for i in image_index if i not in truth_images]
    if only_props:
        warnings.append(f"{len(only_props)} image(s) only in the proposals (no truth "
                        f"registered; their proposals count as false positives), e.g. "
                        f"{', '.join(only_props[:3])}")
    n_images = len(image_index)

    def to_pixels(geoms, area):
        return area_to_pixels(geoms, area, units, metres, float(gsd))

    t_side = _prepare(truth_records, image_index, True, min_area, to_pixels)
    p_side = _prepare(prop_records, image_index, repair_proposals, min_area, to_pixels)

    hit, matched, best = _match(t_side, p_side, n_images, float(iou_threshold), iou_inclusive)
    touch = float(touch_distance) * (1.0 if units == "pixel" else float(gsd) / metres)
    touching = _touching(t_side, n_images, touch)

    tp = np.bincount(p_side.image[hit], minlength=n_images)
    n_props = np.bincount(p_side.image, minlength=n_images)
    n_truth = np.bincount(t_side.image, minlength=n_images)
    images, cities, overall = {}, {}, Counts()
    for image_id, img in image_index.items():
        t0, t1 = t_side.start[img], t_side.start[img + 1]
        score = ImageScore(int(tp[img]), int(n_props[img] - tp[img]), int(n_truth[img] - tp[img]),
                           best[t0:t1].tolist(), t_side.bid[t0:t1], matched[t0:t1].tolist(),
                           touching[t0:t1].tolist())
        images[image_id] = score
        cities.setdefault(city_of(image_id), Counts()).add(score)
        overall.add(score)
    t_city = np.array([city_of(i) for i in image_index], dtype=object)[t_side.image]
    breakdown = {city: _group_recalls(matched[t_city == city], touching[t_city == city],
                                      t_side.area_px[t_city == city], edges) for city in cities}
    breakdown["overall"] = _group_recalls(matched, touching, t_side.area_px, edges)
    settings = {"iou_threshold": float(iou_threshold), "iou_inclusive": bool(iou_inclusive),
                "min_area": float(min_area), "repair_proposals": bool(repair_proposals),
                "touch_distance": float(touch_distance), "size_classes": edges,
                "crs": crs, "units": units}
    if units != "pixel":
        settings["gsd"] = float(gsd)
    return ScoreResult(overall, cities, images, settings, issues, breakdown, warnings)


def _drop_phantom_cities(truth: list, proposals: list, warnings: list) -> list:
    """Proposals whose city has no truth at all are not scored (a city only in the proposals
    would enter the mean of city F1 values with F1 0); a warning says how many and where."""
    if not truth:
        return proposals
    cities = {city_of(r.image_id) for r in truth}
    phantom = [r for r in proposals if city_of(r.image_id) not in cities]
    if not phantom:
        return proposals
    names = sorted({city_of(r.image_id) for r in phantom})
    n_polys = sum(not r.is_empty for r in phantom)
    warnings.append(f"{len(names)} city(ies) only in the proposals, not scored "
                    f"({n_polys} proposal polygon(s) of {len({r.image_id for r in phantom})} "
                    f"image(s)): {', '.join(names[:5])}")
    return [r for r in proposals if city_of(r.image_id) in cities]


#: Outcome names of :func:`match_outcomes`.
TRUE_POSITIVE, FALSE_POSITIVE, MISSED, NOT_SCORED = "tp", "fp", "fn", "not scored"


def match_outcomes(truth: Sequence[Building], proposals: Sequence[Building],
                   iou_threshold: float = 0.5, min_area: float = 20.0, *,
                   iou_inclusive: bool = False, repair_proposals: bool = True
                   ) -> tuple[list[str], list[str]]:
    """What the SpaceNet rules made of every record: ``(truth outcomes, proposal outcomes)``,
    lists parallel to ``truth`` and ``proposals``.

    Truth: ``"tp"`` (matched by a proposal) or ``"fn"`` (missed); proposals: ``"tp"`` or
    ``"fp"``; records the metric does not score (empty, BuildingId -1, area < ``min_area``)
    are ``"not scored"``. The rules and options are those of :func:`score_polygons` (for
    overlays: ``sn_tf.head.render.outcome_overlay``).
    """
    truth, proposals = list(truth), list(proposals)
    image_index: dict = {}
    for record in truth + proposals:
        image_index.setdefault(record.image_id, len(image_index))
    t_side = _prepare(truth, image_index, True, min_area)
    p_side = _prepare(proposals, image_index, repair_proposals, min_area)
    hit, matched, _ = _match(t_side, p_side, len(image_index), float(iou_threshold),
                             iou_inclusive)
    t_out, p_out = [NOT_SCORED] * len(truth), [NOT_SCORED] * len(proposals)
    for k, m in zip(t_side.source.tolist(), matched.tolist()):
        t_out[k] = TRUE_POSITIVE if m else MISSED
    for k, h in zip(p_side.source.tolist(), hit.tolist()):
        p_out[k] = TRUE_POSITIVE if h else FALSE_POSITIVE
    return t_out, p_out
