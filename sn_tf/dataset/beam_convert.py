"""SpaceNet folders -> sharded TFRecords on Apache Beam (``convert --beam_pipeline_options``).

    convert_beam(data_dir, output_dir, cfg, "runner=DirectRunner,direct_num_workers=2")

Imported only when Beam is asked for (``sn_tf.utils.beam_options``); the converter's own
functions do every step, so a tile's record, skip reasons, notes and the description are
those of ``sn_tf.dataset.converter``:

1. The launcher discovers the tiles, probes the contract (headers of the first tiles of
   each AOI) and plans the shards exactly as the local converter (``converter.plan``:
   splits by the hash of the tile id, TFDS shard names, tiles per shard). The plan is what
   ``tfds build`` calls the split generators: a list of files, cheap next to the tiles.
2. One element per shard (``fan_out="shard"``, the default), spread by a ``Reshuffle``:
   ``WriteShard`` builds the shard's tiles with ``converter.build_tile_result`` (a problem
   of a tile becomes a skip reason, never a failed bundle) and writes them through
   ``converter.write_results`` into a temporary file renamed when complete, with its
   statistics sidecar and done-record as locally; a retried bundle writes the same file
   again. Or one element per tile (``fan_out="tile"``): ``BuildTile`` builds each tile
   anywhere, a ``GroupByKey`` on the shard brings the serialized records to
   ``WriteShard``, which writes them in the plan's order. Per tile, the records (~12 MB
   for an SN2 tile with all four types) then travel through the runner: measured ~3x the
   CPU of the shard fan-out on the DirectRunner (BUILD_NOTES.md section 2), so "tile"
   only pays off when there are fewer shards than workers.
3. An object store output (``gs://``, ``s3://``): each shard is written into a local
   staging folder of the worker and uploaded (``sn_tf.utils.objectstore``); no lock.
4. Combiners: the train split's band statistics (``BandStats`` partials of each shard,
   merged by ``CombinePerKey``) and the tiles written per split and AOI (``Count``),
   checked against the shard records; the records gathered as a side input.
5. ``Describe``: ``describe.build_info`` from those, saved by ``dsinfo.save``.

So the shards are those of a local run with the same options (same files, same tiles in
the same order, byte-identical; the statistics equal up to float summation order for
float rasters; integer rasters' histograms are exact). Not supported on Beam:
``--resume`` (a runner retries failed work itself).
"""

from __future__ import annotations

import collections
import copy
import os
import pathlib
import shutil
import tempfile
import time

import apache_beam as beam

from sn_tf.dataset import converter
from sn_tf.dataset import info as dsinfo
from sn_tf.dataset.describe import build_info
from sn_tf.dataset.options import ConvertConfig, ConvertError, ConvertUsageError, check_config
from sn_tf.dataset.stats import BandStats
from sn_tf.dataset.tfrecord import TFRecordWriter
from sn_tf.spacenet import layout
from sn_tf.utils import objectstore
from sn_tf.utils.beam_options import local_paths_refused, pipeline_options
from sn_tf.utils.malloc import keep_freed_memory


class BuildTile(beam.DoFn):
    """(shard file, position, tile) -> (shard file, (position, portable ``TileResult``)):
    ``converter.build_tile_result`` (a problem of the tile is a skip reason)."""

    def __init__(self, options: dict, cfg: ConvertConfig):
        self.options = options  # {AOI: TileOptions}
        self.cfg = cfg

    def setup(self):
        _tune_malloc(self.cfg)

    def process(self, element):
        file, position, tile = element
        result = converter.build_tile_result(tile, self.options[tile.aoi], self.cfg)
        yield file, (position, result.portable())


def _tune_malloc(cfg: ConvertConfig) -> None:
    """A worker keeps freed memory (``keep_freed_memory``) when ``cfg.tune_malloc`` is
    True (the CLI, the benchmark): a runner may run the DoFns in the caller's own process
    (DirectRunner ``in_memory``), whose allocator a library caller did not ask to change."""
    if cfg.tune_malloc:
        keep_freed_memory()


class WriteShard(beam.DoFn):
    """One shard from its built tiles: the file, its sidecar and done-record
    (``converter._finish_shard``); outputs the shard record, and tagged ``stats``
    ((image type, BandStats) of a train shard) and ``tiles`` ((split, AOI) per tile)."""

    def __init__(self, shards: dict, out_dir: str, cfg: ConvertConfig, options: dict):
        self.shards = shards  # {file: ShardPlan}
        self.out_dir = out_dir
        self.cfg = cfg
        self.options = options  # {AOI: TileOptions}, to build the tiles of a shard element

    def setup(self):
        _tune_malloc(self.cfg)

    def process(self, element):
        if isinstance(element, str):  # fan_out="shard": the shard's file name
            shard = self.shards[element]
            results = ((i, converter.build_tile_result(t, self.options[t.aoi], self.cfg))
                       for i, t in enumerate(shard.tiles))
        else:  # fan_out="tile": (file, [(position, TileResult)])
            file, results = element
            shard = self.shards[file]
        remote = objectstore.is_url(self.out_dir)
        out = pathlib.Path(tempfile.mkdtemp(prefix="sn_tf_shard_") if remote else self.out_dir)
        try:
            record, stats = self._write(shard, results, out)
            if remote:  # the shard, its sidecar and done-record, then the staging removed
                objectstore.upload_tree(out, self.out_dir)
        finally:
            if remote:
                shutil.rmtree(out, ignore_errors=True)
        for itype, s in stats.items():
            yield beam.pvalue.TaggedOutput("stats", (itype, s))
        for _, aoi in record["tiles"]:
            yield beam.pvalue.TaggedOutput("tiles", (shard.split, aoi))
        yield record

    @staticmethod
    def _write(shard, results, out: pathlib.Path) -> tuple[dict, dict]:
        """Write ``shard`` into the local folder ``out``: (shard record, train stats)."""
        stats: dict[str, BandStats] = {}
        record = converter.new_record(shard)
        (out / converter.WORK_DIR).mkdir(parents=True, exist_ok=True)
        tmp = out / f"{shard.file}.tmp-{os.getpid()}"
        ordered = (r for _, r in sorted(results, key=lambda pr: pr[0]))
        try:
            with TFRecordWriter(tmp, drop_cache=True, direct=True) as writer:
                converter.write_results(shard, ordered, writer, record, None,
                                        lambda res: converter._add_stats(stats, res.samples))
            converter._finish_shard(shard, out, tmp, stats, record)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ConvertError(converter._write_problem(exc, exc.filename or tmp)) from None
        return record, stats


class MergeStats(beam.CombineFn):
    """``BandStats`` partials of one image type merged into one (``BandStats.merge``)."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, stats):
        if acc is None:
            return copy.deepcopy(stats)  # an input is not to be changed; accumulators are
        acc.merge(stats)
        return acc

    def merge_accumulators(self, accs):
        merged = None
        for acc in accs:
            if acc is None:
                continue
            if merged is None:
                merged = acc  # Beam lets the first accumulator be changed
            else:
                merged.merge(acc)
        return merged

    def extract_output(self, acc):
        return acc


def _counts_of(records: list) -> dict:
    """{(split, AOI): tiles written} from the shard records."""
    counts = collections.Counter()
    for r in records:
        for _, aoi in r["tiles"]:
            counts[(r["split"], aoi)] += 1
    return dict(counts)


def _describe(_, records, stats, counts, plan: dict):
    """Build and save the description (``describe.build_info``) from the shard records,
    the merged statistics and the combiner's counts (which must agree with the records)."""
    if _counts_of(records) != dict(counts):
        raise ConvertError(f"{plan['out']}: tiles counted per split and AOI "
                           f"{dict(counts)} differ from the shard records "
                           f"{_counts_of(records)} (a runner that repeated output?)")
    by_file = {r["file"]: r for r in records}
    missing = [s.file for s in plan["shards"] if s.file not in by_file]
    if missing:
        raise ConvertError(f"{plan['out']}: no record of shard(s) {missing}")
    info = build_info(plan["layouts"], plan["shards"], by_file, plan["options"], plan["cfg"],
                      pathlib.Path(plan["out"]), plan["command_line"], resumed=0,
                      elapsed=time.time() - plan["t0"], band_stats=dict(stats))
    if objectstore.is_url(plan["out"]):
        with tempfile.TemporaryDirectory(prefix="sn_tf_info_") as stage:
            dsinfo.save(info, stage)
            objectstore.upload_tree(pathlib.Path(stage), plan["out"])
    else:
        dsinfo.save(info, plan["out"])
    return info.num_examples


def build_pipeline(p, plan: dict, fan_out: str = "shard") -> None:
    """Add the conversion of ``plan`` (layouts, shards, options, cfg, out, command_line,
    t0) to the Beam pipeline ``p`` (module docstring). ``fan_out``: "shard", one element
    per shard (the worker builds its tiles), or "tile", one element per tile (the built
    records travel through the runner's shuffle to the shard writer)."""
    shards = plan["shards"]
    write = WriteShard({s.file: s for s in shards}, plan["out"], plan["cfg"], plan["options"])
    if fan_out == "tile":
        tiles = [(s.file, i, t) for s in shards for i, t in enumerate(s.tiles)]
        elements = (p
                    | "Tiles" >> beam.Create(tiles)
                    | "Spread" >> beam.Reshuffle()
                    | "Build" >> beam.ParDo(BuildTile(plan["options"], plan["cfg"]))
                    | "ByShard" >> beam.GroupByKey())
    elif fan_out == "shard":
        elements = (p
                    | "Shards" >> beam.Create([s.file for s in shards])
                    | "Spread" >> beam.Reshuffle())
    else:
        raise ConvertUsageError(f"fan_out={fan_out!r}: 'shard' or 'tile'")
    written = (elements
               | "WriteShard" >> beam.ParDo(write).with_outputs("stats", "tiles",
                                                                main="records"))
    stats = written.stats | "MergeStats" >> beam.CombinePerKey(MergeStats())
    counts = written.tiles | "CountTiles" >> beam.combiners.Count.PerElement()
    _ = (p
         | "Once" >> beam.Create([None])
         | "Describe" >> beam.Map(_describe, beam.pvalue.AsList(written.records),
                                  beam.pvalue.AsDict(stats), beam.pvalue.AsDict(counts), plan))


def run_pipeline(p, where) -> None:
    """Run ``p`` to its end; a failure is ``ConvertError``: ``where`` and the last line of
    the runner's message (which carries the worker's traceback)."""
    try:
        p.run().wait_until_finish()
    except Exception as exc:  # noqa: BLE001 -- runners wrap the worker's exception
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise ConvertError(f"{where}: the Beam pipeline failed: "
                           f"{lines[-1] if lines else type(exc).__name__}") from None


def _run(plan: dict, options, fan_out: str) -> None:
    """Build the pipeline of ``plan`` and run it to its end."""
    p = beam.Pipeline(options=options)
    build_pipeline(p, plan, fan_out)
    run_pipeline(p, plan["out"])


def convert_beam(data_dir, output_dir, cfg: ConvertConfig | None = None,
                 beam_options: str = "", command_line: str = "",
                 fan_out: str = "shard") -> converter.ConvertResult:
    """``converter.convert`` on Apache Beam with ``beam_options`` (``"k=v,k=v"``, as
    ``tfds build --beam_pipeline_options``); see the module docstring (``fan_out``:
    ``build_pipeline``)."""
    cfg = cfg or ConvertConfig()
    t0 = time.time()
    check_config(cfg)
    if fan_out not in ("shard", "tile"):
        raise ConvertUsageError(f"fan_out={fan_out!r}: 'shard' or 'tile'")
    if cfg.resume:
        raise ConvertUsageError("--resume: not on Beam (a runner retries failed work "
                                "itself); run without --beam_pipeline_options to resume")
    options = pipeline_options(beam_options)
    problem = local_paths_refused(options, {"--data_dir": data_dir, "--output_dir": output_dir})
    if problem:
        raise ConvertUsageError(problem)
    try:
        layouts = layout.discover(data_dir, cfg.aois or None)
    except layout.LayoutError as exc:
        raise ConvertError(str(exc)) from None
    shards, tile_opts = converter.plan(layouts, cfg)
    if not shards:
        raise ConvertError(f"{data_dir}: no tiles with the selected image types")
    plan = {"layouts": layouts, "shards": shards, "options": tile_opts, "cfg": cfg,
            "out": str(output_dir), "command_line": command_line, "t0": t0}
    if objectstore.is_url(output_dir):  # no lock on an object store: one writer is on you
        objectstore.delete(converter.check_store_output(str(output_dir), cfg))
        _run(plan, options, fan_out)
    else:
        out = pathlib.Path(output_dir)
        with converter.output_lock(out):
            converter._prepare_output(out, cfg,
                                      converter.plan_fingerprint(shards, tile_opts, cfg))
            plan["out"] = str(out)
            _run(plan, options, fan_out)
    info = dsinfo.load(output_dir)
    return converter.ConvertResult(info, converter.EXIT_SKIPPED if info.skipped
                                   else converter.EXIT_OK)
