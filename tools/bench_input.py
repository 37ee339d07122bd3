"""Input throughput: the sn_tf tf.data pipeline vs a per-sample GeoTIFF/GeoJSON loader.

    .venv/bin/python tools/bench_input.py [--tiles=16] [--seconds=25] [--batch_size=8]
        [--floor_repeats=3] [--floor_seconds=8] [--skip_throughput]

Both feed the same work to a model, from the same synthetic SpaceNet 2 Vegas tiles
(``sn_tf.sample``, 650 x 650 x 8 MUL-PanSharpen, generated and converted into a temporary
folder): random 512 x 512 crops, a random symmetry of the square (flips + 90-degree
rotations), footprint and truncated signed distance targets (float32), batches of
``--batch_size``, and the image either normalised per band ((x - mean) / std, float32) or
raw (the stored uint16 values, for a model that normalises in its first layer, as
``sn_tf.train`` builds by default).

* ``sn_tf``: ``sn_tf.make_dataset`` on the converted TFRecords (decode, crop, augment,
  targets in TF graph ops, parallel).
* ``per-sample``: what solaris and most lab scripts do (``per_sample_tile``): per step
  open the GeoTIFF with rasterio, read the GeoJSON, rasterize the footprints (building
  ids, so shared walls are boundaries as in ``sn_tf.dataset.labels``), scipy's EDT for the
  distance, random crop/symmetry and (float32 rows only) normalisation in numpy, fed
  through ``tf.data.Dataset.from_generator``. ``per-sample raw*`` is a stronger baseline
  than any lab script: it uses sn_tf's own EDT (``sn_tf.dataset.labels``, ~2/3 of scipy's cost);
  sn_tf's raw rows are compared with both.

First, the floor table: the memory floor of a crop (``floor_crops``: one ``os.preadv`` of
exactly the window's rows, full width, of the image payload and of the sdf payload, out of
the page-cached shard into reused buffers, nothing else) and sn_tf's raw segmentation
pipeline with both readers (``reader="ranged"``, the default, and ``"record"``, whole
records through ``TFRecordDataset``), with the symmetry and without augmentation; rows
interleaved over ``--floor_repeats`` rounds, each row's ms of process CPU per crop and the
median over rounds of its ratio to the floor of the same round.

Equal work: each sn_tf row is compared with the per-sample row of the same image form:
"raw" rows skip the normalisation in both loaders (the model does it), "float32" rows do
it in both.

glibc malloc keeps freed memory in the whole process (``sn_tf.keep_freed_memory``, as the
train CLI sets it), for every loader; ``--no_malloc_tuning`` measures glibc's defaults.

Printed: images/s of each (wall clock, after a warm-up), images per CPU second (process
CPU time, i.e. per fully used core: robust to a shared machine), the ratios of both to the
per-sample loader, the number of usable cores, and the resident memory of the process
while each sn_tf pipeline runs (sampled) and at its peak. sn_tf raw runs with
``num_parallel_reads=1`` (one reader thread, the cheaper choice for local disks) and with
the default parallel interleave of the shards (which the ranged reader, reading by window
from its index, does not use); "record" rows read whole records. A last sn_tf row ("raw
det") gives the DetectNet pipeline's rate (targets from the boxes, no label rasters), for BUILD_NOTES'
H100 arithmetic; the per-sample loader has no DetectNet form. Rows "x<k>"
(``--crops_per_tile``) cut k crops from each read tile (``make_dataset(crops_per_tile=k)``,
repeated augmentation): faster, but not equal work, so they get no ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.dataset import converter  # noqa: E402
from sn_tf.dataset import info as dsinfo  # noqa: E402
from sn_tf.dataset import labels  # noqa: E402
from sn_tf.utils.tfimport import tensorflow  # noqa: E402

tf = tensorflow()
TYPE = "MUL-PanSharpen"
CROP = 512
TRUNCATION = 32.0


def _rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def make_data(root: pathlib.Path, tiles: int) -> tuple[pathlib.Path, dict]:
    """Generate Vegas tiles with sn_tf.sample and convert MUL-PanSharpen (all to train).

    Data already in ``root`` (an earlier ``--workdir`` run with as many tiles) is reused.
    """
    from sn_tf.spacenet.synthetic import write_sample

    manifest_path = root / "src" / "sample_manifest.json"
    if manifest_path.is_file() and (root / "tfrecords" / dsinfo.INFO_FILE).is_file():
        manifest = json.loads(manifest_path.read_text())
        info = dsinfo.load(root / "tfrecords")
        if len(manifest["tiles"]) == tiles and info.split("train").num_examples == tiles:
            return root / "tfrecords", {"manifest": manifest, "info": info}

    manifest = write_sample(root / "src", aois=["AOI_2_Vegas"], tiles_per_aoi=tiles)
    cfg = converter.ConvertConfig(image_types=(TYPE,), splits=(("train", 1.0),),
                                  shard_size_mb=30, num_workers=2, progress=False,
                                  overwrite=True)
    info = converter.convert(root / "src", root / "tfrecords", cfg).info
    return root / "tfrecords", {"manifest": manifest, "info": info}


# ---- the per-sample loader -------------------------------------------------------------
EDT_STYLES = ("scipy", "sn_tf")


def per_sample_tile(src: pathlib.Path, tile: dict, edt: str = "scipy"):
    """One whole tile as the per-sample loader builds it at every step, solaris style:
    (uint16 image [H, W, 8], uint8 footprint [H, W], float32 truncated sdf [H, W]).

    Open the GeoTIFF with rasterio, read the GeoJSON, rasterize the footprints (building
    ids, so shared walls are boundaries as in ``sn_tf.dataset.labels``), distance of every pixel
    to the nearest boundary pixel, + inside and - outside, clipped at ``TRUNCATION``.
    ``edt``: "scipy" = ``scipy.ndimage.distance_transform_edt`` as a lab script calls it
    (the issue's baseline); "sn_tf" = the converter's own EDT (~2/3 of scipy's cost)
    (``sn_tf.dataset.labels.distance_to_boundary``), a stronger baseline. Both give the labels
    the converter stores (``tests/test_bench_input.py``).
    """
    import rasterio
    import shapely
    from rasterio import features
    from scipy import ndimage

    with rasterio.open(src / tile["images"][TYPE]) as ds:
        image = np.moveaxis(ds.read(), 0, -1)
        transform = ds.transform
    doc = json.loads((src / tile["label"]).read_text())
    geoms = [shapely.make_valid(shapely.geometry.shape(f["geometry"])) for f in doc["features"]]
    h, w = image.shape[:2]
    inst = (features.rasterize([(g, i + 1) for i, g in enumerate(geoms)], out_shape=(h, w),
                               transform=transform, fill=0, dtype="int32")
            if geoms else np.zeros((h, w), np.int32))
    mask = (inst > 0).astype(np.uint8)
    boundary = labels.instance_boundary(inst)
    if edt == "sn_tf":
        sdf = labels.signed_distance(mask, TRUNCATION, labels.distance_to_boundary(mask, boundary))
    elif edt == "scipy":
        dist = (ndimage.distance_transform_edt(~boundary) if boundary.any()
                else np.full((h, w), h + w, np.float64))
        sdf = np.clip(np.where(mask > 0, dist, -dist), -TRUNCATION, TRUNCATION).astype(np.float32)
    else:
        raise ValueError(f"edt must be one of {EDT_STYLES}, got {edt!r}")
    return image, mask, sdf


def _per_sample_generator(src: pathlib.Path, manifest: dict, mean, std, seed: int,
                          raw: bool = False, edt: str = "scipy"):
    """Yield (image [512,512,8], {footprint, sdf}) per step from ``per_sample_tile``.

    The image is float32 ``(x - mean) / std``, or with ``raw`` the uint16 values as read.
    """
    rng = np.random.default_rng(seed)
    tiles = manifest["tiles"]
    while True:
        image, mask, sdf = per_sample_tile(src, tiles[rng.integers(len(tiles))], edt)
        h, w = mask.shape
        y0, x0 = rng.integers(0, h - CROP + 1), rng.integers(0, w - CROP + 1)
        sl = (slice(y0, y0 + CROP), slice(x0, x0 + CROP))
        image, mask, sdf = image[sl], mask[sl], sdf[sl]
        k, flip = rng.integers(4), rng.integers(2)
        image, mask, sdf = (np.rot90(a, k) for a in (image, mask, sdf))
        if flip:
            image, mask, sdf = image[:, ::-1], mask[:, ::-1], sdf[:, ::-1]
        if raw:
            image = np.ascontiguousarray(image)
        else:
            image = ((image.astype(np.float32) - mean) / std).astype(np.float32)
        yield image, {"footprint": mask[..., None].astype(np.float32),
                      "sdf": sdf[..., None].astype(np.float32)}


def per_sample_dataset(src, manifest, info, batch_size: int, seed: int, raw: bool = False,
                       edt: str = "scipy"):
    """The per-sample loader as a batched, prefetched tf.data.Dataset."""
    stats = info.stats(TYPE)
    mean = np.asarray(stats.mean, np.float32)
    std = np.asarray(stats.std, np.float32)
    spec = (tf.TensorSpec([CROP, CROP, 8], tf.uint16 if raw else tf.float32),
            {"footprint": tf.TensorSpec([CROP, CROP, 1], tf.float32),
             "sdf": tf.TensorSpec([CROP, CROP, 1], tf.float32)})
    ds = tf.data.Dataset.from_generator(
        lambda: _per_sample_generator(pathlib.Path(src), manifest, mean, std, seed, raw, edt),
        output_signature=spec)
    return ds.batch(batch_size).prefetch(2)


# ---- the memory floor ------------------------------------------------------------------
def floor_index(data_dir: pathlib.Path) -> list[tuple]:
    """Where each training record's pixels are in its shard, for the floor reader:
    ``(path, image start, sdf start, height, width, bands)`` per record (file offsets of
    the raw MUL-PanSharpen payload and of the raw float16 sdf payload), found once by a
    framing walk and the records' payload offsets (setup, not timed).
    """
    from sn_tf.dataset import schema
    from sn_tf.dataset.reader import shards
    from sn_tf.dataset.tfrecord import read_records

    grid = TYPE
    sdf_index = schema.LABEL_ARRAY_FIELDS.index("sdf")
    out = []
    for s in shards(data_dir, "train"):
        pos = 0
        for data in read_records(s.path):
            ex = tf.train.Example.FromString(data).features.feature
            img_off = int(np.frombuffer(
                ex[schema.image_key(TYPE, "payload_offset")].bytes_list.value[0], "<i8")[0])
            lab_off = np.frombuffer(
                ex[schema.label_key(grid, "payload_offsets")].bytes_list.value[0], "<i8")
            h, w, c = ex[schema.image_key(TYPE, "shape")].int64_list.value
            out.append((s.path, pos + 12 + img_off, pos + 12 + int(lab_off[sdf_index]),
                        int(h), int(w), int(c)))
            pos += 16 + len(data)
    return out


def floor_crops(index: list[tuple], batch_size: int, seed: int = 0):
    """The memory floor of a crop, as an endless iterator of batches (numpy, reused
    buffers): per crop ONE ``os.preadv`` of exactly the window's rows (``CROP`` rows x full
    width x 8 uint16 bands) of the image payload and one of the same rows of the float16
    sdf payload, straight from the page-cached shard into a batch buffer; nothing else
    (no crop of columns, no symmetry, no targets, no tf.data). Yields (image rows
    [B, CROP, W, 8] uint16, sdf rows [B, CROP, W] float16).
    """
    rng = np.random.default_rng(seed)
    _, _, _, h, w, c = index[0]
    fds = {p: os.open(p, os.O_RDONLY) for p in {r[0] for r in index}}
    image = np.empty((batch_size, CROP, w, c), np.uint16)
    sdf = np.empty((batch_size, CROP, w), np.float16)
    try:
        while True:
            for i in range(batch_size):
                path, img, lab, h, w, c = index[rng.integers(len(index))]
                y0 = int(rng.integers(0, h - CROP + 1))
                fd = fds[path]
                os.preadv(fd, [image[i]], img + y0 * w * c * 2)
                os.preadv(fd, [sdf[i]], lab + y0 * w * 2)
            yield image, sdf
    finally:
        for fd in fds.values():
            os.close(fd)


# ---- measurement -----------------------------------------------------------------------
class RssSampler:
    """Samples the process RSS every 0.2 s in a thread (min/max over the run)."""

    def __init__(self):
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.values.append(_rss_mb())
            time.sleep(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(ds, batch_size: int, seconds: float, warmup: int = 3) -> dict:
    """Images/s (wall) and images per CPU second over at least ``seconds`` after warm-up."""
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t0, c0, n = time.perf_counter(), _cpu_seconds(), 0
    rss_half = None
    while True:
        image = next(it)[0]
        n += int(image.shape[0])
        elapsed = time.perf_counter() - t0
        if rss_half is None and elapsed >= seconds / 2:
            rss_half = _rss_mb()
        if elapsed >= seconds and n >= 4 * batch_size:
            break
    cpu = _cpu_seconds() - c0
    return {"images": n, "seconds": elapsed, "rate": n / elapsed, "per_cpu_s": n / cpu,
            "cpu_util": cpu / elapsed, "rss_half": rss_half, "rss_end": _rss_mb()}


#: ``make_dataset`` options of the FCN recipe's ``data`` section (``sn_tf/configs/fcn.py``).
FCN_RECIPE_DATA = {"sdf_truncation": 8.0, "boundary_weight": 2.0, "contact_weight": 5.0,
                   "interior_level": 1.5}
#: ... and of the DetectNet recipe's (``sn_tf/configs/detectnet.py``: oriented, 8 px cells).
DETECTNET_RECIPE_DATA = {"target": "oriented_detection", "cell_size": 8, "cvg_scale": 1.0,
                         "contact_weight": 1.0}


def floor_table(data_dir: pathlib.Path, batch_size: int, repeats: int, seconds: float,
                only=None):
    """Print ms of process CPU per delivered crop for the floor (``floor_crops``) and the
    sn_tf raw segmentation pipeline (reads=1; ``reader`` "ranged" and "record"; with the
    dihedral symmetry and without augmentation; and the FCN recipe's data options; both
    with targets built on the host and, ``targets_on="device"``, left to the train step,
    and with ``crop_on="device"`` too, the column cut and symmetry left to it as well),
    rows interleaved over ``repeats`` rounds,
    with the median over rounds of each row's ratio to the floor of the same round.
    only: words; when given, just the rows whose name holds one of them (and the floor).
    """
    from sn_tf.input.pipeline import make_dataset

    index = floor_index(data_dir)

    def sn_tf(reader, augment, targets_on="host", crop_on="host", **recipe):
        return lambda: make_dataset(data_dir, "train", crop_size=CROP, batch_size=batch_size,
                                    num_parallel_reads=1, image_dtype="raw", reader=reader,
                                    augment=augment, targets_on=targets_on, crop_on=crop_on,
                                    **recipe)

    sym = {"flips": True, "rot90": True}
    rows = {"floor (pread window rows)": lambda: floor_crops(index, batch_size),
            "sn_tf raw ranged": sn_tf("ranged", sym),
            "sn_tf raw record": sn_tf("record", sym),
            "sn_tf raw ranged, no aug": sn_tf("ranged", False),
            "sn_tf raw record, no aug": sn_tf("record", False),
            # the FCN recipe's data section: wall-focused crops, contact and boundary
            # weights, the interior target (the contact layer rides in the shard index)
            "FCN recipe ranged": sn_tf("ranged", {**sym, "focus": 0.7}, **FCN_RECIPE_DATA),
            "FCN recipe record": sn_tf("record", {**sym, "focus": 0.7}, **FCN_RECIPE_DATA),
            # targets_on="device": the stored label layers leave the pipeline, the train
            # step builds the targets and weights (the recipes' default)
            "sn_tf raw ranged, device": sn_tf("ranged", sym, "device"),
            "FCN recipe ranged, device": sn_tf("ranged", {**sym, "focus": 0.7}, "device",
                                               **FCN_RECIPE_DATA),
            # crop_on="device" too: the window's rows leave the pipeline, the train step
            # cuts the columns and applies the symmetry (data.crop_on "auto" with a GPU)
            "sn_tf raw ranged, dev+crop": sn_tf("ranged", sym, "device", "device"),
            "FCN recipe ranged, dev+crop": sn_tf("ranged", {**sym, "focus": 0.7}, "device",
                                                 "device", **FCN_RECIPE_DATA),
            # the DetectNet recipe: coverage / bbox / orient grids and weights built on the
            # host, or (device) the crops' boxes, rectangles and contact cells packed for
            # the train step; dev+crop: the image's window rows too
            "DetectNet recipe ranged": sn_tf("ranged", {**sym, "focus": 0.5}, "host",
                                             **DETECTNET_RECIPE_DATA),
            "DetectNet recipe, device": sn_tf("ranged", {**sym, "focus": 0.5}, "device",
                                              **DETECTNET_RECIPE_DATA),
            "DetectNet recipe, dev+crop": sn_tf("ranged", {**sym, "focus": 0.5}, "device",
                                                "device", **DETECTNET_RECIPE_DATA)}
    if only:
        rows = {k: v for i, (k, v) in enumerate(rows.items())
                if i == 0 or any(word in k for word in only)}
    ms = {k: [] for k in rows}
    for _ in range(repeats):
        for name, make in rows.items():
            ms[name].append(1000 / measure(make(), batch_size, seconds)["per_cpu_s"])
    floor = ms["floor (pread window rows)"]
    print(f"floor table: ms CPU per {CROP} px 8-band crop (segmentation targets, batch "
          f"{batch_size}), {repeats} interleaved rounds of {seconds:g} s, medians")
    print(f"{'row':<30}{'ms CPU/crop':>12}{'x floor':>9}   per round")
    for name, values in ms.items():
        ratios = [v / f for v, f in zip(values, floor)]
        print(f"{name:<30}{np.median(values):>12.2f}{np.median(ratios):>9.2f}   "
              + " ".join(f"{r:.2f}" for r in ratios))
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def _versus(row: dict, base: dict, star: bool) -> str:
    """'<wall ratio>x wall, <CPU ratio>x per CPU-s' of ``row`` over ``base``."""
    mark = "*" if star else ""
    return (f"{row['rate'] / base['rate']:.1f}x wall{mark}, "
            f"{row['per_cpu_s'] / base['per_cpu_s']:.1f}x per CPU-s{mark}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=16)
    p.add_argument("--seconds", type=float, default=25.0)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--workdir", default=None, help="keep generated data here and reuse it on "
                   "the next run (default: a temporary folder)")
    p.add_argument("--crops_per_tile", type=int, nargs="*", default=[4],
                   help="extra sn_tf rows (segmentation and DetectNet, reads=1) cutting k "
                   "crops per read tile: repeated augmentation, not equal work")
    p.add_argument("--floor_repeats", type=int, default=3,
                   help="rounds of the floor table: the floor and the sn_tf raw rows "
                   "(ranged and record readers, with and without the symmetry) interleaved, "
                   "--floor_seconds each; medians of the per-round ratios to the floor")
    p.add_argument("--floor_seconds", type=float, default=8.0)
    p.add_argument("--floor_rows", nargs="*", default=None,
                   help="only the floor table's rows whose name contains one of these "
                   "words (e.g. DetectNet); the floor row always runs")
    p.add_argument("--skip_throughput", action="store_true",
                   help="print only the floor table (no per-sample loaders, no RSS)")
    p.add_argument("--no_malloc_tuning", action="store_true",
                   help="leave glibc malloc at its defaults (sn_tf.keep_freed_memory is "
                   "applied to the whole process, i.e. to every loader, by default)")
    args = p.parse_args(argv)
    from sn_tf.utils.malloc import keep_freed_memory
    from sn_tf.input.pipeline import _auto_shuffle_buffer, make_dataset

    tuned = False if args.no_malloc_tuning else keep_freed_memory()

    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(args.workdir or tmp)
        t = time.perf_counter()
        data_dir, meta = make_data(root, args.tiles)
        info = meta["info"]
        rec_mb = info.split("train").num_bytes / info.split("train").num_examples / 2 ** 20
        print(f"data: {args.tiles} Vegas tiles 650x650x8 uint16 ({rec_mb:.1f} MB/record), "
              f"generated and converted in {time.perf_counter() - t:.1f} s; {cores} cores; "
              f"malloc {'keeps freed memory' if tuned else 'defaults'} (all loaders)")
        floor_table(data_dir, args.batch_size, args.floor_repeats, args.floor_seconds,
                    args.floor_rows)
        if args.skip_throughput:
            return 0
        rss0 = _rss_mb()
        rows, rss = {}, {}
        # one reader thread first: RSS never shrinks, so the larger configurations go last
        configs = [("sn_tf raw reads=1", {"num_parallel_reads": 1, "image_dtype": "raw"}),
                   ("sn_tf raw record", {"num_parallel_reads": 1, "image_dtype": "raw",
                                         "reader": "record"}),
                   ("sn_tf f32 reads=1", {"num_parallel_reads": 1}),
                   ("sn_tf raw", {"image_dtype": "raw"}),
                   ("sn_tf raw det", {"num_parallel_reads": 1, "image_dtype": "raw",
                                      "target": "detection"}),
                   ("sn_tf raw det record", {"num_parallel_reads": 1, "image_dtype": "raw",
                                             "target": "detection", "reader": "record"})]
        for k in args.crops_per_tile:
            configs += [(f"sn_tf raw x{k}", {"num_parallel_reads": 1, "image_dtype": "raw",
                                             "crops_per_tile": k}),
                        (f"sn_tf raw det x{k}", {"num_parallel_reads": 1, "image_dtype": "raw",
                                                 "target": "detection", "crops_per_tile": k})]
        for name, kw in configs:
            ds = make_dataset(data_dir, "train", crop_size=CROP, batch_size=args.batch_size,
                              augment={"flips": True, "rot90": True}, **kw)
            with RssSampler() as sampler:
                rows[name] = measure(ds, args.batch_size, args.seconds)
            rss[name] = sampler.values
            del ds
        for name, raw, edt in (("per-sample raw", True, "scipy"),
                               ("per-sample f32", False, "scipy"),
                               ("per-sample raw*", True, "sn_tf")):
            rows[name] = measure(per_sample_dataset(root / "src", meta["manifest"], info,
                                                    args.batch_size, 0, raw, edt),
                                 args.batch_size, args.seconds)
    print(f"{'loader':<19}{'images/s':>9}{'img/CPU-s':>11}{'CPU used':>10}{'images':>8}"
          f"   vs per-sample at equal work (* = with sn_tf's EDT)")
    for name, r in rows.items():
        bases = ["per-sample f32"] if "f32" in name else ["per-sample raw", "per-sample raw*"]
        versus = "; ".join(_versus(r, rows[b], b.endswith("*")) for b in bases if b != name)
        if " x" in name:
            versus = "- (k crops per read tile: not equal work)"
        elif " det" in name:
            versus = "- (DetectNet targets, reads=1; no per-sample counterpart)"
        print(f"{name:<19}{r['rate']:>9.1f}{r['per_cpu_s']:>11.1f}{r['cpu_util']:>9.2f}x"
              f"{r['images']:>8d}   {versus}")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    shuffle = _auto_shuffle_buffer(info, "train")
    batch_mb = {k: args.batch_size * CROP * CROP * (8 * b + 2 * 4) / 2 ** 20
                for k, b in (("raw", 2), ("f32", 4))}
    print(f"memory: RSS {rss0:.0f} MB before the sn_tf pipelines (TF, Keras and the data "
          f"generator loaded); buffers: shuffle {shuffle} records x {rec_mb:.1f} MB, "
          f"prefetch 2 batches x {batch_mb['raw']:.0f} MB (raw) / {batch_mb['f32']:.0f} MB "
          f"(float32)")
    for name, values in rss.items():
        r = rows[name]
        print(f"  {name:<18} RSS while running: min {min(values):.0f} / max {max(values):.0f} "
              f"MB, at half time {r['rss_half']:.0f} MB, at end {r['rss_end']:.0f} MB")
    print(f"  peak RSS of the process (all runs): {_peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
