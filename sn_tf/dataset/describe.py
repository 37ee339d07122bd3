"""The description a conversion writes (``sn_tf.dataset.info.DatasetInfo``), built from the
shard records, and the end-of-run summary printed from it."""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib

import numpy as np

from sn_tf.dataset import info as dsinfo
from sn_tf.dataset import schema
from sn_tf.dataset.stats import BandStats
from sn_tf.dataset.options import ConvertConfig
from sn_tf.dataset.tiles import TileOptions
from sn_tf.utils.provenance import package_versions

WORK_DIR = ".sn_tf_work"  # per-shard records and statistics of a conversion
INFO_FILE = dsinfo.INFO_FILE


def _merge_stats(out: pathlib.Path, shards) -> dict:
    """{type: BandStats} of the train shards, merged from their sidecars in ``WORK_DIR``."""
    merged: dict[str, BandStats] = {}
    for s in shards:
        if s.split != "train":
            continue
        with np.load(out / WORK_DIR / f"{s.file}.stats.npz") as arrays:
            for itype in {k.split("/")[0] for k in arrays.files}:
                part = BandStats.from_arrays(arrays, itype)
                if itype in merged:
                    merged[itype].merge(part)
                else:
                    merged[itype] = part
    return merged


def _aoi_types(opts: TileOptions) -> tuple[str, ...]:
    """The image types an AOI's tiles hold: its selected types and each resampled
    ``T@G`` (``tiles.build_tile``)."""
    resampled = tuple(f"{t}@{opts.resample_to}" for t in opts.resample_types) \
        if opts.resample_to else ()
    return tuple(opts.image_types) + resampled


def _image_types(records, cfg: ConvertConfig) -> dict:
    """{type: ImageTypeInfo} from the shards' records (the first tile seen of each)."""
    out = {}
    for r in records.values():
        for k, v in r["image_types"].items():
            out.setdefault(k, dsinfo.ImageTypeInfo(
                k, v["dtype"], int(v["bands"]), tuple(int(x) for x in v["example_shape"]),
                v["label_grid"], v["crs"], cfg.image_encoding))
    return dict(sorted(out.items()))


def _label_grids(records, cfg: ConvertConfig) -> dict:
    """{grid: LabelGridInfo} from the shards' records and the label options."""
    enc = schema.label_encodings(cfg.label_encoding)
    arrays = {f: dsinfo.LabelArrayInfo(schema.LABEL_DTYPES[f], enc[f])
              for f in schema.LABEL_ARRAY_FIELDS}
    out = {}
    for r in records.values():
        for k, v in r["label_grids"].items():
            out.setdefault(k, dsinfo.LabelGridInfo(
                k, tuple(int(x) for x in v["example_shape"]), arrays,
                float(cfg.sdf_truncation), int(cfg.contact_radius)))
    return dict(sorted(out.items()))


def _splits(shards, records) -> dict:
    """{split: SplitInfo}: examples, bytes, shards with their record counts, AOIs."""
    parts: dict = {}
    for s in shards:
        r = records[s.file]
        sp = parts.setdefault(s.split, {"n": 0, "bytes": 0, "shards": [], "aois": {}})
        sp["n"] += len(r["tiles"])
        sp["bytes"] += r["bytes"]
        sp["shards"].append(dsinfo.ShardInfo(s.file, len(r["tiles"])))
        for _, aoi in r["tiles"]:
            sp["aois"][aoi] = sp["aois"].get(aoi, 0) + 1
    return {k: dsinfo.SplitInfo(k, v["n"], v["bytes"], tuple(v["shards"]), v["aois"])
            for k, v in parts.items()}


def build_info(layouts, shards, records, options, cfg, out, command_line, resumed,
               elapsed, band_stats: dict | None = None) -> dsinfo.DatasetInfo:
    """The description of the conversion (``sn_tf.dataset.info``; saved by
    ``dsinfo.save`` as sn_tf_info.json plus TFDS's metadata).

    ``band_stats``: {image type: BandStats} of the train split when the caller merged them
    (the Beam converter's combiner); by default merged from the shards' sidecars in
    ``out``.
    """
    merged = _merge_stats(out, shards) if band_stats is None else band_stats
    return dsinfo.DatasetInfo(
        name=cfg.name, schema_version=schema.SCHEMA_VERSION,
        image_types=_image_types(records, cfg), label_grids=_label_grids(records, cfg),
        splits=_splits(shards, records),
        aois={lay.name: dsinfo.AoiInfo(
            lay.name, lay.kind, str(lay.path),
            _aoi_types(options[lay.name]) if lay.name in options else (), len(lay.tiles))
            for lay in layouts},
        band_stats={k: dsinfo.BandStatsInfo(**{f: tuple(v) if isinstance(v, list) else v
                                               for f, v in d.items()})
                    for k, d in ((k, v.summary()) for k, v in sorted(merged.items()))},
        band_stats_split="train",
        skipped=[dsinfo.SkippedTile(**x) for s in shards for x in records[s.file]["skipped"]],
        notes=[dsinfo.TileNote(**n) for s in shards for n in records[s.file]["notes"]],
        layout_warnings=[w for lay in layouts for w in lay.warnings],
        shards_resumed=resumed, elapsed_s=round(elapsed, 2),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        command_line=command_line, versions=package_versions(),
        config=json.loads(json.dumps({k: v for k, v in dataclasses.asdict(cfg).items()
                                      if k != "progress"})))


def format_summary(info: dsinfo.DatasetInfo, out_dir) -> str:
    """Readable end-of-run summary of a conversion's description."""
    lines = [f"sn_tf.convert: {info.name} -> {out_dir}"]
    total_bytes = 0
    for split, sp in info.splits.items():
        total_bytes += sp.num_bytes
        aois = ", ".join(f"{a} {n}" for a, n in sorted(sp.aois.items()))
        lines.append(f"  {split:6s} {sp.num_examples:6d} tiles in {len(sp.shards)} "
                     f"shard(s), {sp.num_bytes / 2 ** 20:8.1f} MB   ({aois})")
    n = info.num_examples
    rate = n / info.elapsed_s if info.elapsed_s else 0.0
    lines.append(f"  total  {n:6d} tiles, {total_bytes / 2 ** 20:.1f} MB, "
                 f"{info.elapsed_s:.1f} s ({rate:.2f} tiles/s)"
                 + (f", {info.shards_resumed} shard(s) kept from an earlier run"
                    if info.shards_resumed else ""))
    if info.layout_warnings:
        lines.append(f"  {len(info.layout_warnings)} layout warning(s):")
        lines += [f"    - {w}" for w in info.layout_warnings]
    if info.notes:
        lines.append(f"  {len(info.notes)} note(s) on converted tiles "
                     f"(see {INFO_FILE} 'notes'); first ones:")
        lines += [f"    - {n.note}" for n in info.notes[:5]]
    if info.skipped:
        lines.append(f"  SKIPPED {len(info.skipped)} tile(s):")
        lines += [f"    - {s.tile_id}: {s.reason}" for s in info.skipped]
    else:
        lines.append("  skipped: none")
    return "\n".join(lines)
