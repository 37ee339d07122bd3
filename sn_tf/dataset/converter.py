"""SpaceNet folders -> sharded TFRecords plus their description (the converter library).

    convert(data_dir, output_dir, ConvertConfig(...))    # CLI: python -m sn_tf.convert

How it works:

1. ``layout.discover`` finds AOIs and tiles (both layouts); ``--aois`` / ``--image_types``
   select.
2. Each tile goes to a split by a hash of its tile id (stable when tiles are added), and to
   one shard of its split; shards are named the TFDS way,
   ``<name>-<split>.tfrecord-00000-of-000NN``, sized to about ``--shard_size_mb``.
3. Worker processes (``--num_workers``) each write whole shards, one tile in memory at a
   time, under a temporary name renamed when complete; a per-shard record in
   ``.sn_tf_work/`` says the shard is done and which input files (size, mtime_ns) it was
   made of, so ``--resume`` writes only what is missing, and writes again the shards
   whose inputs changed since (a note on each changed tile says so). Records are framed
   by ``sn_tf.dataset.tfrecord``: converting never imports TensorFlow.
4. The description (``sn_tf.dataset.info``, saved as ``sn_tf_info.json``): schema, declared
   feature types, counts per split, shard and AOI, per-band statistics (train split) per
   image type, skipped tiles with reasons, notes, command line and versions; and from it
   TensorFlow Datasets' ``dataset_info.json`` and ``features.json`` (written without TFDS).

Rules:

* Options are checked before anything is read (``check_config``, ``ConvertUsageError``):
  unknown image types, label grids or ``resample_to``, sizes <= 0, ``num_workers`` < 1.
* Every tile is checked against the contract before it is written: one dtype and band
  count per image type in the dataset, fixed by the majority of the first ``PROBE_TILES``
  tiles probed (headers only) in each AOI (``contract_of``); a mismatch skips the tile.
  Sizes may vary (the pipeline crops any size); one off its AOI's usual size is a note.
* Non-finite pixels (NaN, +-inf) are stored as the raster's declared nodata value when it
  is finite, else as 0, with a note naming the file and count (a declared nodata of NaN is
  stored as 0); an image with no finite pixel skips the tile; negative values are stored
  as they are; pixels equal to nodata are left out of the band statistics
  (``sn_tf.dataset.tiles``).
* Labels that cannot be read or parsed, with members of the wrong JSON type, an unknown
  CRS or NaN / infinite coordinates skip the tile (``geo.read_label_geojson``).
* No per-tile problem stops a run: a data problem, and any other exception raised while
  one tile is built, skips that tile with the reason (for an exception sn_tf does not
  know: its type, message, where it was raised and the tile's files).
* Problems of the whole run (output folder unusable: a file, read-only, disk full; a
  worker process killed) raise ``ConvertError`` with one message naming the path.
* One writer per output folder: ``convert`` holds an exclusive ``fcntl.flock`` on
  ``.sn_tf_work/convert.lock`` for the whole run (released when the process ends, also
  when it is killed); a second conversion into the folder refuses (``ConvertError``).

Exit status: 0 when every tile was converted, 3 when some tiles were skipped (listed in
sn_tf_info.json and printed), 1 for an unusable input or output folder, 2 for bad flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import multiprocessing
import os
import pathlib
import platform
import queue
import sys
import threading
import time
import traceback
from concurrent import futures

import numpy as np

from sn_tf.dataset import info as dsinfo
from sn_tf.dataset import schema
from sn_tf.spacenet import layout
from sn_tf.utils import objectstore
from sn_tf.utils.malloc import keep_freed_memory
from sn_tf.dataset.stats import STRIDE, BandStats
from sn_tf.dataset.tfrecord import TFRecordWriter
from sn_tf.dataset.tiles import TileOptions, TileSkipped, build_tile
from sn_tf.dataset.describe import WORK_DIR, build_info, format_summary  # noqa: F401 (public)
from sn_tf.dataset.options import (DEFAULT_SPLITS, ConvertConfig, ConvertError,  # noqa: F401
                                   ConvertUsageError, check_config)
from sn_tf.dataset.shard_plan import (PROBE_TILES, ShardPlan, contract_of, plan,  # noqa: F401
                                      plan_fingerprint, shard_name, split_of, tile_options)

INFO_FILE = dsinfo.INFO_FILE
LOCK_FILE = "convert.lock"  # in WORK_DIR: flock'ed by the one conversion writing the folder
EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


# ---- the worker ------------------------------------------------------------------------
def tile_files(tile: layout.TileSource) -> list[str]:
    """Every input file of a tile (GeoTIFFs, label GeoJSON, HDF5 copies), sorted."""
    files = {str(p) for p in tile.images.values()} | {str(h[0]) for h in tile.h5.values()}
    if tile.label_path is not None:
        files.add(str(tile.label_path))
    return sorted(files)


def file_state(path: str):
    """[size, mtime_ns] of a file, None when it cannot be read by stat."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _unexpected(tile: layout.TileSource, exc: BaseException) -> str:
    """Skip reason for an exception that is no data problem sn_tf recognised: its type and
    message, where it was raised (a programming error stays findable), the tile's files."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {pathlib.Path(frames[-1].filename).name}:{frames[-1].lineno} in " \
            f"{frames[-1].name}" if frames else ""
    return (f"{tile.tile_id}: unexpected {type(exc).__name__}: {exc}{where} "
            f"(converting {', '.join(tile_files(tile))})")


def _tile_parts(tile: layout.TileSource, opts: TileOptions, cfg: ConvertConfig):
    """(record parts, tile dict, notes) of one tile. Raises ``TileSkipped`` for a data
    problem, and for any other exception raised while building this tile (``_unexpected``):
    no problem of one tile stops the run."""
    try:
        built, notes = build_tile(tile, opts)
        parts = schema.encode_tile_parts(built, cfg.image_encoding, cfg.label_encoding)
    except TileSkipped:
        raise
    except Exception as exc:  # noqa: BLE001 -- the per-tile boundary
        raise TileSkipped(_unexpected(tile, exc)) from exc
    return parts, built, notes


def _write_problem(exc: OSError, path) -> str:
    """One line for an error writing the output: the path, the system's message, a hint."""
    hint = {errno.ENOSPC: "free space, then run again with --resume",
            errno.EDQUOT: "free space, then run again with --resume"}
    text = os.strerror(exc.errno) if exc.errno else str(exc)  # the writer's strerror names
    return f"{path}: cannot write ({text}){'; ' + hint[exc.errno] if exc.errno in hint else ''}"


def write_shard(shard: ShardPlan, options: dict, out_dir: str, cfg: ConvertConfig,
                progress=None) -> dict:
    """Write one shard (temporary name, renamed when complete) and its work record.

    Returns the shard record: tiles written (id, AOI, bytes), skipped tiles with reasons,
    notes (``shard.notes`` first), and the state (size, mtime_ns) of every input file,
    taken before it was read. ``progress`` (a callable or a queue) hears of every finished
    tile. A problem writing the output (disk full, read-only) raises ``ConvertError``
    naming the file; the temporary shard is removed.
    """
    out = pathlib.Path(out_dir)
    tmp = out / f"{shard.file}.tmp-{os.getpid()}"
    record = new_record(shard)
    try:
        stats = _write_tiles(shard, options, tmp, cfg, record, progress)
        _finish_shard(shard, out, tmp, stats, record)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConvertError(_write_problem(exc, exc.filename or tmp)) from None
    return record


@dataclasses.dataclass
class TileResult:
    """One tile built for a shard: what the shard writer needs, nothing more.

    ``inputs``: {file: [size, mtime_ns]} taken before the tile was read; ``skipped``: the
    reason when the tile cannot be converted (then ``parts`` is None); ``parts``: the
    serialized record (buffers); ``layout``: ``tile_layout`` of the built tile;
    ``samples``: {image type: (pixels every ``STRIDE``-th row and column, nodata)} for the
    band statistics; ``notes``: the tile's notes.
    """

    tile: layout.TileSource
    inputs: dict
    skipped: str | None = None
    parts: list | None = None
    layout: dict | None = None
    samples: dict | None = None
    notes: list = dataclasses.field(default_factory=list)

    def portable(self) -> "TileResult":
        """A copy that owns its bytes (one record payload, contiguous samples), to be
        pickled between processes (``sn_tf.dataset.beam_convert``)."""
        if self.skipped is not None:
            return self
        return dataclasses.replace(
            self, parts=[b"".join(self.parts)],
            samples={k: (np.ascontiguousarray(a), nd) for k, (a, nd) in self.samples.items()})


def tile_layout(built: dict) -> dict:
    """The feature layout of a built tile: {"images": {type: dtype, bands, example_shape,
    label_grid, crs}, "label_grids": {grid: example_shape}} (the shard record's form)."""
    images = {}
    for itype, img in built["images"].items():
        d = img["data"]
        images[itype] = {"dtype": d.dtype.name, "bands": int(d.shape[2]),
                         "example_shape": list(d.shape), "label_grid": img["label_grid"],
                         "crs": img["crs"]}
    grids = {grid: {"example_shape": [lab["height"], lab["width"]]}
             for grid, lab in built["labels"].items()}
    return {"images": images, "label_grids": grids}


def build_tile_result(tile: layout.TileSource, opts: TileOptions,
                      cfg: ConvertConfig) -> TileResult:
    """Build and serialize one tile (``_tile_parts``); a problem of the tile becomes
    ``TileResult.skipped``, never an exception."""
    inputs = {f: file_state(f) for f in tile_files(tile)}
    try:
        parts, built, notes = _tile_parts(tile, opts, cfg)
    except TileSkipped as exc:
        return TileResult(tile, inputs, skipped=str(exc))
    samples = {itype: (img["data"][::STRIDE, ::STRIDE], img["nodata"])
               for itype, img in built["images"].items()}
    return TileResult(tile, inputs, parts=parts, layout=tile_layout(built), samples=samples,
                      notes=list(notes))


def new_record(shard: ShardPlan) -> dict:
    """The empty record of a shard (``write_shard``'s return value, filled while written)."""
    return {"file": shard.file, "split": shard.split, "tiles": [], "skipped": [],
            "notes": list(shard.notes), "bytes": 0, "image_types": {}, "label_grids": {},
            "inputs": {}}


def _write_tiles(shard: ShardPlan, options: dict, tmp: pathlib.Path, cfg: ConvertConfig,
                 record: dict, progress) -> dict[str, "BandStats"]:
    """Build and write the shard's tiles into ``tmp``; returns the train split's stats."""
    stats: dict[str, BandStats] = {}
    results = (build_tile_result(t, options[t.aoi], cfg) for t in shard.tiles)
    with TFRecordWriter(tmp, drop_cache=True, direct=True) as writer:
        write_results(shard, results, writer, record, progress,
                      lambda res: _add_stats(stats, res.samples))
    return stats


def write_results(shard: ShardPlan, results, writer, record: dict, progress,
                  on_written=None) -> None:
    """Write built tiles (``TileResult``, in the shard's order) and fill the shard record:
    inputs, skipped tiles with reasons, tiles, bytes, notes, feature layout.
    ``on_written(result)`` hears of every written tile of a train shard (statistics)."""
    for res in results:
        tile = res.tile
        record["inputs"].update(res.inputs)
        reason = res.skipped or _shard_mismatch(res, record)
        if reason:
            record["skipped"].append({"tile_id": tile.tile_id, "aoi": tile.aoi,
                                      "reason": reason})
            _report(progress, tile.tile_id, "skipped")
            continue
        record["bytes"] += writer.write(res.parts)
        record["tiles"].append([tile.tile_id, tile.aoi])
        record["notes"] += [{"tile_id": tile.tile_id, "note": n} for n in res.notes]
        _describe(res.layout, record)
        if shard.split == "train" and on_written is not None:
            on_written(res)
        _report(progress, tile.tile_id, "ok")


def _shard_mismatch(res: TileResult, record: dict) -> str | None:
    """Fallback of the contract for types it lacks (no tile's header could be probed):
    the skip reason when an image's dtype or band count differs from the shard's first
    tile of that type (the statistics and the description need one of each)."""
    for itype, img in res.layout["images"].items():
        seen = record["image_types"].get(itype)
        if seen and (seen["dtype"], seen["bands"]) != (img["dtype"], img["bands"]):
            source = res.tile.images.get(itype.split("@")[0], res.tile.tile_id)
            return (f"{source}: {itype} pixels are {img['dtype']}, {img['bands']} "
                    f"band(s) where the shard's first {itype} tile has "
                    f"{seen['dtype']}, {seen['bands']} band(s)")
    return None


def _finish_shard(shard: ShardPlan, out: pathlib.Path, tmp: pathlib.Path, stats: dict,
                  record: dict) -> None:
    """Statistics sidecar, the shard renamed to its final name, then its done-record."""
    work = out / WORK_DIR
    arrays = {}
    for itype, s in stats.items():
        arrays.update(s.to_arrays(itype))
    np.savez(work / f"{shard.file}.stats.npz", **arrays)
    os.replace(tmp, out / shard.file)
    done = work / f"{shard.file}.done.json"
    done.with_suffix(".tmp").write_text(json.dumps(record))
    os.replace(done.with_suffix(".tmp"), done)


def _report(progress, tile_id, status):
    if progress is None:
        return
    if callable(progress):
        progress(tile_id, status)
    else:
        progress.put((tile_id, status))


def _describe(tile_layout_: dict, record: dict) -> None:
    """Record the feature layout (``tile_layout``) of each image type and grid seen first."""
    for itype, img in tile_layout_["images"].items():
        record["image_types"].setdefault(itype, dict(img))
    for grid, lab in tile_layout_["label_grids"].items():
        record["label_grids"].setdefault(grid, dict(lab))


def _add_stats(stats: dict, samples: dict) -> None:
    """Add a tile's statistics samples (``TileResult.samples``) to {type: BandStats}."""
    for itype, (sub, nodata) in samples.items():
        if itype not in stats:
            stats[itype] = BandStats(sub.dtype.name, sub.shape[2])
        stats[itype].add_sample(sub, nodata)


_progress_queue = None  # in a worker process: where finished tiles are reported


def _init_worker(progress_queue, tune_malloc: bool) -> None:
    """Worker process start: keep the progress queue, tune malloc (``keep_freed_memory``)."""
    global _progress_queue
    _progress_queue = progress_queue
    if tune_malloc:
        keep_freed_memory()


def _worker_entry(shard, options, out_dir, cfg):
    return write_shard(shard, options, out_dir, cfg, _progress_queue)


# ---- orchestration ---------------------------------------------------------------------
@dataclasses.dataclass
class ConvertResult:
    """What a conversion did; ``info`` is its description (sn_tf_info.json).

    ``rewritten``: shards an earlier run had finished that ``--resume`` wrote again
    because an input file changed (the notes of their tiles name the files).
    """

    info: dsinfo.DatasetInfo
    exit_code: int
    rewritten: list = dataclasses.field(default_factory=list)


def _make_output_dir(out: pathlib.Path) -> None:
    """Create the output folder and its work folder; ``ConvertError`` naming the path when
    that is impossible (a file in the way, no permission, read-only file system)."""
    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: output path exists and is not a folder")
    try:
        (out / WORK_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConvertError(_write_problem(exc, exc.filename or out)) from None


@contextlib.contextmanager
def output_lock(out: pathlib.Path):
    """Hold the output folder's writer lock for the ``with`` block (module docstring).

    An exclusive, non-blocking ``fcntl.flock`` on ``.sn_tf_work/convert.lock``: a second
    holder gets ``ConvertError`` naming the folder and the pid holding it. The kernel
    releases the lock when the file is closed or the process dies (killed included), so a
    crashed run never leaves the folder locked. The file itself stays (never deleted: a
    deleted lock file would let two writers lock two different files).
    """
    _make_output_dir(out)
    path = out / WORK_DIR / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConvertError(_write_problem(exc, path)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            raise ConvertError(
                f"{out}: another conversion ({holder or 'pid unknown'}) is writing into this "
                "folder; wait for it to end or choose another --output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)


def _prepare_output(out: pathlib.Path, cfg: ConvertConfig, fingerprint: str) -> None:
    """Check the folder against ``--resume`` / ``--overwrite`` and clear what must go
    (call with the folder's lock held: stale temporary shards are deleted)."""
    try:
        _clear_output(out, cfg, fingerprint)
    except OSError as exc:
        raise ConvertError(_write_problem(exc, exc.filename or out)) from None


def _clear_output(out: pathlib.Path, cfg: ConvertConfig, fingerprint: str) -> None:
    work = out / WORK_DIR
    existing = sorted(out.glob("*.tfrecord-*"))
    plan_file = work / "plan.json"
    if cfg.resume:
        if plan_file.exists() and json.loads(plan_file.read_text())["fingerprint"] != fingerprint:
            raise ConvertError(
                f"{out}: was converted with other inputs or options; --resume would mix "
                "them. Run without --resume and with --overwrite to start again")
    elif existing or (out / INFO_FILE).exists():
        if not cfg.overwrite:
            raise ConvertError(f"{out}: already holds a conversion; use --resume to finish "
                               "it or --overwrite to replace it")
        for p in existing + [out / INFO_FILE]:
            p.unlink(missing_ok=True)
        for p in work.glob("*"):
            if p.name != LOCK_FILE:
                p.unlink()
    for stale in out.glob("*.tmp-*"):  # shards of a killed run (no other writer: locked)
        stale.unlink()
    plan_file.write_text(json.dumps({"fingerprint": fingerprint}))


def _done_record(out: pathlib.Path, shard: ShardPlan):
    """The record of a shard an earlier run finished, or None when it must be written:
    absent or incomplete, or one of its input files changed since (added, removed, other
    size or mtime_ns; ``shard.notes`` then names them, per tile)."""
    done = out / WORK_DIR / f"{shard.file}.done.json"
    if not (done.exists() and (out / shard.file).exists() and
            (out / WORK_DIR / f"{shard.file}.stats.npz").exists()):
        return None
    record = json.loads(done.read_text())
    changed = _changed_inputs(shard, record.get("inputs"))
    if not changed:
        return record
    shard.notes += [{"tile_id": t, "note": f"{f}: {why} since the earlier run; shard "
                     f"{shard.file} written again"} for t, f, why in changed]
    return None


def _changed_inputs(shard: ShardPlan, recorded) -> list[tuple[str, str, str]]:
    """(tile id, file, what changed) of every input of ``shard`` that differs from the
    done-record's ``inputs`` (a record without them, from an older sn_tf: every file)."""
    recorded = recorded if isinstance(recorded, dict) else {}
    changed = []
    for tile in shard.tiles:
        for f in tile_files(tile):
            now = file_state(f)
            if f not in recorded:
                changed.append((tile.tile_id, f, "not recorded (new file, or a record "
                                "of an older sn_tf)"))
            elif now != recorded[f]:
                changed.append((tile.tile_id, f, "removed" if now is None
                                else "changed (size or modification time)"))
    return changed


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", disable=not enabled, dynamic_ncols=True,
                desc="converting", file=sys.stderr)


def _run_shards(todo, options, out, cfg, bar, skipped_counter) -> list[dict]:
    """Write the shards in ``todo`` (in-process for one worker, else a process pool)."""
    def tick(tile_id, status):
        bar.update(1)
        if status == "skipped":
            skipped_counter[0] += 1
            bar.set_postfix(skipped=skipped_counter[0])

    if cfg.num_workers <= 1 or len(todo) <= 1:
        if cfg.tune_malloc:
            keep_freed_memory()
        return [write_shard(s, options, str(out), cfg, tick) for s in todo]
    return _pool_run(_worker_entry, [(s, options, str(out), cfg) for s in todo],
                     cfg.num_workers, cfg.tune_malloc is not False, tick)


def _pool_run(entry, calls: list[tuple], num_workers: int, tune_malloc: bool, tick) -> list:
    """``[entry(*c) for c in calls]`` in spawned worker processes (result order: completion).

    Workers report ``(tile_id, status)`` through a queue (``_init_worker``) that the caller
    drains into ``tick`` until every worker has exited, also when a call raises: a worker
    exits only once its queued messages are flushed, so an undrained queue would hang the
    pool's shutdown. On an error, calls not yet started are cancelled and it is re-raised.
    """
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold TF
    records = []
    q = ctx.Queue()  # handed to the workers at their start (no Manager process)
    ex = futures.ProcessPoolExecutor(min(num_workers, len(calls)), mp_context=ctx,
                                     initializer=_init_worker, initargs=(q, tune_malloc))
    try:
        pending = {ex.submit(entry, *c) for c in calls}
        while pending:
            done, pending = futures.wait(pending, timeout=0.2)
            _drain(q, tick)
            records += [f.result() for f in done]
    except futures.process.BrokenProcessPool:
        raise ConvertError("a worker process died (killed, or out of memory?) while writing "
                           "shards; the shards finished are kept: run again with "
                           "--resume") from None
    finally:
        stopper = threading.Thread(target=ex.shutdown,
                                   kwargs={"wait": True, "cancel_futures": True})
        stopper.start()
        while stopper.is_alive():
            _drain(q, tick)
            stopper.join(0.1)
        _drain(q, tick)  # the workers have exited: their queue feeders are flushed
        q.close()
    return records


def _drain(q, tick):
    while True:
        try:
            tick(*q.get_nowait())
        except queue.Empty:
            return


def check_store_output(output_dir: str, cfg: ConvertConfig) -> list[str]:
    """Before converting into an object store folder: ``--resume`` is refused (the shards'
    done-records are local), an earlier conversion there is refused without
    ``--overwrite``; returns the objects of that conversion to delete (with it)."""
    if cfg.resume:
        raise ConvertUsageError(f"--resume: not into an object store ({output_dir}); convert "
                                "into a local folder to resume, or run again with --overwrite")
    names = (INFO_FILE, dsinfo.TFDS_INFO_FILE, "features.json")
    existing = [u for u in objectstore.list_objects(output_dir)
                if ".tfrecord-" in u.rsplit("/", 1)[-1] or u.rsplit("/", 1)[-1] in names
                or f"/{WORK_DIR}/" in u]
    if existing and not cfg.overwrite:
        raise ConvertError(f"{output_dir}: already holds a conversion; use --overwrite to "
                           "replace it")
    return existing


def _convert_to_store(data_dir, output_dir: str, cfg: ConvertConfig,
                      command_line: str) -> ConvertResult:
    """``convert`` into an object store folder: into a local staging folder, then every
    file uploaded (the old conversion's objects deleted first, with ``--overwrite``).
    The staging folder needs the space of the converted dataset."""
    import tempfile

    old = check_store_output(output_dir, cfg)
    with tempfile.TemporaryDirectory(prefix="sn_tf_stage_") as stage:
        result = convert(data_dir, stage, dataclasses.replace(cfg, overwrite=False),
                         command_line)
        objectstore.delete(old)
        objectstore.upload_tree(pathlib.Path(stage), output_dir)
    return result


def convert(data_dir, output_dir, cfg: ConvertConfig | None = None,
            command_line: str = "") -> ConvertResult:
    """Convert ``data_dir`` into shards in ``output_dir``; see the module docstring.
    Either may be an object store URL (``gs://``, ``s3://``: ``sn_tf.utils.objectstore``;
    the output is converted locally, then uploaded)."""
    cfg = cfg or ConvertConfig()
    t0 = time.time()
    check_config(cfg)
    if objectstore.is_url(output_dir):
        return _convert_to_store(data_dir, str(output_dir), cfg, command_line)
    try:
        layouts = layout.discover(data_dir, cfg.aois or None)
    except layout.LayoutError as exc:
        raise ConvertError(str(exc)) from None
    shards, options = plan(layouts, cfg)
    if not shards:
        raise ConvertError(f"{data_dir}: no tiles with the selected image types")
    out = pathlib.Path(output_dir)
    with output_lock(out):
        return _convert_locked(layouts, shards, options, out, cfg, command_line, t0)


def _convert_locked(layouts, shards, options, out: pathlib.Path, cfg: ConvertConfig,
                    command_line: str, t0: float) -> ConvertResult:
    """The part of ``convert`` run with the output folder's lock held."""
    _prepare_output(out, cfg, plan_fingerprint(shards, options, cfg))
    records = {s.file: r for s in shards if (r := _done_record(out, s)) is not None}
    rewritten = [s.file for s in shards if s.notes]
    todo = [s for s in shards if s.file not in records]
    total = sum(len(s.tiles) for s in todo)
    bar = _progress_bar(total, cfg.progress)
    skipped = [0]
    try:
        for r in _run_shards(todo, options, out, cfg, bar, skipped):
            records[r["file"]] = r
    finally:
        bar.close()
    info = build_info(layouts, shards, records, options, cfg, out, command_line,
                      resumed=len(shards) - len(todo), elapsed=time.time() - t0)
    info = dsinfo.save(info, out)  # the result holds exactly what the file says
    return ConvertResult(info, EXIT_SKIPPED if info.skipped else EXIT_OK, rewritten)
