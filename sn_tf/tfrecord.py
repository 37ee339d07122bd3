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
object (they are copied once, into the page cache). CRC-32C comes from the
``google-crc32c`` package; its C extension accepts only ``bytes``, so other buffers are
checksummed through small cache-resident ``bytes`` slices (``CRC_CHUNK``).
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterator, Sequence

import google_crc32c

_MASK_DELTA = 0xA282EAD8
CRC_CHUNK = 256 << 10  # bytes per slice when checksumming a non-bytes buffer
COALESCE_BELOW = 64 << 10  # consecutive smaller buffers are joined into one
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_warned = False


class TFRecordError(Exception):
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


def crc32c(buffers: Sequence) -> int:
    """CRC-32C (Castagnoli, unmasked) of the concatenation of ``buffers``."""
    crc = 0
    for buf in buffers:
        view = _as_bytes_view(buf)
        if isinstance(view, bytes):
            crc = google_crc32c.extend(crc, view)
            continue
        for start in range(0, view.nbytes, CRC_CHUNK):
            crc = google_crc32c.extend(crc, view[start:start + CRC_CHUNK].tobytes())
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


def frame(buffers: Sequence) -> tuple[list, int]:
    """(buffers of one framed record, data length): header, the data buffers, footer."""
    data = _coalesce(buffers)
    length = sum(len(b) for b in data)
    head = struct.pack("<Q", length)
    head += struct.pack("<I", masked_crc32c([head]))
    return [head, *data, struct.pack("<I", masked_crc32c(data))], length


def _writev_all(fd: int, buffers: list, path) -> None:
    """Write every byte of ``buffers`` to ``fd`` (writev; resumes after partial writes)."""
    views = [memoryview(b) for b in buffers if len(b)]
    while views:
        batch = views[:_IOV_MAX]
        try:
            n = os.writev(fd, batch)
        except OSError as exc:
            raise OSError(exc.errno, f"{path}: cannot write TFRecord ({exc.strerror})") from None
        while n and views:  # drop what was written
            if n >= len(views[0]):
                n -= len(views.pop(0))
            else:
                views[0] = views[0][n:]
                n = 0


class TFRecordWriter:
    """Writes uncompressed TFRecord files without TensorFlow; use as a context manager.

    ``write(record)`` takes bytes or a sequence of buffers (one record) and returns the
    record's data length in bytes.

    ``drop_cache=True`` streams the file past the page cache: after each record the
    kernel is asked (``posix_fadvise(DONTNEED)``) to start writing back this record and
    to drop the previous ones' pages once written. The freed pages are reused by the next
    records instead of the page cache growing into memory not touched for a while, which
    on VMs costs the writer a page fault per 4 KB (BUILD_NOTES section 2: ~4x the CPU of
    the write). Readers of the file afterwards read it from disk.
    """

    def __init__(self, path, drop_cache: bool = False):
        _check_implementation()
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._drop = drop_cache and hasattr(os, "posix_fadvise")
        self._ends = [0, 0]  # file offsets where the last two records end
        self._pos = 0

    def write(self, record) -> int:
        """Append one record (bytes or a sequence of C-contiguous buffers)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: TFRecordWriter is closed")
        buffers, length = frame([record] if isinstance(record, (bytes, bytearray, memoryview))
                                else record)
        _writev_all(self._fd, buffers, self.path)
        self._pos += length + 16
        if self._drop:  # this record and the one before (its writeback began last time)
            os.posix_fadvise(self._fd, self._ends[0], self._pos - self._ends[0],
                             os.POSIX_FADV_DONTNEED)
            self._ends = [self._ends[1], self._pos]
        return length

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd is not None:
            if self._drop:
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)
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
