"""Benchmark the shared polygon head against GDAL's polygonizer, per 650 px tile.

    .venv/bin/python tools/bench_head.py [--tiles=16] [--repeats=5] [--seed=0]

Data: ``sn_tf.sample`` scenes (AOI_2_Vegas and AOI_3_Paris layouts: row houses sharing
walls, detached houses, large blocks), their label layers (``sn_tf.dataset.labels.compute_labels``)
and FCN-like outputs made from them: footprint logits = the signed distance clipped to
+-8 plus smooth noise, interior logits = 2 * (sdf - 1.5) plus smooth noise (a trained FCN's
outputs look like this; no model is run; ~90 vertices per building as the demo FCN's). Per tile, interleaved, median over ``--repeats``:

- floor: GDAL's polygonizer alone (``rasterio.features.shapes``, 4-connected) on the label
  raster the head traces (its own ``label_footprint`` result), read into Python tuples;
- head: ``polygons.outputs_to_buildings("fcn", ...)`` with the FCN recipe's post-processing
  (threshold, seeds from the interior output, watershed split, merge, tracing, repair,
  area filter, confidences);
- writers: the SpaceNet CSV and a georeferenced GeoJSON of those buildings.

Prints ms per tile and the ratio (head + writers) / floor (issue 15's target: <= 2).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.dataset import labels  # noqa: E402
from sn_tf.head import polygons, rasters  # noqa: E402
from sn_tf.spacenet.buildings import write_geojson, write_spacenet_csv  # noqa: E402
from sn_tf.spacenet import synthetic_aois, synthetic_scenes  # noqa: E402

FCN_PARAMS = {"threshold": 0.0, "interior_threshold": 0.0, "merge_level": -2.0,
              "min_seed_area": 12, "min_area": 20.0}


def make_tiles(n: int, seed: int) -> list[tuple[str, dict]]:
    """[(tile id, FCN-like outputs {name: float32 [650, 650, 1]})] of ``n`` sample scenes
    with buildings."""
    from scipy import ndimage

    specs = synthetic_aois.plan_tiles(("AOI_2_Vegas", "AOI_3_Paris"), tiles_per_aoi=max(2, n),
                              seed=seed)
    specs = [s for pair in zip(specs[:len(specs) // 2], specs[len(specs) // 2:]) for s in pair
             if s.role != "empty"]  # alternate the cities; tiles with buildings only
    rng = np.random.default_rng(seed)
    tiles = []
    for spec in specs[:n]:
        scene = synthetic_scenes.compose_scene(spec, np.random.default_rng(rng.integers(1 << 31)))
        polys, _ = labels.clip_to_tile([b.label for b in scene.buildings if b.label.is_valid],
                                       scene.height, scene.width)
        lab = labels.compute_labels(polys, scene.height, scene.width)
        sdf = lab["sdf"].astype(np.float32)
        # spatially correlated noise: boundaries as ragged as a trained model's (~90
        # vertices per building, the demo FCN's mean on its test split)
        noise = ndimage.gaussian_filter(rng.normal(0, 4.0, (2,) + sdf.shape), (0, 1.5, 1.5))
        noise = noise.astype(np.float32)
        outputs = {"footprint": (np.clip(sdf, -8, 8) + noise[0])[..., None],
                   "interior": (2 * (sdf - 1.5) + noise[1])[..., None],
                   "sdf": sdf[..., None]}
        tiles.append((f"{spec.aoi}_img{spec.number}", outputs))
    return tiles




def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n_tiles: int, repeats: int, seed: int) -> dict:
    from rasterio import features

    tiles = make_tiles(n_tiles, seed)
    out = tempfile.mkdtemp(prefix="sn_tf_bench_head_")
    transform, crs = (737201.5, 0.3, 0.0, 3736839.1, 0.0, -0.3), "EPSG:32616"
    times = {"floor": [], "head": [], "writers": []}
    n_buildings = 0
    for tile_id, outputs in tiles:
        size = outputs["footprint"].shape[:2]
        # the floor traces exactly the label raster the head traces
        raster, seeds = outputs["footprint"][..., 0], outputs["interior"][..., 0]
        lab, _ = rasters.label_footprint(raster, 0.0, seeds, 0.0, 12, merge_level=-2.0)
        head = lambda: polygons.outputs_to_buildings(  # noqa: E731
            "fcn", outputs, tile_id, image_size=size, params=FCN_PARAMS)
        buildings = head()
        n_buildings += len(buildings)

        def write():
            # new files, as predict writes: rewriting an existing file costs ~12 ms more on
            # ext4 here (the truncate forces its blocks out: auto_da_alloc), in any writer
            name = os.path.join(out, f"{tile_id}_{len(os.listdir(out))}")
            write_spacenet_csv(buildings, name + ".csv", [tile_id])
            write_geojson(buildings, name + ".geojson", transform, crs)

        floor = lambda: list(features.shapes(lab, mask=lab > 0, connectivity=4))  # noqa: E731
        per = {"floor": [], "head": [], "writers": []}
        for _ in range(repeats):  # interleaved: load changes hit all three alike
            per["floor"].append(_timed(floor))
            per["head"].append(_timed(head))
            per["writers"].append(_timed(write))
        for k in times:
            times[k].append(statistics.median(per[k]))
    ms = {k: 1000 * sum(v) / len(v) for k, v in times.items()}
    ms["buildings"] = n_buildings / len(tiles)
    return ms


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ms = run(args.tiles, args.repeats, args.seed)
    total = ms["head"] + ms["writers"]
    print(f"{args.tiles} tiles of 650 x 650 px, {ms['buildings']:.0f} buildings per tile "
          f"(median of {args.repeats} interleaved runs per tile, mean over tiles)")
    print(f"  GDAL polygonizer alone (floor)   {ms['floor']:7.2f} ms/tile")
    print(f"  sn_tf FCN head                   {ms['head']:7.2f} ms/tile")
    print(f"  CSV + GeoJSON writers            {ms['writers']:7.2f} ms/tile")
    print(f"  head + writers / floor           {total / ms['floor']:7.2f} x  (target <= 2)")


if __name__ == "__main__":
    main()
