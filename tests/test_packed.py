"""Segmentation targets built in the train step (``targets_on="device"``, sn_tf.input.packed,
sn_tf.training.packed_step): the packed labels expand to exactly the host-built targets and
weights, and a train step on them gives the host path's losses, metrics and weights."""

import numpy as np
import pytest

from sn_tf.input import packed as pk
from sn_tf.input.pipeline import make_dataset, packed_targets
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
CROP = 64
FCN_DATA = {"boundary_weight": 2.0, "contact_weight": 5.0, "interior_level": 1.5,
            "augment": {"focus": 0.7}}


def _elements(folder, targets_on, **kw):
    args = dict(crop_size=CROP, batch_size=2, deterministic=True, repeat=1, seed=4,
                image_dtype="raw")
    return list(make_dataset(folder, "train", targets_on=targets_on, **{**args, **kw}))


def _assert_equal(a, b):
    tf.nest.map_structure(lambda u, v: np.testing.assert_array_equal(u, v), a, b)


@pytest.mark.parametrize("kw", [
    {},  # plain: footprint and sdf, no weights
    FCN_DATA,  # the FCN recipe's data options (batch read, uint8 contact layer)
    {**FCN_DATA, "contact": True, "core_weight": 2.0, "sdf_truncation": 6.0},
    {**FCN_DATA, "reader": "record"},  # per-example crops: contact stacked beside the sdf
    {**FCN_DATA, "bands": {"MUL-PanSharpen": (3, 1)}},  # ranged, read per example
    {"boundary_weight": 2.0, "sample_weights": False},
    # crop_on="device": the window's rows and the windows, cut in the step
    {"crop_on": "device"}, {**FCN_DATA, "crop_on": "device"},
    {**FCN_DATA, "contact": True, "core_weight": 2.0, "crop_on": "device",
     "augment": {"focus": 0.5, "flips": True, "rot90": True}}])
def test_device_elements_expand_to_the_host_elements(known_dataset, kw):
    host = _elements(known_dataset.converted, "host", **kw)
    device = _elements(known_dataset.converted, "device", **kw)
    packed = packed_targets(known_dataset.converted, "train",
                            config=None, **{"crop_size": CROP, "targets_on": "device",
                                            "image_dtype": "raw", **kw})
    assert packed is not None and len(host) == len(device) > 0
    for h, d in zip(host, device, strict=True):
        assert len(d) == 2 and pk.is_packed(d[1])
        assert d[1][pk.STORED_SDF].dtype == tf.float16
        assert (pk.STORED_CONTACT in d[1]) == packed.needs_contact
        if kw.get("crop_on") == "device":  # rows of the 112 px tiles, cut in the step
            assert d[0].shape[1:3] == (CROP, 112) and pk.WINDOW in d[1]
            assert d[1][pk.STORED_SDF].shape[1:3] == (CROP, 112)
        else:
            assert d[0].shape[1:3] == (CROP, CROP) and pk.WINDOW not in d[1]
        image, out = packed.image(d[0], d[1]), packed.expand(d[1])
        _assert_equal(h, (image, *out) if packed.sample_weights else (image, out))


DETECTNET_DATA = {"target": "oriented_detection", "cell_size": 8, "cvg_scale": 1.0,
                  "contact_weight": 1.0, "augment": {"focus": 0.5, "flips": True,
                                                     "rot90": True}}


@pytest.mark.parametrize("kw", [
    DETECTNET_DATA,  # the DetectNet recipe's data options
    {**DETECTNET_DATA, "crop_on": "device"},  # and the image cut in the step
    {**DETECTNET_DATA, "target": "detection", "cell_size": 16, "cvg_scale": 0.4},
    {**DETECTNET_DATA, "contact_weight": None},  # no contact cells, no weights
    {**DETECTNET_DATA, "contact_weight": 2.0, "sample_weights": True, "crop_on": "device",
     "augment": {"flips": True}}])
def test_detectnet_packed_boxes_expand_to_the_host_targets(known_dataset, kw):
    """targets_on="device" for DetectNet: the crops' boxes, rectangles and contact cells
    leave the pipeline and expand to exactly the host's coverage, bbox, orient and
    weights."""
    host = _elements(known_dataset.converted, "host", **{**kw, "crop_on": "host"})
    device = _elements(known_dataset.converted, "device", **kw)
    packed = packed_targets(known_dataset.converted, "train", kw["target"],
                            **{"crop_size": CROP, "targets_on": "device",
                               "image_dtype": "raw",
                               **{k: v for k, v in kw.items() if k != "target"}})
    assert isinstance(packed, pk.PackedDetection) and len(host) == len(device) > 0
    for h, d in zip(host, device, strict=True):
        assert len(d) == 2 and pk.is_packed(d[1])
        rows = d[1][pk.BOXES].shape[1]
        assert rows >= pk.MIN_BOX_ROWS and rows & (rows - 1) == 0  # a power of two
        assert d[1][pk.RECTS].shape[1] == rows
        assert (pk.CONTACT_CELLS in d[1]) == packed.needs_contact
        if packed.needs_contact:
            assert d[1][pk.CONTACT_CELLS].dtype == tf.uint8
            assert d[1][pk.CONTACT_CELLS].shape[1:] == (CROP // kw["cell_size"],) * 2 + (1,)
        assert d[0].shape[1:3] == ((CROP, 112) if kw.get("crop_on") else (CROP, CROP))
        image, out = packed.image(d[0], d[1]), packed.expand(d[1])
        _assert_equal(h, (image, *out) if packed.sample_weights else (image, out))
    if packed.needs_contact:  # the walls are in these crops: the weights are not all 1
        assert any(float(tf.reduce_max(h[2]["coverage"])) > 1 for h in host)


def test_box_rows_are_powers_of_two():
    got = [int(pk.box_rows(n)) for n in (0, 1, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000)]
    assert got == [32, 32, 32, 32, 64, 64, 64, 128, 128, 128, 256, 1024]


@pytest.mark.parametrize("target", ["oriented_detection", "detection"])
def test_detectnet_image_cut_in_the_step_equals_the_host_crop(known_dataset, target):
    """crop_on="device" for DetectNet with host targets (the interior target needs the
    sdf): the image leaves as the window's rows, the targets and weights are the host's,
    and the windows ride in the targets for the step."""
    from sn_tf.input.pipeline import image_cut

    kw = {"target": target, "augment": {"focus": 0.5, "flips": True, "rot90": True},
          "contact_weight": 1.0, "interior_level": 1.5, "cell_size": 8}
    host = _elements(known_dataset.converted, "device", **kw)
    device = _elements(known_dataset.converted, "device", crop_on="device", **kw)
    crop = image_cut(known_dataset.converted, "train", target, crop_size=CROP,
                     image_dtype="raw", crop_on="device", **{k: v for k, v in kw.items()
                                                           if k != "target"})
    assert crop == CROP and len(host) == len(device) > 0
    assert image_cut(known_dataset.converted, "train", target, crop_size=CROP,
                     image_dtype="raw") == 0  # crop_on="host"
    for h, d in zip(host, device, strict=True):
        assert d[0].shape[1:3] == (CROP, 112) and pk.WINDOW in d[1]
        targets = {k: v for k, v in d[1].items() if k != pk.WINDOW}
        _assert_equal(h, (pk.orient_crops(d[0], d[1][pk.WINDOW], CROP), targets, *d[2:]))


@pytest.mark.parametrize("kw, target", [
    ({"augment": {"scale_range": (0.8, 1.25)}, "boundary_weight": 2.0}, "segmentation"),
    ({"contact_weight": 1.0, "interior_level": 1.5}, "detection"),  # needs the sdf
    ({"contact_weight": 1.0, "reader": "record"}, "detection"),  # crops read one by one
    ({"interior_level": 1.5, "boundary_weight": 2.0}, "segmentation")])
def test_host_targets_where_the_stored_sdf_does_not_cross_the_batch(known_dataset, kw,
                                                                      target):
    """Scale jitter, DetectNet crops read one by one or with the interior target, or
    targets_on="host": finished targets, as before."""
    on = "host" if "interior_level" in kw else "device"
    assert packed_targets(known_dataset.converted, "train", target, crop_size=CROP,
                          targets_on=on, **kw) is None
    _assert_equal(_elements(known_dataset.converted, "host", target=target, **kw),
                  _elements(known_dataset.converted, on, target=target, **kw))


def test_targets_on_is_checked(known_dataset):
    with pytest.raises(ValueError, match=r"targets_on must be one of \('host', 'device'\)"):
        make_dataset(known_dataset.converted, "train", crop_size=CROP, targets_on="gpu")


# ---- the train step ---------------------------------------------------------------------
def _setup(tfr, sets, recipe="fcn:smoke"):
    from sn_tf.training import trainer
    from sn_tf.training.recipes import apply_overrides, load_recipe

    cfg = apply_overrides(load_recipe(recipe), sets + ["data.crop_size=64",
                                                       "data.batch_size=2"])
    return trainer.resolve(cfg, tfr)


def _first(ds):
    return next(iter(ds))


def _compiled(setup, weights=None):
    from sn_tf.training import trainer

    model = trainer.compile_model(trainer.build_model(setup), setup, 10, False)
    if weights is not None:
        model.set_weights(weights)
    return model


@pytest.mark.parametrize("sets, step", [
    ([], False),  # the FCN recipe: boundary, contact and interior weights, focus
    # crops cut in the step (crop_on="device") from here on
    (["model.contact=true", "model.sdf_bins=8", "data.core_weight=1.0",
      "data.crop_on=\"device\""], True),
    (["data.boundary_weight=null", "data.contact_weight=null", "data.interior_level=null",
      "model.interior=false", "data.augment={\"focus\": 0.0}",
      "data.crop_on=\"device\""], False),  # plain segmentation
    (["data.crop_on=\"device\"", "recipe=detectnet:smoke"], True),  # DetectNet: packed boxes
    # ... with the interior target: host targets, the image cut in the step
    (["model.aux_interior=true", "data.interior_level=1.5", "data.crop_on=\"device\"",
      "recipe=detectnet:smoke"], False)])
def test_train_step_on_packed_labels_equals_the_host_step(sample_tfr, sets, step,
                                                          monkeypatch):
    """The expanded element equals the host's for each case; one train step per family
    (``step``: the step's override is the same code for every case) gives the host step's
    losses, metrics and weights."""
    from sn_tf.input import pipeline
    from sn_tf.training import packed_step, trainer

    make = pipeline.make_dataset  # the same first batch on both paths
    monkeypatch.setattr(pipeline, "make_dataset",
                        lambda *a, **k: make(*a, deterministic=True, **k))

    recipe = next((x.split("=")[1] for x in sets if x.startswith("recipe=")), "fcn:smoke")
    sets = [x for x in sets if not x.startswith("recipe=")]
    host_setup = _setup(sample_tfr, sets + ["data.targets_on=\"host\"",
                                            "data.crop_on=\"host\""], recipe)
    setup = _setup(sample_tfr, sets + ["data.targets_on=\"device\""], recipe)
    assert packed_step.label_expander(host_setup) is None
    expand = packed_step.label_expander(setup)
    assert expand is not None
    host_el = _first(trainer.train_dataset(host_setup, 2))
    device_el = _first(trainer.train_dataset(setup, 2))
    assert pk.is_packed(device_el[1]) or pk.WINDOW in device_el[1]
    # the multi-worker step's view of the element
    x, y, w = packed_step.training_batch(device_el, expand)
    _assert_equal(tuple(host_el), (x, y, w) if w is not None else (x, y))
    if not step:
        return

    host = _compiled(host_setup)
    device = _compiled(setup, host.get_weights())
    packed_step.expand_in_step(device, expand)
    want = host.train_on_batch(*host_el, return_dict=True)
    got = device.train_on_batch(*device_el, return_dict=True)
    assert sorted(want) == sorted(got)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)
    for a, b in zip(host.get_weights(), device.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    # the model stays the plain functional model: it saves and loads as before
    assert type(device) is type(host)


def test_recipe_targets_on_is_checked(sample_tfr):
    from sn_tf.training import trainer

    with pytest.raises(trainer.ConfigError, match="data.targets_on 'gpu' unknown"):
        _setup(sample_tfr, ["data.targets_on=\"gpu\""])


@pytest.mark.parametrize("gpu", [False, True])
def test_auto_puts_targets_and_crops_where_they_were_measured_cheaper(monkeypatch, gpu):
    """data.targets_on / crop_on "auto": everything in the step with a GPU; on a CPU-only
    run the FCN's targets in the step, DetectNet's targets and every crop on the host."""
    from sn_tf.training import setup as st

    monkeypatch.setattr(st, "_gpu", lambda: gpu)
    assert st.resolved_targets_on("auto", "segmentation") == "device"
    for target in ("detection", "oriented_detection"):
        assert st.resolved_targets_on("auto", target) == ("device" if gpu else "host")
    assert st.resolved_crop_on("auto") == ("device" if gpu else "host")
    for value in ("host", "device"):  # explicit choices stand
        assert st.resolved_targets_on(value, "oriented_detection") == value
        assert st.resolved_crop_on(value) == value


MIRRORED_FIT = r"""
import json, sys
from sn_tf.utils.tfimport import tensorflow
tf = tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from sn_tf.training import trainer
from sn_tf.training.recipes import apply_overrides, load_recipe
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
cfg = apply_overrides(load_recipe("fcn:smoke"), [
    "train.epochs=1", "train.steps_per_epoch=2", "train.val_max_tiles=2",
    "train.postprocess_search=null", "data.targets_on=device", "data.crop_on=device"])
trainer.train(cfg, sys.argv[1], sys.argv[2], strategy=strategy, verbose=0)
log = open(sys.argv[2] + "/training_log.csv").read().splitlines()
row = dict(zip(log[0].split(","), log[-1].split(",")))
model = keras.saving.load_model(sys.argv[2] + "/checkpoints/last.keras", compile=False)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": float(row["loss"]),
                  "outputs": sorted(model.output_names)}))
"""


def test_fit_under_mirrored_strategy_takes_packed_labels(sample_tfr, tmp_path):
    """Keras' build from the first packed batch (the window's rows, crops cut in the
    step) under a strategy goes through the ``compute_loss`` / ``compute_metrics``
    overrides (2 logical CPUs as 2 replicas), and the checkpoint is the plain functional
    model."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    run = subprocess.run([sys.executable, "-c", MIRRORED_FIT, str(sample_tfr),
                          str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    assert out["outputs"] == ["footprint", "interior", "sdf"]
