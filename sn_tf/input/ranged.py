"""Ranged reads: a training crop reads only its window's rows out of the shard file.

A record of a whole 650 px tile is ~8.5 MB; a 512 px crop needs ~62 % of its image rows
and nothing of its other label layers. ``reader="ranged"`` (``InputConfig``) indexes the
shards once when the dataset is built and then reads, per crop, exactly the window of each
raw pixel payload it uses, straight from the (page-cached) file into the crop's buffer:
one ``os.preadv`` per payload whose iovecs put each row's window columns in place (rows
in reverse order for the row flip of the symmetry) and the columns outside the window in
a scratch buffer. Nothing else of the record is read per crop.

The index (``index_shard``): the TFRecord framing is walked (each length CRC-checked, the
count compared with the description: a cut, truncated or short shard fails naming the
file, as ``sn_tf.dataset.reader.check_shards``), and inside each record the
``tf.train.Example`` map entries are walked with small reads: for the pixel payloads a
crop reads (one bytes value each) only the file position is kept; the entries of the
features the pipeline parses (tile id, AOI, shapes, boxes, rectangles, schema version)
are kept as bytes and reassembled into a small serialized Example that
``tf.io.parse_single_example`` parses with the usual spec; every other entry is skipped
unread. The walk needs no payload offsets, so
version 1 data is read the same way. NOT checked on this path: the records' data CRCs
(checking one needs the whole record, the very read this avoids); the record reader
(``reader="record"``) checks them.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import sys
import threading
import zlib

import numpy as np

from sn_tf.dataset import tfrecord
from sn_tf.dataset.info import ShardError

_CHUNK = 64 * 1024  # bytes read at a time while walking a record's small entries
_IOV_ROWS = 500  # rows per preadv (2 iovecs a row; Linux IOV_MAX is 1024)


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """One shard's records for ranged reads.

    small: per record, a serialized ``tf.train.Example`` holding every feature of the
    record except its pixel payloads; payloads: per record, {feature key: (absolute file
    offset of the value's first byte, value length in bytes)}.
    """

    path: str
    small: list[bytes]
    payloads: list[dict[str, tuple[int, int]]]


class _Reader:
    """pread with a small read-ahead buffer over one open file (record walking)."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path
        self._start, self._buf = 0, b""

    def read(self, pos: int, n: int) -> bytes:
        """``n`` bytes at ``pos`` (ShardError naming the file when the file ends first)."""
        end = self._start + len(self._buf)
        if not (self._start <= pos and pos + n <= end):
            self._start, self._buf = pos, os.pread(self.fd, max(n, _CHUNK), pos)
        out = self._buf[pos - self._start:pos - self._start + n]
        if len(out) != n:
            raise ShardError(f"{self.path}: record data ends at byte {pos + len(out)}, "
                             f"{n} bytes wanted (truncated shard)")
        return out

    def varint(self, pos: int) -> tuple[int, int]:
        """(value, position after it) of the protobuf varint at ``pos``."""
        value, shift = 0, 0
        while True:
            byte = self.read(pos, 1)[0]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise ShardError(f"{self.path}: malformed varint at byte {pos}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _expect(r: _Reader, pos: int, tag: int, what: str) -> int:
    """Position after the one-byte field tag ``tag`` at ``pos`` (ShardError otherwise)."""
    if r.read(pos, 1)[0] != tag:
        raise ShardError(f"{r.path}: byte {pos} is not the {what} of a tf.train.Example "
                         f"(not a record sn_tf or TensorFlow wrote?)")
    return pos + 1


def _walk_record(r: _Reader, start: int, length: int, keep, payload_keys
                 ) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """(small serialized Example, payload positions) of the record data at file bytes
    ``[start, start + length)``: the map entries whose key is in ``keep`` are read into the
    small Example, those in ``payload_keys`` (one bytes value each) give their value's
    (file offset, length), the others are skipped unread."""
    end = start + length
    pos = _expect(r, start, 0x0A, "Features field")
    features_len, pos = r.varint(pos)
    if pos + features_len != end:
        raise ShardError(f"{r.path}: record at byte {start - 12} is not one tf.train.Example")
    small, payloads = [], {}
    while pos < end:
        entry_start = pos
        pos = _expect(r, pos, 0x0A, "feature map entry")
        entry_len, body = r.varint(pos)
        entry_end = body + entry_len
        pos = _expect(r, body, 0x0A, "feature key")
        key_len, pos = r.varint(pos)
        key = r.read(pos, key_len).decode()
        pos += key_len
        if key in payload_keys:  # Feature { bytes_list (0x0A) { value (0x0A) } }
            pos = _expect(r, pos, 0x12, "feature value")
            _, pos = r.varint(pos)
            pos = _expect(r, pos, 0x0A, "bytes list")
            _, pos = r.varint(pos)
            pos = _expect(r, pos, 0x0A, "bytes value")
            nbytes, pos = r.varint(pos)
            if pos + nbytes != entry_end:
                raise ShardError(f"{r.path}: feature {key!r} of the record at byte "
                                 f"{start - 12} is not one bytes value")
            payloads[key] = (pos, nbytes)
        elif key in keep:
            small.append(r.read(entry_start, entry_end - entry_start))
        pos = entry_end
    if pos != end:
        raise ShardError(f"{r.path}: record at byte {start - 12} overruns its length")
    body = b"".join(small)
    return b"\x0a" + _varint(len(body)) + body, payloads


def index_shard(path: str, expected: int | None, keep, payload_keys) -> ShardIndex:
    """Walk one shard (module docstring): ``keep``, the feature keys to parse per record;
    ``payload_keys``, the raw payloads read by window. ``expected``: the described record
    count (None: not checked). ShardError naming the file on a corrupt length, a
    truncated record, a count other than described or a record that is not an Example."""
    keep, payload_keys = frozenset(keep), frozenset(payload_keys)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        r = _Reader(fd, path)
        offset, small, payloads = 0, [], []
        while offset < size:
            head = os.pread(fd, 12, offset)
            if len(head) < 12:
                raise ShardError(f"{path}: truncated record header at byte {offset}")
            (length,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if tfrecord.masked_crc32c([head[:8]]) != crc:
                raise ShardError(f"{path}: corrupt length at byte {offset} (CRC mismatch)")
            if offset + 16 + length > size:
                raise ShardError(f"{path}: record at byte {offset} is truncated")
            s, p = _walk_record(r, offset + 12, length, keep, payload_keys)
            small.append(s)
            payloads.append(p)
            offset += 16 + length
    finally:
        os.close(fd)
    if expected is not None and len(small) != expected:
        raise ShardError(f"{path}: holds {len(small)} records, the description says "
                         f"{expected}; convert again or restore the file")
    return ShardIndex(path, small, payloads)


def index_arrays(indexes: list[ShardIndex], record_shard, payload_keys) -> dict:
    """The records of ``indexes`` (in order; of this pipeline's ``record_shard`` (num,
    index) when given) as flat numpy arrays for a tf.data graph:
    ``{"small": object [R] bytes, "path": object [R] bytes, "start": int64 [F],
    "count": int64 [F] (rows of each shard), "pos/<key>": int64 [R], "size/<key>": int64
    [R]}`` per payload key (-1 and 0 where a record lacks the payload)."""
    rows = []
    starts, counts = [], []
    for ix in indexes:
        picked = range(len(ix.small)) if record_shard is None else range(
            record_shard[1], len(ix.small), record_shard[0])
        starts.append(len(rows))
        counts.append(len(picked))
        rows += [(ix.path, ix.small[i], ix.payloads[i]) for i in picked]
    out = {"small": np.array([r[1] for r in rows] or [b""], object)[:len(rows)],
           "path": np.array([r[0].encode() for r in rows] or [b""], object)[:len(rows)],
           "start": np.asarray(starts, np.int64), "count": np.asarray(counts, np.int64)}
    for key in payload_keys:
        out["pos/" + key] = np.asarray([r[2].get(key, (-1, 0))[0] for r in rows], np.int64)
        out["size/" + key] = np.asarray([r[2].get(key, (-1, 0))[1] for r in rows], np.int64)
    return out


_SCRATCH = np.empty(1 << 20, np.uint8)  # columns outside a window land here (never read)


def read_window(path: bytes, position: int, width: int, pixel_bytes: int, y0: int, x0: int,
                win: int, flip_rows: bool, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [win, win * pixel_bytes]: rows ``[y0, y0 + win)``, columns ``[x0, x0 + win)``
    of a raw row-major array of ``width`` pixels of ``pixel_bytes`` bytes starting at byte
    ``position`` of file ``path``; rows in reverse order when ``flip_rows``.

    One ``os.preadv`` per ``_IOV_ROWS`` rows reads the file's contiguous range of those rows
    once: each row's window columns go to their row of the result, the rest to a scratch
    buffer. ``out``: a C-contiguous uint8 [win, win * pixel_bytes] array to read into
    (default: a new one). ShardError naming the file when it holds fewer bytes.
    """
    row = win * pixel_bytes
    gap = (width - win) * pixel_bytes
    if gap > _SCRATCH.nbytes:
        raise ValueError(f"window gap of {gap} bytes exceeds the scratch buffer")
    if out is None:
        out = np.empty((win, row), np.uint8)
    skip = memoryview(_SCRATCH)[:gap]
    fd = os.open(path, os.O_RDONLY)
    try:
        for first in range(0, win, _IOV_ROWS):
            rows = range(first, min(first + _IOV_ROWS, win))
            iov = []
            for i in rows:
                iov.append(out[win - 1 - i] if flip_rows else out[i])
                if gap:
                    iov.append(skip)
            if gap:
                iov.pop()  # the last row's gap is not read
            start = position + ((y0 + first) * width + x0) * pixel_bytes
            want = len(rows) * row + (len(rows) - 1) * gap
            got = os.preadv(fd, iov, start)
            if got != want:
                raise ShardError(f"{os.fsdecode(path)}: {got} of {want} bytes at byte "
                                 f"{start} (truncated shard)")
    finally:
        os.close(fd)
    return out


class BufferPool:
    """Reusable page-aligned numpy arrays for whole batches, handed to TensorFlow without a
    copy.

    TensorFlow wraps an aligned C-contiguous array returned by ``tf.numpy_function``
    without copying it and holds a reference until the tensor dies; an array of the pool
    is handed out again only when nothing but the pool refers to it. A fresh 33 MB
    batch (8 x 512 x 512 x 8 uint16) would otherwise be a fresh ``mmap`` page-faulted in
    on every batch (glibc's mmap threshold is at most 32 MB). The pool grows to the
    batches in flight (prefetched, being batched, in the train step) and lives as long as
    the dataset that owns it.
    """

    _ALIGN = 4096

    def __init__(self):
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple, dtype) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` (contents undefined) that no one else holds."""
        key = (tuple(int(s) for s in shape), np.dtype(dtype).str)
        with self._lock:
            arrays = self._free.setdefault(key, [])
            for a in arrays:
                # references: the pool's list, getrefcount's argument, the loop variable
                if sys.getrefcount(a) <= 3:
                    return a
            nbytes = int(np.prod(key[0])) * np.dtype(dtype).itemsize
            raw = np.empty(nbytes + self._ALIGN, np.uint8)
            start = (-raw.ctypes.data) % self._ALIGN
            a = raw[start:start + nbytes].view(dtype).reshape(key[0])
            arrays.append(a)
            return a


_SCRATCH_WINDOWS = threading.local()  # per-thread buffer of a crop's rows


def _scratch_window(nbytes: int) -> np.ndarray:
    """This thread's uint8 scratch buffer of at least ``nbytes`` (grown, never shrunk)."""
    buf = getattr(_SCRATCH_WINDOWS, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _SCRATCH_WINDOWS.buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes]


def _symmetric(src: np.ndarray, flip_rows, flip_cols, transpose) -> np.ndarray:
    """A view of the 2-D ``src`` with ``sn_tf.input.augment.split_dihedral``'s symmetry:
    rows reversed, then columns reversed, then transposed (no copy)."""
    if flip_rows:
        src = src[::-1]
    if flip_cols:
        src = src[:, ::-1]
    return src.T if transpose else src


def _pread_rows(fds: dict, path: bytes, position, size, height, width: int, pixel: int, y0,
                rows: np.ndarray) -> None:
    """Fill the C-contiguous ``rows`` (a whole number of rows of ``width`` pixels of
    ``pixel`` bytes) with one ``os.preadv`` from row ``y0`` of the raw payload at byte
    ``position`` of file ``path`` (``size`` bytes, a ``height`` x ``width`` tile), the
    file opened once per call of the caller (``fds``: path -> descriptor). ShardError
    naming the file when the payload's size is not its tile's or the file is short."""
    h = int(height)
    if int(size) != h * width * pixel:
        raise ShardError(f"{os.fsdecode(path)}: payload at byte {position} holds {size} "
                         f"bytes, not {h} x {width} pixels of {pixel} bytes")
    if path not in fds:
        fds[path] = os.open(path, os.O_RDONLY)
    start = int(position) + int(y0) * width * pixel
    got = os.preadv(fds[path], [rows], start)
    if got != rows.nbytes:
        raise ShardError(f"{os.fsdecode(path)}: {got} of {rows.nbytes} bytes at byte "
                         f"{start} (truncated shard)")


def read_crops(pool: BufferPool, dtype, channels: int, crop: int, paths, positions, sizes,
               heights, widths, y0s, x0s, flip_rows, flip_cols, transposes) -> np.ndarray:
    """[B, crop, crop, channels] ``dtype`` (little endian): for each crop i, window
    ``(y0s[i], x0s[i], crop)`` of the raw HWC payload at byte ``positions[i]`` of file
    ``paths[i]`` (``sizes[i]`` bytes, an ``heights[i]`` x ``widths[i]`` tile), then the
    symmetry of ``sn_tf.input.augment``'s ``split_dihedral`` form: rows reversed
    (``flip_rows``), then columns reversed (``flip_cols``), then transposed
    (``transposes``).

    Per crop: one ``os.pread`` of the window's rows (full width, contiguous in the file)
    into a per-thread scratch buffer, then one numpy copy of the window into its slot of
    the batch with the crop's symmetry folded into the view it copies from (pixels as
    one opaque value each). The batch comes from ``pool``. ShardError naming the file
    when a payload's size is not its tile's or the file is short.
    """
    dtype = np.dtype(dtype).newbyteorder("<")
    pixel = dtype.itemsize * channels
    view = np.dtype(f"V{pixel}")
    out = pool.take((len(paths), crop, crop, channels), dtype)
    slots = out.view(np.uint8).reshape(len(paths), crop, crop * pixel)
    fds: dict = {}
    try:
        for i in range(len(paths)):
            w = int(widths[i])
            rows = _scratch_window(crop * w * pixel)
            _pread_rows(fds, paths[i], positions[i], sizes[i], heights[i], w, pixel, y0s[i],
                        rows)
            x0 = int(x0s[i])
            src = rows.view(view).reshape(crop, w)[:, x0:x0 + crop]
            np.copyto(slots[i].view(view).reshape(crop, crop),
                      _symmetric(src, flip_rows[i], flip_cols[i], transposes[i]))
    finally:
        for fd in fds.values():
            os.close(fd)
    return out


def row_span(width, span: int, x0):
    """First column of the ``span`` columns delivered for a tile ``width`` wide whose crop
    window starts at column ``x0`` (:func:`read_rows`): 0 when the tile fits in the span,
    else the window's start moved left as far as needed to keep the span in the tile (the
    window, ``crop <= span`` wide, stays inside). Scalars give an int; arrays (one per
    crop) an int32 array."""
    first = np.where(np.asarray(width) <= span, 0,
                     np.minimum(x0, np.asarray(width) - span)).astype(np.int32)
    return int(first) if first.ndim == 0 else first


def read_rows(pool: BufferPool, dtype, channels: int, crop: int, span: int, paths, positions,
              sizes, heights, widths, y0s, x0s) -> np.ndarray:
    """[B, crop, span, channels] ``dtype`` (little endian): for each crop i, rows
    ``[y0s[i], y0s[i] + crop)`` of the raw HWC payload at byte ``positions[i]`` of file
    ``paths[i]`` (``sizes[i]`` bytes, an ``heights[i]`` x ``widths[i]`` tile), ``span``
    columns from :func:`row_span` (zero-filled right of a narrower tile). The column crop
    and the symmetry are left to the train step (``sn_tf.input.packed.orient_crops``).

    A tile exactly ``span`` wide (every tile of a SpaceNet image type) is read with one
    ``os.preadv`` straight into its slot of the batch, nothing else: the memory floor of a
    crop. Others go through a scratch buffer. The batch comes from ``pool``. ShardError
    naming the file when a payload's size is not its tile's or the file is short."""
    dtype = np.dtype(dtype).newbyteorder("<")
    pixel = dtype.itemsize * channels
    out = pool.take((len(paths), crop, span, channels), dtype)
    slots = out.view(np.uint8).reshape(len(paths), crop, span * pixel)
    fds: dict = {}
    try:
        for i in range(len(paths)):
            w = int(widths[i])
            rows = slots[i] if w == span else _scratch_window(crop * w * pixel)
            _pread_rows(fds, paths[i], positions[i], sizes[i], heights[i], w, pixel, y0s[i],
                        rows)
            if w != span:
                c0, n = row_span(w, span, x0s[i]), min(w, span)
                src = rows.reshape(crop, w * pixel)[:, c0 * pixel:(c0 + n) * pixel]
                slots[i, :, :n * pixel] = src
                slots[i, :, n * pixel:] = 0
    finally:
        for fd in fds.values():
            os.close(fd)
    return out


def inflate_layer(dtype, blob: bytes, height: int, width: int) -> np.ndarray:
    """[height, width] ``dtype`` (little endian, read-only view): the zlib-compressed layer
    ``blob`` (``sn_tf.dataset.schema`` "zlib" encoding) inflated. For the small compressed
    label layers (the contact layer, a few KB a tile) that ride in the shard index.
    ShardError when it does not inflate to that many pixels."""
    dtype = np.dtype(dtype).newbyteorder("<")
    try:
        raw = zlib.decompress(blob)
    except zlib.error as err:
        raise ShardError(f"a compressed label layer does not inflate: {err}") from None
    if len(raw) != height * width * dtype.itemsize:
        raise ShardError(f"a compressed label layer holds {len(raw)} bytes, not {height} x "
                         f"{width} pixels of {dtype.itemsize} bytes")
    return np.frombuffer(raw, dtype).reshape(height, width)


class SparseLayers:
    """The pixels > 0 of one compressed label layer (the contact layer: ~0.2 % of a tile)
    of every row of a shard index, as ``(flat, values)``: int64 [N] row-major pixel
    indices and the stored values there. A row's layer is inflated from its small Example
    once, on first use (:func:`inflate_layer`), and kept (a few KB a tile), so later crops
    of the tile (later epochs) cut their windows and pick focus points without inflating.
    """

    def __init__(self, small, key: str, dtype):
        self._small = small  # index_arrays' "small": the rows' serialized small Examples
        self._key = key
        self._dtype = dtype
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, row: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``(flat, values)`` of index row ``row`` (a ``height`` x ``width`` layer).
        ShardError when the layer is missing or does not inflate to that size."""
        got = self._rows.get(row)
        if got is None:
            blob = _example_bytes(self._small[row], self._key)
            layer = inflate_layer(self._dtype, blob, height, width).ravel()
            flat = np.flatnonzero(layer > 0)  # a bool scan: ~10x faster than of the layer
            got = self._rows[row] = (flat, layer[flat])  # one dict store: thread-safe
        return got


def _example_bytes(serialized: bytes, key: str) -> bytes:
    """The first bytes value of feature ``key`` of a serialized ``tf.train.Example``;
    ShardError when it has none."""
    from tensorflow.core.example import example_pb2

    feature = example_pb2.Example.FromString(serialized).features.feature
    if key not in feature or not feature[key].bytes_list.value:
        raise ShardError(f"a record lacks its {key} layer")
    return feature[key].bytes_list.value[0]


def sparse_window(flat, values, width: int, y0: int, x0: int, rows: int, cols: int,
                  out: np.ndarray) -> np.ndarray:
    """``out`` [rows, cols] (zeroed here) holding the pixels ``(flat, values)`` of a
    ``width`` wide layer that fall in rows ``[y0, y0 + rows)``, columns ``[x0, x0 + cols)``."""
    out[...] = 0
    r, c, inside = _in_window(flat, width, y0, x0, rows, cols)
    out[r, c] = values[inside]
    return out


def _in_window(flat, width: int, y0: int, x0: int, rows: int, cols: int):
    """``(r, c, inside)``: of the row-major pixel indices ``flat`` of a ``width`` wide
    layer, the mask of those in rows ``[y0, y0 + rows)``, columns ``[x0, x0 + cols)`` and
    their (row, column) within that window."""
    r, c = np.divmod(flat, width)
    r, c = r - int(y0), c - int(x0)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    return r[inside], c[inside], inside


def sparse_crops(layers: SparseLayers, dtype, crop: int, rows, heights, widths, y0s, x0s,
                 flip_rows, flip_cols, transposes) -> np.ndarray:
    """[B, crop, crop, 1] ``dtype``: for each crop i, the window ``(y0s[i], x0s[i], crop)``
    of index row ``rows[i]``'s layer with the symmetry applied as :func:`read_crops` does
    (rows reversed, then columns, then transposed)."""
    out = np.empty((len(rows), crop, crop, 1), np.dtype(dtype).newbyteorder("<"))
    window = np.empty((crop, crop), out.dtype)
    for i in range(len(rows)):
        flat, values = layers.get(int(rows[i]), int(heights[i]), int(widths[i]))
        sparse_window(flat, values, int(widths[i]), int(y0s[i]), int(x0s[i]), crop, crop,
                      window)
        out[i, :, :, 0] = _symmetric(window, flip_rows[i], flip_cols[i], transposes[i])
    return out


def sparse_cells(layers: SparseLayers, crop: int, cell_size: int, rows, heights, widths,
                 y0s, x0s, flip_rows, flip_cols, transposes) -> np.ndarray:
    """uint8 [B, h, w, 1] (h = w = ``crop // cell_size``): for each crop i, 1 in the cells
    of ``cell_size`` pixels of its window ``(y0s[i], x0s[i], crop)`` of index row
    ``rows[i]``'s layer that hold a pixel > 0, with the crop's symmetry (as
    :func:`sparse_crops`; it permutes whole cells when ``cell_size`` divides ``crop``).
    Equal to ``sn_tf.input.targets.held_cells`` of :func:`sparse_crops`' layer, without
    the [crop, crop] layer: the DetectNet contact weights' only use of it."""
    n = crop // cell_size
    out = np.empty((len(rows), n, n, 1), np.uint8)
    grid = np.empty((n, n), np.uint8)
    for i in range(len(rows)):
        w = int(widths[i])
        flat, _ = layers.get(int(rows[i]), int(heights[i]), w)
        r, c, _ = _in_window(flat, w, y0s[i], x0s[i], crop, crop)
        grid[...] = 0
        grid[r // cell_size, c // cell_size] = 1
        out[i, :, :, 0] = _symmetric(grid, flip_rows[i], flip_cols[i], transposes[i])
    return out


def sparse_rows(layers: SparseLayers, dtype, crop: int, span: int, rows, heights, widths,
                y0s, x0s) -> np.ndarray:
    """[B, crop, span, 1] ``dtype``: for each crop i, rows ``[y0s[i], y0s[i] + crop)`` of
    index row ``rows[i]``'s layer, the columns :func:`read_rows` delivers (zero right of
    a narrow tile)."""
    out = np.empty((len(rows), crop, span, 1), np.dtype(dtype).newbyteorder("<"))
    for i in range(len(rows)):
        w = int(widths[i])
        flat, values = layers.get(int(rows[i]), int(heights[i]), w)
        sparse_window(flat, values, w, int(y0s[i]), row_span(w, span, x0s[i]), crop, span,
                      out[i, :, :, 0])
    return out
