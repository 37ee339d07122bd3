"""Tests of sn_tf.export: SavedModel serving signature vs the Keras model, metadata, errors.

Models are tiny (FCN width 4 depth 2, DetectNet width 4 blocks (1, 1), or hand-made 1x1-conv
models, ``tests/fixtures/models.py``) and untrained; inputs are small.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from sn_tf.utils.tfimport import tensorflow  # noqa: E402

tf = tensorflow()

from fixtures.models import (MEAN, RGB, STD, STRIDE, TINY, make_model_dir,  # noqa: E402
                             oracle_fcn, tiny_model)
from sn_tf import modeling  # noqa: E402
from sn_tf.serving import exporter  # noqa: E402
from sn_tf.training import model_dir as md  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def keras_reference(model, raw: np.ndarray, stride: int, mean=MEAN, std=STD) -> dict:
    """The Keras model on the normalised, zero-padded input, cropped like the signature."""
    scale = (1.0 / np.asarray(std, np.float64)).astype(np.float32)
    bias = (-np.asarray(mean, np.float64) / np.asarray(std, np.float64)).astype(np.float32)
    x = raw.astype(np.float32) * scale + bias
    _, h, w, _ = x.shape
    x = np.pad(x, [(0, 0), (0, -h % stride), (0, -w % stride), (0, 0)])
    out = model(x, training=False)
    result = {}
    for name, y in out.items():
        y = np.asarray(y)
        f = x.shape[1] // y.shape[1]
        result[name] = y[:, :-(-h // f), :-(-w // f)]
    return result


def raw_batch(h: int, w: int, seed: int) -> np.ndarray:
    """uint16 [2, h, w, 3] around the MEAN/STD statistics."""
    rng = np.random.default_rng(seed)
    data = rng.normal(MEAN, STD, size=(2, h, w, 3))
    return np.clip(data, 0, 2047).astype(np.uint16)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{kind: (keras model, model dir, export dir)} for the tiny FCN and DetectNet."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind in ("fcn", "detectnet"):
        model = tiny_model(kind)
        mdir = make_model_dir(root / kind, model, kind=kind, stride=STRIDE[kind])
        path = exporter.export_model(mdir, root / f"{kind}_export")
        out[kind] = (model, mdir, path)
    return out


# ------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("kind", ["fcn", "detectnet"])
def test_signature_matches_keras_on_raw_inputs_of_any_size(exported, kind):
    model, _, path = exported[kind]
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures[exporter.SERVE]
    spec = signature.structured_input_signature[1]["image"]
    assert spec.dtype == tf.uint16 and spec.shape.as_list() == [None, None, None, 3]
    for h, w in ((100, 75), (64, 64), (17, 40)):
        raw = raw_batch(h, w, seed=h + w)
        want = keras_reference(model, raw, STRIDE[kind])
        got = loaded.serve(raw)
        via_signature = signature(image=tf.constant(raw))
        assert sorted(got) == sorted(want) == sorted(via_signature)
        for name in want:
            assert got[name].dtype == tf.float32
            f = 1 if kind == "fcn" else 16
            assert got[name].shape[:3] == (2, -(-h // f), -(-w // f))
            scale = max(1.0, float(np.abs(want[name]).max()))
            np.testing.assert_allclose(got[name].numpy(), want[name], atol=1e-4 * scale, rtol=0)
            np.testing.assert_allclose(via_signature[name].numpy(), got[name].numpy(), atol=0)


@pytest.mark.parametrize("kind", ["fcn", "detectnet"])
def test_model_normalising_itself_is_not_normalised_twice(tmp_path, exported, kind):
    from sn_tf.modeling import model_input
    from sn_tf.input.pipeline import normalization_layer

    compiled = exported[kind][0]  # the float model of the other export (same weights)
    inner = keras.models.clone_model(compiled)  # uncompiled, as training nests it: no optimizer
    inner.set_weights(compiled.get_weights())  # state saved inside the wrapped checkpoint
    from sn_tf.dataset import info as dsinfo

    info = dsinfo.DatasetInfo(  # only the stored type the normalisation layer reads
        name="t", schema_version=3, image_types={
            RGB: dsinfo.ImageTypeInfo(RGB, "uint16", 3, (64, 64, 3), "", "", "raw")},
        label_grids={}, splits={}, aois={}, band_stats={}, band_stats_split="train")
    norm = normalization_layer(info, (RGB,), normalization={"mean": MEAN, "std": STD})
    wrapped = model_input.with_input_stage(
        inner, norm, {"gain": 0.2, "offset_std": 0.1, "noise_std": 0.1}, seed=1)
    assert wrapped.output_names == inner.output_names
    mdir = make_model_dir(tmp_path / "m", wrapped, kind=kind, stride=STRIDE[kind],
                          normalizes_input=True)
    reloaded, _, _ = exporter.load_checkpoint(mdir)  # the custom jitter layer reloads
    assert reloaded.get_layer("radiometric_jitter").gain == pytest.approx(0.2)
    path = exporter.export_model(mdir, tmp_path / "e")
    serve, info2, doc = exporter.load_export(path)
    assert info2.normalizes_input and "inside the model" in doc["signature"]["normalization"]
    for h, w in ((37, 50), (64, 64)):  # padded, and not padded
        raw = raw_batch(h, w, seed=h)
        want = keras_reference(inner, raw, STRIDE[kind])
        got = serve(raw)
        for name in want:  # the normalised-input model on the same input: up to rounding
            scale = max(1.0, float(np.abs(want[name]).max()))
            np.testing.assert_allclose(got[name].numpy(), want[name], atol=1e-4 * scale, rtol=0)
    x = raw_batch(16, 16, 3).astype(np.float32)
    jittered = wrapped(x, training=True)  # the jitter acts in training only
    name = inner.output_names[0]
    assert not np.allclose(jittered[name], wrapped(x, training=False)[name], atol=1e-5)


def test_oriented_detectnet_serves_its_orient_output(tmp_path):
    keras.utils.set_random_seed(7)
    model = modeling.build_model("detectnet", 3, oriented=True, **TINY["detectnet"])
    model.compile(optimizer="adam", loss=modeling.losses_for("detectnet", orient_weight=1.0))
    mdir = make_model_dir(tmp_path / "m", model, kind="detectnet", stride=16,
                          postprocess={"grouping": "clusters", "rect_gate": 0.9})
    path = exporter.export_model(mdir, tmp_path / "e")
    serve, info, doc = exporter.load_export(path)
    assert doc["signature"]["outputs"] == ["bbox", "coverage", "orient"]
    assert info.postprocess["rect_gate"] == 0.9
    raw = raw_batch(37, 50, seed=1)
    want = keras_reference(model, raw, 16)
    got = serve(raw)
    assert got["orient"].shape == (2, 3, 4, 3)
    for name in want:
        np.testing.assert_allclose(got[name].numpy(), want[name], atol=1e-4, rtol=1e-5)
    boxes_only = make_model_dir(tmp_path / "b", model, kind="detectnet", stride=16)
    with pytest.raises(exporter.ExportError, match="'orient' output.*grouping is 'opencv'"):
        exporter.export_model(boxes_only, tmp_path / "e2")


def test_metadata_beside_the_saved_model(exported):
    _, mdir, path = exported["fcn"]
    assert (path / "saved_model.pb").is_file()
    source = json.loads((mdir / md.MODEL_INFO).read_text())
    assert json.loads((path / md.MODEL_INFO).read_text()) == source
    info = md.ModelInfo.load(path)
    assert info.mean == MEAN and info.stride == 4 and info.bands == {RGB: [1, 2, 3]}
    assert not info.normalizes_input
    doc = json.loads((path / exporter.EXPORT_INFO).read_text())
    assert doc["versions"]["tensorflow"] == tf.__version__
    assert doc["versions"]["keras"] == keras.__version__
    assert doc["exported_at"].startswith("20")
    assert doc["checkpoint"].endswith("checkpoints/best.keras")
    assert doc["signature"]["input"]["dtype"] == "uint16"
    assert doc["signature"]["input"]["channels"] == [f"{RGB}:1", f"{RGB}:2", f"{RGB}:3"]
    assert doc["signature"]["outputs"] == ["footprint", "sdf"]
    serve, info2, doc2 = exporter.load_export(path)
    assert info2 == info and doc2 == doc
    assert set(serve(raw_batch(8, 8, 0))) == {"footprint", "sdf"}


def test_mixed_input_dtypes_take_float32_and_last_checkpoint(tmp_path):
    model = oracle_fcn(num_bands=2)
    mdir = make_model_dir(tmp_path / "m", model, kind="fcn", stride=8, image_types=("PAN", RGB),
                          bands={"PAN": [1], RGB: [2]},
                          input_dtypes={"PAN": "float64", RGB: "uint16"}, mean=[1.0, 2.0],
                          std=[2.0, 0.0], checkpoint="last")
    path = exporter.export_model(mdir, tmp_path / "e", checkpoint="last")
    serve, info, doc = exporter.load_export(path)
    assert exporter.serving_dtype(info) == doc["signature"]["input"]["dtype"] == "float32"
    raw = np.array([[[[5.0, 7.0]]]], np.float32)
    out = serve(raw)
    # std 0 is treated as 1 (as the pipeline does): (5 - 1) / 2 and (7 - 2) / 1
    assert out["footprint"].shape == (1, 1, 1, 1)
    assert out["footprint"].numpy().item() == pytest.approx(2.0)
    assert out["sdf"].numpy().item() == pytest.approx(5.0)


def test_errors_name_the_problem(tmp_path, exported):
    model, mdir, _ = exported["fcn"]
    with pytest.raises(exporter.ExportError, match="model dir not found"):
        exporter.export_model(tmp_path / "nope", tmp_path / "e1")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(exporter.ExportError, match="model_info.json: not found"):
        exporter.export_model(empty, tmp_path / "e1")
    md.ModelInfo.load(mdir).save(empty)
    with pytest.raises(exporter.ExportError, match="no checkpoint"):
        exporter.export_model(empty, tmp_path / "e1")

    def broken(name: str, **changes) -> pathlib.Path:
        d = tmp_path / name
        make_model_dir(d, model, kind="fcn", stride=4)
        doc = json.loads((d / md.MODEL_INFO).read_text())
        doc.update(changes)
        (d / md.MODEL_INFO).write_text(json.dumps(doc))
        return d

    cases = {
        "mean must hold 3 finite values": broken("mean", mean=[1.0, 2.0]),
        "kind 'unet'": broken("kind", kind="unet"),
        "unknown fcn post-processing parameter": broken("post", postprocess={"tresh": 1}),
        "stride must be a positive integer": broken("stride", stride=0),
        "wrong model info .*unexpected keyword": broken("key", colour="red"),
        "takes 3 input channels but model_info.json describes 4": broken(
            "bands", bands={RGB: [1, 2, 3, 4]}, mean=[0.0] * 4, std=[1.0] * 4),
        "lack \\['coverage'\\]|lack \\['bbox', 'coverage'\\]": broken("wrongkind",
                                                                      kind="detectnet",
                                                                      stride=16),
    }
    for message, d in cases.items():
        with pytest.raises(exporter.ExportError, match=message) as err:
            exporter.export_model(d, tmp_path / "e2")
        assert str(d) in str(err.value)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(exporter.ExportError, match="not empty"):
        exporter.export_model(mdir, tmp_path / "busy")
    with pytest.raises(exporter.ExportError, match="not an sn_tf export"):
        exporter.export_model(mdir, tmp_path / "busy", overwrite=True)
    with pytest.raises(exporter.ExportError, match="no saved_model.pb"):
        exporter.load_export(tmp_path / "busy")


def test_cli_exports_and_fails_cleanly(tmp_path, exported):
    _, mdir, _ = exported["detectnet"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = subprocess.run([sys.executable, "-m", "sn_tf.export", f"--model_dir={mdir}",
                         f"--export_dir={tmp_path / 'cli'}", "--checkpoint=best"],
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "signature 'serve' takes uint16 [B, H, W, 3]" in ok.stdout
    assert (tmp_path / "cli" / "saved_model.pb").is_file()
    bad = subprocess.run([sys.executable, "-m", "sn_tf.export",
                          f"--model_dir={tmp_path / 'missing'}",
                          f"--export_dir={tmp_path / 'cli2'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1
    assert "sn_tf.export: error:" in bad.stderr and "missing: model dir not found" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("kind", ["fcn", "detectnet"])
def test_float32_signature_for_rest_clients_gives_the_uint16_outputs(exported, kind):
    """TF Serving's REST API cannot send uint16: ``serve_float32`` takes the stored values as
    JSON numbers decoded to float32 (here: a JSON round trip, as the REST server does) and
    answers exactly what ``serve`` answers for the uint16 tile."""
    _, _, path = exported[kind]
    loaded = tf.saved_model.load(str(path))
    assert {exporter.SERVE, exporter.SERVE_FLOAT32} <= set(loaded.signatures)
    sig = loaded.signatures[exporter.SERVE_FLOAT32]
    assert sig.structured_input_signature[1]["image"].dtype == tf.float32
    raw = raw_batch(40, 36, 5)
    raw[0, 0, 0, 0] = 2047
    body = json.loads(json.dumps({"signature_name": exporter.SERVE_FLOAT32,
                                  "instances": raw.tolist()}))
    image = np.asarray(body["instances"], np.float32)
    got = sig(image=tf.constant(image))
    want = loaded.signatures[exporter.SERVE](image=tf.constant(raw))
    assert set(got) == set(want) and got
    for name in want:
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())
    doc = json.loads((path / exporter.EXPORT_INFO).read_text())
    assert doc["signatures"] == {"serve": "uint16", "serve_float32": "float32"}
