"""Planning a conversion: tiles -> splits (by a hash of the tile id) -> shards, the
contract of each image type (dtype and bands, from the headers of the first tiles probed in
each AOI), the tile options per AOI, and the fingerprint ``--resume`` compares.

Shard files are named the TFDS way, ``<name>-<split>.tfrecord-00000-of-000NN``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json

import numpy as np

from sn_tf.dataset import schema
from sn_tf.dataset.options import ConvertConfig, ConvertUsageError, _check_against_data
from sn_tf.dataset.tiles import (ImageSpec, TileOptions, estimate_tile_bytes, probe_image,
                                 shard_count)
from sn_tf.spacenet import layout

PROBE_TILES = 5  # tiles per AOI whose headers fix the contract (dtype, bands, size)


# ---- splits and shard names ------------------------------------------------------------
def split_of(tile_id: str, splits) -> str:
    """Split of a tile from a hash of its id: stable, and unchanged when tiles are added."""
    digest = hashlib.sha256(tile_id.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    total = sum(f for _, f in splits)
    acc = 0.0
    for name, frac in splits:
        acc += frac / total
        if u < acc:
            return name
    return splits[-1][0]


def shard_name(name: str, split: str, index: int, num_shards: int) -> str:
    """TFDS-style shard file name, e.g. ``spacenet-train.tfrecord-00003-of-00012``."""
    return f"{name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}"


def _hash_key(tile_id: str) -> str:
    return hashlib.sha256(b"order:" + tile_id.encode()).hexdigest()


# ---- planning --------------------------------------------------------------------------
@dataclasses.dataclass
class ShardPlan:
    """One shard: its file name and the tiles it holds (in write order)."""

    split: str
    index: int
    num_shards: int
    file: str
    tiles: list  # list[layout.TileSource]
    notes: list = dataclasses.field(default_factory=list)  # go into the shard's record


def _select_types(layouts, requested) -> tuple[str, ...]:
    present = [t for t in layout.ALL_IMAGE_TYPES if any(t in lay.image_types for lay in layouts)]
    if not requested:
        return tuple(present)
    unknown = [t for t in requested if t not in present]
    if unknown:
        raise ConvertUsageError(f"--image_types: {unknown} not found in the data; present: "
                                f"{present}")
    return tuple(requested)


def tile_options(cfg: ConvertConfig, lay: layout.AoiLayout, types) -> TileOptions:
    """TileOptions for one AOI: the selected types this AOI has."""
    mine = tuple(t for t in types if t in lay.image_types)
    resample_types = ()
    if cfg.resample_to and cfg.resample_to in mine:
        resample_types = tuple(t for t in (cfg.resample_types or mine)
                               if t in mine and t != cfg.resample_to)
    return TileOptions(
        image_types=mine, label_grids=tuple(cfg.label_grids) or None,
        resample_to=cfg.resample_to if resample_types else None,
        resample_types=resample_types, resample_method=cfg.resample_method,
        sdf_truncation=cfg.sdf_truncation, contact_radius=cfg.contact_radius, source=cfg.source)


def _drop_identical_resamples(opts: TileOptions, tile) -> TileOptions:
    """Types already on the target grid need no resampled copy (checked on one tile)."""
    if not opts.resample_to:
        return opts
    from sn_tf.spacenet import geo
    from sn_tf.dataset.tiles import grid_key

    target = grid_key(geo.raster_header(tile.images[opts.resample_to]))
    keep = tuple(t for t in opts.resample_types
                 if grid_key(geo.raster_header(tile.images[t])) != target)
    return dataclasses.replace(opts, resample_types=keep, resample_to=opts.resample_to
                               if keep else None)


def _probe(lay: layout.AoiLayout, opts: TileOptions) -> tuple[TileOptions, int]:
    """Finish the AOI's options and estimate bytes per tile from the first readable tile."""
    for tile in lay.tiles:
        if not all(x in tile.images for x in opts.image_types):
            continue
        try:
            opts = _drop_identical_resamples(opts, tile)
            return opts, estimate_tile_bytes(tile, opts)
        except Exception:  # noqa: BLE001 -- a bad tile: it is reported when converted
            continue
    return opts, 1 << 20


def _probe_specs(lay: layout.AoiLayout, opts: TileOptions) -> list[tuple[str, ImageSpec]]:
    """(image type, spec) of the first ``PROBE_TILES`` tiles whose headers all read."""
    found = []
    for tile in lay.tiles:
        try:
            specs = [(t, probe_image(tile, t, opts)) for t in opts.image_types]
        except Exception:  # noqa: BLE001 -- a bad tile: it is reported when converted
            continue
        found += specs
        if len(found) >= PROBE_TILES * len(opts.image_types):
            break
    return found


def _majority(values):
    """The most common value (ties: the first seen)."""
    return collections.Counter(values).most_common(1)[0][0]


def contract_of(specs_by_aoi: dict) -> dict[str, dict[str, ImageSpec]]:
    """The contract, {AOI: {image type: ImageSpec}}, from the probed specs of each AOI.

    dtype and band count are the dataset's (one per image type: the feature spec and the
    decoder have one); the usual size is the AOI's (only noted when a tile is off it:
    SpaceNet's challenges cut tiles of 650, 900 or 1300 px, and training crops windows out
    of any size). Each is what most of the probed tiles have, so one odd tile among the
    first ones cannot set it.
    """
    kinds: dict[str, list] = {}
    for specs in specs_by_aoi.values():
        for itype, spec in specs:
            kinds.setdefault(itype, []).append((spec.dtype, spec.bands))
    kind = {t: _majority(v) for t, v in kinds.items()}
    contract = {}
    for aoi, specs in specs_by_aoi.items():
        sizes: dict[str, list] = {}
        for itype, spec in specs:
            sizes.setdefault(itype, []).append((spec.height, spec.width))
        contract[aoi] = {t: ImageSpec(*kind[t], *_majority(v)) for t, v in sizes.items()}
    return contract


def plan(layouts, cfg: ConvertConfig) -> tuple[list[ShardPlan], dict[str, TileOptions]]:
    """Shards of every split and the per-AOI tile options, the dataset's contract included
    (deterministic)."""
    types = _select_types(layouts, cfg.image_types)
    _check_against_data(cfg, types)
    options, per_split, tile_bytes, specs = {}, {}, {}, {}
    for lay in layouts:
        if not lay.tiles:
            continue
        opts = tile_options(cfg, lay, types)
        if not opts.image_types:
            continue
        opts, tile_bytes[lay.name] = _probe(lay, opts)
        specs[lay.name] = _probe_specs(lay, opts)
        options[lay.name] = opts
        for t in lay.tiles:
            per_split.setdefault(split_of(t.tile_id, cfg.splits), []).append(t)
    shards = []
    for split, _ in cfg.splits:
        tiles = sorted(per_split.get(split, []), key=lambda t: _hash_key(t.tile_id))
        if not tiles:
            continue
        est = int(np.mean([tile_bytes.get(t.aoi, 1 << 20) for t in tiles]))
        n = min(len(tiles), shard_count(len(tiles), est, int(cfg.shard_size_mb * 2 ** 20)))
        bounds = np.linspace(0, len(tiles), n + 1).round().astype(int)
        for i in range(n):
            shards.append(ShardPlan(split, i, n, shard_name(cfg.name, split, i, n),
                                    tiles[bounds[i]:bounds[i + 1]]))
    contract = contract_of(specs)
    options = {name: dataclasses.replace(o, contract=tuple(sorted(contract[name].items())))
               for name, o in options.items()}
    return shards, options


def plan_fingerprint(shards, options, cfg: ConvertConfig) -> str:
    """Hash of everything that determines the shards' contents (for --resume)."""
    doc = {
        "schema": schema.SCHEMA_VERSION,
        "shards": [(s.file, [t.tile_id for t in s.tiles]) for s in shards],
        "options": {k: dataclasses.asdict(v) for k, v in sorted(options.items())},
        "encodings": [cfg.image_encoding, cfg.label_encoding],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
