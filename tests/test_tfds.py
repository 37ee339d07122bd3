"""A converted folder is a TensorFlow Datasets dataset directory, and its records parse with
plain tf.data from the published feature types alone (no sn_tf code on the reading side).

``tensorflow-datasets`` is a test dependency only (the ``test`` extra): the converter
writes TFDS's JSON files itself, without importing TF or TFDS."""

import json

import numpy as np
import pytest

from fixtures.datasets import write_dataset
from sn_tf.dataset import info as dsinfo
from sn_tf.dataset.reader import read_examples

tfds = pytest.importorskip("tensorflow_datasets")

TYPE = "MUL-PanSharpen"


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("tfds"))


def test_tfds_reads_every_record_of_every_split(fx):
    builder = tfds.builder_from_directory(str(fx.converted))
    info = dsinfo.load(fx.converted)
    assert set(builder.info.splits) == set(info.splits)
    for name, split in info.splits.items():
        assert builder.info.splits[name].num_examples == split.num_examples
        assert builder.info.splits[name].shard_lengths == [s.num_examples for s in split.shards]
        ids = [ex["tile"]["id"].decode()
               for ex in tfds.as_numpy(builder.as_dataset(split=name, shuffle_files=False))]
        assert len(ids) == split.num_examples and sorted(ids) == fx.tiles(name)
    # one record's image and labels, decoded from TFDS's dict, equal sn_tf's reading
    ex = next(iter(tfds.as_numpy(builder.as_dataset(split="val", shuffle_files=False))))
    mine = next(read_examples(fx.converted, "val"))
    assert ex["tile"]["id"].decode() == mine["tile_id"]
    img = ex["image"][TYPE]
    assert img["encoding"][0] == b"raw"
    data = np.frombuffer(img["data"][0], dtype=np.dtype(img["dtype"][0].decode()).newbyteorder("<"))
    np.testing.assert_array_equal(data.reshape(img["shape"][0]), mine["images"][TYPE]["data"])
    np.testing.assert_array_equal(ex["labels"][TYPE]["boxes_xyxy_px"],
                                  mine["labels"][TYPE]["boxes_xyxy_px"])
    # a tile of an AOI without a type: that type's features are there, empty
    paris = [e for e in tfds.as_numpy(builder.as_dataset(split="train"))
             if e["tile"]["aoi"] == b"AOI_3_Paris"][0]
    assert paris["image"]["RGB-PanSharpen"]["data"].shape == (0,)
    assert paris["image"]["RGB-PanSharpen"]["shape"].shape == (0, 3)


def _spec_from_published_types(tf, features: dict) -> dict:
    """tf.io parse spec from sn_tf_info.json's feature types alone (what a user without
    sn_tf writes): fixed-size required features FixedLenFeature, anything optional or
    variable FixedLenSequenceFeature(allow_missing=True) of the per-row shape."""
    spec = {}
    for key, ft in features.items():
        dtype = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}[ft["dtype"]]
        shape = ft["shape"]
        if not ft["optional"] and -1 not in shape:
            spec[key] = tf.io.FixedLenFeature(shape, dtype)
        else:
            row = shape[1:] if shape and shape[0] == -1 else shape
            spec[key] = tf.io.FixedLenSequenceFeature(row, dtype, allow_missing=True)
    return spec


def test_plain_tf_data_parses_a_record_from_the_published_types(fx):
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    doc = json.loads((fx.converted / dsinfo.INFO_FILE).read_text())
    spec = _spec_from_published_types(tf, doc["feature_spec"]["features"])
    files = sorted(str(p) for p in fx.converted.glob("*-val.tfrecord-*"))
    mine = {t["tile_id"]: t for t in read_examples(fx.converted, "val")}
    n = 0
    for rec in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(rec, spec)
        tile = mine[ex["tile/id"].numpy().decode()]
        for itype, img in tile["images"].items():
            shape = ex[f"image/{itype}/shape"].numpy()[0]
            dtype = ex[f"image/{itype}/dtype"].numpy()[0].decode()
            data = np.frombuffer(ex[f"image/{itype}/data"].numpy()[0], np.dtype(dtype))
            np.testing.assert_array_equal(data.reshape(shape), img["data"])
        boxes = ex[f"labels/{TYPE}/boxes_xyxy_px"].numpy()
        np.testing.assert_array_equal(boxes, tile["labels"][TYPE]["boxes_xyxy_px"])
        n += 1
    assert n == len(mine) == fx.info.split("val").num_examples
