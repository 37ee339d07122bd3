"""``sn_tf.read_examples``: iterate converted tiles as numpy dicts, every shard checked.

    for tile in sn_tf.read_examples("/data/spacenet_tfrecords", split="val"):
        img = tile["images"]["MUL-PanSharpen"]["data"]    # uint16 [650, 650, 8]
        sdf = tile["labels"]["MUL-PanSharpen"]["sdf"]      # float16 [650, 650]

The dict layout is documented in ``sn_tf.dataset.schema``.

Integrity: every reader knows from the description (``sn_tf.dataset.info``) how many
records each shard holds. A shard that holds fewer (cut between records, truncated in
one, absent) or a corrupt record raises ``ShardError`` naming the file: nothing goes
missing silently. ``check_shards`` walks the shards' framing before reading (12 bytes read
per record, ``tfrecord.count_records``); the readers then count what they read, and the
tf.data form (``tf_checked_records``) asserts the count in the graph, which is how a
record whose payload is corrupt (TensorFlow's CRC check) is reported by file name.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib

from sn_tf.dataset import schema
from sn_tf.dataset import tfrecord
from sn_tf.dataset.info import (INFO_FILE, TFDS_INFO_FILE, DatasetInfo,  # noqa: F401
                                InfoError, ShardError, load as load_info)


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard file to read and the records it must hold (None: a file outside a
    converted folder, whose count no description gives)."""

    path: str
    num_examples: int | None


def _described_counts(folder: pathlib.Path) -> dict[str, int]:
    """{shard file name: records} from the description in ``folder``; {} when the folder
    holds no description."""
    if not ((folder / INFO_FILE).is_file() or (folder / TFDS_INFO_FILE).is_file()):
        return {}
    info = load_info(folder)
    return {s.file: s.num_examples for sp in info.splits.values() for s in sp.shards}


def shards(path, split: str | None = None) -> list[Shard]:
    """Shards of a converted folder (one split or all, with their described counts), a
    shard file, or a glob (counts from the description of the files' folder, if any)."""
    p = pathlib.Path(path)
    if p.is_dir():
        info = load_info(p)
        names = [split] if split else list(info.splits)
        return [Shard(str(p / sh.file), sh.num_examples)
                for s in names for sh in info.split(s).shards]
    files = sorted(glob.glob(str(path)))
    if split:
        files = [f for f in files if f"-{split}.tfrecord" in os.path.basename(f)]
    if not files:
        raise FileNotFoundError(f"{path}: no shard files")
    counts: dict[str, dict[str, int]] = {}
    out = []
    for f in files:
        folder = str(pathlib.Path(f).parent)
        if folder not in counts:
            counts[folder] = _described_counts(pathlib.Path(folder))
        out.append(Shard(f, counts[folder].get(os.path.basename(f))))
    return out


def shard_files(path, split: str | None = None) -> list[str]:
    """Paths of ``shards(path, split)``."""
    return [s.path for s in shards(path, split)]


def check_shards(items: list[Shard]) -> None:
    """ShardError naming the first local shard that is absent, cut (fewer records than
    described) or has a corrupt or truncated record frame; payloads are not read.
    Remote paths (``gs://`` ...) and shards without a described count are left to the
    readers' counts."""
    for s in items:
        if s.num_examples is None or "://" in s.path:
            continue
        try:
            n = tfrecord.count_records(s.path)
        except FileNotFoundError:
            raise ShardError(f"{s.path}: shard listed in the description is absent") from None
        except tfrecord.TFRecordError as err:
            raise ShardError(f"{err}; convert again or restore the file") from None
        if n != s.num_examples:
            raise ShardError(f"{s.path}: holds {n} records, the description says "
                             f"{s.num_examples}; convert again or restore the file")


def _short_count(s: Shard, n: int) -> ShardError:
    return ShardError(f"{s.path}: read {n} records, the description says {s.num_examples}"
                      f"; convert again or restore the file")


def _tf_message(err) -> str:
    """The gist of a TensorFlow error's message (without its graph node prefix and op
    suffix), e.g. "corrupted record at 267439"."""
    text = err.message
    text = text.rsplit("}}", 1)[-1]
    return text.split(" [Op:", 1)[0].strip()


def shard_records(s: Shard):
    """Yield the serialized records of one shard (numpy bytes, via TensorFlow's reader);
    ShardError naming the file for a corrupt record or a count other than described."""
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    n = 0
    it = tf.data.TFRecordDataset(s.path).as_numpy_iterator()
    while True:
        try:
            record = next(it)
        except StopIteration:
            break
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as err:
            raise ShardError(f"{s.path}: record {n + 1} is corrupt or truncated "
                             f"({_tf_message(err)})") from None
        n += 1
        yield record
    if s.num_examples is not None and n != s.num_examples:
        raise _short_count(s, n)


def read_examples(path, split: str | None = None, decode_polygons: bool = True):
    """Yield one decoded tile dict per example, in file order.

    ``path``: a converted folder (uses its description), one shard file, or a glob.
    Images come back in their source dtype and band order (HWC), with labels, boxes,
    tile id, AOI, ``transform_gdal`` and CRS. Raises ``ShardError`` naming the shard that
    is cut, truncated or corrupt (its framing is checked before any tile is yielded).
    """
    items = shards(path, split)
    check_shards(items)
    for s in items:
        for record in shard_records(s):
            yield schema.decode_tile(record, decode_polygons=decode_polygons)


def tf_checked_records(file, expected, record_shard=None, buffer_size: int | None = None):
    """tf.data: the records of one shard (scalar string ``file``), failing with an
    InvalidArgumentError that names the file when fewer than ``expected`` (int64 scalar:
    the described count, of this pipeline's ``record_shard`` (num, index) when given;
    -1: not checked) could be read: a cut or truncated shard, or a corrupt record
    (TensorFlow's reader stops at it: ``ignore_errors`` moves on to the end of the file,
    the count tells).

    Two stages per record (a counting ``scan`` and a ``filter``): an empty string, which
    no sn_tf record is (an Example holds at least its schema version), is appended as the
    end mark at which the count is checked.
    """
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    graph = tf.autograph.experimental.do_not_convert
    expected = tf.cast(expected, tf.int64)
    ds = tf.data.TFRecordDataset(file, buffer_size=buffer_size).ignore_errors()
    if record_shard is not None:
        ds = ds.shard(*record_shard)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(tf.constant(b"")))

    def fail(n):
        message = tf.strings.join([
            "sn_tf: shard ", file, ": read ", tf.strings.as_string(n),
            " records, the description says ", tf.strings.as_string(expected),
            " (the shard is cut, truncated or holds a corrupt record); convert again or "
            "restore the file"])
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.identity(n)

    def count(n, record):
        bad = tf.equal(tf.strings.length(record), 0) & tf.not_equal(n, expected) & (
            expected >= 0)  # the end mark, and a count other than described
        n = tf.cond(bad, lambda: fail(n), lambda: n)
        return n + 1, record

    ds = ds.scan(tf.constant(0, tf.int64), graph(count))
    return ds.filter(graph(lambda r: tf.strings.length(r) > 0))


def tf_shard_records(items: list[Shard], buffer_size: int | None = None):
    """tf.data: the records of ``items`` in order, each shard counted by
    ``tf_checked_records`` (a shard without a described count is not counted)."""
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    files = tf.data.Dataset.from_tensor_slices(
        (tf.constant([s.path for s in items]),
         tf.constant([-1 if s.num_examples is None else s.num_examples for s in items],
                     tf.int64)))
    return files.flat_map(tf.autograph.experimental.do_not_convert(
        lambda f, n: tf_checked_records(f, n, buffer_size=buffer_size)))


def as_shard_error(err) -> ShardError | None:
    """The ShardError for a TensorFlow error raised by ``tf_checked_records`` (None for
    any other error)."""
    marker = "sn_tf: shard "
    text = getattr(err, "message", str(err))
    if marker not in text:
        return None
    return ShardError(text[text.index(marker) + len(marker):].split("\n")[0].strip(" ]\"'"))


def read_truth(path, split: str, grid: str, max_tiles: int | None = None) -> dict:
    """{tile_id: [pixel Polygons on ``grid``]} of a split, parsing only ids and polygons.

    Tiles keep ``read_examples`` order; ``max_tiles`` stops after that many tiles. Shards
    are checked as ``read_examples`` does (ShardError naming the file).
    """
    import shapely

    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    spec = {schema.KEY_TILE_ID: tf.io.FixedLenFeature([], tf.string),
            schema.label_key(grid, "polygons_wkb"): tf.io.VarLenFeature(tf.string)}

    def parse(record):
        f = tf.io.parse_single_example(record, spec)
        return f[schema.KEY_TILE_ID], f[schema.label_key(grid, "polygons_wkb")].values

    items = shards(path, split)
    check_shards(items)
    ds = tf_shard_records(items).map(tf.autograph.experimental.do_not_convert(parse))
    if max_tiles:
        ds = ds.take(max_tiles)
    truth = {}
    try:
        for tile_id, wkbs in ds.as_numpy_iterator():
            truth[tile_id.decode()] = list(shapely.from_wkb(list(wkbs))) if len(wkbs) else []
    except tf.errors.InvalidArgumentError as err:
        shard_error = as_shard_error(err)
        if shard_error is None:
            raise
        raise shard_error from None
    return truth
