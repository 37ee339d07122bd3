"""The polygon head beside the model: a pool of worker processes (or in-process).

``sn_tf.predict`` reads windows (GDAL releases the GIL) and runs the model (TensorFlow
releases it) in the parent; the polygon head (scipy labelling, GDAL tracing, shapely) holds
the GIL for much of its time, so it runs in :class:`HeadPool` workers and scales with
cores. A task is one image's DetectNet grids, or one FCN strip's completed rows
(``sn_tf.serving.predictor._FcnStrips``); it returns the :class:`Building` records of
``sn_tf.head.polygons.outputs_to_buildings`` moved down by the strip's first row.
Geometries cross the process boundary as WKB (shapely's pickling): coordinates are
exact, so the buildings equal the in-process path's bit for bit, in the same order.

Workers are spawned (never forked: the parent holds TensorFlow's threads) and import only
the head (numpy, scipy, shapely, rasterio: ~0.5 s each, once per pool). ``workers=0`` runs
each task at once in the calling thread (the library's default, and ``--head_workers=0``).
At most ``max_pending`` tasks are unfinished at a time (:meth:`HeadPool.submit` waits for
the oldest), so the outputs waiting for a worker stay bounded.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
from concurrent import futures

import numpy as np
import shapely

from sn_tf.head import polygons
from sn_tf.serving.sources import PredictError
from sn_tf.utils.errors import SnTfError


def default_workers() -> int:
    """``--head_workers`` default: min(2, CPUs available to this process)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(2, cpus)


def shift_buildings(buildings: list, dy: int) -> list:
    """The buildings moved down by ``dy`` pixel rows (pixel coordinates; same order)."""
    if dy == 0:
        return buildings
    return [dataclasses.replace(b, polygon=shapely.transform(
        b.polygon, lambda xy: xy + np.array([0.0, dy]))) for b in buildings]


def head_task(kind: str, outputs: dict, image_id: str, image_size: tuple[int, int],
              params: dict, cell_size: int, dy: int = 0) -> list:
    """One head task: ``polygons.outputs_to_buildings(kind, outputs, ...)`` (outputs
    {name: float32 [h, w, c]} on the model's grid, ``image_size`` (h, w) in pixels), the
    buildings moved down by ``dy`` pixel rows."""
    found = polygons.outputs_to_buildings(kind, outputs, image_id, image_size=image_size,
                                          params=params, cell_size=cell_size)
    return shift_buildings(found, dy)


def _init_worker(low_memory: bool = False) -> None:
    """Worker start: keep freed memory (the head churns MB-sized arrays per task:
    ``sn_tf.utils.malloc.keep_freed_memory``), or with ``low_memory`` return freed blocks of
    1 MiB and more to the system (``return_freed_memory``: a task's arrays are one strip
    across the scene's width, so heaps that keep them grow with the scene; slower,
    BUILD_NOTES section 7)."""
    from sn_tf.utils.malloc import keep_freed_memory, return_freed_memory

    if low_memory:
        return_freed_memory()
    else:
        keep_freed_memory()


class HeadPool:
    """Head tasks in ``workers`` spawned processes, or in-process when ``workers`` is 0.

    ``submit`` returns a ``concurrent.futures.Future`` (already done in-process);
    ``gather`` waits for a list of them and turns any failure into a :class:`PredictError`
    naming the image. Use as a context manager, or call :meth:`close`. ``low_memory``:
    the workers return freed memory to the system (``_init_worker``).
    """

    def __init__(self, workers: int = 0, max_pending: int | None = None,
                 low_memory: bool = False):
        if workers < 0:
            raise ValueError(f"head workers must be >= 0, got {workers}")
        self.workers = int(workers)
        self.max_pending = max(1, max_pending if max_pending is not None else 2 * workers)
        self._executor = None
        self._unfinished: collections.deque = collections.deque()
        if self.workers:
            ctx = multiprocessing.get_context("spawn")
            self._executor = futures.ProcessPoolExecutor(self.workers, mp_context=ctx,
                                                         initializer=_init_worker,
                                                         initargs=(bool(low_memory),))

    def submit(self, fn, *args) -> futures.Future:
        """``fn(*args)`` (a module-level function, e.g. :func:`head_task`) as a Future; in a
        worker, after waiting until fewer than ``max_pending`` tasks are unfinished."""
        if self._executor is None:
            future = futures.Future()
            try:
                future.set_result(fn(*args))
            except Exception as err:  # reported by gather, as a worker's would be
                future.set_exception(err)
            return future
        while self._unfinished and (self._unfinished[0].done()
                                    or len(self._unfinished) >= self.max_pending):
            futures.wait([self._unfinished.popleft()])
        future = self._executor.submit(fn, *args)
        self._unfinished.append(future)
        return future

    @staticmethod
    def gather(parts: list, name: str) -> list:
        """The concatenated results of ``parts`` (Futures of lists), in order; a failed
        task is a :class:`PredictError` naming ``name`` (the image), the worker's error
        chained (its traceback in ``__cause__``)."""
        out = []
        for part in parts:
            try:
                out += part.result()
            except futures.process.BrokenProcessPool:
                raise PredictError(f"{name}: a polygon-head worker process died (killed, or "
                                   "out of memory?)") from None
            except SnTfError:
                raise
            except Exception as err:
                raise PredictError(f"{name}: the polygon head failed: "
                                   f"{type(err).__name__}: {err}") from err
        return out

    def close(self) -> None:
        """Stop the workers (tasks not started are cancelled)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._unfinished.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
