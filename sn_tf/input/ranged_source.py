"""The ranged reader's tf.data side (``reader="ranged"``; ``sn_tf.input.ranged`` reads):
the shard index built once, its rows as the records' stand-in, each row's small Example
parsed with its payloads' places, and a batch read's compressed contact layer kept sparse.
``sn_tf.input.pipeline`` builds the graph from these.
"""

from __future__ import annotations

from sn_tf.dataset import schema
from sn_tf.dataset.reader import Shard
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()

from sn_tf.input import ranged  # noqa: E402  (after TF is imported quietly)
from sn_tf.input.decode import _FILE, _POS, _ROW, _SIZE, _cut_payloads  # noqa: E402
from sn_tf.input.plan import _Plan  # noqa: E402

_graph = tf.autograph.experimental.do_not_convert


def ranged_records(files_ds, index: dict, cycle_length: int):
    """The ranged reader's stand-in for ``_records``: (row of ``index`` int64, epoch), the
    rows of each file in file order, interleaved over the files like ``_records`` with
    one reader thread (``index``: ``sn_tf.input.ranged.index_arrays``; nothing is read
    from the files here)."""
    start = tf.constant(index["start"])
    count = tf.constant(index["count"])

    def rows(f, expected, epoch, k):
        first = tf.gather(start, k)
        return tf.data.Dataset.range(first, first + tf.gather(count, k)).map(
            _graph(lambda j: (j, epoch)))

    return files_ds.interleave(_graph(rows), cycle_length=cycle_length, block_length=1)


def ranged_parser(index: dict, spec: dict, payload_keys):
    """``(row, epoch) -> (features, epoch)`` for the ranged reader: the row's small Example
    parsed with ``spec`` plus, per raw payload, its shard file, position and size
    (``decode._ranged_window`` reads the crop's window from them)."""
    small = tf.constant(index["small"].astype(bytes) if len(index["small"]) else [b""])
    paths = tf.constant(index["path"].astype(bytes) if len(index["path"]) else [b""])
    pos = {k: tf.constant(index["pos/" + k]) for k in payload_keys}
    size = {k: tf.constant(index["size/" + k]) for k in payload_keys}

    def parse(row, epoch):
        feat = dict(tf.io.parse_single_example(tf.gather(small, row), spec))
        feat[_ROW] = row
        path = tf.gather(paths, row)
        for k in payload_keys:
            feat[_FILE + k] = path
            feat[_POS + k] = tf.gather(pos[k], row)
            feat[_SIZE + k] = tf.gather(size[k], row)
        return feat, epoch

    return parse


def sparse_contact(plan: _Plan, index: dict, spec: dict):
    """``(contact, spec)``: for a batch-read plan whose crops take the compressed contact
    layer (a target or weight, or ``augment.focus``), the index rows' layers as
    ``ranged.SparseLayers`` (each inflated once) and the parse spec without the layer,
    which no example then needs; else ``(None, spec)``."""
    key = schema.label_key(plan.grid, "contact")
    wanted = "contact" in plan.label_fields or plan.augment.focus > 0
    if not (plan.batch_read and wanted and key not in _cut_payloads(plan)):
        return None, spec
    sparse = ranged.SparseLayers(index["small"], key, plan.label_arrays["contact"][0])
    return sparse, {k: v for k, v in spec.items() if k != key}


def ranged_index(files: list[Shard], record_shard, spec: dict, payload_keys) -> dict:
    """Index the shards for ranged reads (``sn_tf.input.ranged``): counts checked against
    the description, the spec's features kept, the payloads' places found."""
    return ranged.index_arrays(
        [ranged.index_shard(s.path, s.num_examples, spec, payload_keys) for s in files],
        record_shard, payload_keys)
