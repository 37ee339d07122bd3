"""Ranged reads (``reader="ranged"``, sn_tf.input.ranged): training crops read only their
window rows from the shard files and equal the crops of the record reader, for every
target, option and data version; the index checks the shards; fallbacks where it cannot
apply."""

import os
import shutil

import numpy as np
import pytest

from fixtures.datasets import rewritten_dataset
from sn_tf.dataset import schema
from sn_tf.dataset.info import ShardError
from sn_tf.dataset.reader import shards
from sn_tf.input import ranged
from sn_tf.input import targets as tg
from sn_tf.input.config import InputConfig
from sn_tf.input.pipeline import make_dataset, make_examples
from sn_tf.input.plan import _plan
from sn_tf.dataset.info import load as load_info
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
CROP = 64
VEGAS = ["AOI_2_Vegas"]
KEYS = ("image", "footprint", "sdf", "boxes", "rects", "coverage", "bbox", "orient",
        "tile_id", "contact")


def _batches(folder, reader, **kw):
    args = dict(target="all", crop_size=CROP, batch_size=2, normalization=None,
                deterministic=True, repeat=2, seed=5, aois=VEGAS)
    ds = make_examples(folder, "train", reader=reader, **{**args, **kw})
    return [{k: v.numpy() for k, v in b.items()} for b in ds]


def _assert_same(folder, **kw):
    want, got = _batches(folder, "record", **kw), _batches(folder, "ranged", **kw)
    assert len(want) == len(got) > 0
    for x, y in zip(want, got, strict=True):
        assert sorted(x) == sorted(y)
        for k in KEYS:
            if k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("kw", [
    {}, {"image_dtype": "raw"}, {"augment": False},
    {"augment": {"scale_range": (0.8, 1.25)}}, {"crops_per_tile": 3, "image_dtype": "raw"},
    {"target": "oriented_detection"}, {"contact": True, "image_dtype": "raw"},
    {"bands": {"MUL-PanSharpen": (3, 1)}}, {"aois": None},
    {"sdf_truncation": 40.0},  # mask (zlib, in the index) + distance (by window)
    {"augment": {"focus": 0.7}, "image_dtype": "raw"},  # contact (zlib) picks windows
    {"augment": {"focus": 1.0}, "contact": True, "target": "segmentation"}])
def test_ranged_crops_equal_record_crops(known_dataset, kw):
    _assert_same(known_dataset.converted, **kw)


@pytest.mark.parametrize("extra", [
    {}, {"augment": {"focus": 0.7}, "contact_weight": 5.0, "interior_level": 1.5},
    {"augment": {"focus": 1.0}},  # focus alone: the contact layer only moves the windows
    {"target": "oriented_detection", "augment": {"focus": 0.5}, "contact_weight": 1.0}])
def test_keras_elements_equal(known_dataset, extra):
    """The shipped recipes' shapes too: the FCN's focus, contact weights and interior
    target, DetectNet's focus and cell weights (both read ranged)."""
    kw = dict(crop_size=CROP, batch_size=2, deterministic=True, repeat=1, seed=2,
              image_dtype="raw", boundary_weight=2.0, **extra)
    if kw.get("target") == "oriented_detection":
        del kw["boundary_weight"]
    a = list(make_dataset(known_dataset.converted, "train", reader="record", **kw))
    b = list(make_dataset(known_dataset.converted, "train", reader="ranged", **kw))
    info = load_info(known_dataset.converted)
    cfg = InputConfig(**{k: v for k, v in kw.items() if k != "target"})
    target = kw.get("target", "segmentation")
    assert _plan(info, "train", cfg, target=target, training=True,
                 labels=target != "segmentation").ranged  # as make_dataset plans it
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        tf.nest.map_structure(lambda u, v: np.testing.assert_array_equal(u, v), x, y)




def test_version_1_data_and_other_serializers_read_ranged(known_dataset, tmp_path):
    # the walk finds the payloads itself: no offsets needed, any entry order
    def drop_offsets(ex):
        for key in list(ex.features.feature):
            if key.endswith(("/payload_offset", "/payload_offsets")):
                del ex.features.feature[key]
        ex.features.feature[schema.KEY_SCHEMA_VERSION].int64_list.value[:] = [1]
        ex.features.feature["a/first"].bytes_list.value.append(b"x" * 70000)

    old = rewritten_dataset(known_dataset, tmp_path / "v1", drop_offsets, schema_version=1)
    assert load_info(old).schema_version == 1
    want = _batches(known_dataset.converted, "record", image_dtype="raw")
    got = _batches(old, "ranged", image_dtype="raw")
    for x, y in zip(want, got, strict=True):
        for k in ("image", "sdf", "boxes", "tile_id"):
            np.testing.assert_array_equal(x[k], y[k])


def test_read_window_reads_rows_columns_and_reversed_rows(tmp_path):
    a = np.arange(7 * 9 * 3, dtype="<u2").reshape(7, 9, 3)
    path = tmp_path / "a.bin"
    path.write_bytes(b"head" + a.tobytes() + b"tail")
    for y0, x0, win, flip in ((0, 0, 7, False), (2, 3, 5, True), (1, 4, 5, False)):
        got = ranged.read_window(str(path).encode(), 4, 9, 6, y0, x0, win, flip)
        want = a[y0:y0 + win, x0:x0 + win]
        want = want[::-1] if flip else want
        np.testing.assert_array_equal(got.view("<u2").reshape(win, win, 3), want)
    with pytest.raises(ShardError, match="a.bin"):
        ranged.read_window(str(path).encode(), 400, 9, 6, 0, 0, 5, False)


def test_index_checks_counts_and_truncation(known_dataset, tmp_path):
    data = tmp_path / "copy"
    shutil.copytree(known_dataset.converted, data)
    first = shards(data, "train")[0]
    spec = {schema.KEY_TILE_ID}
    payload = {schema.image_key("MUL-PanSharpen", "data")}
    ix = ranged.index_shard(first.path, first.num_examples, spec, payload)
    assert len(ix.small) == first.num_examples
    parsed = tf.io.parse_single_example(ix.small[0], {
        schema.KEY_TILE_ID: tf.io.FixedLenFeature([], tf.string)})
    assert parsed[schema.KEY_TILE_ID].numpy().startswith(b"AOI_")
    with pytest.raises(ShardError, match="description says"):
        ranged.index_shard(first.path, first.num_examples + 1, spec, payload)
    size = os.path.getsize(first.path)
    with open(first.path, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(ShardError, match=os.path.basename(first.path)):
        ranged.index_shard(first.path, first.num_examples, spec, payload)
    with pytest.raises(ShardError, match=os.path.basename(first.path)):
        make_examples(data, "train", crop_size=CROP, reader="ranged")


def test_where_ranged_does_not_apply_the_record_reader_is_used(known_dataset):
    info = load_info(known_dataset.converted)

    def plan(training=True, **kw):
        cfg = InputConfig(crop_size=CROP, **kw)
        return _plan(info, "train", cfg, target="segmentation", training=training)

    assert plan().ranged and not plan(reader="record").ranged
    assert not plan(training=False).ranged  # evaluation reads whole records
    # focus decodes the whole contact layer: ranged while it is compressed (in the index)
    assert plan(augment={"focus": 0.5}).ranged
    assert info.label_grid(plan().grid).arrays["contact"].encoding == "zlib"
    from sn_tf.input.augment import augment_config
    from sn_tf.input.plan import _ranged
    types = plan().types
    assert not _ranged("ranged", types, "raw", augment_config({"focus": 0.5}))
    assert _ranged("ranged", types, "raw", augment_config(None))
    with pytest.raises(ValueError, match="reader must be one of"):
        plan(reader="mmap")


def test_zlib_labels_travel_in_the_index(known_dataset):
    # the converter stores the mask zlib-compressed ("auto"), which cannot be read by
    # window: a truncation above the stored one decodes mask (from the index's small
    # Example) + distance (by window); the equality is test_ranged_crops_equal_record_crops
    info = load_info(known_dataset.converted)
    cfg = InputConfig(crop_size=CROP, sdf_truncation=40.0)
    p = _plan(info, "train", cfg, target="segmentation", training=True)
    assert info.label_grid(p.grid).arrays["mask"].encoding == "zlib"
    assert p.label_fields == ("mask", "distance") and p.ranged and not p.batch_read
    from sn_tf.input.decode import _cut_payloads
    assert [k.rsplit("/", 1)[-1] for k in _cut_payloads(p)] == ["data", "distance"]


def test_read_crops_applies_the_split_symmetry_into_pooled_aligned_batches(tmp_path):
    tiles = [np.random.default_rng(i).integers(0, 60000, (9, 11, 3)).astype("<u2")
             for i in range(2)]
    path = tmp_path / "t.bin"
    path.write_bytes(b"xx" + tiles[0].tobytes() + tiles[1].tobytes())
    pos = [2, 2 + tiles[0].nbytes]
    pool = ranged.BufferPool()
    for rows, cols, t in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]:
        got = ranged.read_crops(pool, "uint16", 3, 5, [str(path).encode()] * 2, pos,
                                [tiles[0].nbytes] * 2, [9, 9], [11, 11], [1, 4], [6, 0],
                                [rows] * 2, [cols] * 2, [t] * 2)
        assert got.ctypes.data % 4096 == 0 and got.flags.c_contiguous
        for i, (y0, x0) in enumerate(((1, 6), (4, 0))):
            want = tiles[i][y0:y0 + 5, x0:x0 + 5]
            want = want[::-1] if rows else want
            want = want[:, ::-1] if cols else want
            want = want.transpose(1, 0, 2) if t else want
            np.testing.assert_array_equal(got[i], want)
        held = got.ctypes.data
        assert pool.take(got.shape, got.dtype).ctypes.data != held  # got is still held
    with pytest.raises(ShardError, match="t.bin"):
        ranged.read_crops(pool, "uint16", 3, 5, [str(path).encode()], [2], [7], [9], [11],
                          [0], [0], [0], [0], [0])


def test_sparse_layers_cut_the_window_and_apply_the_split_symmetry():
    import zlib

    tiles = [np.random.default_rng(i).integers(0, 2, (9, 11)).astype(np.uint8) * (i + 1)
             for i in range(2)]
    small = np.array([tf.train.Example(features=tf.train.Features(feature={
        "c": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[zlib.compress(t.tobytes())]))})).SerializeToString() for t in tiles],
        object)
    layers = ranged.SparseLayers(small, "c", "uint8")
    flat, values = layers.get(1, 9, 11)  # the pixels > 0, their stored values
    np.testing.assert_array_equal(flat, np.flatnonzero(tiles[1]))
    np.testing.assert_array_equal(values, tiles[1].ravel()[flat])
    for rows, cols, t in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]:
        got = ranged.sparse_crops(layers, "uint8", 5, [0, 1], [9, 9], [11, 11], [1, 4],
                                  [6, 0], [rows] * 2, [cols] * 2, [t] * 2)
        assert got.shape == (2, 5, 5, 1) and got.dtype == np.uint8
        for i, (y0, x0) in enumerate(((1, 6), (4, 0))):
            want = tiles[i][y0:y0 + 5, x0:x0 + 5]
            want = want[::-1] if rows else want
            want = want[:, ::-1] if cols else want
            want = want.T if t else want
            np.testing.assert_array_equal(got[i, :, :, 0], want)
        # DetectNet's contact cells (2 px cells of a 4 px crop): the crop's held cells
        cells = ranged.sparse_cells(layers, 4, 2, [0, 1], [9, 9], [11, 11], [1, 4], [6, 0],
                                    [rows] * 2, [cols] * 2, [t] * 2)
        crops = ranged.sparse_crops(layers, "uint8", 4, [0, 1], [9, 9], [11, 11], [1, 4],
                                    [6, 0], [rows] * 2, [cols] * 2, [t] * 2)
        assert cells.shape == (2, 2, 2, 1) and cells.dtype == np.uint8
        np.testing.assert_array_equal(cells, tg.held_cells(crops, 2).numpy())
    # the window's rows for the train step: the tile's columns, zero right of a narrow one
    got = ranged.sparse_rows(layers, "uint8", 5, 13, [0, 1], [9, 9], [11, 11], [1, 4], [6, 0])
    assert got.shape == (2, 5, 13, 1)
    np.testing.assert_array_equal(got[0, :, :11, 0], tiles[0][1:6])
    assert not got[:, :, 11:].any()
    got = ranged.sparse_rows(layers, "uint8", 5, 7, [0, 1], [9, 9], [11, 11], [1, 4], [6, 0])
    np.testing.assert_array_equal(got[0, :, :, 0], tiles[0][1:6, 4:11])  # span < width:
    np.testing.assert_array_equal(got[1, :, :, 0], tiles[1][4:9, 0:7])  # kept inside
    with pytest.raises(ShardError, match="not 9 x 12"):
        ranged.SparseLayers(small, "c", "uint8").get(0, 9, 12)
    with pytest.raises(ShardError, match="lacks its x layer"):
        ranged.SparseLayers(small, "x", "uint8").get(0, 9, 11)
    with pytest.raises(ShardError, match="does not inflate"):
        ranged.inflate_layer("uint8", b"junk", 9, 11)


def test_buffer_pool_reuses_only_released_buffers():
    pool = ranged.BufferPool()
    a = pool.take((4, 4), "float16")
    address = a.ctypes.data
    b = pool.take((4, 4), "float16")
    assert b.ctypes.data != address  # a is still held
    del a
    assert pool.take((4, 4), "float16").ctypes.data == address


def test_raw_single_type_plans_read_whole_batches(known_dataset):
    info = load_info(known_dataset.converted)

    def plan(**kw):
        cfg = InputConfig(crop_size=CROP, **kw)
        return _plan(info, "train", cfg, target="segmentation", training=True)

    assert plan(image_dtype="raw").batch_read
    assert not plan().batch_read  # float32 delivery normalises per example
    assert not plan(image_dtype="raw", bands={"MUL-PanSharpen": (1, 2)}).batch_read
    assert not plan(image_dtype="raw", augment={"scale_range": (0.8, 1.2)}).batch_read
    assert not plan(image_dtype="raw", reader="record").batch_read
    # the shipped recipes' shape: contact weights add the (zlib) contact layer, inflated
    # per crop into the batch; focus picks the windows
    assert plan(image_dtype="raw", contact_weight=5.0, augment={"focus": 0.7}).batch_read
    assert plan(image_dtype="raw", contact=True).batch_read
    # mask (zlib) + distance: per example
    assert not plan(image_dtype="raw", sdf_truncation=40.0).batch_read
