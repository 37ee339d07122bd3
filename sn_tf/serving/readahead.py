"""A read-ahead thread for the prediction stream (``sn_tf.serving.predictor``): windows are
read from the GeoTIFFs while the model and the head work on the previous ones."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator


class ReadAhead:
    """Iterate ``items`` in a daemon thread, at most ``depth`` items ahead (bounded queue),
    inside ``rasterio.Env(**env)`` (rasterio's Env is per thread).

    The thread's exception is raised by ``next`` in the consumer, after the items before
    it. :meth:`close` stops the thread (also while it waits on a full queue) and closes the
    iterator (its ``finally`` blocks run in the thread).
    """

    _END = object()

    def __init__(self, items: Iterator, depth: int = 2, env: dict | None = None):
        self._items = items
        self._env = dict(env or {})
        self._queue: queue.Queue = queue.Queue(max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sn_tf-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        """Put ``item`` unless stopped; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        import rasterio

        try:
            with rasterio.Env(**self._env):
                for item in self._items:
                    if not self._put((None, item)):
                        break
        except BaseException as err:  # handed to the consumer
            self._put((err, None))
        finally:
            if hasattr(self._items, "close"):
                self._items.close()
            self._put((None, self._END))

    def __iter__(self):
        return self

    def __next__(self):
        err, item = self._queue.get()
        if err is not None:
            raise err
        if item is self._END:
            self._queue.put((None, self._END))  # stays exhausted
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        while self._thread.is_alive():  # drain, so a thread blocked on put sees the stop
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        self._thread.join()
