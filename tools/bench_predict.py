"""Benchmark sn_tf.predict: tiles/s with polygon export, and peak memory as a scene grows.

    .venv/bin/python tools/bench_predict.py [--tiles=6] [--sizes=1000,2500,5000]
        [--workdir=/tmp/sn_tf_bench_predict] [--skip_throughput] [--skip_memory]

Data: ``sn_tf.sample`` tiles (AOI_2_Vegas, MUL-PanSharpen 650x650x8 uint16, EPSG:4326).
Models are untrained (no checkpoint ships with the repository); normalisation = the tiles'
per-band mean/std. An untrained FCN marks ~half of all pixels as building, so its footprint
percolates into one scene-wide component, which no trained model does; the footprint-head
bias is therefore shifted so that ~8 % of the pixels of a sample tile are above the threshold
(and DetectNet's coverage bias so that ~10 % of cells pass its threshold). This "sparse surrogate"
keeps the head's work per pixel realistic; building counts are printed.

1. Throughput: the full-size recipes' models (``models/fcn.py``: width 32, depth 4, 2 blocks;
   ``models/detectnet.py``: width 32, blocks (2, 7), stride-8 features, head conv) with the
   recipes' post-processing (DetectNet: "clusters" grouping; its coverage bias is set so that
   ~10 % of the cells pass the recipe's threshold), exported with ``sn_tf.export``; ``predict_images`` over ``--tiles`` GeoTIFF tiles
   plus ``write_predictions`` (GeoJSON per tile + CSV), with the default window (512/64:
   2x2 windows per tile) and with one 704-px window per tile. Reports tiles/s and the split
   model / (stitching + polygons + writing) per tile. One warm-up tile is not counted.
2. Host throughput (``--skip_host`` to skip): the model replaced by replayed outputs
   (``tools/bench_head.py``'s FCN-like / DetectNet outputs of sample scenes, ~45 buildings
   per tile, the recipes' post-processing), so what is timed is what the host does per tile
   besides the model (reading, stitching, the head, writing): host ms per tile, the tiles/s
   the host could feed an accelerator, with ``head_workers`` 0 (in-process), 1 and 2 (ratio
   vs 0 in the same run, interleaved, medians), and the head alone per tile.
3. Memory: square scenes of ``--sizes`` pixels (a mosaic of the sample tiles, tiled GeoTIFF
   with 256-px blocks, UTM georeference), predicted with a small FCN (width 8, depth 4,
   1 block: the model's activations per window are constant anyway; but a scene narrower
   than ~1800 px has fewer than 4 windows per row, hence smaller batches and a lower
   floor) in FRESH subprocesses;
   peak RSS = VmHWM of the child; ``stream2`` streams with 2 head worker processes and
   adds each started worker's peak (the executor starts them on demand: one may suffice).
   Compared with a naive child in the same run: whole scene read into memory as float64,
   model run on non-overlapping windows into float64 full-scene output canvases, one
   whole-scene polygon-head call. A third child (``base``)
   only imports TF, loads the model and predicts one window: the floor of any approach.
   With ``--low_memory`` every child but the naive one first calls
   ``sn_tf.utils.malloc.return_freed_memory`` and its head workers do too, as
   ``python -m sn_tf.predict --low_memory`` does (and so does the host part's process).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.utils import tfimport  # noqa: F401  (first: sets TF's environment before keras loads TF)

TYPE = "MUL-PanSharpen"
TILE = 650
SMALL_FCN = dict(width=8, depth=4, blocks=1)
MODELS = pathlib.Path(__file__).resolve().parents[1] / "models"


def recipe_model(kind: str) -> tuple[dict, dict]:
    """(model kwargs, postprocess) of the full-size recipe ``models/<kind>.py``."""
    from sn_tf.training.recipes import load_recipe

    cfg = load_recipe(str(MODELS / f"{kind}.py"))
    kw = {k: v for k, v in cfg["model"].items() if k != "kind"}
    if "blocks" in kw and kind == "detectnet":
        kw["blocks"] = tuple(kw["blocks"])
    return kw, dict(cfg["postprocess"])


# ---------------------------------------------------------------------------------- data

def sample_tiles(workdir: pathlib.Path, n: int) -> list[pathlib.Path]:
    """MUL-PanSharpen GeoTIFFs of ``n`` synthetic sample tiles (written once)."""
    from sn_tf.spacenet import synthetic

    data = workdir / "sample"
    if not (data / "sample_manifest.json").is_file():
        synthetic.write_sample(data, aois=("AOI_2_Vegas",), tiles_per_aoi=max(n, 2))
    files = sorted((data / "AOI_2_Vegas_Train" / TYPE).glob("*.tif"))
    return files[:n]


def band_stats(files) -> tuple[list[float], list[float]]:
    """Per-band mean and std (float) of the tiles."""
    from sn_tf.spacenet import geo

    stack = np.concatenate([geo.read_raster(f)[0].reshape(-1, 8) for f in files])
    return stack.mean(0).tolist(), stack.std(0).tolist()


def write_scene(path: pathlib.Path, size: int, tiles) -> pathlib.Path:
    """A size x size x 8 uint16 mosaic of the tiles as a tiled GeoTIFF (UTM, 0.3 m pixels).

    Written one 650-row band at a time (the parent never holds the scene).
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from sn_tf.spacenet import geo

    if path.is_file():
        return path
    arrays = [np.moveaxis(geo.read_raster(f)[0], -1, 0) for f in tiles]
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=8,
                       dtype="uint16", crs="EPSG:32611", tiled=True, blockxsize=256,
                       blockysize=256, transform=from_origin(600000, 4000000, 0.3, 0.3)) as ds:
        for r, y0 in enumerate(range(0, size, TILE)):
            h = min(TILE, size - y0)
            row = np.concatenate([arrays[(r + c) % len(arrays)][:, :h]
                                  for c in range(-(-size // TILE))], axis=2)[:, :, :size]
            ds.write(row, window=Window(0, y0, size, h))
    return path


# -------------------------------------------------------------------------------- models

def logit(p):
    """log(p / (1 - p)), clipped away from 0 and 1."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _shift_bias(model, layer: str, raw_tile: np.ndarray, mean, std, quantile: float,
                target: float) -> None:
    """Shift ``layer``'s bias so that ``quantile`` of its output on a tile equals ``target``."""
    x = ((raw_tile.astype(np.float32) - np.float32(mean)) / np.float32(std))[None, :640, :640]
    out = np.asarray(model(x, training=False)[layer])
    value = np.quantile(out, quantile)
    kernel, bias = model.get_layer(layer).get_weights()
    model.get_layer(layer).set_weights([kernel, bias + (target - value)])


def _sparse_detectnet(model, raw_tile: np.ndarray, mean, std, cut: float) -> None:
    """Make an untrained DetectNet a sparse surrogate: coverage logits rescaled to unit spread
    with ~10 % of the cells of a tile above ``cut``; boxes = the head's initial squares
    (bbox kernel zeroed: random 3x3 head convs otherwise give inverted, 400 px boxes)."""
    import keras

    x = ((raw_tile.astype(np.float32) - np.float32(mean)) / np.float32(std))[None, :640, :640]
    layer = model.get_layer("coverage")
    features = np.asarray(keras.Model(model.inputs, layer.input)(x, training=False))
    kernel, bias = layer.get_weights()
    logits = features.reshape(-1, features.shape[-1]) @ kernel.reshape(-1, 1)
    kernel = kernel / max(float(logits.std()), 1e-6)
    logits = features.reshape(-1, features.shape[-1]) @ kernel.reshape(-1, 1)
    target = float(logit(np.float64(cut)))
    layer.set_weights([kernel, np.full_like(bias, target - np.quantile(logits, 0.90))])
    box = model.get_layer("bbox_unscaled")
    kernel, bias = box.get_weights()
    box.set_weights([np.zeros_like(kernel), bias])


def export_models(workdir: pathlib.Path, tiles, which) -> dict:
    """{name: export dir} of the untrained sparse-surrogate models (see the module doc)."""
    import keras

    from sn_tf.serving import exporter
    from sn_tf import modeling
    from sn_tf.spacenet import geo
    from sn_tf.training import model_dir as md

    mean, std = band_stats(tiles)
    raw = geo.read_raster(tiles[0])[0]
    specs = {"fcn": ("fcn", *recipe_model("fcn")),
             "detectnet": ("detectnet", *recipe_model("detectnet")),
             "small_fcn": ("fcn", SMALL_FCN, {})}
    out = {}
    for name in which:
        kind, kw, post = specs[name]
        target = workdir / f"{name}_export"
        if (target / "saved_model.pb").is_file():
            out[name] = target
            continue
        keras.utils.set_random_seed(0)
        model = modeling.build_model(kind, 8, **kw)
        if kind == "fcn":
            _shift_bias(model, "footprint", raw, mean, std, 0.92,
                        float(post.get("threshold", 0.0)))
        else:
            _sparse_detectnet(model, raw, mean, std, float(post.get("threshold", 0.06)))
        model.compile(loss=modeling.losses_for(kind, sdf_truncation=32.0))
        mdir = workdir / name
        (mdir / "checkpoints").mkdir(parents=True, exist_ok=True)
        model.save(mdir / md.BEST)
        stride = modeling.stride_for(kind, depth=kw.get("depth", 4))
        md.ModelInfo(kind=kind, image_types=[TYPE], bands={TYPE: list(range(1, 9))},
                     input_dtypes={TYPE: "uint16"}, mean=mean, std=std, stride=stride,
                     postprocess=post, recipe=f"bench-{name}",
                     cell_size=kw.get("cell_size") if kind == "detectnet" else None).save(mdir)
        out[name] = exporter.export_model(mdir, target)
    return out


# ---------------------------------------------------------------------------- throughput

def throughput(exports: dict, tiles, workdir: pathlib.Path) -> None:
    """Tiles/s of predict_images + write_predictions, with the model time split out.

    ``tiles[0]`` warms up each configuration; ``tiles[1:]`` are measured.
    """
    from sn_tf.serving import writers
    from sn_tf.serving.predictor import Predictor, predict_images

    measured = tiles[1:]

    class TimedPredictor(Predictor):
        """A Predictor that adds the time of its model calls (incl. .numpy()) to ``spent``."""

        spent = 0.0

        def __call__(self, batch):
            t0 = time.perf_counter()
            try:
                return super().__call__(batch)
            finally:
                self.spent += time.perf_counter() - t0

    print(f"throughput: {len(measured)} tiles of {TILE}x{TILE}x8 uint16 (plus 1 warm-up), "
          "polygons + GeoJSON/CSV written")
    print(f"  {'model':<10} {'windows':<22} {'tiles/s':>8} {'model ms':>9} "
          f"{'rest ms':>8} {'buildings/tile':>15}")
    for name in ("fcn", "detectnet"):
        if name not in exports:
            continue
        predictor = TimedPredictor(exports[name])
        for label, window, overlap in (("512/64 (4 per tile)", 512, 64),
                                       ("704 (1 per tile)", 704, 0)):
            predict_images(predictor, [str(tiles[0])], window=window, overlap=overlap)
            predictor.spent = 0.0
            t0 = time.perf_counter()
            preds = predict_images(predictor, list(map(str, measured)), window=window,
                                   overlap=overlap)
            out = workdir / f"out_{name}"
            shutil.rmtree(out, ignore_errors=True)
            writers.write_predictions(preds, out)
            total = time.perf_counter() - t0
            n = len(measured)
            per_tile = sum(len(p.buildings) for p in preds) / n
            print(f"  {name:<10} {label:<22} {n / total:8.2f} {1000 * predictor.spent / n:9.0f} "
                  f"{1000 * (total - predictor.spent) / n:8.0f} {per_tile:15.1f}")



# ------------------------------------------------------------------------- host throughput

def replay_predictor(template, outputs_per_tile: list, window: int, overlap: int,
                     batch_size: int):
    """A stand-in for ``template`` (a Predictor) whose model costs nothing: it returns, in
    call order, windows cut from whole-tile outputs (``tools/bench_head.py``'s FCN-like or
    DetectNet outputs of sample scenes, ~45 buildings per tile) for the windows predict
    asks for on 650 px tiles. What remains is the host's work: reading, stitching, the head,
    writing. Set ``.i = 0`` before each pass over the tiles."""
    from sn_tf.serving.predictor import Predictor, window_batches
    from sn_tf.serving.sources import ArrayImage

    class Replay(Predictor):
        def __call__(self, batch):
            out = self.calls[self.i % len(self.calls)]
            self.i += 1
            return out

    replay = object.__new__(Replay)
    replay.__dict__.update(vars(template))
    replay.calls, replay.i = [], 0
    f = template.grid_stride if template.kind == "detectnet" else 1
    plan = ArrayImage("x", np.zeros((TILE, TILE, 1), np.uint8))
    for outputs in outputs_per_tile:
        for _, batch, _ in window_batches(replay, plan, window, overlap, batch_size):
            replay.calls.append({name: np.stack([
                outputs[name][y0 // f:-(-(y0 + h) // f), x0 // f:-(-(x0 + w) // f)]
                for y0, x0, h, w in batch]) for name in template.outputs})
    return replay


def _replayed(kind: str, n: int):
    """(FCN-like or DetectNet outputs of ``n`` sample scenes, head params) from
    tools/bench_head.py."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import bench_head

    rng = np.random.default_rng(1)
    scenes = bench_head.make_scenes(n, 0)
    if kind == "fcn":
        return [bench_head.fcn_outputs(p, h, w, rng) for _, p, h, w in scenes], \
            dict(bench_head.FCN_PARAMS)
    return [bench_head.detectnet_outputs(p, h, w, rng) for _, p, h, w in scenes], \
        bench_head.detectnet_params()


def host_throughput(exports: dict, tiles, workdir: pathlib.Path, repeats: int,
                    low_memory: bool = False) -> None:
    """Host ms per tile and the tiles/s the host could feed an infinitely fast model: the
    model replaced by :class:`ReplayPredictor`, ``predict_images`` + ``write_predictions``
    with 0 (in-process), 1 and 2 head workers (pools started once, outside the timing),
    interleaved ``repeats`` times, medians; and the head alone (``outputs_to_buildings`` on
    each whole tile, in-process)."""
    import os

    from sn_tf.head import polygons
    from sn_tf.serving import headpool, writers
    from sn_tf.serving.predictor import Predictor, predict_images

    files = list(map(str, tiles))
    print(f"host: {len(files)} tiles of {TILE}x{TILE}x8 uint16 read from GeoTIFF, model "
          f"outputs replayed (bench_head scenes), window 512/64, median of {repeats} "
          f"interleaved runs; load average {os.getloadavg()[0]:.1f}")
    print(f"  {'model':<10} {'head alone':>11} {'workers':>8} {'host ms/tile':>13} "
          f"{'tiles/s':>8} {'vs 0':>6}")
    pools = {w: headpool.HeadPool(w, low_memory=low_memory) for w in (0, 1, 2)}
    try:
        for name in ("fcn", "detectnet"):
            if name not in exports:
                continue
            template = Predictor(exports[name])
            outputs, params = _replayed(name, len(files))
            template.params = dict(template.params, **params)
            replay = replay_predictor(template, outputs, 512, 64, 4)
            head = []
            for o in outputs:
                size = (TILE, TILE)
                t0 = time.perf_counter()
                polygons.outputs_to_buildings(name, o, "x", image_size=size,
                                              params=template.params,
                                              cell_size=template.grid_stride)
                head.append(time.perf_counter() - t0)
            times = {w: [] for w in pools}
            for w in pools:  # warm-up: workers import the head, caches fill
                replay.i = 0
                predict_images(replay, files[:2], head_workers=pools[w])
            for r in range(repeats):
                for w, pool in pools.items():
                    replay.i = 0
                    out = workdir / f"host_{name}_{w}_{r}"
                    shutil.rmtree(out, ignore_errors=True)
                    t0 = time.perf_counter()
                    preds = predict_images(replay, files, head_workers=pool)
                    writers.write_predictions(preds, out)
                    times[w].append((time.perf_counter() - t0) / len(files))
            base = float(np.median(times[0]))
            for w in pools:
                ms = float(np.median(times[w]))
                print(f"  {name:<10} {1000 * float(np.median(head)):9.1f}ms {w:>8} "
                      f"{1000 * ms:13.1f} {1 / ms:8.1f} {base / ms:5.2f}x")
    finally:
        for pool in pools.values():
            pool.close()


# -------------------------------------------------------------------------------- memory

def _peak_rss_mb() -> float:
    """VmHWM (peak resident set) of this process in MB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def _process_peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of process ``pid`` in MB (Linux /proc)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def child(mode: str, scene: str, export_dir: str, low_memory: bool = False) -> None:
    """Run one measurement in this (fresh) process and print a JSON line.

    ``stream2``: streaming with 2 head worker processes; ``workers_peak_rss_mb`` lists the
    peaks of the workers that were started (the executor starts them on demand: one may
    have sufficed), read from /proc before the pool stops (``HeadPool``'s executor
    holds the processes; a benchmark may look inside)."""
    from sn_tf.spacenet import geo
    from sn_tf.head import polygons
    from sn_tf.serving import sources
    from sn_tf.serving.headpool import HeadPool
    from sn_tf.serving.predictor import GDAL_CACHE_BYTES, Predictor, predict_image
    from sn_tf.utils.malloc import return_freed_memory

    if low_memory and mode != "naive":
        return_freed_memory()  # as python -m sn_tf.predict --low_memory does
    predictor = Predictor(export_dir)
    t0 = time.perf_counter()
    workers_mb = None
    if mode == "stream2":
        with HeadPool(2, low_memory=low_memory) as pool:
            pred = predict_image(predictor, scene, head_workers=pool)
            workers_mb = [_process_peak_rss_mb(pid)
                          for pid in pool._executor._processes]  # noqa: SLF001
        n = len(pred.buildings)
    elif mode == "base":
        with sources.GeoTiffImage(sources.ImageSource("scene", {TYPE: pathlib.Path(scene)}),
                                  predictor.info, predictor.dtype) as image:
            predictor(image.read(0, 0, 512, 512)[None])
        n = 0
    elif mode == "stream":
        pred = predict_image(predictor, scene)
        n = len(pred.buildings)
    else:  # naive: whole scene in float64, float64 output canvases, one head call
        import rasterio

        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):  # same GDAL cache bound
            image, _ = geo.read_raster(scene)
        canvas = image.astype(np.float64)
        h, w, _ = canvas.shape
        outputs = {k: np.zeros((h, w, 1), np.float64) for k in predictor.outputs}
        for y in range(0, h, 512):
            for x in range(0, w, 512):
                window = canvas[y:y + 512, x:x + 512].astype(predictor.dtype)[None]
                result = predictor(window)
                for k in outputs:
                    outputs[k][y:y + 512, x:x + 512] = result[k][0]
        n = len(polygons.outputs_to_buildings("fcn", outputs, "scene", image_size=(h, w),
                                              params=predictor.params))
    print(json.dumps({"mode": mode, "seconds": time.perf_counter() - t0,
                      "peak_rss_mb": _peak_rss_mb(), "workers_peak_rss_mb": workers_mb,
                      "buildings": n}))


def memory(export_dir: pathlib.Path, tiles, sizes, workdir: pathlib.Path,
           low_memory: bool = False) -> None:
    """Peak RSS of base / streaming (in-process head, and 2 head workers) / naive children
    for each scene size; with workers, the parent's peak and each started worker's.
    ``low_memory``: the children return freed memory (``child``)."""
    print(f"memory: small FCN {SMALL_FCN}, window 512/64, batch 4; fresh process per row; "
          f"malloc {'returns freed blocks (--low_memory)' if low_memory else 'defaults'}")
    print(f"  {'scene':>11} {'Mpx':>6} {'mode':<7} {'peak RSS MB':>12} {'workers MB':>11} "
          f"{'seconds':>8} {'buildings':>10}")
    for size in sizes:
        scene = write_scene(workdir / f"scene_{size}.tif", size, tiles)
        modes = (("base",) if size == sizes[0] else ()) + ("stream", "stream2", "naive")
        for mode in modes:
            run = subprocess.run([sys.executable, __file__, f"--child={mode}",
                                  f"--scene={scene}", f"--export={export_dir}"]
                                 + (["--low_memory"] if low_memory else []),
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(f"  {size:>5}x{size:<5} {mode}: failed\n{run.stderr[-2000:]}")
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            workers = r.get("workers_peak_rss_mb")
            workers = "-" if workers is None else "+".join(f"{w:.0f}" for w in workers)
            print(f"  {size:>5}x{size:<5} {size * size / 1e6:6.1f} {mode:<7} "
                  f"{r['peak_rss_mb']:12.0f} {workers:>11} {r['seconds']:8.1f} "
                  f"{r['buildings']:10d}")


# ---------------------------------------------------------------------------------- main

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=6)
    parser.add_argument("--sizes", default="1000,2500,5000")
    parser.add_argument("--workdir", default="/tmp/sn_tf_bench_predict")
    parser.add_argument("--skip_throughput", action="store_true")
    parser.add_argument("--skip_memory", action="store_true")
    parser.add_argument("--skip_host", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="host: interleaved runs")
    parser.add_argument("--low_memory", action="store_true",
                        help="as sn_tf.predict --low_memory: glibc returns freed blocks of "
                        "1 MiB and more (this process, the memory children, head workers)")
    parser.add_argument("--child", choices=["base", "stream", "stream2", "naive"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--export", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.scene, args.export, args.low_memory)
        return
    if args.low_memory:
        from sn_tf.utils.malloc import return_freed_memory

        return_freed_memory()
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tiles = sample_tiles(workdir, args.tiles + 1)
    which = ([] if args.skip_throughput and args.skip_host else ["fcn", "detectnet"]) + (
        [] if args.skip_memory else ["small_fcn"])
    t0 = time.perf_counter()
    exports = export_models(workdir, tiles, which)
    print(f"setup (sample tiles, {len(exports)} model exports): {time.perf_counter() - t0:.1f} s")
    if not args.skip_throughput:
        throughput(exports, tiles, workdir)
    if not args.skip_host:
        host_throughput(exports, tiles[1:], workdir, args.repeats, args.low_memory)
    if not args.skip_memory:
        memory(exports["small_fcn"], tiles, [int(s) for s in args.sizes.split(",")], workdir,
               args.low_memory)


if __name__ == "__main__":
    main()
