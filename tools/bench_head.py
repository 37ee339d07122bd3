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
- writers: the SpaceNet CSV and a georeferenced GeoJSON of those buildings;
- DetectNet: the same scenes as an oriented DetectNet's outputs on 8 px cells
  (:func:`detectnet_outputs`: coverage, boxes and gliding vertices of each building's
  minimum rotated rectangle, with noise) through ``outputs_to_buildings("detectnet", ...)``
  with the recipe's post-processing (decode, ``rotated_nms`` grouping, rectangles to
  polygons), and the same writers.

Prints ms per tile and the ratios (head + writers) / floor (issue 15's target: <= 2, for
tiles of ~100 buildings; the sample's tiles hold ~45), and the same on the real SpaceNet 4
logits of ``../shared/realdata`` (~170 buildings on 900 x 900 px; ``--realdata``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.dataset import labels  # noqa: E402
from sn_tf.head import polygons, rasters  # noqa: E402
from sn_tf.spacenet.building_writers import write_geojson, write_spacenet_csv  # noqa: E402
from sn_tf.spacenet import synthetic_aois, synthetic_scenes  # noqa: E402

FCN_PARAMS = {"threshold": 0.0, "interior_threshold": 0.0, "merge_level": -2.0,
              "min_seed_area": 12, "min_area": 20.0}


def make_scenes(n: int, seed: int) -> list[tuple[str, list, int, int]]:
    """[(tile id, building polygons clipped to the tile (pixels), height, width)] of ``n``
    sample scenes with buildings (Vegas and Paris alternating)."""
    specs = synthetic_aois.plan_tiles(("AOI_2_Vegas", "AOI_3_Paris"), tiles_per_aoi=max(2, n),
                                      seed=seed)
    specs = [s for pair in zip(specs[:len(specs) // 2], specs[len(specs) // 2:]) for s in pair
             if s.role != "empty"]  # alternate the cities; tiles with buildings only
    rng = np.random.default_rng(seed)
    scenes = []
    for spec in specs[:n]:
        scene = synthetic_scenes.compose_scene(spec, np.random.default_rng(rng.integers(1 << 31)))
        polys, _ = labels.clip_to_tile([b.label for b in scene.buildings if b.label.is_valid],
                                       scene.height, scene.width)
        scenes.append((f"{spec.aoi}_img{spec.number}", polys, scene.height, scene.width))
    return scenes


def fcn_outputs(polys: list, height: int, width: int, rng) -> dict:
    """FCN-like outputs {name: float32 [H, W, 1]} of one scene: footprint logits = the signed
    distance clipped to +-8 plus smooth noise, interior logits = 2 * (sdf - 1.5) plus smooth
    noise, the sdf itself."""
    from scipy import ndimage

    sdf = labels.compute_labels(polys, height, width)["sdf"].astype(np.float32)
    # spatially correlated noise: boundaries as ragged as a trained model's (~90
    # vertices per building, the demo FCN's mean on its test split)
    noise = ndimage.gaussian_filter(rng.normal(0, 4.0, (2,) + sdf.shape), (0, 1.5, 1.5))
    noise = noise.astype(np.float32)
    return {"footprint": (np.clip(sdf, -8, 8) + noise[0])[..., None],
            "interior": (2 * (sdf - 1.5) + noise[1])[..., None],
            "sdf": sdf[..., None]}


def detectnet_outputs(polys: list, height: int, width: int, rng, cell: int = 8) -> dict:
    """Oriented-DetectNet-like outputs on ``cell`` px cells (the recipe's 8) of one scene:
    ``coverage`` [h, w, 1] ~0.85 in the cells whose centre lies in a building's minimum
    rotated rectangle (the smaller rectangle owns a shared cell; a building covering no
    centre claims its centre's cell), uniform 0-0.3 elsewhere; ``bbox`` [h, w, 4] the owner's
    box corners relative to the cell centre plus 1.5 px noise; ``orient`` [h, w, 3] its
    gliding vertices (alpha, beta, obliquity) plus 0.03 noise, clipped to [0, 1]."""
    import shapely

    from sn_tf.input import rects as rect_ops

    h, w = -(-height // cell), -(-width // cell)
    cy, cx = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (cx + 0.5) * cell, (cy + 0.5) * cell
    coverage = rng.uniform(0.0, 0.3, (h, w)).astype(np.float32)
    bbox = np.zeros((h, w, 4), np.float32)
    orient = np.zeros((h, w, 3), np.float32)
    owner_area = np.full((h, w), np.inf)
    for poly in polys:
        rect = shapely.minimum_rotated_rectangle(poly)
        quad = np.asarray(rect.exterior.coords)[:4][None]
        alpha, beta, r = rect_ops.gliding_from_rects(quad)
        x1, y1, x2, y2 = rect.bounds
        inside = shapely.contains_xy(rect, cx, cy)
        if not inside.any():
            c = poly.centroid
            inside = np.zeros((h, w), bool)
            inside[min(int(c.y // cell), h - 1), min(int(c.x // cell), w - 1)] = True
        own = inside & (rect.area < owner_area)
        owner_area[own] = rect.area
        n = int(own.sum())
        coverage[own] = np.clip(0.85 + rng.normal(0, 0.08, n), 0, 1)
        bbox[own] = np.stack([x1 - cx[own], y1 - cy[own], x2 - cx[own], y2 - cy[own]], -1) \
            + rng.normal(0, 1.5, (n, 4))
        orient[own] = np.clip(np.array([alpha[0], beta[0], r[0]]) + rng.normal(0, 0.03, (n, 3)),
                              0, 1)
    return {"coverage": coverage[..., None], "bbox": bbox, "orient": orient}


def make_tiles(n: int, seed: int) -> list[tuple[str, dict]]:
    """[(tile id, FCN-like outputs {name: float32 [650, 650, 1]})] of ``n`` sample scenes
    with buildings (:func:`fcn_outputs`)."""
    rng = np.random.default_rng(seed + 1)
    return [(tile_id, fcn_outputs(polys, h, w, rng))
            for tile_id, polys, h, w in make_scenes(n, seed)]


def detectnet_params() -> dict:
    """The DetectNet recipe's post-processing (``sn_tf/configs/detectnet.py``)."""
    from sn_tf.configs import detectnet

    return dict(detectnet.get_config()["postprocess"])


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(n_tiles: int, repeats: int, seed: int) -> dict:
    """Per tile (lists in tile order): ms {floor, head, writers, det_head, det_writers},
    each the median of ``repeats`` interleaved runs, and the buildings found
    {buildings, det_buildings}; the files written go to a temporary folder, removed."""
    rng = np.random.default_rng(seed + 1)
    scenes = make_scenes(n_tiles, seed)
    with tempfile.TemporaryDirectory(prefix="sn_tf_bench_head_") as out:
        return _run(scenes, out, rng, repeats)


def _run(scenes, out: str, rng, repeats: int) -> dict:
    """:func:`run` with the written files in the folder ``out``."""
    from rasterio import features

    det_params = detectnet_params()
    transform, crs = (737201.5, 0.3, 0.0, 3736839.1, 0.0, -0.3), "EPSG:32616"
    keys = ("floor", "head", "writers", "det_head", "det_writers")
    times = {k: [] for k in keys}
    counts = {"buildings": [], "det_buildings": []}
    for tile_id, polys, height, width in scenes:
        outputs = fcn_outputs(polys, height, width, rng)
        grids = detectnet_outputs(polys, height, width, rng)
        size = (height, width)
        # the floor traces exactly the label raster the FCN head traces
        raster, seeds = outputs["footprint"][..., 0], outputs["interior"][..., 0]
        lab, _ = rasters.label_footprint(raster, 0.0, seeds, 0.0, 12, merge_level=-2.0)
        head = lambda: polygons.outputs_to_buildings(  # noqa: E731
            "fcn", outputs, tile_id, image_size=size, params=FCN_PARAMS)
        det_head = lambda: polygons.outputs_to_buildings(  # noqa: E731
            "detectnet", grids, tile_id, image_size=size, params=det_params, cell_size=8)
        found = {"fcn": head(), "det": det_head()}
        counts["buildings"].append(len(found["fcn"]))
        counts["det_buildings"].append(len(found["det"]))

        def writer(kind):
            def write():
                # new files, as predict writes: rewriting an existing file costs ~12 ms more
                # on ext4 here (the truncate forces its blocks out: auto_da_alloc)
                name = os.path.join(out, f"{tile_id}_{kind}_{len(os.listdir(out))}")
                write_spacenet_csv(found[kind], name + ".csv", [tile_id])
                write_geojson(found[kind], name + ".geojson", transform, crs)
            return write

        floor = lambda: list(features.shapes(lab, mask=lab > 0, connectivity=4))  # noqa: E731
        fns = {"floor": floor, "head": head, "writers": writer("fcn"), "det_head": det_head,
               "det_writers": writer("det")}
        per = {k: [] for k in keys}
        for _ in range(repeats):  # interleaved: load changes hit all of them alike
            for k in keys:
                per[k].append(_timed(fns[k]))
        for k in keys:
            times[k].append(1000 * statistics.median(per[k]))
    return {**times, **counts}


def summary(per_tile: dict, tiles: list[int]) -> dict:
    """Means over ``tiles`` (indices) of :func:`run`'s per-tile figures."""
    return {k: sum(v[i] for i in tiles) / len(tiles) for k, v in per_tile.items()}


def run_real(realdata: pathlib.Path, repeats: int) -> dict | None:
    """ms {floor, head, writers, buildings} of the real SpaceNet 4 (MVOI, Atlanta) logits in
    ``realdata`` (900 x 900 float32, an XD_XD U-Net's output; 169 buildings at > 0 with
    areas >= 40 px, solaris' published polygons), medians of ``repeats`` interleaved runs:
    the head thresholds at 0 (no seeds: one output), as solaris' ``mask_to_poly_geojson``
    does; None where the file is absent."""
    path = realdata / "solaris_tutorials" / "xdxd_inference_out" / "MVOI_nadir10_test_sample.tif"
    if not path.is_file():
        return None
    import rasterio

    with warnings.catch_warnings():  # a bare model output: no georeference
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            logits = ds.read(1)
    lab, _ = rasters.label_footprint(logits, 0.0)
    with tempfile.TemporaryDirectory(prefix="sn_tf_bench_head_real_") as out:
        return _run_real(logits, lab, out, repeats)


def _run_real(logits, lab, out: str, repeats: int) -> dict:
    """:func:`run_real` on the read ``logits`` and their labels ``lab``, files in ``out``."""
    from rasterio import features

    transform, crs = (737201.5, 0.3, 0.0, 3736839.1, 0.0, -0.3), "EPSG:32616"
    head = lambda: rasters.polygons_from_raster(  # noqa: E731
        logits, "MVOI", kind="logit", threshold=0.0, min_area=40.0)
    found = head()

    def writers():
        name = os.path.join(out, f"MVOI_{len(os.listdir(out))}")
        write_spacenet_csv(found, name + ".csv", ["MVOI"])
        write_geojson(found, name + ".geojson", transform, crs)

    fns = {"floor": lambda: list(features.shapes(lab, mask=lab > 0, connectivity=4)),
           "head": head, "writers": writers}
    per = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            per[k].append(_timed(fn))
    return {**{k: 1000 * statistics.median(v) for k, v in per.items()},
            "buildings": len(found)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--realdata", default=str(pathlib.Path(__file__).resolve().parents[2]
                                                  / "shared" / "realdata"),
                        help="folder of the real SpaceNet samples (../shared/realdata): the "
                        "MVOI logits row; skipped where absent")
    args = parser.parse_args(argv)
    per_tile = run(args.tiles, args.repeats, args.seed)
    ms = summary(per_tile, list(range(args.tiles)))
    total = ms["head"] + ms["writers"]
    det_total = ms["det_head"] + ms["det_writers"]
    print(f"{args.tiles} tiles of 650 x 650 px, {ms['buildings']:.0f} FCN / "
          f"{ms['det_buildings']:.0f} DetectNet buildings per tile (median of "
          f"{args.repeats} interleaved runs per tile, mean over tiles; load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"  GDAL polygonizer alone (floor)   {ms['floor']:7.2f} ms/tile")
    print(f"  sn_tf FCN head                   {ms['head']:7.2f} ms/tile")
    print(f"  CSV + GeoJSON writers (FCN)      {ms['writers']:7.2f} ms/tile")
    print(f"  FCN head + writers / floor       {total / ms['floor']:7.2f} x  (target <= 2)")
    print(f"  sn_tf DetectNet head (8 px cells, decode, rotated_nms, rectangles) "
          f"{ms['det_head']:7.2f} ms/tile")
    print(f"  CSV + GeoJSON writers (DetectNet) {ms['det_writers']:6.2f} ms/tile")
    print(f"  DetectNet head + writers / floor {det_total / ms['floor']:7.2f} x  (target <= 2)")
    real = run_real(pathlib.Path(args.realdata), max(args.repeats, 9))
    if real is None:
        print(f"  (no real MVOI logits under {args.realdata}: that row skipped)")
    else:
        print(f"  real SpaceNet 4 logits, 900 x 900 px, {real['buildings']} buildings: floor "
              f"{real['floor']:.2f}, head {real['head']:.2f}, writers {real['writers']:.2f} "
              f"ms; head + writers / floor {(real['head'] + real['writers']) / real['floor']:.2f} x")


if __name__ == "__main__":
    main()
