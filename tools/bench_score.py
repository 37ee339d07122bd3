"""Benchmark the polygon head: scorer throughput and polygon export time per tile.

    .venv/bin/python tools/bench_score.py [--tiles=400] [--buildings=50] [--export_tiles=20] [--seed=0]

1. Scoring: a generated set of 650x650 pixel tiles, each with ~50 jittered rotated-rectangle
   buildings as truth and their perturbed copies plus spurious boxes as proposals (>= 20,000
   proposals at the default 400 tiles). ``sn_tf.spacenet.scoring.score_polygons`` is timed against a
   straightforward implementation in this script (for every proposal, a Python loop over every
   truth polygon of its image with shapely intersection/union areas). Both must give identical
   TP/FP/FN; the script prints proposals/s of both and their ratio.
2. Export: ``sn_tf.head.rasters.polygons_from_raster`` on 650x650 probability rasters with ~50
   buildings (some pairs touching), in ms per tile, without and with sdf splitting.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
from shapely import affinity
from shapely.geometry import box

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.spacenet.buildings import Building  # noqa: E402
from sn_tf.head.rasters import polygons_from_raster  # noqa: E402
from sn_tf.spacenet.scoring import score_polygons  # noqa: E402

TILE = 650


def make_tile(rng: np.random.Generator, image_id: str, n_buildings: int = 50):
    """(truth records, proposal records) of one tile: buildings on a jittered square grid.

    90 % of the buildings get a proposal (shifted and rescaled copy, random confidence); 10
    spurious boxes per tile are added. Pixel coordinates.
    """
    truth, props = [], []
    side = int(np.ceil(np.sqrt(n_buildings)))
    cell = TILE / side
    for k in range(n_buildings):
        i, j = divmod(k, side)
        cx = (j + 0.5) * cell + rng.uniform(-8, 8)
        cy = (i + 0.5) * cell + rng.uniform(-8, 8)
        w, h = rng.uniform(8, min(60, 0.75 * cell), 2)
        poly = affinity.rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2),
                               rng.uniform(0, 90), origin="centroid")
        truth.append(Building(image_id, poly))
        if rng.random() < 0.9:
            jitter = affinity.translate(poly, *rng.normal(0, 0.12 * min(w, h), 2))
            jitter = affinity.scale(jitter, *rng.uniform(0.8, 1.2, 2))
            props.append(Building(image_id, jitter, float(rng.random())))
    for _ in range(10):
        x, y = rng.uniform(0, TILE - 40, 2)
        props.append(Building(image_id, box(x, y, x + rng.uniform(5, 40), y + rng.uniform(5, 40)),
                              float(rng.random())))
    return truth, props


def naive_score(truth, proposals, threshold=0.5, min_area=20.0):
    """Straightforward SpaceNet matching: every (proposal, truth) pair of an image by shapely."""
    by_image: dict = {}
    for b in truth:
        if b.polygon.area >= min_area:
            by_image.setdefault(b.image_id, ([], []))[0].append(b.polygon)
    for b in proposals:
        if b.polygon.area >= min_area:
            by_image.setdefault(b.image_id, ([], []))[1].append(b)
    tp = fp = fn = 0
    for truths, props in by_image.values():
        used = [False] * len(truths)
        for p in sorted(props, key=lambda b: -b.confidence):
            best, best_k = -1.0, -1
            for k, t in enumerate(truths):
                if used[k]:
                    continue
                inter = p.polygon.intersection(t).area
                iou = inter / p.polygon.union(t).area if inter > 0 else 0.0
                if iou > best:
                    best, best_k = iou, k
            if best_k >= 0 and best > threshold:
                used[best_k] = True
                tp += 1
            else:
                fp += 1
        fn += used.count(False)
    return tp, fp, fn


def bench_scoring(n_tiles: int, n_buildings: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth, props = [], []
    for t in range(n_tiles):
        tt, pp = make_tile(rng, f"AOI_{2 + t % 4}_City_img{t}", n_buildings)
        truth += tt
        props += pp
    print(f"scoring: {n_tiles} tiles, {len(truth)} truth, {len(props)} proposals")
    t0 = time.perf_counter()
    result = score_polygons(truth, props)
    fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow_counts = naive_score(truth, props)
    slow = time.perf_counter() - t0
    fast_counts = (result.overall.tp, result.overall.fp, result.overall.fn)
    print(f"  sn_tf.spacenet.scoring : {fast:8.3f} s  {len(props) / fast:12,.0f} proposals/s  TP/FP/FN {fast_counts}")
    print(f"  pairwise loop : {slow:8.3f} s  {len(props) / slow:12,.0f} proposals/s  TP/FP/FN {slow_counts}")
    print(f"  speed-up      : {slow / fast:8.1f} x")
    if fast_counts != slow_counts:
        raise SystemExit(f"MISMATCH: vectorised {fast_counts} != pairwise {slow_counts}")
    print("  identical TP/FP/FN: yes")


def make_raster(rng: np.random.Generator, n_buildings: int = 50):
    """(probability float32 [650, 650], sdf float32 [650, 650]) with ~n_buildings rectangles,
    every 5th one touching its right-hand neighbour."""
    from scipy import ndimage

    prob = np.zeros((TILE, TILE), dtype=np.float32)
    sdf = np.full((TILE, TILE), -5.0, dtype=np.float32)
    cell = TILE // 8
    for k in range(n_buildings):
        i, j = divmod(k, 8)
        r0, c0 = i * cell + rng.integers(4, 12), j * cell + rng.integers(4, 12)
        h, w = rng.integers(15, cell - 16, 2)
        if k % 5 == 0 and j < 7:
            w = cell - (c0 - j * cell) + 10          # reaches into the next cell: touches
        building = np.zeros_like(prob, dtype=bool)
        building[r0:r0 + h, c0:c0 + w] = True
        prob[building] = np.maximum(prob[building], rng.uniform(0.6, 0.99))
        dist = ndimage.distance_transform_edt(building)
        sdf = np.where(building, np.maximum(sdf, dist), sdf).astype(np.float32)
    prob += rng.normal(0, 0.05, prob.shape).astype(np.float32)
    return prob, sdf


def bench_export(n_tiles: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    tiles = [make_raster(rng) for _ in range(n_tiles)]
    polygons_from_raster(tiles[0][0])            # warm the imports
    for label, use_sdf in (("without sdf", False), ("with sdf   ", True)):
        t0 = time.perf_counter()
        n = 0
        for prob, sdf in tiles:
            n += len(polygons_from_raster(prob, "t", kind="probability", min_area=20,
                                          sdf=sdf if use_sdf else None, sdf_level=3.0))
        ms = (time.perf_counter() - t0) * 1000 / n_tiles
        print(f"  export {label}: {ms:7.1f} ms per 650x650 tile ({n / n_tiles:.1f} polygons/tile)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=400, help="tiles for the scoring benchmark")
    parser.add_argument("--buildings", type=int, default=50, help="truth buildings per scoring tile")
    parser.add_argument("--export_tiles", type=int, default=20, help="tiles for the export benchmark")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    bench_scoring(args.tiles, args.buildings, args.seed)
    print(f"polygon export: {args.export_tiles} tiles")
    bench_export(args.export_tiles, args.seed)


if __name__ == "__main__":
    main()
