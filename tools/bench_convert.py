"""Conversion throughput against the rasterio read floor, worker scaling and peak memory.

    .venv/bin/python tools/bench_convert.py [--tiles=32] [--workdir=/tmp/bench_convert]

All figures come from one run on the same generated SpaceNet 2 tiles (all four image types
plus labels, 650 px):

* read floor: only reading every GeoTIFF of every tile with rasterio, one core;
* convert, 1 worker: ``sn_tf.convert`` in-process (TF already imported), tiles/s;
  the ratio floor/convert is the target (<= 2x per core);
* convert, 2 workers: scaling from 1 to 2 workers (wall clock, includes worker start-up);
* peak memory: peak RSS of the converter (parent + workers) for N and 2N tiles in fresh
  processes; it must not grow with the number of tiles.
"""

from __future__ import annotations

import argparse
import json
import pathlib
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


def read_floor(data: pathlib.Path) -> tuple[float, int]:
    """Tiles/s of reading every GeoTIFF of every tile with rasterio (one core)."""
    tiles = [t for lay in layout.discover(data) for t in lay.tiles]
    t0 = time.perf_counter()
    for t in tiles:
        for path in t.images.values():
            geo.read_raster(path)
    return len(tiles) / (time.perf_counter() - t0), len(tiles)


def convert_rate(data, out, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    cfg = convert.ConvertConfig(num_workers=workers, progress=False, shard_size_mb=50)
    t0 = time.perf_counter()
    res = convert.convert(data, out, cfg)
    dt = time.perf_counter() - t0
    n = sum(s["num_examples"] for s in res.info["splits"].values())
    return n / dt


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
    floor, n = read_floor(large)
    one = convert_rate(large, work / "out1", 1)
    two = convert_rate(large, work / "out2", 2)
    mem_small = peak_rss_mb(small, work / "outm1", 2, args.tiles)
    mem_large = peak_rss_mb(large, work / "outm2", 2, 2 * args.tiles)
    result = {
        "tiles": n,
        "read_floor_tiles_per_s": round(floor, 2),
        "convert_1_worker_tiles_per_s": round(one, 2),
        "floor_over_convert_per_core": round(floor / one, 2),
        "convert_2_workers_tiles_per_s": round(two, 2),
        "scaling_2_over_1": round(two / one, 2),
        f"peak_rss_mb_{args.tiles}_tiles": round(mem_small),
        f"peak_rss_mb_{2 * args.tiles}_tiles": round(mem_large),
    }
    print(f"tiles (SN2, PAN+MUL+MUL-PanSharpen+RGB-PanSharpen + labels): {n}")
    print(f"read floor (rasterio only, 1 core)    {floor:7.2f} tiles/s")
    print(f"convert, 1 worker                     {one:7.2f} tiles/s   "
          f"floor/convert = {floor / one:.2f}x (target <= 2x)")
    print(f"convert, 2 workers                    {two:7.2f} tiles/s   "
          f"scaling = {two / one:.2f}x")
    print(f"peak RSS, {args.tiles} tiles: {mem_small:.0f} MB;  {2 * args.tiles} tiles: "
          f"{mem_large:.0f} MB  (ratio {mem_large / mem_small:.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
