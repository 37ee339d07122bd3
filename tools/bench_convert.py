"""Conversion throughput against read floors, worker scaling, peak memory, per-stage CPU.

    .venv/bin/python tools/bench_convert.py [--tiles=24] [--repeats=3] [--breakdown]
        [--workdir=/tmp/sn_tf_bench_convert]

All figures come from one run on the same generated SpaceNet 2 tiles (all four image types
plus labels, 650 px; ``2 * tiles`` tiles are converted). "Per core" figures are tiles per
CPU-second (user + system time of the process and its workers), which other load on the
machine distorts far less than wall time; wall-clock rates are printed too, with the load
average. Every measurement runs in a fresh process (imports excluded from its timing, the
page cache warm), repeated ``--repeats`` times interleaved; medians are reported.

* read floor, GDAL defaults: only reading every GeoTIFF of every tile with rasterio and
  GDAL's default options and malloc (``geo.read_raster(fast=False)``): the issue's floor;
* read + write floor, defaults: the same, writing the pixel bytes to one file;
* read floor, as the converter reads: ``geo.read_raster()`` (memory-mapped GeoTIFF
  reads) after ``sn_tf.utils.malloc.keep_freed_memory()``;
* read + write floor, as the converter: the same, writing each tile's pixels as one
  TFRecord the way the converter writes (O_DIRECT, CRC);
* convert, 1 worker: ``sn_tf.dataset.converter`` in-process; the target is <= 2x the read floor
  per core;
* convert, 2 workers: spawned worker processes (their start-up, imports included, counts);
  also run on half the tiles, which splits its CPU into start-up and per-tile cost;
* convert on Beam (when ``apache_beam`` is installed): ``sn_tf.dataset.beam_convert`` with
  the DirectRunner and 2 worker processes (``direct_num_workers=2``, multi_processing),
  one element per shard (the default), also on half the tiles, and one element per tile
  (``fan_out="tile"``: every record crosses the runner); its overhead is stated against "convert, 2 workers" (CPU, wall,
  start-up vs per tile). CPU counts the runner's worker processes only once they are
  reaped (``RUSAGE_CHILDREN``), which the DirectRunner does before returning;
* peak memory: peak RSS of the converter (parent + workers) for N and 2N tiles in fresh
  processes; it must not grow with the number of tiles;
* ``--breakdown``: CPU ms per tile of each step of the converter's per-tile loop (in this
  process, tuned malloc, one shard written as the converter writes), for BUILD_NOTES.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sn_tf.dataset import converter
from sn_tf.spacenet import geo, layout
from sn_tf.utils import malloc

KINDS = ("read_default", "read_write_default", "read", "read_write", "convert_1", "convert_2")
LABELS = {"read_default": "read floor, GDAL defaults", "read_write_default": "read + write, defaults",
          "read": "read floor, as converter", "read_write": "read + write, as converter",
          "convert_1": "convert, 1 worker", "convert_2": "convert, 2 workers",
          "convert_beam": "convert, Beam Direct 2 workers",
          "convert_beam_tile": "  same, one element per tile"}
BEAM_OPTIONS = "runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing"


def _beam_installed() -> bool:
    """Whether the Beam row can run (``pip install sn_tf[beam]``)."""
    import importlib.util

    return importlib.util.find_spec("apache_beam") is not None


def make_data(root: pathlib.Path, tiles: int) -> pathlib.Path:
    """Generate ``tiles`` SpaceNet 2 tiles (AOI_2_Vegas, all image types) under ``root``."""
    from sn_tf.spacenet.synthetic import write_sample

    if not (root / "AOI_2_Vegas_Train").is_dir():
        write_sample(root, aois=("AOI_2_Vegas",), tiles_per_aoi=tiles, seed=0)
    return root


def _usage() -> tuple[float, float, int]:
    """(user s, system s, minor faults) of this process and its reaped children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return (me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime,
            me.ru_minflt + kids.ru_minflt)


def _tiles(data) -> list:
    return [t for lay in layout.discover(data) for t in lay.tiles]


def _read_all(tiles, fast: bool = True) -> int:
    for t in tiles:
        for path in t.images.values():
            geo.read_raster(path, fast=fast)
    return len(tiles)


def _read_write_default(tiles, out: pathlib.Path) -> int:
    """Read every GeoTIFF (GDAL defaults) and write its pixel bytes to one file."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pixels.bin", "wb") as f:
        for t in tiles:
            f.writelines(geo.read_raster(path, fast=False)[0].tobytes()
                         for path in t.images.values())
    return len(tiles)


def _read_write_as_converter(tiles, out: pathlib.Path) -> int:
    """Read every GeoTIFF as the converter does; write each tile's pixels as one record."""
    from sn_tf.dataset.tfrecord import TFRecordWriter

    out.mkdir(parents=True, exist_ok=True)
    with TFRecordWriter(out / "pixels.tfrecord", drop_cache=True, direct=True) as w:
        for t in tiles:
            w.write([geo.read_raster(path)[0] for path in t.images.values()])
    return len(tiles)


def run_kind(kind: str, data: pathlib.Path, out: pathlib.Path) -> dict:
    """One measurement in this (fresh) process: wall s, user s, system s, faults, tiles."""
    tiles = _tiles(data)
    shutil.rmtree(out, ignore_errors=True)
    if kind.startswith("convert_beam"):
        from sn_tf.dataset import beam_convert

        cfg = converter.ConvertConfig(progress=False, shard_size_mb=50, tune_malloc=True)
        fan_out = "tile" if kind.endswith("_tile") else "shard"

        def work():
            return beam_convert.convert_beam(data, out, cfg, BEAM_OPTIONS,
                                             fan_out=fan_out).info.num_examples
    elif kind.startswith("convert"):
        cfg = converter.ConvertConfig(num_workers=int(kind[-1]), progress=False,
                                      shard_size_mb=50, tune_malloc=True)  # as the CLI

        def work():
            res = converter.convert(data, out, cfg)
            return res.info.num_examples
    else:
        work = {"read_default": lambda: _read_all(tiles, fast=False),
                "read_write_default": lambda: _read_write_default(tiles, out),
                "read": lambda: _read_all(tiles),
                "read_write": lambda: _read_write_as_converter(tiles, out)}[kind]
        if not kind.endswith("_default"):
            malloc.keep_freed_memory()
    w0, (u0, s0, f0) = time.perf_counter(), _usage()
    n = work()
    w1, (u1, s1, f1) = time.perf_counter(), _usage()
    shutil.rmtree(out, ignore_errors=True)
    return {"kind": kind, "wall": w1 - w0, "user": u1 - u0, "sys": s1 - s0,
            "faults": f1 - f0, "tiles": n, "tensorflow_imported": "tensorflow" in sys.modules}


def _in_fresh_process(kind: str, data: pathlib.Path, out: pathlib.Path) -> dict:
    res = subprocess.run([sys.executable, __file__, f"--_run={kind}", f"--_data={data}",
                          f"--_out={out}"], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def peak_rss_mb(data, out, workers: int) -> float:
    """Peak RSS (MB) of a fresh converter process (max of itself and its workers)."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        f"import resource, sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from sn_tf.dataset import converter\n"
        f"cfg = converter.ConvertConfig(num_workers={workers}, progress=False, shard_size_mb=50, "
        "aois=('AOI_2_Vegas',), tune_malloc=True)\n"
        f"converter.convert({str(data)!r}, {str(out)!r}, cfg)\n"
        "r = resource.getrusage\n"
        "print(max(r(resource.RUSAGE_SELF).ru_maxrss, r(resource.RUSAGE_CHILDREN).ru_maxrss))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    shutil.rmtree(out, ignore_errors=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


# ---- per-stage breakdown ---------------------------------------------------------------
class _Timers:
    """CPU seconds (user + system of this process) spent inside named calls."""

    def __init__(self):
        self.total: dict[str, float] = {}

    @staticmethod
    def now() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def add(self, name: str, seconds: float) -> None:
        self.total[name] = self.total.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def patched(self, module, attr: str, name: str):
        """Time every call of ``module.attr`` under ``name`` while the context is open."""
        original = getattr(module, attr)

        def timed(*args, **kwargs):
            t0 = self.now()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(name, self.now() - t0)

        setattr(module, attr, timed)
        try:
            yield
        finally:
            setattr(module, attr, original)


def breakdown(data: pathlib.Path, out: pathlib.Path) -> dict[str, float]:
    """CPU ms per tile of each step of the converter's per-tile loop (``write_shard``).

    Steps of ``build_tile`` are indented; "rest" is the process CPU not in a listed
    top-level step (the O_DIRECT writer thread, the loop).
    """
    from sn_tf.dataset import labels, schema, tfrecord
    from sn_tf.dataset import tiles as tiles_mod
    from sn_tf.dataset.stats import BandStats

    malloc.keep_freed_memory()
    tiles = _tiles(data)
    opts = tiles_mod.TileOptions(image_types=tuple(sorted(tiles[0].images)))
    timers = _Timers()
    inner = [(tiles_mod, "read_images", "  read GeoTIFFs"),
             (geo, "read_label_geojson", "  read label GeoJSON"),
             (tiles_mod, "_labels_on_grid", "  labels to pixels, clip"),
             (labels, "rasterize_instances", "  rasterise buildings"),
             (labels, "instance_boundary", "  boundaries"),
             (labels, "distance_to_boundary", "  distance (EDT)"),
             (labels, "signed_distance", "  sdf")]
    steps = ("build_tile", "serialise", "write record (frame, CRC, copy)", "statistics")
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for module, attr, name in inner:
            stack.enter_context(timers.patched(module, attr, name))
        stats: dict[str, BandStats] = {}
        t_all = timers.now()
        with tfrecord.TFRecordWriter(out / "breakdown.tfrecord", drop_cache=True,
                                     direct=True) as w:
            for tile in tiles:
                t = [timers.now()]
                built, _ = tiles_mod.build_tile(tile, opts)
                t.append(timers.now())
                parts = schema.encode_tile_parts(built)
                t.append(timers.now())
                w.write(parts)
                t.append(timers.now())
                for itype, img in built["images"].items():
                    d = img["data"]
                    stats.setdefault(itype, BandStats(d.dtype.name, d.shape[2]))
                    stats[itype].add(d, img["nodata"])
                t.append(timers.now())
                for name, t0, t1 in zip(steps, t, t[1:]):
                    timers.add(name, t1 - t0)
        timers.add("total", timers.now() - t_all)
    timers.add("rest (O_DIRECT thread, loop)",
               timers.total["total"] - sum(timers.total[k] for k in steps))
    shutil.rmtree(out, ignore_errors=True)
    order = [steps[0], *(name for _, _, name in inner), *steps[1:],
             "rest (O_DIRECT thread, loop)", "total"]
    return {k: round(1000 * timers.total.get(k, 0.0) / len(tiles), 2) for k in order}


# ---- main ------------------------------------------------------------------------------
def beam_overhead(cpu: dict, wall: dict, small_beam: list[dict], n: int) -> dict:
    """Print and return the Beam row's overhead against the local converter with 2
    workers: CPU and wall ratios, and the Beam run's CPU split into start-up and per-tile
    cost (from half the tiles)."""
    c_small = statistics.median(r["user"] + r["sys"] for r in small_beam)
    n_small = small_beam[0]["tiles"]
    per_tile = (cpu["convert_beam"] - c_small) / (n - n_small)
    startup = cpu["convert_beam"] - per_tile * n
    print(f"one element per tile: {cpu['convert_beam_tile'] / cpu['convert_beam']:.2f}x the "
          f"CPU of one element per shard")
    print(f"convert on Beam (DirectRunner, 2 worker processes): {cpu['convert_beam'] / cpu['convert_2']:.2f}x "
          f"the CPU and {wall['convert_beam'] / wall['convert_2']:.2f}x the wall time of the "
          f"local converter with 2 workers; from {n_small} vs {n} tiles: "
          f"{1000 * per_tile:.1f} CPU ms per tile + {startup:.2f} CPU s of start-up")
    return {"beam_over_convert_2_cpu": round(cpu["convert_beam"] / cpu["convert_2"], 2),
            "beam_over_convert_2_wall": round(wall["convert_beam"] / wall["convert_2"], 2),
            "beam_cpu_ms_per_tile_marginal": round(1000 * per_tile, 2),
            "beam_startup_cpu_s": round(startup, 2),
            "beam_tile_over_shard_cpu": round(cpu["convert_beam_tile"] / cpu["convert_beam"], 2)}



def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--no_beam", action="store_true", help="leave out the Beam row")
    ap.add_argument("--workdir", default="/tmp/sn_tf_bench_convert")
    ap.add_argument("--_run", help=argparse.SUPPRESS)
    ap.add_argument("--_data", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._run:
        print(json.dumps(run_kind(args._run, pathlib.Path(args._data), pathlib.Path(args._out))))
        return
    work = pathlib.Path(args.workdir)
    small = make_data(work / f"data{args.tiles}", args.tiles)
    large = make_data(work / f"data{2 * args.tiles}", 2 * args.tiles)
    _read_all(_tiles(large))  # warm the page cache: floors and conversions read the same way
    kinds = KINDS + (("convert_beam", "convert_beam_tile")
                     if _beam_installed() and not args.no_beam else ())
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    small_2: list[dict] = []  # 2 workers on half the tiles: start-up vs per-tile CPU
    small_beam: list[dict] = []
    for _ in range(args.repeats):
        for kind in kinds:
            runs[kind].append(_in_fresh_process(kind, large, work / f"out_{kind}"))
        small_2.append(_in_fresh_process("convert_2", small, work / "out_convert_2_small"))
        if "convert_beam" in kinds:
            small_beam.append(_in_fresh_process("convert_beam", small,
                                                work / "out_convert_beam_small"))
    n = runs["read_default"][0]["tiles"]
    cpu = {k: _median([{**r, "cpu": r["user"] + r["sys"]} for r in v], "cpu")
           for k, v in runs.items()}
    wall = {k: _median(v, "wall") for k, v in runs.items()}
    sys_ms = {k: 1000 * _median(v, "sys") / n for k, v in runs.items()}
    mem_small = peak_rss_mb(small, work / "outm1", 2)
    mem_large = peak_rss_mb(large, work / "outm2", 2)
    load = os.getloadavg()[0]
    print(f"tiles (SN2, PAN+MUL+MUL-PanSharpen+RGB-PanSharpen + labels): {n}; "
          f"load average {load:.1f} on {os.cpu_count()} cores; median of {args.repeats}")
    print(f"{'':28s} {'tiles/CPU-s':>11s} {'CPU ms/tile':>11s} {'(sys)':>6s} "
          f"{'tiles/s wall':>12s}")
    for k in kinds:
        print(f"{LABELS[k]:28s} {n / cpu[k]:11.2f} {1000 * cpu[k] / n:11.1f} "
              f"{sys_ms[k]:6.1f} {n / wall[k]:12.2f}")
    c1 = cpu["convert_1"]
    print(f"convert, 1 worker, per core: {c1 / cpu['read_default']:.2f}x the read floor with "
          f"GDAL defaults (target <= 2x), {c1 / cpu['read_write_default']:.2f}x read+write "
          f"with defaults; {c1 / cpu['read']:.2f}x the read floor as the converter reads, "
          f"{c1 / cpu['read_write']:.2f}x read+write as the converter")
    c2_small = statistics.median(r["user"] + r["sys"] for r in small_2)
    n_small = small_2[0]["tiles"]
    per_tile_2 = (cpu["convert_2"] - c2_small) / (n - n_small)
    startup_2 = cpu["convert_2"] - per_tile_2 * n
    print(f"convert, 2 workers: {cpu['convert_2'] / c1:.2f}x the CPU of 1 worker; from "
          f"{n_small} vs {n} tiles: {1000 * per_tile_2:.1f} CPU ms per tile "
          f"({per_tile_2 / cpu['read_default'] * n:.2f}x the default read floor) + "
          f"{startup_2:.2f} CPU s of "
          f"start-up (spawning 2 workers); wall scaling 1 -> 2 workers "
          f"{wall['convert_1'] / wall['convert_2']:.2f}x; tensorflow imported by a "
          f"conversion: {any(r['tensorflow_imported'] for v in runs.values() for r in v)}")
    print(f"peak RSS, {args.tiles} tiles: {mem_small:.0f} MB;  {2 * args.tiles} tiles: "
          f"{mem_large:.0f} MB  (ratio {mem_large / mem_small:.2f})")
    result = {
        "tiles": n, "load_average": round(load, 2), "repeats": args.repeats,
        "tiles_per_cpu_s": {k: round(n / cpu[k], 2) for k in kinds},
        "cpu_ms_per_tile": {k: round(1000 * cpu[k] / n, 2) for k in kinds},
        "sys_ms_per_tile": {k: round(v, 2) for k, v in sys_ms.items()},
        "wall_tiles_per_s": {k: round(n / wall[k], 2) for k in kinds},
        "convert_over_default_read_floor_per_core": round(c1 / cpu["read_default"], 2),
        "convert_over_default_read_write_floor_per_core":
            round(c1 / cpu["read_write_default"], 2),
        "convert_over_converter_read_floor_per_core": round(c1 / cpu["read"], 2),
        "convert_over_converter_read_write_floor_per_core": round(c1 / cpu["read_write"], 2),
        "convert_2_workers_cpu_ms_per_tile_marginal": round(1000 * per_tile_2, 2),
        "convert_2_workers_startup_cpu_s": round(startup_2, 2),
        "scaling_2_over_1_wall": round(wall["convert_1"] / wall["convert_2"], 2),
        f"peak_rss_mb_{args.tiles}_tiles": round(mem_small),
        f"peak_rss_mb_{2 * args.tiles}_tiles": round(mem_large),
    }
    if small_beam:
        result.update(beam_overhead(cpu, wall, small_beam, n))
    if args.breakdown:
        result["breakdown_cpu_ms_per_tile"] = breakdown(large, work / "out_breakdown")
        print("per-tile CPU of the converter's steps (ms, this process, tuned malloc):")
        for k, v in result["breakdown_cpu_ms_per_tile"].items():
            print(f"  {k:38s} {v:7.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
