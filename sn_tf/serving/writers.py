"""Predictions in SpaceNet form: CSV and GeoJSON files, the truth read for them, the score.

``write_predictions`` (``FILE.csv``, ``FILE.geojson`` or a folder of ``<image id>.geojson``
plus ``predictions.csv``), ``read_truth`` (``sn_tf.serving.sources.TruthSource``),
``score`` (``sn_tf.spacenet.scoring.score_polygons``) and ``write_score`` (``score.json``).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from sn_tf.spacenet.building_writers import write_geojson, write_spacenet_csv
from sn_tf.spacenet.crs import PIXEL_CRS_WKT
from sn_tf.serving.predictor import ImagePrediction
from sn_tf.serving.sources import GEOJSON_SUFFIXES, PredictError, TruthSource
from sn_tf.utils import objectstore


PREDICTIONS_CSV = "predictions.csv"
SCORE_JSON = "score.json"


# ----------------------------------------------------------------------------------------------
# Writing and scoring


def write_predictions(predictions: Sequence[ImagePrediction], output) -> list[pathlib.Path]:
    """Write ``output``: ``.csv`` (SpaceNet CSV, pixels), ``.geojson``/``.json`` (one image,
    map coordinates) or a folder (``<image id>.geojson`` each + ``predictions.csv``).

    Returns the written paths.
    """
    check_local_output(output)
    output = pathlib.Path(output)
    suffix = output.suffix.lower()
    buildings = [b for p in predictions for b in p.buildings]
    ids = [p.image_id for p in predictions]
    if suffix == ".csv":
        output.parent.mkdir(parents=True, exist_ok=True)
        write_spacenet_csv(buildings, output, image_ids=ids)
        return [output]
    if suffix in GEOJSON_SUFFIXES:
        if len(predictions) != 1:
            raise PredictError(f"--output {output}: a GeoJSON file holds one image but there are "
                               f"{len(predictions)}; give a folder or a .csv file")
        output.parent.mkdir(parents=True, exist_ok=True)
        _write_geojson(predictions[0], output)
        return [output]
    if output.exists() and not output.is_dir():
        raise PredictError(f"--output {output}: exists and is not a folder (use .csv or "
                           ".geojson for a file)")
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in predictions:
        paths.append(output / f"{p.image_id}.geojson")
        _write_geojson(p, paths[-1])
    paths.append(output / PREDICTIONS_CSV)
    write_spacenet_csv(buildings, paths[-1], image_ids=ids)
    return paths


def check_local_output(output) -> None:
    """``PredictError`` for an object store URL: predictions are written to local files."""
    if objectstore.is_url(output):
        raise PredictError(f"--output {output}: predictions are written to local files only "
                           "(write them locally, then copy them to the store)")


def _write_geojson(prediction: ImagePrediction, path: pathlib.Path) -> None:
    """One image's buildings in its CRS through its geotransform (pixels without one, marked
    with sn_tf's pixel CRS so GDAL/QGIS do not take them for WGS84)."""
    crs = prediction.crs or (PIXEL_CRS_WKT if prediction.transform is None else None)
    write_geojson(prediction.buildings, path, transform=prediction.transform, crs=crs)


def score_dir(output) -> pathlib.Path:
    """Folder for ``score.json``: the output folder, or the output file's folder."""
    output = pathlib.Path(output)
    return output.parent if output.suffix.lower() in (".csv",) + GEOJSON_SUFFIXES else output


def read_truth(path, predictions: Sequence[ImagePrediction]) -> list:
    """Truth records in PIXEL coordinates for the predicted images (:class:`TruthSource`):
    records of other images are dropped; every predicted image is registered."""
    source = path if isinstance(path, TruthSource) else TruthSource(path)
    return [r for p in predictions for r in source.records(p)]


def score(predictions: Sequence[ImagePrediction], truth: list, iou: float = 0.5,
          min_area: float = 20.0):
    """SpaceNet score (``sn_tf.spacenet.scoring.score_polygons``) of the predictions (pixels)."""
    from sn_tf.spacenet.scoring import score_polygons

    proposals = [b for p in predictions for b in p.buildings]
    return score_polygons(truth, proposals, iou_threshold=iou, min_area=min_area)


def write_score(result, directory) -> pathlib.Path:
    """``<directory>/score.json`` (``ScoreResult.to_dict()``)."""
    path = pathlib.Path(directory) / SCORE_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    return path
