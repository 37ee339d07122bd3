"""Batch prediction on Apache Beam (``sn_tf.serving.beam_predict``, ``predict
--beam_pipeline_options``) writes the files of the local run on the same scenes: each
scene's GeoJSON and the one SpaceNet CSV. Model: an exact 1x1-conv "FCN" (footprint logit =
band 1, sdf = band 2), so every scene has known buildings. DirectRunner, 2 worker processes
(slow: each loads TensorFlow and the SavedModel)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from fixtures.models import make_model_dir, oracle_fcn
from sn_tf.serving import exporter
from sn_tf.serving.predictor import predict_images
from sn_tf.serving.writers import PREDICTIONS_CSV, write_predictions

pytest.importorskip("apache_beam", reason="Apache Beam not installed (pip install sn_tf[beam])")
from sn_tf.serving import beam_predict  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# the DirectRunner's Python engine, run directly: the DirectRunner would first try to
# download the Prism runner (BUILD_NOTES.md section 10)
BEAM = "runner=FnApiRunner,direct_num_workers=2"
TYPE = "RGB-PanSharpen"
SIZES = [(150, 200), (97, 131), (260, 90), (64, 64), (180, 170)]


def _scene(path: pathlib.Path, number: int, h: int, w: int) -> None:
    """float32 [2, h, w] GeoTIFF: band 1 = logit +-4 inside / outside a few boxes, band 2 =
    their sdf (distance inside, -3 outside); scene 3 has no building."""
    rng = np.random.default_rng(number)
    sdf = np.full((h, w), -3.0, np.float32)
    for _ in range(0 if number == 3 else 4):
        y0, x0 = rng.integers(0, h - 20), rng.integers(0, w - 20)
        bh, bw = rng.integers(8, 20, size=2)
        yy, xx = np.mgrid[:bh, :bw]
        inside = np.minimum(np.minimum(yy, bh - 1 - yy), np.minimum(xx, bw - 1 - xx)) + 0.5
        sdf[y0:y0 + bh, x0:x0 + bw] = np.maximum(sdf[y0:y0 + bh, x0:x0 + bw], inside)
    logit = np.where(sdf > 0, 4.0, -4.0).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=2,
                       dtype="float32", crs="EPSG:32611",
                       transform=from_origin(500000.0 + 100 * number, 4000000.0, 0.3, 0.3)) \
            as ds:
        ds.write(np.stack([logit, sdf]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(export dir, scenes folder) with five scenes of different sizes."""
    root = tmp_path_factory.mktemp("beampredict")
    mdir = make_model_dir(root / "model", oracle_fcn(2), kind="fcn", stride=8,
                          bands={TYPE: [1, 2]}, input_dtypes={TYPE: "float32"},
                          mean=[0.0, 0.0], std=[1.0, 1.0])
    export = exporter.export_model(mdir, root / "export")
    scenes = root / "scenes"
    scenes.mkdir()
    for number, (h, w) in enumerate(SIZES):
        _scene(scenes / f"scene{number}.tif", number, h, w)
    return export, scenes


@pytest.mark.slow
def test_beam_prediction_writes_the_files_of_the_local_run(setup, tmp_path):
    export, scenes = setup
    local = tmp_path / "local"
    predictions = predict_images(export, [str(scenes)], window=96, overlap=32)
    write_predictions(predictions, local)
    assert sum(len(p.buildings) for p in predictions) >= 12
    res = beam_predict.predict_images_beam(export, [str(scenes)], tmp_path / "beam", BEAM,
                                           window=96, overlap=32)
    assert res.scenes == len(SIZES)
    assert 1 <= res.model_loads <= 2  # once per worker process, not per scene
    names = sorted(p.name for p in local.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "beam").iterdir())
    assert len(names) == len(SIZES) + 1 and PREDICTIONS_CSV in names
    for name in names:
        assert (tmp_path / "beam" / name).read_text() == (local / name).read_text(), name
    # one CSV file as the output
    beam_predict.predict_images_beam(export, [str(scenes)], tmp_path / "p.csv", BEAM,
                                     window=96, overlap=32)
    assert (tmp_path / "p.csv").read_text() == (local / PREDICTIONS_CSV).read_text()


@pytest.mark.slow
def test_cli_predicts_on_beam_and_refuses_truth(setup, tmp_path):
    export, scenes = setup
    cmd = [sys.executable, "-m", "sn_tf.predict", f"--saved_model={export}",
           f"--images={scenes}", "--window=96", "--overlap=32", "--noprogress",
           f"--beam_pipeline_options={BEAM}"]
    res = subprocess.run(cmd + [f"--output={tmp_path / 'out.csv'}"], capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{len(SIZES)} image(s) predicted on Beam" in res.stdout
    local = tmp_path / "local.csv"
    write_predictions(predict_images(export, [str(scenes)], window=96, overlap=32), local)
    assert (tmp_path / "out.csv").read_text() == local.read_text()
    res = subprocess.run(cmd + [f"--output={tmp_path / 'x.csv'}", f"--truth={local}"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(
        "sn_tf.predict: error: --beam_pipeline_options: with --images only")


def test_outputs_on_a_store_and_local_paths_on_dataflow_are_refused(setup, tmp_path):
    export, scenes = setup
    with pytest.raises(beam_predict.PredictError, match="local files only"):
        beam_predict.predict_images_beam(export, [str(scenes)], "s3://bucket/out", BEAM)
    with pytest.raises(beam_predict.PredictError, match="local files only"):
        write_predictions([], "gs://bucket/out.csv")
    with pytest.raises(beam_predict.PredictError, match="a local path on Dataflow"):
        beam_predict.predict_images_beam(export, [str(scenes)], tmp_path / "o",
                                         "runner=DataflowRunner,project=p,region=r")


def test_beam_prediction_refuses_one_geojson_for_several_scenes(setup, tmp_path):
    export, scenes = setup
    with pytest.raises(beam_predict.PredictError, match="holds one image"):
        beam_predict.predict_images_beam(export, [str(scenes)], tmp_path / "x.geojson", BEAM)
    assert not os.path.exists(tmp_path / "x.geojson")


@pytest.mark.slow
def test_prediction_reads_scenes_from_s3(setup, s3, tmp_path):
    """--images as an s3:// prefix (local run) and an s3:// glob (Beam run), on a local
    moto S3 server: the files of the local run on the same scenes."""
    from sn_tf.utils import objectstore

    export, scenes = setup
    objectstore.upload_tree(scenes, f"{s3}/scenes")
    local = tmp_path / "local"
    write_predictions(predict_images(export, [str(scenes)], window=96, overlap=32), local)
    remote = predict_images(export, [f"{s3}/scenes"], window=96, overlap=32)
    write_predictions(remote, tmp_path / "remote")
    beam_predict.predict_images_beam(export, [f"{s3}/scenes/scene*.tif"], tmp_path / "beam",
                                     BEAM, window=96, overlap=32)
    names = sorted(p.name for p in local.iterdir())
    assert len(names) == len(SIZES) + 1
    for out in ("remote", "beam"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == names
        for name in names:
            assert (tmp_path / out / name).read_text() == (local / name).read_text(), name
