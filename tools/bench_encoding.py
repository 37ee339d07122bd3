"""Measure how to store pixels in the TFRecords: raw bytes vs zlib, size and TF decode speed.

    .venv/bin/python tools/bench_encoding.py [--realdata=../shared/realdata] [--repeats=5]

For each real SpaceNet raster (and label layers burned from real polygons) it prints the
stored size of each encoding relative to raw, and TF decode throughput (MB of decoded
pixels per second, tf.data map over serialized tf.train.Examples on one core) relative to
raw. The baseline (raw) is measured in the same run. Figures go in BUILD_NOTES.md.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.spacenet import geo  # noqa: E402
from sn_tf.dataset import labels, schema  # noqa: E402
from sn_tf.utils.tfimport import tensorflow  # noqa: E402

RASTERS = [
    ("SN4 PAN uint16 900x900", "solaris/sample_geotiff.tif"),
    ("SN3 Vegas PAN uint16 1300x1300", "solaris/road_mask_input.tif"),
    ("SN1 Rio 3band uint8 438x406", "spacenet_buildings_exploration/3band/3band_013022223130_Public_img53.tif"),
    ("SN6 MS float64 300x300x4", "solaris/preproc_tutorial/ms1.tif"),
]
ENCODINGS = [("raw", 1), ("zlib", 1), ("zlib", 6)]


def _example(arr: np.ndarray, encoding: str, level: int) -> bytes:
    tf = tensorflow()
    feat = {"data": tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[schema.encode_array(arr, encoding, level)]))}
    return tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString()


def decode_rate(records: list[bytes], encoding: str, dtype: str, shape, repeats: int) -> float:
    """Decoded MB/s of a tf.data pipeline parsing + decoding ``records`` (one core)."""
    tf = tensorflow()
    spec = {"data": tf.io.FixedLenFeature([], tf.string)}

    def parse(x):
        d = tf.io.parse_single_example(x, spec)["data"]
        return tf.reduce_sum(tf.cast(schema.tf_decode_bytes(d, encoding, dtype, shape)[:1],
                                     tf.float32))

    ds = tf.data.Dataset.from_tensor_slices(records).repeat(repeats).map(parse)
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = 1
    ds = ds.with_options(opts)
    list(ds.take(2))  # warm-up: trace and fill thread pools before timing
    t0 = time.perf_counter()
    n = sum(1 for _ in ds)
    dt = time.perf_counter() - t0
    return n * int(np.prod(shape)) * np.dtype(dtype).itemsize / dt / 2 ** 20


def arrays(realdata: pathlib.Path):
    """(name, array) pairs: real rasters and label layers from real polygons."""
    for name, rel in RASTERS:
        path = realdata / rel
        if path.exists():
            yield name, geo.read_raster(path)[0]
    truth = realdata / "solaris/sample.csv"
    if truth.exists():
        import shapely

        polys = [shapely.from_wkt(r["PolygonWKT_Pix"]) for r in csv.DictReader(open(truth))]
        lab = labels.compute_labels(polys, 900, 900, 32.0)
        yield "mask uint8 900x900 (sample.csv)", lab["mask"]
        yield "sdf float16 900x900 (sample.csv)", lab["sdf"].astype(np.float16)
        yield "distance float16 900x900", lab["distance"].astype(np.float16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--realdata", default=str(pathlib.Path(__file__).resolve().parents[2]
                                              / "shared" / "realdata"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    realdata = pathlib.Path(args.realdata)
    if not realdata.is_dir():
        sys.exit(f"{realdata}: real data folder not found (pass --realdata)")
    print(f"{'array':38s} {'encoding':8s} {'size/raw':>8s} {'MB/s':>8s} {'speed/raw':>9s}")
    for name, arr in arrays(realdata):
        raw_rate = None
        for enc, level in ENCODINGS:
            rec = _example(arr, enc, level)
            size = len(schema.encode_array(arr, enc, level)) / arr.nbytes
            rate = decode_rate([rec] * 8, enc, arr.dtype.name, arr.shape, args.repeats)
            raw_rate = raw_rate or rate
            label = enc if enc == "raw" else f"{enc}-{level}"
            print(f"{name:38s} {label:8s} {size:8.3f} {rate:8.0f} {rate / raw_rate:9.3f}")


if __name__ == "__main__":
    main()
