"""The predictor: an exported model over images of any size, through the polygon head.

:class:`Predictor` wraps an export (``sn_tf.serving.exporter``); :func:`predict_image`,
:func:`predict_images` and :func:`predict_tfrecords` read the images window by window
(``sn_tf.serving.sources``, ``sn_tf.serving.windows``), stitch the outputs and hand them to
the polygon head (``sn_tf.head.polygons``). CLI: ``python -m sn_tf.predict``.

Memory
  Pixels are read window by window with rasterio windowed reads (GDAL's block cache bounded
  to ``GDAL_CACHE_BYTES``); only one row of windows of input is in memory. FCN outputs are
  kept as float32 accumulators for the rows still covered by a window, then handed to the
  polygon head row-strip by row-strip: a strip emits the buildings whose footprint component
  (the head's 4-connected components of ``logit > threshold``) is complete, and carries the
  rows of components that touch its last row into the next strip, so polygons are exactly
  those of a whole-scene call and memory grows with the scene WIDTH (and the tallest
  building), not its area. DetectNet grids (1/256 of the pixels, 5 channels; 8 with an
  oriented model's ``orient``) are accumulated for the whole scene and decoded once
  (``max_boxes`` scales with the scene area); the head's rectangle grouping finds candidate
  pairs with an STRtree (memory grows with the cells above the coverage threshold and their
  similar or overlapping pairs, not quadratically). The row accumulators reuse their
  buffers. With glibc's dynamic threshold, fragmented heaps still grow the peak with the
  scene's width; ``python -m sn_tf.predict --low_memory`` (and ``HeadPool(low_memory=True)``)
  makes glibc return freed blocks of 1 MiB and more, for more host time
  (``sn_tf.utils.malloc.return_freed_memory``, BUILD_NOTES section 7).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from sn_tf.spacenet import geo
from sn_tf.head import polygons, rasters
from sn_tf.spacenet.buildings import Building
from sn_tf.serving.exporter import load_export, serving_dtype
from sn_tf.serving.headpool import HeadPool, head_task
from sn_tf.serving.readahead import ReadAhead
from sn_tf.serving.sources import (ArrayImage, GeoTiffImage, ImageSource, PredictError,
                                   PredictWarning, TruthSource, _check_band_count, _header,
                                   find_images)
from sn_tf.serving.windows import _ceil_div, _RowAccumulator, _shape_batches, ramp, window_grid
from sn_tf.training.model_dir import ModelInfo
from sn_tf.utils import families


WINDOW = 512
OVERLAP = 64
BATCH_SIZE = 4
OVERLAY_MAX_SIZE = 4096
# GDAL raster block cache while reading windows, in bytes (an int GDAL_CACHEMAX given to
# rasterio.Env is a byte count). GDAL's default (5 % of RAM) keeps the blocks read, so RSS
# grew with the scene (by ~390 MB on a 5000 x 5000 x 8 uint16 scene, tools/bench_predict.py);
# 64 MiB holds a full row of 256-px blocks of such a scene up to ~16,000 px wide (what the
# overlapping window rows re-read).
GDAL_CACHE_BYTES = 64 * 2 ** 20


# ----------------------------------------------------------------------------------------------
# The model


class Predictor:
    """An exported model: raw ``[B, h, w, C]`` windows -> float32 outputs as numpy.

    Attributes: ``info`` (ModelInfo), ``kind``, ``stride`` (input multiple of the model),
    ``dtype`` (numpy dtype of the serving input), ``params`` (post-processing parameters,
    ``ModelInfo.postprocess`` over the head's defaults), ``outputs`` (names the polygon head
    needs: the family's ``head_outputs``, plus those of its ``optional_head_outputs`` the
    export's signature lists in export_info.json; ``sn_tf.utils.families``), ``grid_stride`` (pixels per output cell: 1 for the FCN, the
    DetectNet's ``ModelInfo.cell_size``, 16 or 8).
    """

    def __init__(self, export_dir):
        self.export_dir = pathlib.Path(export_dir)
        self._serve, self.info, self.export_info = load_export(export_dir)
        self.kind = self.info.kind
        self.stride = int(self.info.stride)
        self.dtype = np.dtype(serving_dtype(self.info))
        self.params = polygons.postprocess_params(self.kind, self.info.postprocess)
        served = set(self.export_info.get("signature", {}).get("outputs", ()))
        self.family = families.get(self.kind)
        self.outputs = self.family.head_outputs + tuple(
            name for name in self.family.optional_head_outputs if name in served)
        self.grid_stride = self.info.grid_cell_size()

    @property
    def channels(self) -> int:
        """Input channels C."""
        return self.info.num_bands

    def factor(self, name: str) -> int:
        """Pixels per cell of output ``name`` (1 for full-resolution outputs)."""
        return self.grid_stride

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``serve`` on ``batch`` [B, h, w, C] (cast to the serving dtype).

        Returns {name: float32 [B, ceil(h/f), ceil(w/f), c]} for the head's outputs.
        """
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != self.channels:
            raise PredictError(f"expected a batch [B, H, W, {self.channels}], got {batch.shape}")
        result = self._serve(batch.astype(self.dtype, copy=False))
        out = {}
        for name in self.outputs:
            if name not in result:
                raise PredictError(f"{self.export_dir}: the model has no output {name!r} "
                                   f"(outputs: {sorted(result)})")
            value = result[name].numpy()
            f = self.factor(name)
            want = (batch.shape[0], _ceil_div(batch.shape[1], f), _ceil_div(batch.shape[2], f))
            if value.shape[:3] != want:
                raise PredictError(f"{self.export_dir}: output {name!r} has shape {value.shape} "
                                   f"for input {batch.shape}; expected {want} + channels")
            out[name] = value
        return out


def as_predictor(model) -> Predictor:
    """A :class:`Predictor` from a Predictor or an export dir path."""
    return model if isinstance(model, Predictor) else Predictor(model)


def window_batches(predictor: Predictor, image, window: int | None = WINDOW,
                   overlap: int = OVERLAP, batch_size: int = BATCH_SIZE
                   ) -> Iterator[tuple[int, list, np.ndarray]]:
    """The pixels of ``image``'s windows, batch by batch, in reading order.

    Yields (k, windows, pixels): ``k`` the index of the row of windows (consecutive, from
    0), ``windows`` [(y0, x0, h, w)] of one shape (pixels, corner convention), ``pixels``
    [len(windows), h, w, C] in ``image.read``'s dtype. What :func:`iter_stitched_rows`
    reads itself, or what a read-ahead thread hands it (``batches=``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows, cols = window_grid(image.height, image.width, predictor.stride, window, overlap)
    for k, (y0, h) in enumerate(rows):
        windows = [(y0, x0, h, w) for x0, w in cols]
        for batch in _shape_batches(windows, batch_size):
            yield k, batch, np.stack([image.read(*win) for win in batch])


def iter_stitched_rows(predictor: Predictor, image, window: int | None = WINDOW,
                       overlap: int = OVERLAP, batch_size: int = BATCH_SIZE,
                       names: Sequence[str] | None = None, progress=None, batches=None
                       ) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Stitched outputs of ``image``, row-strip by row-strip, as soon as they are final.

    Yields (y0, y1, {name: float32 [ceil(y1/f) - ceil(y0/f), ceil(W/f), c]}) for consecutive
    pixel-row ranges [y0, y1) covering [0, H) (f = ``predictor.factor(name)``; y0, y1 are
    multiples of the model stride except y1 = H). ``image`` has ``height``, ``width`` and
    ``read(y0, x0, h, w)``; ``progress`` (tqdm or None) is advanced per window.
    ``batches``: the :func:`window_batches` of the same arguments, read elsewhere (e.g. a
    read-ahead thread); default: read here.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    names = list(names or predictor.outputs)
    height, width = image.height, image.width
    rows, _ = window_grid(height, width, predictor.stride, window, overlap)
    if batches is None:
        batches = window_batches(predictor, image, window, overlap, batch_size)
    accs: dict[int, _RowAccumulator] = {}
    state = {"row": 0, "done": 0}

    def finish_row() -> tuple[int, int, dict]:
        """Pop the rows that the finished row of windows made final."""
        k = state["row"]
        end = rows[k + 1][0] if k + 1 < len(rows) else height
        strip = {}
        for acc in accs.values():
            strip.update(acc.pop(_ceil_div(end, acc.factor)))
        out = (state["done"], end, strip)
        state["row"], state["done"] = k + 1, end
        return out

    for k, batch, pixels in batches:
        while state["row"] < k:  # every earlier row of windows is complete
            yield finish_row()
        outputs = predictor(pixels)
        for i, win in enumerate(batch):
            _accumulate(accs, predictor, names, outputs, i, win, (height, width),
                        overlap if window is not None else 0)
        if progress is not None:
            progress.update(len(batch))
    while state["row"] < len(rows):
        yield finish_row()


def _accumulate(accs: dict, predictor: Predictor, names, outputs: dict, i: int, win,
                image_hw, overlap: int) -> None:
    """Add window ``i`` of a batch's outputs to the accumulator of each output's grid."""
    y0, x0, h, w = win
    by_factor: dict[int, dict] = {}
    for name in names:
        by_factor.setdefault(predictor.factor(name), {})[name] = outputs[name][i]
    for f, values in by_factor.items():
        if f not in accs:
            accs[f] = _RowAccumulator(f, image_hw[1], {n: v.shape[-1] for n, v in values.items()})
        wy = ramp(h, f, y0 > 0, y0 + h < image_hw[0], overlap)
        wx = ramp(w, f, x0 > 0, x0 + w < image_hw[1], overlap)
        accs[f].add(y0, x0, wy[:, None] * wx[None, :], values)


def stitch_outputs(predictor: Predictor, image, window: int | None = WINDOW,
                   overlap: int = OVERLAP, batch_size: int = BATCH_SIZE,
                   names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Whole stitched outputs {name: float32 [ceil(H/f), ceil(W/f), c]} (small images, tests)."""
    parts: dict[str, list] = {}
    for _, _, strip in iter_stitched_rows(predictor, image, window, overlap, batch_size, names):
        for name, value in strip.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


# ----------------------------------------------------------------------------------------------
# Polygons (only through the shared head)


class _FcnStrips:
    """Polygons of FCN outputs delivered in row strips, identical to one whole-image call.

    Keeps the pending rows (starting at pixel row ``base``) and a mask of pixels already
    emitted. Each strip: components of ``footprint logit > threshold`` (the head's
    4-connectivity, :func:`sn_tf.head.rasters.label_footprint`) not yet emitted and not touching
    the last pending row are complete: only their pixels keep their logits and a head task
    (``headpool.head_task``: ``outputs_to_buildings`` on the pending rows) goes to ``pool``;
    the rows from the first incomplete component on stay pending. ``parts``: the tasks'
    Futures in row order.
    """

    def __init__(self, image_id: str, width: int, params: dict, pool: HeadPool):
        self.image_id, self.width, self.params, self.pool = image_id, width, params, pool
        self.threshold = float(params["threshold"])
        self.base = 0
        self.pending: dict[str, np.ndarray] | None = None
        self.done = np.zeros((0, width), bool)
        self.parts: list = []

    def add(self, strip: dict[str, np.ndarray], final: bool) -> None:
        """Append a strip {"footprint", "sdf"[, "contact"]: float32 [n, W, 1]} and submit
        what is complete. Arrays handed to a task are never written afterwards (a worker
        pickles them later)."""
        names = families.FCN.head_outputs + families.FCN.optional_head_outputs
        strip = {k: v for k, v in strip.items() if k in names}
        if self.pending is None:
            self.pending = strip
        else:
            self.pending = {k: np.concatenate([self.pending[k], strip[k]]) for k in strip}
        n_new = strip["footprint"].shape[0]
        self.done = np.concatenate([self.done, np.zeros((n_new, self.width), bool)])
        logits = self.pending["footprint"][..., 0]
        footprint = (logits > self.threshold) & ~self.done
        incomplete = np.zeros_like(footprint)
        if not final and footprint.shape[0] and footprint[-1].any():
            labels, _ = rasters.label_footprint(footprint.astype(np.uint8), 0)
            cut = np.unique(labels[-1][labels[-1] > 0])
            incomplete = np.isin(labels, cut)
        emit = footprint & ~incomplete
        if emit.any():
            outputs = dict(self.pending)
            outputs["footprint"] = np.where(emit, logits, -np.inf).astype(np.float32)[..., None]
            self.parts.append(self.pool.submit(head_task, "fcn", outputs, self.image_id,
                                               emit.shape, self.params, 1, self.base))
            self.done |= emit
        rows = np.flatnonzero(incomplete.any(axis=1))
        keep_from = int(rows[0]) if rows.size else footprint.shape[0]
        # copies, not views: a view would keep all the rows added so far alive until the
        # next strip arrives (the model's next row of windows runs meanwhile)
        self.pending = {k: v[keep_from:].copy() for k, v in self.pending.items()}
        self.done = self.done[keep_from:].copy()
        self.base += keep_from


def head_parts(predictor: Predictor, strips: Iterable, image_id: str, height: int,
               width: int, pool: HeadPool) -> list:
    """Futures (``pool``) of the building records (pixel coordinates) of one image's
    :func:`iter_stitched_rows` strips, in order: one per FCN strip with complete
    components, or one for a DetectNet image's whole grids."""
    if predictor.family is families.FCN:  # streamed by rows (full resolution)
        head = _FcnStrips(image_id, width, predictor.params, pool)
        for _, y1, strip in strips:
            head.add(strip, final=y1 >= height)
            del strip  # not held while the next strip is stitched
        return head.parts
    parts: dict[str, list] = {}
    for _, _, strip in strips:
        for name, value in strip.items():
            parts.setdefault(name, []).append(value)
    grids = {name: np.concatenate(values) for name, values in parts.items()}
    return [pool.submit(head_task, predictor.kind, grids, image_id, (height, width),
                        predictor.params, predictor.grid_stride)]


def buildings_from_strips(predictor: Predictor, strips: Iterable, image_id: str,
                          height: int, width: int) -> list:
    """Building records (pixel coordinates) from :func:`iter_stitched_rows` strips, with the
    head in this process."""
    return HeadPool.gather(head_parts(predictor, strips, image_id, height, width,
                                      HeadPool(0)), image_id)


# ----------------------------------------------------------------------------------------------
# Prediction


@dataclasses.dataclass
class ImagePrediction:
    """Buildings of one image (pixel coordinates) with what is needed to write them.

    transform: GDAL geotransform (tuple of 6) or None (no georeference); crs: "" when none.
    """

    image_id: str
    source: str
    height: int
    width: int
    transform: tuple | None
    crs: str
    buildings: list


def _open(image, predictor: Predictor):
    """A window reader for a path, ImageSource, numpy array or reader."""
    if isinstance(image, (GeoTiffImage, ArrayImage)):
        return image
    if isinstance(image, np.ndarray):
        return ArrayImage("image", image)
    if isinstance(image, (str, os.PathLike)):
        sources = find_images([os.fspath(image)], predictor.info)
        if len(sources) != 1:
            raise PredictError(f"{image}: holds {len(sources)} images; use predict_images")
        image = sources[0]
    if isinstance(image, ImageSource):
        return GeoTiffImage(image, predictor.info, predictor.dtype)
    raise TypeError(f"cannot predict on {type(image).__name__}")


# ----------------------------------------------------------------------------------------------
# The stream: reading, the model and the head overlapped


def _image_events(opened: Iterable, predictor: Predictor, window: int | None, overlap: int,
                  batch_size: int) -> Iterator[tuple]:
    """The reading half of the stream, per image in order: ``("image", reader, extra)``, its
    :func:`window_batches` as ``("batch", item)``, then ``("end", None)``.

    ``opened`` yields (reader, extra): an opened window reader and what the caller wants
    back with its prediction. A reader whose channels do not match the model is closed and
    refused (``PredictError`` naming it); the consumer closes the others.
    """
    for reader, extra in opened:
        if reader.channels != predictor.channels:
            reader.close()
            raise PredictError(f"{reader.name}: {reader.channels} channels, the model takes "
                               f"{predictor.channels}")
        yield "image", reader, extra
        for item in window_batches(predictor, reader, window, overlap, batch_size):
            yield "batch", item
        yield "end", None


def _batches_of_image(events: Iterator) -> Iterator:
    """The ``("batch", item)`` items of the current image, up to its ``("end", None)``."""
    for event in events:
        if event[0] == "end":
            return
        yield event[1]


def _predict_stream(predictor: Predictor, opened: Iterable, *, window: int | None,
                    overlap: int, batch_size: int, pool: HeadPool, progress=None,
                    finish=None) -> list:
    """Predict every image of ``opened`` ((reader, extra) pairs, see :func:`_image_events`).

    With ``pool.workers`` 0 everything runs in this thread, image after image, as a plain
    loop. Otherwise a read-ahead thread reads the windows (a few batches ahead), this
    thread runs the model and stitches, and the head's tasks run in the pool; an image's
    result is collected once ``pool.workers + 1`` later images are under way, so its
    readers, outputs and tasks in flight stay bounded. ``finish(prediction, reader,
    extra)`` (default: the prediction) runs in this thread, in image order, before the
    reader is closed; the list of its results is returned. ``progress`` (tqdm or None) is
    advanced per window.
    """
    import rasterio

    finish = finish or (lambda prediction, reader, extra: prediction)
    events = _image_events(opened, predictor, window, overlap, batch_size)
    if pool.workers:
        events = ReadAhead(events, depth=2, env={"GDAL_CACHEMAX": GDAL_CACHE_BYTES})
    waiting: list = []  # (reader, extra, head parts) of images not collected yet
    results = []

    def collect() -> None:
        reader, extra, parts = waiting.pop(0)
        try:
            buildings = pool.gather(parts, reader.name)
            prediction = ImagePrediction(reader.image_id, reader.name, reader.height,
                                         reader.width, reader.transform, reader.crs, buildings)
            results.append(finish(prediction, reader, extra))
        finally:
            reader.close()

    try:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
            for _, reader, extra in events:  # an ("image", reader, extra) event
                waiting.append((reader, extra, []))
                strips = iter_stitched_rows(predictor, reader, window, overlap, batch_size,
                                            progress=progress,
                                            batches=_batches_of_image(events))
                waiting[-1][2].extend(head_parts(predictor, strips, reader.image_id,
                                                 reader.height, reader.width, pool))
                while len(waiting) > pool.workers:
                    collect()
            while waiting:
                collect()
    finally:
        if isinstance(events, ReadAhead):
            events.close()
        for reader, _, _ in waiting:
            reader.close()
    return results


def _overlay_finish(overlays_dir, overlay_channels, overlay_max_size, truth):
    """A ``finish`` for :func:`_predict_stream` writing each image's overlay (when
    ``overlays_dir``), coloured by outcome against ``truth`` (records, or a TruthSource)."""
    def finish(prediction: ImagePrediction, reader, extra) -> ImagePrediction:
        if overlays_dir is not None:
            records = truth.records(prediction) if isinstance(truth, TruthSource) else truth
            write_overlay(reader, prediction.buildings, overlays_dir, overlay_channels,
                          overlay_max_size, records)
        return prediction
    return finish


def _head_pool(head_workers) -> tuple[HeadPool, bool]:
    """(pool, whether the caller owns it) for ``head_workers``: a count or a HeadPool."""
    if isinstance(head_workers, HeadPool):
        return head_workers, False
    return HeadPool(int(head_workers)), True


def predict_image(model, image, *, window: int | None = WINDOW, overlap: int = OVERLAP,
                  batch_size: int = BATCH_SIZE, progress=None, overlays_dir=None,
                  overlay_channels: Sequence[int] | None = None,
                  overlay_max_size: int = OVERLAY_MAX_SIZE, truth=None,
                  head_workers: "int | HeadPool" = 0) -> ImagePrediction:
    """Buildings of one image with sliding windows (module docstring).

    Args:
      model: :class:`Predictor` or export dir.
      image: a GeoTIFF path (model with one image type), an :class:`ImageSource`, an
        :class:`ArrayImage`/:class:`GeoTiffImage`, or a numpy [H, W, C] array (model channel
        order, id "image", no georeference).
      window, overlap, batch_size: windows of at most ``window`` pixels (None: the whole image
        in one pass), overlapping by ``overlap``, ``batch_size`` per model call.
      progress: tqdm bar advanced per window, or None.
      overlays_dir: write ``<image id>.png`` there (``sn_tf.head.render``), decimated to at most
        ``overlay_max_size`` pixels a side, with ``overlay_channels`` (0-based) as RGB.
      truth: for the overlay only: this image's truth records (pixel coordinates), or a
        :class:`TruthSource`; the overlay then colours every polygon by what the SpaceNet
        metric made of it (``render.OUTCOME_COLORS``) instead of outlining the predictions.
      head_workers: processes for the polygon head (0: in this process) or a
        :class:`HeadPool` to use; the buildings are the same either way.
    """
    predictor = as_predictor(model)
    pool, owned = _head_pool(head_workers)
    try:
        return _predict_stream(
            predictor, ((_open(i, predictor), None) for i in [image]), window=window,
            overlap=overlap, batch_size=batch_size, pool=pool, progress=progress,
            finish=_overlay_finish(overlays_dir, overlay_channels, overlay_max_size, truth))[0]
    finally:
        if owned:
            pool.close()


def write_overlay(reader, buildings: list, overlays_dir, channels=None,
                  max_size: int = OVERLAY_MAX_SIZE, truth: Sequence | None = None
                  ) -> pathlib.Path:
    """``<overlays_dir>/<image id>.png``: input ``channels`` (0-based, default
    ``render.default_rgb_channels``) as RGB with the buildings' outlines in yellow, or, with
    ``truth`` (records of this image, pixel coordinates), every polygon coloured by the
    SpaceNet metric's verdict: matched proposals green, false positives red, missed truth
    blue (``render.outcome_overlay``; default IoU and area rules)."""
    from sn_tf.head import render
    from sn_tf.spacenet import scoring

    n = reader.channels
    channels = list(channels) if channels is not None else list(render.default_rgb_channels(n))
    if len(channels) != 3 or not all(0 <= c < n for c in channels):
        raise PredictError(f"overlay bands must be 3 input channels in 1..{n}, got "
                           f"{[c + 1 for c in channels]}")
    raw, scale = reader.overview(channels, max_size)
    path = pathlib.Path(overlays_dir) / f"{reader.image_id}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    if truth is None:
        render.write_png(path, render.overlay(raw, [b.polygon for b in buildings], scale))
        return path
    truth = [t for t in truth if not t.is_empty]
    t_out, p_out = scoring.match_outcomes(truth, buildings)
    render.write_png(path, render.outcome_overlay(raw, [t.polygon for t in truth], t_out,
                                                  [b.polygon for b in buildings], p_out,
                                                  scale))
    return path


def _progress_bar(total: int | None, enabled: bool, unit: str):
    """A tqdm bar on stderr, or None when disabled."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="sn_tf.predict", dynamic_ncols=True)


def predict_images(model, images, *, window: int | None = WINDOW, overlap: int = OVERLAP,
                   batch_size: int = BATCH_SIZE, progress: bool = False, overlays_dir=None,
                   overlay_channels: Sequence[int] | None = None,
                   overlay_max_size: int = OVERLAY_MAX_SIZE,
                   truth: "TruthSource | None" = None,
                   head_workers: "int | HeadPool" = 0) -> list[ImagePrediction]:
    """:func:`predict_image` over ``images`` (``--images`` entries or ImageSources), in
    their order.

    ``progress``: one tqdm bar over all windows of all images. ``truth``: colours the
    overlays by outcome (:func:`predict_image`). ``head_workers``: 0 reads, predicts and
    runs the head image after image in this process; N > 0 (or a :class:`HeadPool`)
    overlaps them: windows are read ahead in a thread and the head runs in N processes
    (:func:`_predict_stream`); same buildings, same order.
    """
    predictor = as_predictor(model)
    if images and all(isinstance(i, ImageSource) for i in images):
        sources = list(images)
    else:
        sources = find_images(images, predictor.info)
    total = 0
    for s in sources if progress else ():  # the bar's total: one header read per image
        header = _header(s.files[predictor.info.image_types[0]])
        rows, cols = window_grid(header.height, header.width, predictor.stride, window, overlap)
        total += len(rows) * len(cols)
    bar = _progress_bar(total, progress, "window")
    pool, owned = _head_pool(head_workers)
    try:
        return _predict_stream(
            predictor, ((_open(s, predictor), None) for s in sources), window=window,
            overlap=overlap, batch_size=batch_size, pool=pool, progress=bar,
            finish=_overlay_finish(overlays_dir, overlay_channels, overlay_max_size, truth))
    finally:
        if owned:
            pool.close()
        if bar is not None:
            bar.close()


def tile_array(tile: dict, info: ModelInfo, dtype) -> np.ndarray:
    """The model input [H, W, C] of a decoded tile (``sn_tf.read_examples``) in ``dtype``."""
    parts = []
    for itype in info.image_types:
        image = tile["images"].get(itype)
        if image is None:
            raise PredictError(f"tile {tile['tile_id']}: no {itype} image in the converted data "
                               f"(present: {sorted(tile['images'])})")
        data = image["data"]
        bands = info.bands[itype]
        _check_band_count(f"tile {tile['tile_id']}: {itype}", data.shape[-1], itype, bands, info)
        if np.dtype(data.dtype) != np.dtype(info.input_dtypes[itype]):
            raise PredictError(f"tile {tile['tile_id']}: {itype} pixels are {data.dtype} but the "
                               f"model was trained on {info.input_dtypes[itype]}")
        parts.append(data[..., [b - 1 for b in bands]].astype(dtype, copy=False))
    shapes = {p.shape[:2] for p in parts}
    if len(shapes) != 1:
        raise PredictError(f"tile {tile['tile_id']}: image types {info.image_types} are on "
                           f"different grids {sorted(shapes)}")
    return np.concatenate(parts, axis=-1)


def tile_truth(tile: dict, info: ModelInfo) -> list:
    """Truth records (pixel coordinates) of a decoded tile: its label grid's ``polygons_px``,
    plus an empty record registering the tile."""
    grid = tile["images"][info.image_types[0]].get("label_grid", "")
    records = [Building(tile["tile_id"], None)]
    if grid and grid in tile.get("labels", {}):
        records += [Building(tile["tile_id"], p)
                    for p in tile["labels"][grid]["polygons_px"]]
    return records


def predict_tfrecords(model, data_dir, split: str = "val", *, window: int | None = None,
                      overlap: int = OVERLAP, batch_size: int = BATCH_SIZE,
                      progress: bool = False, overlays_dir=None,
                      overlay_channels: Sequence[int] | None = None,
                      overlay_max_size: int = OVERLAY_MAX_SIZE,
                      truth: "TruthSource | None" = None,
                      head_workers: "int | HeadPool" = 0
                      ) -> tuple[list[ImagePrediction], list]:
    """Predict every tile of a converted split; returns (predictions, truth records: the
    stored truth polygons, or ``truth``'s records when given).

    Tiles come from ``sn_tf.read_examples`` (source dtype, georeference of the model's first
    image type); ``window`` None predicts each tile whole. Overlays are coloured by outcome
    against that truth. ``head_workers``: as :func:`predict_images` (with workers, tiles
    are read ahead in a thread).
    """
    from sn_tf.dataset.info import DatasetError
    from sn_tf.dataset.reader import load_info, read_examples

    predictor = as_predictor(model)
    try:
        info = load_info(data_dir)
    except DatasetError as err:
        raise PredictError(str(err)) from None
    if split not in info.splits:
        raise PredictError(f"{data_dir}: no split {split!r}; splits: {sorted(info.splits)}")
    known = info.image_types
    missing = [t for t in predictor.info.image_types if t not in known]
    if missing:
        raise PredictError(f"{data_dir}: image type(s) {missing} the model reads are not in "
                           f"this dataset (present: {sorted(known)})")
    bar = _progress_bar(info.split(split).num_examples, progress, "tile")
    truth_source, truth, lacking = truth, [], []

    def opened():
        """(ArrayImage, its stored truth records or None) of each tile with the model's
        image types; the others are counted in ``lacking``."""
        for tile in read_examples(data_dir, split):
            if any(t not in tile["images"] for t in predictor.info.image_types):
                lacking.append(tile["tile_id"])  # an AOI without the model's image types
                if bar is not None:
                    bar.update(1)
                continue
            first = tile["images"][predictor.info.image_types[0]]
            transform = first["transform_gdal"]
            georef = bool(first["crs"]) or tuple(transform) != geo.IDENTITY_GDAL
            image = ArrayImage(tile["tile_id"], tile_array(tile, predictor.info, predictor.dtype),
                               transform if georef else None, first["crs"],
                               name=f"{data_dir}:{tile['tile_id']}")
            yield image, (tile_truth(tile, predictor.info) if truth_source is None else None)

    def finish(prediction: ImagePrediction, image, stored) -> ImagePrediction:
        records = stored if truth_source is None else truth_source.records(prediction)
        if overlays_dir is not None:
            write_overlay(image, prediction.buildings, overlays_dir, overlay_channels,
                          overlay_max_size, records)
        truth.extend(records)
        if bar is not None:
            bar.update(1)
        return prediction

    pool, owned = _head_pool(head_workers)
    try:
        predictions = _predict_stream(predictor, opened(), window=window, overlap=overlap,
                                      batch_size=batch_size, pool=pool, finish=finish)
    finally:
        if owned:
            pool.close()
        if bar is not None:
            bar.close()
    if lacking:
        warnings.warn(f"{data_dir}: {len(lacking)} tile(s) of split {split!r} lack the image "
                      f"types {predictor.info.image_types} the model reads and were not "
                      f"predicted (e.g. {lacking[0]})", PredictWarning, stacklevel=2)
    return predictions, truth
