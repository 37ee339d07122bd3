"""Conversion throughput against the rasterio read floor, worker scaling and peak memory.

    .venv/bin/python tools/bench_convert.py [--tiles=32] [--workdir=/tmp/bench_convert]

All figures come from one run on the same generated SpaceNet 2 tiles (all four image types
plus labels, 650 px). "Per core" figures are tiles per CPU-second (user + system time of
the process and its workers), which other load on the machine does not distort; wall-clock
rates are printed too, with the load average.

* read floor: only reading every GeoTIFF of every tile with rasterio (one process);
* read + write floor: the same, writing the pixel bytes to a file (output costs CPU too);
* convert, 1 worker: ``sn_tf.convert`` in-process (TF already imported);
  the target is floor/convert <= 2x per core;
* convert, 2 workers: worker processes (spawned, each importing TF once);
* peak memory: peak RSS of the converter (parent + workers) for N and 2N tiles in fresh
  processes; it must not grow with the number of tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sn_tf import convert, geo, layout  # noqa: E402


def make_data(root: pathlib.Path, tiles: int) -> pathlib.Path:
    """Generate ``tiles`` SpaceNet 2 tiles (AOI_2_Vegas, all image types) under ``root``."""
    from sn_tf.sample import write_sample

    if not (root / "AOI_2_Vegas_Train").is_dir():
        write_sample(root, aois=("AOI_2_Vegas",), tiles_per_aoi=tiles, seed=0)
    return root


def _cpu() -> float:
    """CPU seconds (user + system) of this process and its reaped children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(fn) -> tuple[float, float, int]:
    """(wall s, CPU s, tiles) of ``fn()`` which returns the number of tiles handled."""
    w0, c0 = time.perf_counter(), _cpu()
    n = fn()
    return time.perf_counter() - w0, _cpu() - c0, n


def read_floor(data: pathlib.Path) -> tuple[float, float, int]:
    """Read every GeoTIFF of every tile with rasterio: (wall s, CPU s, tiles)."""
    tiles = [t for lay in layout.discover(data) for t in lay.tiles]

    def run():
        for t in tiles:
            for path in t.images.values():
                geo.read_raster(path)
        return len(tiles)

    return _measure(run)


def read_write_floor(data: pathlib.Path, out: pathlib.Path) -> tuple[float, float, int]:
    """Read every GeoTIFF and write its pixel bytes to one file: (wall s, CPU s, tiles).

    A second baseline: conversion must also write its output, and on some machines the
    kernel's write path costs as much CPU as reading.
    """
    tiles = [t for lay in layout.discover(data) for t in lay.tiles]
    out.mkdir(parents=True, exist_ok=True)

    def run():
        with open(out / "pixels.bin", "wb") as f:
            for t in tiles:
                for path in t.images.values():
                    f.write(geo.read_raster(path)[0].tobytes())
        return len(tiles)

    return _measure(run)


def convert_run(data, out, workers: int) -> tuple[float, float, int]:
    """Convert ``data``: (wall s, CPU s of this process and the workers, tiles)."""
    shutil.rmtree(out, ignore_errors=True)
    cfg = convert.ConvertConfig(num_workers=workers, progress=False, shard_size_mb=50)

    def run():
        res = convert.convert(data, out, cfg)
        return sum(s["num_examples"] for s in res.info["splits"].values())

    return _measure(run)


def peak_rss_mb(data, out, workers: int, tiles: int) -> float:
    """Peak RSS (MB) of a fresh converter process (max of itself and its workers)."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import resource, sys; sys.path.insert(0, %r)\n"
        "from sn_tf import convert\n"
        "cfg = convert.ConvertConfig(num_workers=%d, progress=False, shard_size_mb=50, "
        "aois=('AOI_2_Vegas',))\n"
        "convert.convert(%r, %r, cfg)\n"
        "r = resource.getrusage\n"
        "print(max(r(resource.RUSAGE_SELF).ru_maxrss, r(resource.RUSAGE_CHILDREN).ru_maxrss))"
        % (str(REPO), workers, str(data), str(out)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return int(res.stdout.strip().splitlines()[-1]) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=32)
    ap.add_argument("--workdir", default="/tmp/sn_tf_bench_convert")
    args = ap.parse_args()
    work = pathlib.Path(args.workdir)
    from sn_tf.tfimport import tensorflow

    tensorflow()  # import cost is not conversion work
    small = make_data(work / f"data{args.tiles}", args.tiles)
    large = make_data(work / f"data{2 * args.tiles}", 2 * args.tiles)
    read_floor(large)  # warm the page cache: the floor and conversions read the same way
    fw, fc, n = read_floor(large)
    rw, rc, _ = read_write_floor(large, work / "rw")
    w1, c1, _ = convert_run(large, work / "out1", 1)
    w2, c2, _ = convert_run(large, work / "out2", 2)
    mem_small = peak_rss_mb(small, work / "outm1", 2, args.tiles)
    mem_large = peak_rss_mb(large, work / "outm2", 2, 2 * args.tiles)
    load = os.getloadavg()[0]
    result = {
        "tiles": n, "load_average": round(load, 2),
        "read_floor_tiles_per_cpu_s": round(n / fc, 2),
        "convert_1_worker_tiles_per_cpu_s": round(n / c1, 2),
        "floor_over_convert_per_core": round(c1 / fc, 2),
        "read_write_floor_tiles_per_cpu_s": round(n / rc, 2),
        "read_write_floor_over_convert_per_core": round(c1 / rc, 2),
        "convert_2_workers_tiles_per_cpu_s": round(n / c2, 2),
        "wall_tiles_per_s": {"floor": round(n / fw, 2), "1_worker": round(n / w1, 2),
                             "2_workers": round(n / w2, 2)},
        "scaling_2_over_1_wall": round(w1 / w2, 2),
        f"peak_rss_mb_{args.tiles}_tiles": round(mem_small),
        f"peak_rss_mb_{2 * args.tiles}_tiles": round(mem_large),
    }
    print(f"tiles (SN2, PAN+MUL+MUL-PanSharpen+RGB-PanSharpen + labels): {n}; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"{'':28s} {'tiles/CPU-s':>11s} {'tiles/s wall':>12s}")
    print(f"{'read floor (rasterio only)':28s} {n / fc:11.2f} {n / fw:12.2f}")
    print(f"{'read + write floor':28s} {n / rc:11.2f} {n / rw:12.2f}")
    print(f"{'convert, 1 worker':28s} {n / c1:11.2f} {n / w1:12.2f}   "
          f"per core: {c1 / fc:.2f}x the read floor (target <= 2x), "
          f"{c1 / rc:.2f}x the read+write floor")
    print(f"{'convert, 2 workers':28s} {n / c2:11.2f} {n / w2:12.2f}   "
          f"wall scaling 1 -> 2 workers = {w1 / w2:.2f}x (includes 2 TF imports)")
    print(f"peak RSS, {args.tiles} tiles: {mem_small:.0f} MB;  {2 * args.tiles} tiles: "
          f"{mem_large:.0f} MB  (ratio {mem_large / mem_small:.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
