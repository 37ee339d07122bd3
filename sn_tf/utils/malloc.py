"""glibc malloc tuning for processes that churn through large arrays (convert, train).

sn_tf's hot loops allocate and free arrays of several MB per tile or crop: the
converter's pixels and label layers, tf.data's records (8.5 MB for an 8-band 650 px
tile), decoded windows and batches. By default glibc serves every allocation above its
mmap threshold (dynamic, at most 32 MB) with a fresh ``mmap`` and unmaps it when freed,
so each tile or crop page-faults its memory in again. On the VMs measured here that was
~30 % of the converter's time and a third of the input pipeline's CPU (mostly system
time; BUILD_NOTES sections 2 and 3). ``keep_freed_memory`` makes malloc serve those
arrays from its heaps and keep freed memory, so the pages are reused.

Process-wide and permanent: resident memory stays near its high-water mark instead of
shrinking between tiles. Each thread's malloc arena keeps what it freed, so the retained
memory grows with the threads that allocate (tf.data's pools are sized to the cores):
+~90 MB for one training pipeline on 2 cores; on a many-core host, setting glibc's
``MALLOC_ARENA_MAX`` in the environment caps it. The CLIs (``sn_tf.convert``,
``sn_tf.train``, ``sn_tf.demo``) call it at start; a library user opts in by calling it
before building the pipeline.

``return_freed_memory`` is the opposite policy, for ``sn_tf.predict``, whose peak memory must
not depend on the scene's size: glibc's dynamic threshold rises to the largest block freed
(up to 32 MB), after which every array below it is carved from a heap; arrays whose sizes
vary with the scene's width (strips, accumulators) and TensorFlow's per-shape activations
then fragment the heaps, which keep the free holes resident (BUILD_NOTES section 7: +277 MB
of free heap memory at the peak of a 6000 px scene, +63 MB at 1000 px). A fixed threshold
gives every block of ``RETURN_MMAP_THRESHOLD_BYTES`` or more its own mapping, unmapped when
freed, so resident memory follows the live arrays (at the price of page faults per block).
"""

from __future__ import annotations

import platform
import sys

MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed mmap threshold on 64-bit
TRIM_THRESHOLD_BYTES = 1 << 30
RETURN_MMAP_THRESHOLD_BYTES = 1 << 20  # return_freed_memory: blocks of 1 MiB and more
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h


def _libc():
    """The process's C library through ctypes, or None when it is not glibc on Linux."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    import ctypes

    return ctypes.CDLL(None)


def keep_freed_memory() -> bool:
    """Serve arrays up to 32 MB from malloc's heaps and keep freed memory; True if applied.

    glibc only (returns False elsewhere, changing nothing). Sets ``M_MMAP_THRESHOLD`` to
    ``MMAP_THRESHOLD_BYTES`` and ``M_TRIM_THRESHOLD`` to ``TRIM_THRESHOLD_BYTES``; both
    are process-wide, for every thread's arena.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def return_freed_memory() -> bool:
    """Give blocks of ``RETURN_MMAP_THRESHOLD_BYTES`` or more their own mapping, returned to
    the system when freed (a FIXED mmap threshold: glibc no longer raises it); True if applied.

    glibc only (returns False elsewhere, changing nothing). Process-wide, for every thread's
    arena (TensorFlow's included); undoes :func:`keep_freed_memory` and vice versa.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, RETURN_MMAP_THRESHOLD_BYTES))


def mmapped_bytes() -> int | None:
    """Bytes malloc currently holds in mmapped chunks (glibc ``mallinfo2().hblkhd``);
    None where unavailable (not glibc, or glibc older than 2.33)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    import ctypes

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = _Mallinfo2
    return int(libc.mallinfo2().hblkhd)
