"""``python -m sn_tf.predict``: buildings from GeoTIFFs of any size with an exported model.

    python -m sn_tf.predict --saved_model=exports/fcn \\
        --images=/data/AOI_2_Vegas_Test_public --output=out/            # a SpaceNet folder
    python -m sn_tf.predict --saved_model=exports/fcn --images='scenes/*.tif' \\
        --output=out/ --window=512 --overlap=64 --batch_size=4 --overlays=out/png
    python -m sn_tf.predict --saved_model=exports/fcn --images=scene.tif --output=scene.geojson
    python -m sn_tf.predict --saved_model=exports/fcn --images=DIR --output=preds.csv \\
        --truth=DIR/geojson/buildings                                   # + score.json
    python -m sn_tf.predict --saved_model=exports/det --from_tfrecords=/data/sn_tf \\
        --split=val --output=out/                                       # scored on stored truth

Inputs (``--images``: comma-separated files, globs or folders): ``<TYPE>_<tile id>.tif``
files stacked per tile id in the model's type order, SpaceNet folders, or a plain GeoTIFF when
the model reads one image type (details: ``sn_tf.serving.sources``).

Outputs (``--output``)
  * ``FILE.csv``: SpaceNet CSV (pixel coordinates, every image listed, ``POLYGON EMPTY``
    rows for images without buildings).
  * ``FILE.geojson``: one image only; polygons in the image's CRS through its geotransform.
  * a folder: ``<image id>.geojson`` per image plus ``predictions.csv``.
  An image without georeference gets pixel coordinates in its GeoJSON, with a warning.
  ``--overlays=DIR``: ``<image id>.png``, the image as RGB (``--overlay_bands``, 1-based input
  channels; default WorldView bands 5,3,2 for 8 channels) with a 2-98 percentile stretch and the
  predicted outlines in yellow, decimated to at most ``--overlay_max_size`` pixels a side.
  With truth (``--truth``, or the stored truth of ``--from_tfrecords``) the outlines are
  coloured by the SpaceNet metric's verdict: true-positive proposals green, false positives
  red, missed truth buildings blue (``sn_tf.head.render.OUTCOME_COLORS``): merged rows of houses
  show as one red polygon over blue outlines.
  ``--truth=PATH`` (SpaceNet CSV in pixels, or label GeoJSON file/folder in map coordinates,
  reprojected to each image's CRS and mapped to its pixels): prints the SpaceNet table and
  writes ``score.json`` beside the outputs (only the predicted images are scored).

How it works: ``sn_tf.serving`` (``sources``: images and truth; ``windows``: sliding windows
and stitching; ``predictor``: the model, memory, the polygon head; ``writers``: the SpaceNet
files and the score). This module holds the flags and ``main``.

``--from_tfrecords=DIR --split=val``: tiles of a converted dataset (``sn_tf.read_examples``),
each predicted whole (unless ``--window`` is given), with the stored georeference; scored
against the stored truth polygons (``labels[grid]["polygons_px"]``) unless ``--truth`` is
given.

Throughput: with ``--head_workers=N`` (default min(2, CPUs)) windows are read ahead in a
thread, the model runs in this process and the polygon head in N worker processes, so the
three overlap; ``--head_workers=0`` does everything in this process, image after image.
The outputs are the same bytes either way.

Memory: the peak does not grow with the scene's area (one strip of rows across its width
is held; ``sn_tf.serving.predictor``). glibc's heaps keep freed memory, fragmented by
arrays whose size follows the scene's width, so the peak still grows with the width;
``--low_memory`` makes glibc return freed blocks of 1 MiB and more, here and in the head
workers (``sn_tf.utils.malloc.return_freed_memory``): ~250 MB less at 6000 x 6000 px, for
~15-45 % more host time per tile (BUILD_NOTES section 7). A library user opts in by
calling it first and passing ``HeadPool(n, low_memory=True)`` as ``head_workers``.
``--beam_pipeline_options="runner=DirectRunner,direct_num_workers=2"`` (with ``--images``):
the same prediction on Apache Beam, one scene per element, the SavedModel loaded once per
worker (``sn_tf.serving.beam_predict``; needs ``pip install sn_tf[beam]``); not with
``--truth`` or ``--from_tfrecords``.

Exit status: 0 on success, 1 on an input problem (message on stderr, no traceback).
"""

from __future__ import annotations

import sys
import warnings

from sn_tf.serving.headpool import HeadPool, default_workers
from sn_tf.serving.predictor import (BATCH_SIZE, OVERLAP, OVERLAY_MAX_SIZE, WINDOW, Predictor,
                                     predict_images, predict_tfrecords)
from sn_tf.serving.sources import PredictError, TruthSource
from sn_tf.serving.writers import read_truth, score, score_dir, write_predictions, write_score


def _fail(message: str) -> None:
    """Print ``message`` to stderr and exit with status 1 (no traceback)."""
    print(f"sn_tf.predict: error: {message}", file=sys.stderr)
    sys.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line: ``sn_tf.predict: warning: ...``."""
    print(f"sn_tf.predict: warning: {message}", file=sys.stderr)


def run_beam(fl) -> str:
    """``--beam_pipeline_options``: predict ``--images`` on Apache Beam; the summary."""
    from sn_tf.utils.beam_options import import_beam_module

    if fl.from_tfrecords or fl.truth:
        raise PredictError("--beam_pipeline_options: with --images only, without --truth "
                           "(score the written CSV with python -m sn_tf.score)")
    beam_predict = import_beam_module("sn_tf.serving.beam_predict")
    channels = [int(b) - 1 for b in fl.overlay_bands] if fl.overlay_bands else None
    res = beam_predict.predict_images_beam(
        fl.saved_model, fl.images, fl.output, fl.beam_pipeline_options, window=fl.window,
        overlap=fl.overlap, batch_size=fl.batch_size, overlays_dir=fl.overlays,
        overlay_channels=channels, overlay_max_size=fl.overlay_max_size)
    loads = "" if res.model_loads is None else \
        f" (SavedModel loaded {res.model_loads} time(s))"
    return f"{res.scenes} image(s) predicted on Beam{loads} -> {fl.output}"


def run(fl) -> str:
    """Predict per the flags; returns the summary printed at the end."""
    if not fl.saved_model or not fl.output:
        raise PredictError("--saved_model and --output are required")
    if bool(fl.images) == bool(fl.from_tfrecords):
        raise PredictError("give exactly one of --images and --from_tfrecords")
    if fl.beam_pipeline_options:
        return run_beam(fl)
    predictor = Predictor(fl.saved_model)
    channels = [int(b) - 1 for b in fl.overlay_bands] if fl.overlay_bands else None
    truth_source = TruthSource(fl.truth) if fl.truth else None  # checked before predicting
    if fl.head_workers < 0:
        raise PredictError(f"--head_workers must be >= 0, got {fl.head_workers}")
    with HeadPool(fl.head_workers, low_memory=fl.low_memory) as pool:
        return _run_local(fl, predictor, channels, truth_source, pool)


def _run_local(fl, predictor, channels, truth_source, pool) -> str:
    """``run`` on this machine, the head tasks in ``pool`` (a ``HeadPool``)."""
    common = dict(overlap=fl.overlap, batch_size=fl.batch_size, progress=fl.progress,
                  overlays_dir=fl.overlays, overlay_channels=channels,
                  overlay_max_size=fl.overlay_max_size, truth=truth_source,
                  head_workers=pool)
    truth = None
    if fl.from_tfrecords:
        window = fl.window if fl["window"].present else None
        predictions, truth = predict_tfrecords(predictor, fl.from_tfrecords, fl.split,
                                               window=window, **common)
    else:
        predictions = predict_images(predictor, fl.images, window=fl.window, **common)
    paths = write_predictions(predictions, fl.output)
    n = sum(len(p.buildings) for p in predictions)
    lines = [f"{n} buildings in {len(predictions)} image(s) -> "
             f"{paths[-1] if len(paths) == 1 else fl.output}"]
    if truth_source is not None and not fl.from_tfrecords:
        truth = read_truth(truth_source, predictions)
    if truth is not None:
        result = score(predictions, truth, fl.iou, fl.min_area)
        path = write_score(result, score_dir(fl.output))
        lines = [result.format_table(), f"wrote {path}"] + lines
    return "\n".join(lines)


def main(argv) -> None:
    """CLI entry point (flags in the module docstring)."""
    import logging

    from absl import flags

    from sn_tf.utils.errors import SnTfError
    from sn_tf.utils.malloc import return_freed_memory

    if flags.FLAGS.low_memory:  # the peak less dependent on the scene's width, slower
        return_freed_memory()
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    warnings.showwarning = _show_warning
    logging.getLogger("rasterio").setLevel(logging.CRITICAL)
    try:
        print(run(flags.FLAGS))
    except (SnTfError, ValueError, OSError) as err:  # ValueError, OSError: from the libraries
        _fail(str(err))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("saved_model", None, "Export dir written by sn_tf.export.")
    flags.DEFINE_list("images", None, "GeoTIFF files, globs, plain folders or SpaceNet folders "
                      "(comma-separated).")
    flags.DEFINE_string("from_tfrecords", None, "Converted dataset dir (sn_tf.convert output) to "
                        "predict instead of --images.")
    flags.DEFINE_string("split", "val", "Split of --from_tfrecords.")
    flags.DEFINE_string("output", None, "FILE.csv, FILE.geojson (one image) or a folder.")
    flags.DEFINE_string("truth", None, "Score against this SpaceNet CSV or label GeoJSON "
                        "file/folder; writes score.json beside the outputs.")
    flags.DEFINE_integer("window", WINDOW, "Largest window side in pixels (with "
                         "--from_tfrecords the default is the whole tile).")
    flags.DEFINE_integer("overlap", OVERLAP, "Minimum overlap of neighbouring windows (pixels).")
    flags.DEFINE_integer("batch_size", BATCH_SIZE, "Windows per model call.")
    flags.DEFINE_integer("head_workers", default_workers(), "Processes running the polygon "
                         "head while this one reads and runs the model (0: everything in "
                         "this process, image after image); same outputs either way.")
    flags.DEFINE_string("overlays", None, "Write <image id>.png overlays into this folder.")
    flags.DEFINE_list("overlay_bands", None, "1-based input channels shown as R,G,B "
                      "(default 5,3,2 for 8 channels, 1,2,3 for 3..7, 1 otherwise).")
    flags.DEFINE_integer("overlay_max_size", OVERLAY_MAX_SIZE, "Overlays are decimated to at "
                         "most this many pixels a side.")
    flags.DEFINE_float("iou", 0.5, "Scoring: IoU threshold.")
    flags.DEFINE_float("min_area", 20.0, "Scoring: drop polygons under this many pixels.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.DEFINE_bool("low_memory", False, "glibc returns freed blocks of 1 MiB and more to "
                      "the system (here and in the head workers): a lower peak on wide "
                      "scenes (~250 MB less at 6000 px), ~15-45 % more host time per tile.")
    flags.DEFINE_string("beam_pipeline_options", "", "Predict --images on Apache Beam with "
                        "these options, e.g. 'runner=DirectRunner,direct_num_workers=2' (any "
                        "runner and its options; needs pip install sn_tf[beam]).")
    app.run(main)
