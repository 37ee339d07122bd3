"""Training on the synthetic dataset: recipes, config errors, fit, resume, precision, workers."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from sn_tf.training import model_dir as md
from sn_tf.training.recipes import RecipeError, apply_overrides, load_recipe

REPO = pathlib.Path(__file__).resolve().parents[1]
FCN, DETECTNET = str(REPO / "models/fcn.py"), str(REPO / "models/detectnet.py")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="session")
def tfr(sample_tfr):
    """The session's converted synthetic sample (conftest ``sample_tfr``)."""
    return sample_tfr


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sn_tf.train", *args], env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def test_recipes_load_with_variants_and_overrides():
    cfg = load_recipe(f"{FCN}:smoke")
    assert cfg["name"] == "fcn" and cfg["variant"] == "smoke" and cfg["model"]["kind"] == "fcn"
    cfg = apply_overrides(cfg, ["train.epochs=7", "data.image_types=[\"PAN\"]",
                                "model.sdf_bins=8"])
    assert cfg["train"]["epochs"] == 7 and cfg["data"]["image_types"] == ["PAN"]
    with pytest.raises(RecipeError, match="unknown key 'train.epoch'"):
        apply_overrides(cfg, ["train.epoch=3"])
    with pytest.raises(RecipeError, match="unknown variant"):
        load_recipe(f"{DETECTNET}:huge")
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("models/nope.py")


@pytest.mark.parametrize("override, message", [
    ("data.image_types=[\"SWIR\"]", "not in the TFRecords"),
    ("data.bands={\"MUL-PanSharpen\": [1, 9]}", "bands \\[9\\] absent"),
    ("data.crop_size=100", "not a multiple of the model stride"),
    ("data.val_split=\"test\"", "split 'test' is empty or absent"),
    ("data.aois=[\"AOI_1_Rio\"]", "lack image types"),
    ("train.postprocess_search={\"nope\": [1]}", "unknown detectnet post-processing parameter"),
])
def test_config_that_does_not_fit_the_data(tfr, override, message):
    from sn_tf.training import trainer

    cfg = apply_overrides(load_recipe(f"{DETECTNET}:smoke"), [override])
    with pytest.raises(trainer.ConfigError, match=message):
        trainer.resolve(cfg, tfr)


def test_oriented_detectnet_config_checks(tfr, tmp_path):
    from sn_tf.training import trainer

    cfg = load_recipe(f"{DETECTNET}:smoke")
    assert cfg["model"]["oriented"] and trainer.resolve(cfg, tfr)
    assert trainer._target(cfg) == "oriented_detection"
    for sets, message in ((["loss.orient_weight=null"], "go together"),
                          (["model.oriented=false"], "go together"),
                          (["postprocess.grouping=\"opencv\""], "clusters")):
        with pytest.raises(trainer.ConfigError, match=message):
            trainer.resolve(apply_overrides(cfg, sets), tfr)
    # data converted before schema version 3 has no rectangles: refused, plain one trains
    info = json.loads((pathlib.Path(tfr) / "sn_tf_info.json").read_text())
    (tmp_path / "sn_tf_info.json").write_text(json.dumps({**info, "schema_version": 2}))
    with pytest.raises(trainer.ConfigError, match="schema version 2.*rects_px"):
        trainer.resolve(cfg, tmp_path)
    plain = apply_overrides(cfg, ["model.oriented=false", "loss.orient_weight=null"])
    assert trainer._target(trainer.resolve(plain, tmp_path).config) == "detection"


def test_detectnet_cell_size_and_aux_interior_config(tfr):
    from sn_tf.training import trainer

    cfg = load_recipe(f"{DETECTNET}:smoke")
    with pytest.raises(RecipeError, match="model.cell_size must be an integer"):
        apply_overrides(cfg, ["model.cell_size=8.0"])  # typed --set (issue 14)
    for sets, message in ((["model.cell_size=4"], "model.cell_size must be one of"),
                          (["model.aux_interior=true", "data.interior_level=null"],
                           "aux_interior needs data.interior_level")):
        with pytest.raises(trainer.ConfigError, match=message):
            trainer.resolve(apply_overrides(cfg, sets), tfr)
    setup = trainer.resolve(apply_overrides(cfg, ["model.cell_size=8",
                                                   "model.aux_interior=true"]), tfr)
    assert setup.cell_size == 8 and setup.interior_output
    assert setup.model_info().cell_size == 8
    crop = int(setup.config["data"]["crop_size"])
    x, y = next(iter(trainer.train_dataset(setup, batch_size=2)))[:2]
    assert tuple(y["coverage"].shape) == (2, crop // 8, crop // 8, 1)
    assert tuple(y["interior"].shape) == (2, crop, crop, 1)
    out = trainer.build_model(setup)(x)  # the model's outputs are on the targets' grids
    assert tuple(out["coverage"].shape) == tuple(y["coverage"].shape)
    assert tuple(out["interior"].shape) == tuple(y["interior"].shape)


def test_head_search_tolerance_and_core_weight_reach_their_stages(tfr):
    """``train.postprocess_tolerance`` is checked when the recipe is resolved, and
    ``data.core_weight`` weighs the interior target of the training batches."""
    from sn_tf.training import packed_step, trainer

    cfg = load_recipe(f"{FCN}:smoke")
    for bad in ("-0.1", "1.5"):
        with pytest.raises(trainer.ConfigError, match="postprocess_tolerance"):
            trainer.resolve(apply_overrides(cfg, [f"train.postprocess_tolerance={bad}"]), tfr)
    setup = trainer.resolve(apply_overrides(cfg, ["data.core_weight=2.0"]), tfr)
    assert trainer.input_config_of(setup, "train").core_weight == 2.0
    assert trainer.input_config_of(setup, "val", training=False).core_weight is None
    element = next(iter(trainer.train_dataset(setup, batch_size=2)))  # packed labels:
    _, y, w = packed_step.training_batch(  # the weights the train step builds
        element, packed_step.label_expander(setup))
    assert (w["interior"].numpy() > w["footprint"].numpy()).any()


def test_recipe_crops_per_tile_reaches_the_pipeline(tfr):
    from sn_tf.training import trainer

    cfg = apply_overrides(load_recipe(f"{DETECTNET}:smoke"), ["data.crops_per_tile=0"])
    with pytest.raises(ValueError, match="crops_per_tile must be a positive int"):
        trainer.train_dataset(trainer.resolve(cfg, tfr), batch_size=2)


def test_recipe_reader_reaches_the_pipeline(tfr):
    from sn_tf.training import trainer

    setup = trainer.resolve(load_recipe(f"{FCN}:smoke"), tfr)
    assert trainer.input_config_of(setup, "train").reader == "ranged"
    cfg = apply_overrides(load_recipe(f"{FCN}:smoke"), ["data.reader=mmap"])
    with pytest.raises(ValueError, match="reader must be one of"):
        trainer.train_dataset(trainer.resolve(cfg, tfr), batch_size=2)


def test_cli_error_is_one_line(tfr, tmp_path):
    r = _cli(f"--config={FCN}:smoke", f"--data_dir={tfr}", f"--model_dir={tmp_path / 'm'}",
             "--set=data.crop_size=100")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not a multiple of the model stride" in r.stderr


@pytest.mark.parametrize("recipe", [FCN, DETECTNET])
def test_each_model_trains_on_synthetic_data(tfr, tmp_path, recipe):
    from sn_tf.training import packed_step, trainer

    sets = ["train.epochs=3", "train.steps_per_epoch=4"]
    if recipe == DETECTNET:  # the recipe's data.crops_per_tile reaches the pipeline
        sets.append("data.crops_per_tile=2")
    cfg = apply_overrides(load_recipe(f"{recipe}:smoke"), sets)
    summary = trainer.train(cfg, tfr, tmp_path / "m", verbose=0)
    assert np.all(np.isfinite(summary["history"]["loss"]))
    # the loss fell on identical data: one training batch, untrained vs trained model
    # (epoch losses of 4 tiny steps each move with the crops drawn: the oriented
    # DetectNet's went 29.6, 19.8, 32.6, the axis-aligned one's 34.4, 28.5, 33.8)
    import keras

    setup = trainer.resolve(cfg, tfr)
    x, y, _ = packed_step.training_batch(  # the FCN's targets as its train step builds them
        next(iter(trainer.train_dataset(setup, batch_size=4))), packed_step.label_expander(setup))
    keras.utils.set_random_seed(int(cfg["train"]["seed"]))  # the initial weights of train()
    fresh = trainer.compile_model(trainer.build_model(setup), setup, 1, False)
    trained = keras.saving.load_model(tmp_path / "m" / md.LAST)
    before = fresh.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    after = trained.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert after < before, (before, after)
    for rel in (md.LAST, md.BEST, md.MODEL_INFO, md.CONFIG, md.TRAINING_LOG, md.VAL_SCORES):
        assert (tmp_path / "m" / rel).exists(), rel
    assert list((tmp_path / "m" / md.LOGS).rglob("events.out.tfevents*"))
    info = md.ModelInfo.load(tmp_path / "m")
    assert info.kind == cfg["model"]["kind"] and info.num_bands == 8
    assert info.image_types == ["MUL-PanSharpen"] and len(info.mean) == 8
    assert info.source_bands == {"MUL-PanSharpen": 8}  # predict refuses other band counts
    header = (tmp_path / "m" / md.TRAINING_LOG).read_text().splitlines()[0]
    for key in ("val_score", "val_f1", "val_precision", "val_touching_recall",
                "val_isolated_recall"):
        assert key in header, header
    chosen = json.loads((tmp_path / "m" / md.VAL_SCORES).read_text())
    assert chosen["chosen_on"] == "val_score" and "breakdown" in chosen
    assert summary["best_val"] is not None  # validation ran through the scoring head
    if recipe == FCN:  # the head's parameters were chosen on val and reach the export
        searched = json.loads((tmp_path / "m" / "postprocess_search.json").read_text())
        assert len(searched["candidates"]) == 2 and info.postprocess == searched["chosen"]
        assert summary["postprocess"] == searched["chosen"]


@pytest.mark.parametrize("recipe", [FCN, DETECTNET])
def test_every_trained_output_has_its_loss(tfr, recipe):
    """fit and the multi-worker step share one loss builder: each model output that has a
    target gets its loss (the step once built its own and left the FCN's interior untrained)."""
    from sn_tf.training import packed_step, trainer

    setup = trainer.resolve(load_recipe(f"{recipe}:smoke"), tfr)
    x, y, _ = packed_step.training_batch(next(iter(trainer.train_dataset(setup, batch_size=2))),
                                         packed_step.label_expander(setup))
    outputs = trainer.build_model(setup)(x)
    assert set(trainer.training_losses(setup)) == set(outputs) & set(y)
    assert "interior" in trainer.training_losses(setup) or recipe == DETECTNET


def test_mixed_precision_on_cpu(tfr, tmp_path):
    from sn_tf.training import trainer

    cfg = apply_overrides(load_recipe(f"{FCN}:smoke"), [
        "train.epochs=1", "train.steps_per_epoch=1", "train.mixed_precision=\"mixed_bfloat16\"",
        "train.val_max_tiles=1"])
    summary = trainer.train(cfg, tfr, tmp_path / "m", verbose=0)
    assert np.isfinite(summary["history"]["loss"][0])
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # reset afterwards
    model = keras.saving.load_model(tmp_path / "m" / md.LAST)
    policies = {type(layer).__name__: layer.dtype_policy.name
                for layer in model._flatten_layers(include_self=False)}
    assert policies["Conv2D"] == "mixed_bfloat16"
    assert policies["Normalization"] == "float32"  # raw input normalised in float32


def test_raw_input_model_predicts_what_the_float_pipeline_feeds(tfr):
    from sn_tf.training import trainer

    cfg = load_recipe(f"{FCN}:smoke")
    raw = trainer.resolve(cfg, tfr)
    flt = trainer.resolve(apply_overrides(cfg, ["data.image_dtype=\"float32\""]), tfr)
    assert raw.raw_input and not flt.raw_input
    assert raw.model_info().normalizes_input and not flt.model_info().normalizes_input
    model = trainer.build_model(raw)  # normalisation + the recipe's model
    inner = model.get_layer(trainer.build_model(flt).name)
    got = list(trainer.predict_split(model, raw, "val", max_tiles=3))
    want = list(trainer.predict_split(inner, flt, "val", max_tiles=3))
    assert [g[0] for g in got] == [w[0] for w in want] and len(got) == 3
    for (_, g, gsize), (_, w, wsize) in zip(got, want, strict=True):
        assert gsize == wsize
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=1e-4, atol=1e-4)


def test_radiometric_augmentation_moves_into_the_raw_model(tfr, tmp_path):
    from sn_tf.serving import exporter
    from sn_tf.training import trainer

    jitter = {"gain": 0.1, "offset_std": 0.1, "noise_std": 0.05}
    cfg = apply_overrides(load_recipe(f"{DETECTNET}:smoke"), [
        f"data.augment={json.dumps(jitter)}", "train.epochs=1", "train.steps_per_epoch=2",
        "train.val_max_tiles=2"])
    setup = trainer.resolve(cfg, tfr)
    geometric, radiometric = setup.augment_split()
    assert radiometric == jitter and not geometric.radiometric and geometric.flips
    summary = trainer.train(cfg, tfr, tmp_path / "m", verbose=0)
    assert np.isfinite(summary["history"]["loss"][0])
    model, info, _ = exporter.load_checkpoint(tmp_path / "m", "last")  # custom layer reloads
    assert info.normalizes_input
    assert model.get_layer("radiometric_jitter").get_config()["noise_std"] == 0.05
    bad = apply_overrides(cfg, ["data.image_dtype=\"int8\""])
    with pytest.raises(trainer.ConfigError, match="image_dtype"):
        trainer.resolve(bad, tfr)


def test_killed_run_resumes_from_backup(tfr, tmp_path):
    args = [f"--config={FCN}:smoke", f"--data_dir={tfr}", f"--model_dir={tmp_path / 'm'}",
            "--epochs=4", "--steps_per_epoch=3", "--set=train.val_every=100"]
    proc = subprocess.Popen([sys.executable, "-m", "sn_tf.train", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = tmp_path / "m" / md.BACKUP / "training_metadata.json"
    deadline = time.time() + 300
    while time.time() < deadline and not meta.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert meta.exists(), "no backup was written before the kill"
    done_before = json.loads(meta.read_text())["epoch"]  # epochs completed
    assert 1 <= done_before < 4
    r = _cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    epochs = [int(line.split(",")[0]) for line in
              (tmp_path / "m" / md.TRAINING_LOG).read_text().splitlines()[1:]]
    # the resumed run starts after the last backed-up epoch: no epoch is trained twice
    assert epochs[-1] == 3 and epochs[-(4 - done_before):] == list(range(done_before, 4))
    assert f"{4 - done_before} epoch(s)" in r.stdout


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_loopback_end_with_identical_weights(tfr, tmp_path):
    import keras

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                               "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sn_tf.train", f"--config={FCN}:smoke",
             f"--data_dir={tfr}", f"--model_dir={tmp_path / 'm'}", "--multiworker",
             "--epochs=2", "--steps_per_epoch=2"], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    chief = keras.saving.load_model(tmp_path / "m" / md.LAST)
    worker = keras.saving.load_model(tmp_path / "m" / "worker-1" / md.LAST)
    for a, b in zip(chief.get_weights(), worker.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "m" / md.TRAINING_LOG).exists()


@pytest.mark.slow
def test_short_cpu_run_reaches_a_real_f1(tfr, tmp_path):
    """The FCN demo recipe on the synthetic data: F1 through the scoring head above a floor."""
    from sn_tf.training import trainer

    cfg = apply_overrides(load_recipe(f"{FCN}:demo"), ["train.epochs=6", "train.val_every=6",
                                                       "train.postprocess_search=null"])
    summary = trainer.train(cfg, tfr, tmp_path / "m", verbose=0)
    assert summary["best_val"]["f1"] > 0.3, summary["best_val"]


# ---- issue 14: every command tells the truth ---------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("data.batch_size=abc", "data.batch_size must be an integer, got 'abc'"),
    ("train.learning_rate=fast", "train.learning_rate must be a number"),
    ("train.epochs=2.5", "train.epochs must be an integer"),
    ("data.aois=[1]", None),   # null in the recipe: any value
])
def test_set_errors_name_the_key_and_the_expected_type(override, message):
    cfg = load_recipe(f"{FCN}:smoke")
    if message is None:
        assert apply_overrides(cfg, [override])["data"]["aois"] == [1]
        return
    with pytest.raises(RecipeError, match=message.replace(".", r"\.").replace("(", r"\(")):
        apply_overrides(cfg, [override])


def test_set_string_for_a_list_is_one_item_not_characters():
    cfg = load_recipe(f"{FCN}:smoke")
    assert apply_overrides(cfg, ["data.image_types=MUL-PanSharpen"])["data"]["image_types"] == [
        "MUL-PanSharpen"]
    assert apply_overrides(cfg, ["data.image_types=MUL-PanSharpen,PAN"])["data"][
        "image_types"] == ["MUL-PanSharpen", "PAN"]


def test_model_dir_and_data_dir_problems_are_one_line_before_anything_is_written(tfr, tmp_path):
    from sn_tf.training import trainer

    # a model dir of another model: refused, its config.json untouched
    other = tmp_path / "other"
    other.mkdir()
    cfg = load_recipe(f"{FCN}:smoke")
    depth = cfg["model"]["depth"]
    old_config = json.dumps(apply_overrides(cfg, [f"model.depth={depth + 1}"]))
    (other / md.CONFIG).write_text(old_config)
    with pytest.raises(md.ModelDirError, match=rf"holds another model \(model\.depth: {depth + 1} there, {depth} now\)"):
        trainer.train(cfg, tfr, other, verbose=0)
    assert (other / md.CONFIG).read_text() == old_config
    assert sorted(p.name for p in other.iterdir()) == [md.CONFIG]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    no_shards = tmp_path / "no_shards"
    no_shards.mkdir()
    (no_shards / "sn_tf_info.json").write_text((tfr / "sn_tf_info.json").read_text())
    for args, message in [
            ([f"--model_dir={other}", f"--data_dir={tfr}"], "holds another model"),
            ([f"--model_dir={a_file}", f"--data_dir={tfr}"], "is a file, not a folder"),
            ([f"--model_dir={tmp_path / 'm'}", f"--data_dir={no_shards}"], "no shard files"),
            ([f"--model_dir={tmp_path / 'm2'}", f"--data_dir={tfr}",
              "--set=data.image_types=MUL-PanSharpen", "--set=data.batch_size=abc"],
             "data.batch_size must be an integer")]:
        r = _cli(f"--config={FCN}:smoke", *args)
        assert r.returncode == 1, (args, r.stderr[-1500:])
        errors = [line for line in r.stderr.splitlines() if "sn_tf.train: error" in line]
        assert len(errors) == 1 and message in errors[0], (args, r.stderr[-1500:])
        assert "Traceback" not in r.stderr and len(r.stderr) < 4000, r.stderr[-1500:]
    assert (other / md.CONFIG).read_text() == old_config


class _Killed(Exception):
    """Raised by a callback to stop a run as a kill would, mid-epoch."""


def test_log_has_validation_columns_every_epoch_and_a_killed_validation_reruns(
        tfr, tmp_path, monkeypatch):
    import csv

    from sn_tf.training import trainer

    cfg = apply_overrides(load_recipe(f"{FCN}:smoke"), [
        "train.epochs=3", "train.steps_per_epoch=1", "train.val_every=2", "train.val_max_tiles=2"])
    real = trainer.evaluate_f1

    def killed(*args, **kwargs):
        raise _Killed("killed during validation")

    monkeypatch.setattr(trainer, "evaluate_f1", killed)
    with pytest.raises(_Killed):          # epoch 2 (index 1) dies in its validation
        trainer.train(cfg, tfr, tmp_path / "m", verbose=0)
    monkeypatch.setattr(trainer, "evaluate_f1", real)
    summary = trainer.train(cfg, tfr, tmp_path / "m", verbose=0)
    assert summary["epochs_run"] == 2     # epoch 2 again (with its validation), then epoch 3
    with open(tmp_path / "m" / md.TRAINING_LOG, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for key in trainer.VAL_KEYS:
        assert rows[0][key] == "" and rows[1][key] != "" and rows[2][key] != "", key
    assert float(rows[1]["val_score"]) >= 0 and rows[1]["loss"]
    assert json.loads((tmp_path / "m" / md.VAL_SCORES).read_text())["epoch"] in (2, 3)


def test_import_sn_tf_then_load_model_reads_every_checkpoint_kind(tfr, tmp_path):
    """A fresh interpreter: ``import sn_tf`` + ``sn_tf.load_model`` loads the FCN and the
    (oriented) DetectNet checkpoint, compiled and not (bare keras.saving.load_model cannot)."""
    from sn_tf.training import trainer

    for name, recipe in (("fcn", FCN), ("detectnet", DETECTNET)):
        setup = trainer.resolve(load_recipe(f"{recipe}:smoke"), tfr)
        trainer.compile_model(trainer.build_model(setup), setup, 3, False).save(
            tmp_path / f"{name}.keras")
    code = (
        "import sys, keras, sn_tf\n"
        "for name in ('fcn', 'detectnet'):\n"
        f"    p = {str(tmp_path)!r} + '/' + name + '.keras'\n"
        "    m = sn_tf.load_model(p)\n"
        "    assert m.compiled and m.optimizer is not None and m.loss, name\n"
        "    sn_tf.load_model(p, compile=False)\n"
        "    print(name, 'ok', sorted(m.output_names))\n")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "fcn ok" in r.stdout and "detectnet ok" in r.stdout


def test_averaged_weights_swap_in_the_moving_average_and_back():
    """train.ema_momentum: validation sees the optimizer's moving average of the weights,
    training goes on from the raw weights."""
    import keras

    from sn_tf.training.trainer import averaged_weights

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.AdamW(0.1, use_ema=True, ema_momentum=0.5),
                  loss="mse")
    x, y = np.random.rand(32, 3).astype("float32"), np.random.rand(32, 2).astype("float32")
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    raw = [w.copy() for w in model.get_weights()]
    averages = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    assert not all(np.allclose(a, r) for a, r in zip(averages, raw))
    with averaged_weights(model):
        for w, a in zip(model.get_weights(), averages):
            np.testing.assert_array_equal(w, a)
    for w, r in zip(model.get_weights(), raw):
        np.testing.assert_array_equal(w, r)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.compile(optimizer="adam", loss="mse")
    before = [w.copy() for w in plain.get_weights()]
    with averaged_weights(plain):  # without EMA the block changes nothing
        for w, b in zip(plain.get_weights(), before):
            np.testing.assert_array_equal(w, b)


def test_ema_momentum_is_capped_for_short_runs():
    from sn_tf.training.trainer import ema_momentum

    assert ema_momentum(None, 1000) is None
    assert ema_momentum(0.99, 720) == 0.99          # the FCN demo: 60 epochs x 12 steps
    assert ema_momentum(0.99, 72) == pytest.approx(1 - 5 / 72)
    assert ema_momentum(0.99, 3) == 0.0               # a smoke run: the raw weights


def test_head_search_reuses_the_best_validation_outputs(tfr, tmp_path, monkeypatch):
    """The val split is predicted once per validation; the head search after training takes
    the best epoch's outputs instead of predicting val again from best.keras."""
    from sn_tf.training import trainer

    calls = []
    real = trainer.predict_split

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "predict_split", counting)
    cfg = load_recipe(f"{FCN}:smoke")
    summary = trainer.train(cfg, tfr, tmp_path / "m", verbose=0)
    assert summary["postprocess"] is not None
    assert len(calls) == cfg["train"]["epochs"]  # one per validation (val_every 1), none after
    assert (tmp_path / "m" / "postprocess_search.json").is_file()
