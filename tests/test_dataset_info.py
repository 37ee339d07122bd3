"""The dataset's description (sn_tf.dataset.info): typed round trip, refusal of unknown
versions, the description sn_tf wrote before (dataset_info.json) still read, and every
reader failing with the shard's file name on a cut, truncated or corrupt shard."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from fixtures.datasets import legacy_description
from sn_tf.dataset import info as dsinfo
from sn_tf.dataset import schema, tfrecord
from sn_tf.dataset.reader import read_examples

REPO = pathlib.Path(__file__).resolve().parents[1]
CROP = 48
VEGAS = ("AOI_2_Vegas",)


@pytest.fixture(scope="session")
def fx(known_dataset):
    """The session's exactly-known converted dataset (conftest ``known_dataset``)."""
    return known_dataset


def _copy(fx, dest: pathlib.Path) -> pathlib.Path:
    shutil.copytree(fx.converted, dest, ignore=shutil.ignore_patterns(".sn_tf_work"))
    return dest


# ---- the description -------------------------------------------------------------------
def test_round_trip_and_the_questions_stages_ask(fx, tmp_path):
    info = dsinfo.load(fx.converted)
    assert info == fx.info and info.info_version == dsinfo.INFO_VERSION
    again = dsinfo.from_json(json.loads(json.dumps(info.to_json())), info.source)
    assert again == info
    saved = dsinfo.save(info, tmp_path)
    assert saved == dataclasses_replace_source(info, str(tmp_path / dsinfo.INFO_FILE))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset_info.json", "features.json",
                                                          "sn_tf_info.json"]
    # the questions
    assert info.image_type("PAN").bands == 1 and info.image_type("MUL").example_shape[2] == 8
    assert info.image_type("RGB-PanSharpen").label_grid == "MUL-PanSharpen"
    assert info.label_grid("MUL-PanSharpen").has("contact")
    assert info.aois_with(("RGB-PanSharpen",)) == VEGAS
    assert info.aois_with(("PAN",), "val") == ("AOI_2_Vegas", "AOI_3_Paris")
    val = info.split("val")
    assert sum(val.shard_counts().values()) == val.num_examples == len(fx.tiles("val"))
    assert val.examples_of(VEGAS) == len(fx.tiles("val", "AOI_2_Vegas"))
    assert len(info.stats("MUL-PanSharpen").mean) == 8
    # the published feature types: every key of a record, with its tf.io type
    features = json.loads((fx.converted / dsinfo.INFO_FILE).read_text())[
        "feature_spec"]["features"]
    assert set(features) == set(schema.feature_keys(sorted(info.image_types),
                                                    sorted(info.label_grids)))
    assert features[schema.image_key("PAN", "shape")] == {
        "dtype": "int64", "shape": [3], "optional": True}
    assert features[schema.label_key("MUL", "boxes_xyxy_px")] == {
        "dtype": "float32", "shape": [-1, 4], "optional": True}
    assert features[schema.KEY_TILE_ID] == {"dtype": "string", "shape": [], "optional": False}
    for error, match in ((lambda: info.split("test"), "no split 'test'"),
                         (lambda: info.image_type("3band"), "'3band' is not in this dataset"),
                         (lambda: info.stats("nope"), "no band statistics for nope")):
        with pytest.raises(dsinfo.InfoError, match=match):
            error()


def dataclasses_replace_source(info, source):
    import dataclasses

    return dataclasses.replace(info, source=source)


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(info_version=3), r"format version 3 is not known.*newer sn_tf"),
    (lambda d: d.update(schema_version=9), r"schema version 9 is not known.*upgrade sn_tf"),
    (lambda d: d["feature_spec"]["image_types"]["PAN"].pop("dtype"),
     r"feature_spec\.image_types\.PAN\.dtype is missing"),
    (lambda d: d["splits"]["val"].update(num_examples="3"),
     r"splits\.val\.num_examples must be int"),
    (lambda d: d["splits"]["val"]["shards"][0].update(num_examples=99),
     r"splits\.val: num_examples .* disagrees with its shards"),
    (lambda d: d["aois"].pop("AOI_3_Paris"), r"AOI\(s\) \['AOI_3_Paris'\].* not described"),
])
def test_bad_or_newer_descriptions_are_refused_naming_the_file(fx, tmp_path, change, match):
    doc = json.loads((fx.converted / dsinfo.INFO_FILE).read_text())
    change(doc)
    (tmp_path / dsinfo.INFO_FILE).write_text(json.dumps(doc))
    with pytest.raises(dsinfo.InfoError, match=match) as err:
        dsinfo.load(tmp_path)
    assert str(err.value).startswith(str(tmp_path / dsinfo.INFO_FILE))


def test_data_converted_before_still_reads(fx, tmp_path):
    """A folder with sn_tf's old dataset_info.json (no sn_tf_info.json, no TFDS files) is
    recognised by its content and read as before."""
    old = _copy(fx, tmp_path / "old")
    for name in (dsinfo.INFO_FILE, dsinfo.TFDS_FEATURES_FILE):
        (old / name).unlink()
    (old / dsinfo.TFDS_INFO_FILE).write_text(json.dumps(legacy_description(fx.converted)))
    info = dsinfo.load(old)
    assert info.info_version == 1 and info.source == str(old / "dataset_info.json")
    assert info.splits == fx.info.splits and info.image_types == fx.info.image_types
    assert info.aois_with(("RGB-PanSharpen",), "val") == VEGAS
    assert sorted(t["tile_id"] for t in read_examples(old, "val")) == fx.tiles("val")
    # TFDS's metadata alone (a conversion that did not finish): refused with the how-to
    (old / dsinfo.TFDS_INFO_FILE).write_text(
        json.dumps(dsinfo.tfds_dataset_info(fx.info)))
    with pytest.raises(dsinfo.InfoError, match="without sn_tf's sn_tf_info.json.*again"):
        dsinfo.load(old)
    (old / dsinfo.TFDS_INFO_FILE).unlink()
    with pytest.raises(dsinfo.InfoError, match="sn_tf_info.json: not found"):
        dsinfo.load(old)


def test_legacy_resampled_types_count_for_aois_with_their_parts():
    doc = {"image_types": ["MUL", "MUL-PanSharpen"]}
    assert dsinfo._stored_types(doc["image_types"], {"MUL", "MUL-PanSharpen",
                                                     "MUL@MUL-PanSharpen", "3band"}) == (
        "MUL", "MUL-PanSharpen", "MUL@MUL-PanSharpen")
    assert dsinfo._stored_types(["3band", "8band"], {"MUL@MUL-PanSharpen"}) == (
        "3band", "8band")


# ---- integrity on read -----------------------------------------------------------------
def _damage(folder: pathlib.Path, kind: str) -> pathlib.Path:
    """Damage the val shard holding most records: "cut" after its first record,
    "truncated" inside its second, "corrupt": 8 bytes flipped inside its second."""
    name = max(dsinfo.load(folder).split("val").shards, key=lambda s: s.num_examples).file
    assert dsinfo.load(folder).split("val").shard_counts()[name] >= 2
    path = folder / name
    data = bytearray(path.read_bytes())
    first = 16 + int.from_bytes(data[:8], "little")
    if kind == "cut":
        data = data[:first]
    elif kind == "truncated":
        data = data[:first + 1000]
    else:
        data[first + 5000:first + 5008] = bytes(255 - b for b in data[first + 5000:first + 5008])
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def damaged(fx, tmp_path_factory):
    """{kind: (folder, damaged shard path)} for "cut", "truncated", "corrupt"."""
    out = {}
    for kind in ("cut", "truncated", "corrupt"):
        folder = _copy(fx, tmp_path_factory.mktemp(kind) / "data")
        out[kind] = folder, _damage(folder, kind)
    return out


KINDS = ("cut", "truncated", "corrupt")


@pytest.mark.parametrize("kind", KINDS)
def test_read_examples_names_the_damaged_shard(damaged, kind):
    folder, shard = damaged[kind]
    with pytest.raises(dsinfo.ShardError, match=shard.name):
        list(read_examples(folder, "val"))
    with pytest.raises(dsinfo.ShardError, match=shard.name):  # the file alone, in its folder
        list(read_examples(shard))


def test_framing_walk_counts_records_and_finds_truncation(fx, damaged):
    for s in fx.info.split("val").shards:
        assert tfrecord.count_records(fx.converted / s.file) == s.num_examples
    with pytest.raises(tfrecord.TFRecordError, match="truncated"):
        tfrecord.count_records(damaged["truncated"][1])
    assert tfrecord.count_records(damaged["corrupt"][1]) >= 2  # payloads are not read


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("training", [False, True])
def test_make_dataset_names_the_damaged_shard(damaged, kind, training):
    from sn_tf.input.pipeline import make_dataset
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    folder, shard = damaged[kind]
    # training reads by window by default (reader="ranged"): its index walk catches cut
    # and truncated shards, but a payload corrupted in place shows only in the record's
    # data CRC, which only the record reader checks (BUILD_NOTES section 1, integrity)
    reader = "record" if kind == "corrupt" else "ranged"
    with pytest.raises((dsinfo.ShardError, tf.errors.InvalidArgumentError),
                       match=shard.name):
        ds = make_dataset(folder, "val", training=training, crop_size=CROP, batch_size=1,
                          repeat=False if training else None, reader=reader)
        for _ in ds:
            pass


def test_predict_from_tfrecords_exits_with_one_line_naming_the_shard(damaged, tmp_path):
    from fixtures.models import make_model_dir, tiny_model
    from sn_tf.serving import exporter

    mdir = make_model_dir(tmp_path / "m", tiny_model("fcn"), kind="fcn", stride=4)
    export = exporter.export_model(mdir, tmp_path / "export")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for kind in ("cut", "corrupt"):
        folder, shard = damaged[kind]
        run = subprocess.run(
            [sys.executable, "-m", "sn_tf.predict", f"--saved_model={export}",
             f"--from_tfrecords={folder}", "--split=val",
             f"--output={tmp_path / kind / 'p.csv'}", "--noprogress"],
            capture_output=True, text=True, env=env, timeout=300)
        errors = [line for line in run.stderr.splitlines() if "sn_tf.predict: error" in line]
        assert run.returncode == 1 and len(errors) == 1, run.stderr[-2000:]
        assert str(shard) in errors[0] and "Traceback" not in run.stderr


# ---- one question, one answer: the resampled type over data that also holds Rio ---------
def test_training_a_resampled_type_beside_an_aoi_without_it(tmp_path):
    """Training on ``MUL@MUL-PanSharpen`` over data that also holds Rio (which has neither
    MUL nor MUL-PanSharpen): the trainer and the pipeline ask the description the same
    question (``aois_with``), so training picks Vegas alone and its input builds."""
    from sn_tf.dataset import converter
    from sn_tf.spacenet.synthetic import write_sample
    from sn_tf.training import packed_step, trainer
    from sn_tf.training.recipes import apply_overrides, load_recipe

    write_sample(tmp_path / "src", aois=("AOI_2_Vegas", "AOI_1_Rio"), tiles_per_aoi=2)
    cfg = converter.ConvertConfig(num_workers=1, progress=False, splits=(("train", 1.0),),
                                  image_types=("MUL", "MUL-PanSharpen", "3band"),
                                  resample_to="MUL-PanSharpen")
    info = converter.convert(tmp_path / "src", tmp_path / "out", cfg).info
    assert set(info.split("train").aois) == {"AOI_1_Rio", "AOI_2_Vegas"}
    assert info.aois_with(("MUL@MUL-PanSharpen",)) == ("AOI_2_Vegas",)
    recipe = apply_overrides(load_recipe("fcn:smoke"), [
        'data.image_types=["MUL@MUL-PanSharpen"]', 'data.val_split="train"'])
    setup = trainer.resolve(recipe, tmp_path / "out")
    assert setup.aois == ["AOI_2_Vegas"]
    image, targets, _ = packed_step.training_batch(
        next(iter(trainer.train_dataset(setup, batch_size=2))), packed_step.label_expander(setup))
    assert image.shape[0] == 2 and image.shape[-1] == 8 and "footprint" in targets
