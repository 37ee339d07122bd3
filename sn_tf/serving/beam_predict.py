"""Batch prediction on Apache Beam (``predict --images=... --beam_pipeline_options=...``).

    predict_images_beam(export_dir, images, output, "runner=DirectRunner,direct_num_workers=2")

Imported only when Beam is asked for (``sn_tf.utils.beam_options``). The pipeline runs the
local predictor (``predictor.predict_image``: windows, stitching, the polygon head) over
the scenes, one scene per element:

1. The launcher lists the scenes (``sources.find_images``, with the export's
   ``ModelInfo``; the launcher never loads the model).
2. ``Predict`` (after a ``Reshuffle``, so a runner spreads the scenes): the SavedModel is
   loaded once per worker process (``apache_beam.utils.shared.Shared``, the handle Beam's
   RunInference uses) and every scene of the worker goes through it; with an output
   folder each scene's ``<image id>.geojson`` (and ``--overlays`` PNG) is written by the
   worker that predicted it.
3. ``WriteCsv``: the predictions gathered (``ToList``) in the launcher's scene order and
   written by ``writers.write_predictions`` (one SpaceNet CSV; or the one GeoJSON of a
   ``FILE.geojson`` output).

So the files are those of a local run on the same scenes. Not on Beam: ``--truth`` (score
the written CSV with ``python -m sn_tf.score``) and ``--from_tfrecords``.
"""

from __future__ import annotations

import dataclasses
import pathlib

import apache_beam as beam
from apache_beam.utils import shared

from sn_tf.serving import writers
from sn_tf.serving.exporter import load_model_info
from sn_tf.serving.predictor import BATCH_SIZE, OVERLAP, WINDOW, Predictor, predict_image
from sn_tf.serving.sources import GEOJSON_SUFFIXES, PredictError, find_images
from sn_tf.utils.beam_options import local_paths_refused, pipeline_options


MODEL_LOADS = "saved_model_loads"  # a Beam counter: SavedModel loads across the workers


@dataclasses.dataclass
class BeamPredictResult:
    """What a Beam prediction did: scenes predicted, SavedModel loads (one per worker
    process; None when the runner reports no metrics)."""

    scenes: int
    model_loads: int | None


class _Loaded:
    """A weak-referenceable holder of one worker's Predictor (``shared.Shared`` needs it)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor


class PredictScene(beam.DoFn):
    """(index, ImageSource) -> (index, ImagePrediction); writes the scene's GeoJSON into
    ``folder`` when given (the output is a folder)."""

    def __init__(self, export_dir: str, handle: shared.Shared, folder: str | None,
                 options: dict):
        self.export_dir = export_dir
        self.handle = handle
        self.folder = folder
        self.options = options  # predict_image's keywords
        self.predictor = None

    def _load(self) -> _Loaded:
        """Load the SavedModel (once per worker process: ``shared.Shared``), counted in the
        ``sn_tf/saved_model_loads`` metric."""
        beam.metrics.Metrics.counter("sn_tf", MODEL_LOADS).inc()
        return _Loaded(Predictor(self.export_dir))

    def process(self, element):
        if self.predictor is None:  # in a bundle (not in setup), so the counter reports
            self.predictor = self.handle.acquire(self._load, tag=self.export_dir).predictor
        index, source = element
        prediction = predict_image(self.predictor, source, **self.options)
        if self.folder is not None:
            writers._write_geojson(prediction, pathlib.Path(self.folder)
                                   / f"{prediction.image_id}.geojson")
        yield index, prediction


def _write_gathered(indexed: list, output: str, folder: bool) -> int:
    """The CSV (or single GeoJSON) of the gathered predictions, in scene order."""
    predictions = [p for _, p in sorted(indexed, key=lambda ip: ip[0])]
    if folder:
        from sn_tf.spacenet.building_writers import write_spacenet_csv

        write_spacenet_csv([b for p in predictions for b in p.buildings],
                           pathlib.Path(output) / writers.PREDICTIONS_CSV,
                           image_ids=[p.image_id for p in predictions])
    else:
        writers.write_predictions(predictions, output)
    return len(predictions)


def _output_kind(output) -> bool:
    """True when ``output`` is a folder (made here); ``PredictError`` as the local run
    raises it for a file in the way or a GeoJSON file for several images."""
    writers.check_local_output(output)
    path = pathlib.Path(output)
    if path.suffix.lower() in (".csv",) + GEOJSON_SUFFIXES:
        return False
    if path.exists() and not path.is_dir():
        raise PredictError(f"--output {path}: exists and is not a folder (use .csv or "
                           ".geojson for a file)")
    path.mkdir(parents=True, exist_ok=True)
    return True


def predict_images_beam(export_dir, images, output, beam_options: str = "", *,
                        window: int | None = WINDOW, overlap: int = OVERLAP,
                        batch_size: int = BATCH_SIZE, overlays_dir=None,
                        overlay_channels=None, overlay_max_size: int | None = None
                        ) -> BeamPredictResult:
    """``predict_images`` + ``write_predictions`` on Apache Beam (module docstring)."""
    options = pipeline_options(beam_options)
    specs = [images] if isinstance(images, (str, pathlib.Path)) else list(images)
    problem = local_paths_refused(options, [("--images", s) for s in specs]
                                  + [("--output", output)])
    if problem:
        raise PredictError(problem)
    info = load_model_info(export_dir)
    sources = find_images(images, info)
    folder = _output_kind(output)
    if not folder and pathlib.Path(output).suffix.lower() in GEOJSON_SUFFIXES \
            and len(sources) != 1:
        raise PredictError(f"--output {output}: a GeoJSON file holds one image but there are "
                           f"{len(sources)}; give a folder or a .csv file")
    kwargs = dict(window=window, overlap=overlap, batch_size=batch_size,
                  overlays_dir=overlays_dir, overlay_channels=overlay_channels)
    if overlay_max_size is not None:
        kwargs["overlay_max_size"] = overlay_max_size
    p = beam.Pipeline(options=options)
    _ = (p
         | "Scenes" >> beam.Create(list(enumerate(sources)))
         | "Spread" >> beam.Reshuffle()
         | "Predict" >> beam.ParDo(PredictScene(str(export_dir), shared.Shared(),
                                                str(output) if folder else None, kwargs))
         | "Gather" >> beam.combiners.ToList()
         | "WriteCsv" >> beam.Map(_write_gathered, str(output), folder))
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as exc:  # noqa: BLE001 -- runners wrap the worker's exception
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise PredictError(f"{output}: the Beam pipeline failed: "
                           f"{lines[-1] if lines else type(exc).__name__}") from None
    return BeamPredictResult(len(sources), _model_loads(result))


def _model_loads(result) -> int | None:
    """The ``saved_model_loads`` counter of a finished pipeline (None when unreported)."""
    try:
        from apache_beam.metrics.metric import MetricsFilter

        counters = result.metrics().query(MetricsFilter().with_name(MODEL_LOADS))["counters"]
    except Exception:  # noqa: BLE001 -- a runner without metrics support
        return None
    return sum(c.committed or 0 for c in counters) if counters else None
