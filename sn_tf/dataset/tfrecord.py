"""TFRecord files written and read without TensorFlow (the converter's output format).

A TFRecord file is a sequence of records, each framed as (all integers little endian)::

    uint64 length
    uint32 masked_crc32c(the 8 bytes of length)
    byte   data[length]
    uint32 masked_crc32c(data)

with ``masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8  (mod 2**32)`` over the
CRC-32C (Castagnoli) of ``x``. This is what ``tf.io.TFRecordWriter`` writes (no
compression) and what ``tf.data.TFRecordDataset`` checks; a test checks byte identity.

``TFRecordWriter.write`` takes one record as a sequence of buffers (bytes, memoryviews,
C-contiguous numpy arrays): the CRC is computed incrementally over them and they are handed
to the kernel with ``os.writev``, so large pixel buffers are never joined into one bytes
object (they are copied once, into the page cache). With ``direct=True`` (what the
converter uses) they are copied once into a page-aligned buffer written with ``O_DIRECT``
instead. CRC-32C comes from the ``google-crc32c`` package; its C extension accepts only
``bytes``, so other buffers are checksummed through small cache-resident ``bytes`` slices
(``CRC_CHUNK``).
"""

from __future__ import annotations

import collections
import errno
import mmap
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import ClassVar

import google_crc32c
import numpy as np

from sn_tf.utils.errors import SnTfError

_MASK_DELTA = 0xA282EAD8
COALESCE_BELOW = 64 << 10  # consecutive smaller buffers are joined into one
STAGE_BYTES = 4 << 20  # O_DIRECT writes: a multiple of every device block size
STAGES = 4  # O_DIRECT buffers per writer: a whole ~12 MB tile is staged without waiting
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_warned = False


class TFRecordError(SnTfError):
    """A TFRecord file is truncated or fails its CRC check; ``str()`` names file and offset."""


def _check_implementation() -> None:
    """Warn once when google-crc32c runs its pure-Python fallback (~1000x slower)."""
    global _warned
    if google_crc32c.implementation != "c" and not _warned:
        _warned = True
        warnings.warn("google-crc32c uses its pure-Python implementation: writing TFRecords "
                      "will be very slow; install a google-crc32c wheel with the C "
                      "extension for this platform", RuntimeWarning, stacklevel=3)


def _as_bytes_view(buf) -> bytes | memoryview:
    """``buf`` as bytes or a flat uint8 memoryview (no copy); must be C-contiguous."""
    if isinstance(buf, bytes):
        return buf
    view = memoryview(buf)
    if not view.c_contiguous:
        raise ValueError("TFRecord buffers must be C-contiguous")
    return view.cast("B") if (view.format != "B" or view.ndim != 1) else view


def _pieces(buffers: Sequence) -> Iterator[bytes | np.ndarray]:
    """The bytes of ``buffers`` in order, without copies: ``bytes`` as they are, other
    buffers as flat uint8 arrays (google-crc32c's C extension refuses memoryviews but
    takes arrays; its pure-Python fallback takes both)."""
    for buf in buffers:
        view = _as_bytes_view(buf)
        yield view if isinstance(view, bytes) else np.frombuffer(view, np.uint8)


def crc32c(buffers: Sequence) -> int:
    """CRC-32C (Castagnoli, unmasked) of the concatenation of ``buffers``."""
    crc = 0
    for piece in _pieces(buffers):
        crc = google_crc32c.extend(crc, piece)
    return crc


def mask_crc(crc: int) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits, add 0xa282ead8 (mod 2**32)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(buffers: Sequence) -> int:
    """Masked CRC-32C of the concatenation of ``buffers``."""
    return mask_crc(crc32c(buffers))


def _coalesce(buffers: Sequence) -> list:
    """Flat byte views of ``buffers``, runs of small ones joined (fewer syscalls and CRC calls)."""
    out, small = [], []
    for buf in buffers:
        view = _as_bytes_view(buf)
        if len(view) < COALESCE_BELOW:
            small.append(view)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(view)
    if small:
        out.append(b"".join(small))
    return out


def _header(length: int) -> bytes:
    """A record's 12-byte header: uint64 length, masked CRC-32C of those 8 bytes."""
    head = struct.pack("<Q", length)
    return head + struct.pack("<I", masked_crc32c([head]))


def frame(buffers: Sequence) -> tuple[list, int]:
    """(buffers of one framed record, data length): header, the data buffers, footer."""
    data = _coalesce(buffers)
    length = sum(len(b) for b in data)
    return [_header(length), *data, struct.pack("<I", masked_crc32c(data))], length


def _writev_all(fd: int, buffers: list, path) -> None:
    """Write every byte of ``buffers`` to ``fd`` (writev; resumes after partial writes)."""
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        batch = views[:_IOV_MAX]
        try:
            n = os.writev(fd, batch) if hasattr(os, "writev") else os.write(fd, batch[0])
        except OSError as exc:
            raise OSError(exc.errno, f"{path}: cannot write TFRecord ({exc.strerror})") from None
        while n and views:  # drop what was written
            if n >= len(views[0]):
                n -= len(views.pop(0))
            else:
                views[0] = views[0][n:]
                n = 0


class _DirectSink:
    """Appends bytes to a file opened with ``O_DIRECT``, through page-aligned buffers.

    Every write to the file is a full ``STAGE_BYTES`` buffer at a multiple of
    ``STAGE_BYTES``, as O_DIRECT requires; the device reads the buffer itself, so the
    kernel neither copies the data nor keeps it in the page cache. ``STAGES`` buffers
    rotate: a helper thread writes the full ones in order (waiting for the device) while
    the caller fills the next, waiting only when all are full. ``finish`` writes the tail
    without O_DIRECT. A file system that refuses an O_DIRECT write (EINVAL) gets ordinary
    writes from then on (``direct`` becomes False).
    """

    _spare: ClassVar[list] = []  # stages of finished sinks, reused (no faults per shard)
    _spare_lock: ClassVar[threading.Lock] = threading.Lock()  # writers may live in threads

    def __init__(self, fd: int, path: str):
        from concurrent.futures import ThreadPoolExecutor

        self.fd, self.path = fd, path
        self.direct = True
        self._stages = [self._take_stage() for _ in range(STAGES)]
        self._current = 0  # the stage being filled
        self._view = memoryview(self._stages[0])
        self._fill = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tfrecord-o-direct")
        self._pending = collections.deque()  # futures of submitted stages, oldest first

    @classmethod
    def _take_stage(cls) -> mmap.mmap:
        with cls._spare_lock:
            for i, stage in enumerate(cls._spare):
                if len(stage) == STAGE_BYTES:
                    return cls._spare.pop(i)
        return mmap.mmap(-1, STAGE_BYTES)  # anonymous: page aligned

    def append(self, data) -> None:
        """Copy ``data`` (a bytes-like buffer) into the stage, writing each full stage."""
        view = memoryview(data)
        start = 0
        while start < len(view):
            n = min(STAGE_BYTES - self._fill, len(view) - start)
            self._view[self._fill:self._fill + n] = view[start:start + n]
            self._fill += n
            start += n
            if self._fill == STAGE_BYTES:
                self._flush()

    def _wait(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` writes are in progress (re-raising their errors)."""
        while len(self._pending) > keep:
            self._pending.popleft().result()

    def _flush(self) -> None:
        """Hand the full stage to the writer thread and continue in the next free one."""
        self._pending.append(self._thread.submit(self._write, self._view[:self._fill]))
        self._wait(keep=STAGES - 1)  # the next stage is the oldest submitted: wait for it
        self._current = (self._current + 1) % STAGES
        self._view = memoryview(self._stages[self._current])
        self._fill = 0

    def _write(self, data: memoryview) -> None:
        """(writer thread) Write ``data``: O_DIRECT while accepted, ordinary writes after."""
        if self.direct:
            try:
                written = os.write(self.fd, data)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise OSError(exc.errno, f"{self.path}: cannot write TFRecord "
                                             f"({exc.strerror})") from None
                written = 0
            if written < len(data):  # refused or short: no more O_DIRECT
                self._buffered()
            data = data[written:]
        if len(data):
            _writev_all(self.fd, [data], self.path)

    def _buffered(self) -> None:
        import fcntl  # POSIX only, like O_DIRECT

        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
        self.direct = False

    def finish(self) -> None:
        """Write what is left (without O_DIRECT: its length is arbitrary); free the stages."""
        try:
            self._wait()
            if self.direct:
                self._buffered()
            self._write(self._view[:self._fill])
        finally:
            self._thread.shutdown()
            self._view.release()
            with self._spare_lock:
                keep = max(0, STAGES - len(self._spare))
                self._spare.extend(self._stages[:keep])
            for stage in self._stages[keep:]:
                stage.close()


def _open_direct(path: str):
    """(fd, _DirectSink) for ``path`` opened with O_DIRECT, or None where it is refused."""
    if not hasattr(os, "O_DIRECT"):
        return None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # e.g. tmpfs
            return None
        raise
    try:
        return fd, _DirectSink(fd, path)
    except BaseException:
        os.close(fd)
        raise


class TFRecordWriter:
    """Writes uncompressed TFRecord files without TensorFlow; use as a context manager.

    ``write(record)`` takes bytes or a sequence of buffers (one record) and returns the
    record's data length in bytes.

    Both options below keep the written file out of the page cache (readers afterwards
    read it from disk). On VMs the page cache otherwise grows into memory the guest has
    not touched for a while, and each 4 KB page of it costs the writer a fault (BUILD_NOTES
    section 10: ~4x the CPU of the write itself).

    ``drop_cache=True``: after each record the kernel is asked (``posix_fadvise(DONTNEED)``)
    to start writing back this record and to drop the previous ones' pages once written;
    the next records reuse the freed pages.

    ``direct=True``: the file is written with ``O_DIRECT`` through a 4 MB page-aligned
    buffer (``_DirectSink``): the record is copied once, into that buffer, while its CRC is
    computed, and the device reads the buffer (no page cache, no kernel copy, no
    writeback). Writes wait for the device. Falls back to ordinary writes (with
    ``drop_cache`` if set) where the file system refuses O_DIRECT.
    """

    def __init__(self, path, drop_cache: bool = False, direct: bool = False):
        _check_implementation()
        self.path = os.fspath(path)
        opened = _open_direct(self.path) if direct else None
        if opened is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            self._sink = None
        else:
            self._fd, self._sink = opened
        self._drop = drop_cache and hasattr(os, "posix_fadvise")
        self._ends = [0, 0]  # file offsets where the last two records end
        self._pos = 0

    @property
    def direct(self) -> bool:
        """True while the file is being written with O_DIRECT."""
        return self._sink is not None and self._sink.direct

    def write(self, record) -> int:
        """Append one record (bytes or a sequence of C-contiguous buffers)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: TFRecordWriter is closed")
        buffers = [record] if isinstance(record, (bytes, bytearray, memoryview)) else record
        if self._sink is None:
            framed, length = frame(buffers)
            _writev_all(self._fd, framed, self.path)
        else:
            length = self._stage_record(buffers)
        self._pos += length + 16
        if self._drop and not self.direct:  # this record and the one before (its
            os.posix_fadvise(self._fd, self._ends[0],  # writeback began last time)
                             self._pos - self._ends[0], os.POSIX_FADV_DONTNEED)
            self._ends = [self._ends[1], self._pos]
        return length

    def _stage_record(self, buffers: Sequence) -> int:
        """Frame one record into the O_DIRECT sink, CRC computed piece by piece as copied."""
        data = _coalesce(buffers)
        length = sum(len(b) for b in data)
        self._sink.append(_header(length))
        crc = 0
        for piece in _pieces(data):
            crc = google_crc32c.extend(crc, piece)
            self._sink.append(piece)
        self._sink.append(struct.pack("<I", mask_crc(crc)))
        return length

    def close(self) -> None:
        """Write what is staged and close the file (idempotent)."""
        if self._fd is not None:
            try:
                if self._sink is not None:
                    self._sink.finish()
                if self._drop:
                    os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path, verify: bool = True) -> Iterator[bytes]:
    """Yield the records of an uncompressed TFRecord file, checking both CRCs by default.

    Raises ``TFRecordError`` naming the file and byte offset of a truncated or corrupt record.
    """
    with open(path, "rb") as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise TFRecordError(f"{path}: truncated record header at byte {offset}")
            (length,), (head_crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if verify and masked_crc32c([head[:8]]) != head_crc:
                raise TFRecordError(f"{path}: corrupt length at byte {offset} (CRC mismatch)")
            data, tail = f.read(length), f.read(4)
            if len(data) < length or len(tail) < 4:
                raise TFRecordError(f"{path}: record at byte {offset} is truncated "
                                    f"({len(data)} of {length} data bytes)")
            if verify and masked_crc32c([data]) != struct.unpack("<I", tail)[0]:
                raise TFRecordError(f"{path}: corrupt data in the record at byte {offset} "
                                    "(CRC mismatch)")
            yield data
            offset += 16 + length


def count_records(path) -> int:
    """Records in an uncompressed TFRecord file, from its framing alone: each record's
    length header is read and CRC-checked and its data skipped (12 bytes read per record,
    the payloads are not read or checksummed: ``read_records`` does that).

    Raises ``TFRecordError`` naming the file and byte offset of a corrupt length or of a
    record that runs past the end of the file (a truncated shard).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset, count = 0, 0
        while offset < size:
            f.seek(offset)
            head = f.read(12)
            if len(head) < 12:
                raise TFRecordError(f"{path}: truncated record header at byte {offset}")
            (length,), (head_crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if masked_crc32c([head[:8]]) != head_crc:
                raise TFRecordError(f"{path}: corrupt length at byte {offset} (CRC mismatch)")
            if offset + 16 + length > size:
                raise TFRecordError(f"{path}: record at byte {offset} is truncated "
                                    f"({size - offset - 12} of {length + 4} bytes present)")
            offset += 16 + length
            count += 1
    return count
