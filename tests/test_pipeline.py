"""make_dataset / make_examples on a converted fixture with exactly known polygons.

The fixture's MUL-PanSharpen bands 1..3 hold (row, column, tile number), so with
``normalization=None`` every output pixel tells which source pixel it came from; each
test derives the crop/symmetry (or scale) from that and compares the labels with the
fixture polygons moved by the same transform.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import shapely
from shapely import affinity

from fixtures.datasets import rewritten_dataset
from sn_tf.dataset import labels, schema
from sn_tf.input import pipeline
from sn_tf.input import targets as tg
from sn_tf.input.pipeline import make_dataset, make_examples, steps_per_epoch
from sn_tf.input.plan import _check_types
from sn_tf.dataset.reader import read_examples
from sn_tf.input.targets import decode_detectnet_targets, decode_oriented_targets
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
REPO = pathlib.Path(__file__).resolve().parents[1]
CROP = 64
T = 32.0  # the converter's default sdf truncation
VEGAS = ["AOI_2_Vegas"]


@pytest.fixture(scope="session")
def fx(known_dataset):
    """The session's exactly-known converted dataset (conftest ``known_dataset``)."""
    return known_dataset


def _train(fx, **kw):
    args = dict(target="all", crop_size=CROP, batch_size=2, normalization=None,
                deterministic=True, repeat=1, seed=5)
    return make_examples(fx.converted, "train", **{**args, **kw})


def _batches(ds, n=None):
    """The first n (default: all) batches of ``ds`` as numpy dicts."""
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(-1 if n is None else n)]


def _examples(ds):
    """Unbatched numpy examples (boxes without padding rows)."""
    for b in _batches(ds):
        for i in range(len(b["image"])):
            ex = {k: v[i] for k, v in b.items()}
            box = ex["boxes"]
            ex["boxes"] = box[(box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])]
            yield ex


def _tile_of(fx, ex):
    number = int(round(ex["image"][0, 0, 2]))
    tile_id = ex["tile_id"].decode()
    assert fx.numbers[tile_id] == number  # image and tile id travel together
    return tile_id


def _transform(ex):
    """Signed-permutation affine of an integer crop + symmetry, from the row/col channels.

    Returns (shapely affine params mapping tile pixels -> crop pixels, rows, cols).
    """
    rows = np.rint(ex["image"][..., 0]).astype(int)
    cols = np.rint(ex["image"][..., 1]).astype(int)
    a, b = cols[0, 1] - cols[0, 0], cols[1, 0] - cols[0, 0]
    d, e = rows[0, 1] - rows[0, 0], rows[1, 0] - rows[0, 0]
    m = np.array([[a, b], [d, e]])
    assert sorted(np.abs(m).ravel().tolist()) == [0, 0, 1, 1], m  # a symmetry, no scaling
    jj, ii = np.meshgrid(np.arange(CROP) + 0.5, np.arange(CROP) + 0.5)
    c0 = cols[0, 0] + 0.5 - (a + b) * 0.5
    f0 = rows[0, 0] + 0.5 - (d + e) * 0.5
    np.testing.assert_array_equal(cols + 0.5, a * jj + b * ii + c0)  # one affine everywhere
    np.testing.assert_array_equal(rows + 0.5, d * jj + e * ii + f0)
    inv = m.T  # orthogonal
    params = [inv[0, 0], inv[0, 1], inv[1, 0], inv[1, 1],
              -(inv[0, 0] * c0 + inv[0, 1] * f0), -(inv[1, 0] * c0 + inv[1, 1] * f0)]
    return params, rows, cols, m


def _expected_boxes(polys, params, crop, min_visible=0.25):
    """Tile boxes (polygon bounds) moved by ``params``, clipped, with the drop rule."""
    out, kept_polys = [], []
    for p in polys:
        b = affinity.affine_transform(shapely.box(*p.bounds), params).bounds
        c = np.clip(b, 0, crop)
        area = (b[2] - b[0]) * (b[3] - b[1])
        vis = (c[2] - c[0]) * (c[3] - c[1])
        if vis > 0 and vis >= min_visible * area:
            out.append(c)
            kept_polys.append(p)
    return np.array(out, np.float32).reshape(-1, 4), kept_polys


def _sorted(boxes):
    boxes = np.asarray(boxes).reshape(-1, 4)
    return boxes[np.lexsort(boxes.T[::-1])]


def _assert_labels_on_polygons(fx, ex) -> np.ndarray:
    """Check one training crop's labels against its tile's moved polygons; returns the
    crop's symmetry matrix."""
    tile = _tile_of(fx, ex)
    params, rows, cols, m = _transform(ex)
    moved = [affinity.affine_transform(p, params) for p in fx.polygons[tile]]
    want = labels.rasterize_mask(moved, CROP, CROP)
    np.testing.assert_array_equal(ex["footprint"][..., 0], want)  # 0 mismatching pixels
    np.testing.assert_array_equal(ex["footprint"][..., 0], fx.mask(tile)[rows, cols])
    # sdf: sign equals the mask; value = tile distance at the source pixel, truncated
    np.testing.assert_array_equal(ex["sdf"][..., 0] >= 0, want > 0)
    dist = fx.distance(tile)[rows, cols]
    sdf = np.clip(np.where(want > 0, dist, -dist), -T, T)
    np.testing.assert_allclose(ex["sdf"][..., 0], sdf, atol=0.02)
    # boxes: the moved, clipped tile boxes under the drop rule, enclosing their pixels
    boxes, kept = _expected_boxes(fx.polygons[tile], params, CROP)
    np.testing.assert_allclose(_sorted(ex["boxes"]), _sorted(boxes), atol=1e-3)
    for p, box in zip(kept, boxes, strict=True):
        comp = labels.rasterize_mask([affinity.affine_transform(p, params)], CROP, CROP)
        r, c = np.nonzero(comp)
        assert np.all((c + 0.5 >= box[0]) & (c + 0.5 <= box[2]))
        assert np.all((r + 0.5 >= box[1]) & (r + 0.5 <= box[3]))
        assert np.all(ex["footprint"][r, c, 0] == 1)
    return m


@pytest.mark.parametrize("image_dtype", ["float32", "raw"])
def test_crops_and_symmetries_keep_labels_on_the_polygons(fx, image_dtype):
    # without scale jitter the row flip happens while decoding, the rest on 2-D views
    examples = list(_examples(_train(fx, repeat=3, aois=VEGAS, image_dtype=image_dtype)))
    assert len(examples) == 14  # 5 tiles x 3 epochs, in full batches of 2
    assert examples[0]["image"].dtype == (np.uint16 if image_dtype == "raw" else np.float32)
    symmetries = {_assert_labels_on_polygons(fx, ex).tobytes() for ex in examples}
    # 4 of the 8 symmetries flip rows while decoding: 5 distinct ones include both kinds
    assert len(symmetries) >= 5


@pytest.mark.parametrize("image_dtype", ["float32", "raw"])
def test_contact_target_follows_every_crop_and_symmetry(fx, image_dtype):
    """The contact layer (row houses share a wall in every tile) is cut and turned with
    the image: each crop pixel holds the stored contact of its source pixel."""
    kw = dict(repeat=3, aois=VEGAS, image_dtype=image_dtype)
    plain = list(_examples(_train(fx, **kw)))
    examples = list(_examples(_train(fx, contact=True, **kw)))
    assert len(examples) == len(plain) == 14
    seen = 0
    for ex, ref in zip(examples, plain, strict=True):
        for key in ("image", "footprint", "sdf", "boxes"):  # the other targets unchanged
            np.testing.assert_array_equal(ex[key], ref[key])
        tile = _tile_of(fx, ex)
        _, rows, cols, _ = _transform(ex)
        assert ex["contact"].dtype == np.float32 and ex["contact"].shape == (CROP, CROP, 1)
        np.testing.assert_array_equal(ex["contact"][..., 0], fx.contact(tile)[rows, cols])
        seen += int(ex["contact"].sum() > 0)
    assert seen >= 5  # the shared walls are in most crops


def test_contact_weight_and_evaluation_targets(fx):
    ds = make_dataset(fx.converted, "train", crop_size=CROP, batch_size=2, normalization=None,
                      deterministic=True, repeat=1, seed=5, aois=VEGAS, contact=True,
                      contact_weight=4.0, boundary_weight=None)
    ref = make_dataset(fx.converted, "train", crop_size=CROP, batch_size=2, normalization=None,
                       deterministic=True, repeat=1, seed=5, aois=VEGAS, contact=True)
    (_, y, w), (_, y0) = next(iter(ds)), next(iter(ref))
    assert sorted(y) == sorted(w) == ["contact", "footprint", "sdf"]
    np.testing.assert_array_equal(y["contact"], y0["contact"])
    np.testing.assert_array_equal(w["sdf"].numpy(), 1.0 + 4.0 * y["contact"].numpy())
    # weights only: no contact target, the same map
    _, y2, w2 = next(iter(make_dataset(
        fx.converted, "train", crop_size=CROP, batch_size=2, normalization=None,
        deterministic=True, repeat=1, seed=5, aois=VEGAS, contact_weight=4.0)))
    assert sorted(y2) == ["footprint", "sdf"]
    np.testing.assert_array_equal(w2["footprint"], w["footprint"])
    # evaluation: whole tiles, contact padded with 0 like the footprint
    batch = next(iter(make_examples(fx.converted, "val", training=False, batch_size=1,
                                    normalization=None, contact=True)))
    tile = batch["tile_id"].numpy()[0].decode()
    h, w_ = fx.sizes[tile]
    np.testing.assert_array_equal(batch["contact"].numpy()[0, :h, :w_, 0], fx.contact(tile))
    assert not batch["contact"].numpy()[0, h:].any()


def test_contact_cells_marks_cells_within_one_cell_of_a_contact_pixel():
    contact = np.zeros((1, 32, 48, 1), np.float32)
    contact[0, 5, 20] = 1.0                        # in cell (0, 2) of 8 px cells
    expected = np.zeros((1, 4, 6, 1), np.float32)
    expected[0, 0:2, 1:4] = 1.0                    # that cell and its neighbours
    np.testing.assert_array_equal(tg.near_cells(tg.held_cells(contact, 8)).numpy(), expected)
    contact[0, 31, 47] = 1.0                       # the last cell of 16 px cells
    expected = np.array([[1, 1, 1], [1, 1, 1]], np.float32)[None, ..., None]
    np.testing.assert_array_equal(tg.near_cells(tg.held_cells(contact, 16)).numpy(), expected)
    assert not tg.near_cells(tg.held_cells(np.zeros((1, 32, 32, 1), np.float32),
                                           16)).numpy().any()


@pytest.mark.parametrize("cell_size", [16, 8])
def test_detection_contact_weight_weighs_the_cells_near_shared_walls(fx, cell_size):
    kw = dict(crop_size=CROP, batch_size=2, normalization=None, deterministic=True, repeat=1,
              seed=5, aois=VEGAS)
    det = dict(kw, target="oriented_detection", cell_size=cell_size)
    _, y, w = next(iter(make_dataset(fx.converted, "train", contact_weight=3.0, **det)))
    _, y0 = next(iter(make_dataset(fx.converted, "train", **det)))
    assert sorted(y) == sorted(w) == ["bbox", "coverage", "orient"]
    for k in y:  # the targets do not change
        np.testing.assert_array_equal(y[k], y0[k])
    # the same crops with the contact layer as a segmentation target
    _, seg = next(iter(make_dataset(fx.converted, "train", contact=True, **kw)))
    near = tg.near_cells(tg.held_cells(seg["contact"], cell_size)).numpy()
    assert near.any() and not near.all()           # the row houses' wall, not everywhere
    for k in w:
        np.testing.assert_array_equal(w[k].numpy(), 1.0 + 3.0 * near)


def test_interior_target_is_the_sdf_above_the_level(fx):
    kw = dict(crop_size=CROP, batch_size=2, normalization=None, deterministic=True, repeat=1,
              seed=5, aois=VEGAS)
    _, y = next(iter(make_dataset(fx.converted, "train", interior_level=1.5, **kw)))
    assert sorted(y) == ["footprint", "interior", "sdf"]
    np.testing.assert_array_equal(y["interior"].numpy(), (y["sdf"].numpy() > 1.5))
    # the two row houses of every tile share a wall: their cores are apart
    tile_core = fx.distance(fx.tiles("train", VEGAS[0])[0]) > 1.5
    assert tile_core.any()
    for bad in (-1.0, 100.0, "2"):
        with pytest.raises(ValueError, match="interior_level"):
            make_dataset(fx.converted, "train", interior_level=bad, **kw)


def test_core_weight_weighs_the_interior_target_by_depth(fx):
    """``core_weight`` c adds c * clip((sdf - level) / CORE_RAMP_PX, 0, 1) to the interior
    target's weights only; the other targets keep the boundary / contact map."""
    kw = dict(crop_size=CROP, batch_size=2, normalization=None, deterministic=True, repeat=1,
              seed=5, aois=VEGAS, interior_level=1.5, contact_weight=2.0)
    _, y, w = next(iter(make_dataset(fx.converted, "train", core_weight=3.0, **kw)))
    _, y0, w0 = next(iter(make_dataset(fx.converted, "train", **kw)))
    for k in y:
        np.testing.assert_array_equal(y[k], y0[k])
    sdf = y["sdf"].numpy()
    depth = np.clip((sdf - 1.5) / pipeline.CORE_RAMP_PX, 0.0, 1.0)
    np.testing.assert_allclose(w["interior"].numpy(), w0["interior"].numpy() + 3.0 * depth,
                               rtol=1e-6)
    assert (depth > 0.25).any() and (w["interior"].numpy() > w0["interior"].numpy()).any()
    for k in ("footprint", "sdf"):
        np.testing.assert_array_equal(w[k], w0[k])
    for bad in (-1.0, "2", True):
        with pytest.raises(ValueError, match="core_weight"):
            make_dataset(fx.converted, "train", core_weight=bad, **kw)
    with pytest.raises(ValueError, match="core_weight"):  # no interior target to weigh
        make_dataset(fx.converted, "train", core_weight=1.0,
                     **dict(kw, interior_level=None))


def test_focus_moves_every_crop_onto_a_wall_and_keeps_labels_aligned(fx):
    """With focus 1 every crop holds contact pixels (each fixture tile has two row houses
    sharing a wall), and image, labels and boxes stay together."""
    examples = list(_examples(_train(fx, repeat=2, aois=VEGAS, contact=True,
                                     augment={"focus": 1.0})))
    assert len(examples) == 10
    for ex in examples:
        assert ex["contact"].sum() > 0
        _assert_labels_on_polygons(fx, ex)
        tile = _tile_of(fx, ex)
        _, rows, cols, _ = _transform(ex)
        np.testing.assert_array_equal(ex["contact"][..., 0], fx.contact(tile)[rows, cols])
    plain = list(_examples(_train(fx, repeat=2, aois=VEGAS)))
    assert sum(int(_transform(a)[1][0, 0] != _transform(b)[1][0, 0]) or
               int(_transform(a)[2][0, 0] != _transform(b)[2][0, 0])
               for a, b in zip(examples, plain)) > 0  # focus moved some windows


def test_contact_needs_schema_3_data(fx, tmp_path):
    def drop_contact(ex):
        for key in list(ex.features.feature):
            if key.endswith(("/contact", "/rects_px")):
                del ex.features.feature[key]

    old = rewritten_dataset(fx, tmp_path / "v2", drop_contact, schema_version=2)
    info = json.loads((old / "dataset_info.json").read_text())  # the legacy description
    for grid in info["feature_spec"]["label_grids"].values():
        del grid["arrays"]["contact"]
    (old / "dataset_info.json").write_text(json.dumps(info))
    for kw in ({"contact": True}, {"contact_weight": 2.0}, {"augment": {"focus": 0.5}}):
        with pytest.raises(ValueError, match="convert the data again"):
            make_dataset(old, "train", crop_size=CROP, **kw)
    next(iter(make_dataset(old, "train", crop_size=CROP, batch_size=2)))  # trains without
    with pytest.raises(ValueError, match="segmentation"):
        make_dataset(fx.converted, "train", target="detection", crop_size=CROP, contact=True)
    with pytest.raises(ValueError, match="contact_weight"):
        make_dataset(fx.converted, "train", crop_size=CROP, contact_weight=-1.0)


def test_crops_per_tile_gives_distinct_aligned_crops_in_consecutive_batches(fx):
    ds = _train(fx, repeat=1, aois=VEGAS, crops_per_tile=3, batch_size=2)
    batches = _batches(ds)
    assert len(batches) == 7  # 5 tiles x 3 crops, full batches of 2
    # a batch never holds two crops of one tile, except at the end of a finite stream
    # (5 tiles interleaved 2 at a time: the fifth tile's crops come last, together)
    for b in batches[:-1]:
        assert len(set(b["tile_id"].tolist())) == 2
    per_tile = {}
    for ex in _examples(ds):
        _assert_labels_on_polygons(fx, ex)
        per_tile.setdefault(ex["tile_id"], []).append(ex["image"][..., :2].tobytes())
    assert sorted(len(v) for v in per_tile.values()) == [2, 3, 3, 3, 3]  # one crop dropped
    for crops in per_tile.values():  # each crop has its own window / symmetry draw
        assert len(set(crops)) == len(crops)
    again = _batches(_train(fx, repeat=1, aois=VEGAS, crops_per_tile=3, batch_size=2))
    for x, y in zip(batches, again, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_scale_jitter_resamples_mask_nearest_and_scales_sdf_and_boxes(fx):
    ds = _train(fx, aois=VEGAS, repeat=2,
                augment={"scale_range": (0.7, 1.4), "flips": True, "rot90": True})
    scales, compared = [], 0
    for ex in _examples(ds):
        tile = _tile_of(fx, ex)
        # bilinear row/col channels: value + 0.5 = continuous source coordinate
        inner = slice(3, CROP - 3)
        jj, ii = np.meshgrid(np.arange(CROP) + 0.5, np.arange(CROP) + 0.5)
        design = np.column_stack([jj[inner, inner].ravel(), ii[inner, inner].ravel(),
                                  np.ones(jj[inner, inner].size)])
        fit_x = np.linalg.lstsq(design, ex["image"][inner, inner, 1].ravel() + 0.5, rcond=None)[0]
        fit_y = np.linalg.lstsq(design, ex["image"][inner, inner, 0].ravel() + 0.5, rcond=None)[0]
        a = np.array([fit_x[:2], fit_y[:2]])
        s = 1 / np.sqrt(abs(np.linalg.det(a)))
        scales.append(s)
        src_x = fit_x[0] * jj + fit_x[1] * ii + fit_x[2]
        src_y = fit_y[0] * jj + fit_y[1] * ii + fit_y[2]
        rows, cols = np.floor(src_y).astype(int), np.floor(src_x).astype(int)
        np.testing.assert_array_equal(ex["footprint"][..., 0], fx.mask(tile)[rows, cols])
        np.testing.assert_array_equal(ex["sdf"][..., 0] >= 0, ex["footprint"][..., 0] > 0)
        dist = fx.distance(tile)[rows, cols] * s
        want = np.clip(np.where(ex["footprint"][..., 0] > 0, dist, -dist), -T, T)
        np.testing.assert_allclose(ex["sdf"][..., 0], want, atol=0.05)
        inv = np.linalg.inv(a)
        t = -inv @ np.array([fit_x[2], fit_y[2]])
        params = [inv[0, 0], inv[0, 1], inv[1, 0], inv[1, 1], t[0], t[1]]
        boxes, _ = _expected_boxes(fx.polygons[tile], params, CROP)
        got = _sorted(ex["boxes"])
        # boxes within 0.02 px; a box at the visibility threshold may differ by fit error
        assert abs(len(got) - len(boxes)) <= 1
        if len(got) == len(boxes):
            np.testing.assert_allclose(got, _sorted(boxes), atol=0.02)
            compared += 1
    assert min(scales) < 0.95 and max(scales) > 1.05
    assert compared >= 0.8 * len(scales)


def test_raw_scale_jitter_is_the_float_resample_rounded(fx):
    jitter = {"scale_range": (0.7, 1.4), "flips": True, "rot90": True}
    got = _batches(_train(fx, aois=VEGAS, augment=jitter, image_dtype="raw"))
    want = _batches(_train(fx, aois=VEGAS, augment=jitter))  # normalization=None: raw floats
    assert got[0]["image"].dtype == np.uint16
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g["image"], np.clip(np.round(w["image"]), 0, 65535))
        np.testing.assert_array_equal(g["sdf"], w["sdf"])


@pytest.mark.parametrize("image_dtype", ["raw", "bfloat16", "float16"])
def test_image_dtypes_deliver_the_float32_values(fx, image_dtype):
    import keras  # noqa: F401  (normalization_layer builds a Keras layer)

    from sn_tf.input.pipeline import normalization_layer

    kw = {"normalization": "dataset_info", "repeat": 2}
    want = _batches(_train(fx, **kw))
    got = _batches(_train(fx, image_dtype=image_dtype, **kw))
    norm = normalization_layer(fx.info, ("MUL-PanSharpen",))
    for g, w in zip(got, want, strict=True):
        for k in ("footprint", "sdf", "coverage", "bbox", "boxes"):
            np.testing.assert_array_equal(g[k], w[k])
        if image_dtype == "raw":
            assert g["image"].dtype == np.uint16
            np.testing.assert_allclose(norm(g["image"]).numpy(), w["image"], rtol=1e-6,
                                       atol=1e-5)
        else:  # normalised in float32, then cast
            assert g["image"].dtype == tf.as_dtype(image_dtype).as_numpy_dtype
            np.testing.assert_array_equal(
                g["image"], tf.cast(w["image"], image_dtype).numpy())


def test_raw_evaluation_pads_with_the_band_mean(fx):
    from sn_tf.input.pipeline import normalization_layer

    args = {"training": False, "batch_size": 3, "target": "all", "aois": VEGAS}
    want = _batches(make_examples(fx.converted, "val", **args))
    got = _batches(make_examples(fx.converted, "val", image_dtype="raw", **args))
    norm = normalization_layer(fx.info, ("MUL-PanSharpen",))
    mean = np.array(fx.info.stats("MUL-PanSharpen").mean, np.float32)
    for g, w in zip(got, want, strict=True):
        assert g["image"].dtype == np.float32 and g["image"].shape == w["image"].shape
        valid = g["valid"][..., 0] > 0
        assert not valid.all()  # the batch holds padding (tiles of different sizes)
        np.testing.assert_allclose(g["image"][~valid], np.broadcast_to(mean, (
            (~valid).sum(), 8)), rtol=1e-6)
        z = norm(g["image"]).numpy()
        assert np.all(z[~valid] == 0)  # the model sees exactly the float32 pipeline's padding
        np.testing.assert_allclose(z, w["image"], rtol=1e-6, atol=1e-5)
        for k in ("footprint", "sdf", "valid", "height", "width"):
            np.testing.assert_array_equal(g[k], w[k])


def test_ragged_box_batches_equal_unbatched_boxes(fx):
    one = {ex["tile_id"]: ex for ex in _examples(_train(fx, batch_size=1, aois=VEGAS))}
    batches = _batches(_train(fx, batch_size=4, aois=VEGAS))
    counts = set()
    for b in batches:
        n = b["boxes"].shape[1]
        assert b["boxes"].shape == (4, n, 4) and b["boxes"].dtype == np.float32
        for i, tile in enumerate(b["tile_id"]):
            want = one[tile]["boxes"]
            counts.add(len(want))
            np.testing.assert_array_equal(b["boxes"][i, :len(want)], want)
            assert not b["boxes"][i, len(want):].any()  # zero rows = padding
            np.testing.assert_array_equal(b["coverage"][i], one[tile]["coverage"])
            np.testing.assert_array_equal(b["bbox"][i], one[tile]["bbox"])
    assert len(counts) > 1  # examples of one batch had different numbers of boxes


def test_same_seed_same_batches_different_seed_different(fx):
    def take(seed, n=3):
        ds = _train(fx, seed=seed, repeat=None, normalization="dataset_info",
                    augment={"gain": 0.1, "offset_std": 0.1, "noise_std": 0.1})
        return _batches(ds, n)

    a, b, c = take(1), take(1), take(2)
    for x, y in zip(a, b, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert not all(np.array_equal(x["image"], z["image"]) for x, z in zip(a, c, strict=True))




@pytest.mark.parametrize("case", ["version 1", "stale offsets"])
def test_windows_cut_from_the_record_equal_parsed_ones(fx, tmp_path, case):
    # version 2 records say where their pixel payloads start, so training windows are cut
    # from the record without parsing (copying) the payloads first; version 1 data (no
    # offsets) and records whose offsets no longer match (re-serialized with one more
    # feature in front of the payloads) take the parsed path, with the same crops
    def drop_offsets(ex):
        for key in list(ex.features.feature):
            if key.endswith(("/payload_offset", "/payload_offsets")):
                del ex.features.feature[key]
        ex.features.feature[schema.KEY_SCHEMA_VERSION].int64_list.value[:] = [1]

    def shift_payloads(ex):
        ex.features.feature["a/first"].bytes_list.value.append(b"moves every payload")

    if case == "version 1":
        data = rewritten_dataset(fx, tmp_path / "v1", drop_offsets, schema_version=1)
    else:
        data = rewritten_dataset(fx, tmp_path / "shifted", shift_payloads)
    kw = dict(target="all", crop_size=CROP, batch_size=2, deterministic=True, repeat=2,
              seed=5, aois=VEGAS, image_dtype="raw", reader="record")
    assert pipeline.load_info(data).schema_version == (1 if case == "version 1" else
                                                       schema.SCHEMA_VERSION)
    key = schema.image_key("MUL-PanSharpen", "data")
    for folder, cut in ((fx.converted, True), (data, False)):  # where the windows come from
        record = next(iter(tf.data.TFRecordDataset(sorted(map(str, folder.glob("*train*"))))))
        feat = tf.io.parse_single_example(record, schema.tf_feature_spec(["MUL-PanSharpen"],
                                                                        []))
        offset = schema.tf_decode_offsets(feat[schema.image_key("MUL-PanSharpen",
                                                                "payload_offset")])
        nbytes = len(feat[key].numpy())
        source, base = schema.tf_payload(record, key, offset[0] if len(offset) else 0, nbytes)
        assert (int(base) > 0) == cut
        assert tf.strings.substr(source, base, nbytes).numpy() == feat[key].numpy()
    want = _batches(make_examples(fx.converted, "train", **kw))
    got = _batches(make_examples(data, "train", **kw))
    assert len(want) == len(got) == 5
    for x, y in zip(want, got, strict=True):
        for k in ("image", "footprint", "sdf", "boxes", "tile_id"):
            np.testing.assert_array_equal(x[k], y[k])


def test_unordered_training_still_draws_the_same_crop_per_tile_and_epoch(fx):
    def crops(seed):
        ds = _train(fx, seed=seed, batch_size=1, deterministic=False, aois=VEGAS)
        return sorted((ex["tile_id"], ex["image"][..., :2].tobytes()) for ex in _examples(ds))

    first = crops(3)
    assert len(first) == 5 and first == crops(3)
    assert first != crops(4)


def test_evaluation_reads_every_tile_once_in_order_with_georeference(fx):
    ds = make_examples(fx.converted, "val", target="all", training=False, batch_size=3,
                       normalization=None)
    seen = []
    for ex in _examples(ds):
        tile = ex["tile_id"].decode()
        seen.append(tile)
        h, w = fx.sizes[tile]
        hp, wp = ex["image"].shape[:2]
        assert (ex["height"], ex["width"]) == (h, w)
        assert hp % 16 == 0 and wp % 16 == 0 and hp >= h and wp >= w
        valid = np.zeros((hp, wp), bool)
        valid[:h, :w] = True
        np.testing.assert_array_equal(ex["valid"][..., 0], valid)
        assert np.all(ex["image"][~valid] == 0)
        np.testing.assert_array_equal(ex["image"][:h, :w, 0], np.arange(h)[:, None] * np.ones(w))
        np.testing.assert_array_equal(ex["footprint"][:h, :w, 0], fx.mask(tile))
        assert np.all(ex["footprint"][~valid] == 0) and np.all(ex["sdf"][~valid] == -T)
        np.testing.assert_allclose(ex["transform_gdal"], fx.transforms[tile])
        assert ex["crs"] == b"EPSG:4326"
        want = [p.bounds for p in fx.polygons[tile]]
        np.testing.assert_allclose(_sorted(ex["boxes"]), _sorted(want), atol=1e-3)
    order = [t["tile_id"] for t in read_examples(fx.converted, "val", decode_polygons=False)]
    assert seen == order and sorted(seen) == fx.tiles("val")


def test_eval_dataset_normalises_pads_and_works_with_keras_predict(fx):
    import keras

    ds = make_dataset(fx.converted, "val", training=False, batch_size=2)
    image, targets, weights = next(iter(ds))
    assert image.shape[1] % 32 == 0 and image.shape[2] % 32 == 0  # segmentation default pad
    stats = fx.info.stats("MUL-PanSharpen")
    tile = next(read_examples(fx.converted, "val", decode_polygons=False))
    raw = tile["images"]["MUL-PanSharpen"]["data"].astype(np.float64)
    h, w = raw.shape[:2]
    want = (raw - np.array(stats.mean)) / np.array(stats.std)
    np.testing.assert_allclose(image[0, :h, :w].numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(weights["footprint"][0, ..., 0].numpy() > 0,
                                  np.pad(np.ones((h, w)), [(0, image.shape[1] - h),
                                                           (0, image.shape[2] - w)]) > 0)
    inputs = keras.Input((None, None, 8))
    outputs = {"footprint": keras.layers.Conv2D(1, 1, name="footprint")(inputs),
               "sdf": keras.layers.Conv2D(1, 1, name="sdf")(inputs)}
    model = keras.Model(inputs, outputs)
    pred = model.predict(make_dataset(fx.converted, "val", training=False, batch_size=1),
                         verbose=0)
    assert pred["footprint"].shape[0] == len(fx.tiles("val"))


def test_keras_fit_with_boundary_weights(fx):
    import keras

    ds = make_dataset(fx.converted, "train", crop_size=CROP, batch_size=2,
                      boundary_weight=4.0, aois=VEGAS)
    image, targets, weights = next(iter(ds))
    w = weights["footprint"].numpy()
    sdf = targets["sdf"].numpy()
    np.testing.assert_allclose(w, 1 + 4 * np.exp(-sdf ** 2 / 18), rtol=1e-5)
    assert w.max() > 4.9 and w.min() < 1.01
    inputs = keras.Input((CROP, CROP, 8))
    outputs = {"footprint": keras.layers.Conv2D(1, 1, name="footprint")(inputs),
               "sdf": keras.layers.Conv2D(1, 1, name="sdf")(inputs)}
    model = keras.Model(inputs, outputs)
    model.compile("sgd", loss={"footprint": keras.losses.BinaryCrossentropy(from_logits=True),
                               "sdf": "mse"})
    hist = model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert steps_per_epoch(fx.converted, "train", 2, aois=VEGAS) == 2


@pytest.mark.parametrize("types,bands,channels", [
    (("PAN",), None, 1),
    (("RGB-PanSharpen",), None, 3),
    (("MUL-PanSharpen",), None, 8),
    (("MUL-PanSharpen", "RGB-PanSharpen"), None, 11),
    (("MUL-PanSharpen", "PAN"), {"MUL-PanSharpen": [3, 1, 2]}, 4),
])
def test_shapes_dtypes_and_band_stacking(fx, types, bands, channels):
    ds = make_dataset(fx.converted, "train", target="detection", image_types=types,
                      bands=bands, crop_size=CROP, batch_size=2, aois=VEGAS)
    image_spec, target_spec = ds.element_spec
    assert image_spec.shape.as_list() == [2, CROP, CROP, channels]
    assert image_spec.dtype == tf.float32
    assert target_spec["coverage"].shape.as_list() == [2, 4, 4, 1]
    assert target_spec["bbox"].shape.as_list() == [2, 4, 4, 9]
    image, _ = next(iter(ds))
    assert image.shape == (2, CROP, CROP, channels) and np.isfinite(image.numpy()).all()
    if "MUL-PanSharpen" not in types:
        return
    ex = next(_examples(_train(fx, image_types=types, bands=bands, aois=VEGAS)))
    img = ex["image"]
    rc_number = (1, 2, 0) if bands else (0, 1, 2)  # bands [3, 1, 2] = (number, row, col)
    rows, cols = (np.rint(img[..., c]).astype(int) for c in rc_number[:2])
    tile = ex["tile_id"].decode()
    assert fx.numbers[tile] == img[0, 0, rc_number[2]]
    raw = next(t for t in read_examples(fx.converted, "train", decode_polygons=False)
               if t["tile_id"] == tile)["images"]
    k = 0
    for t in types:  # every type's channels come from the same source pixels
        sel = [b - 1 for b in bands[t]] if bands and t in bands else slice(None)
        want = raw[t]["data"][rows, cols][..., sel]
        np.testing.assert_array_equal(ex["image"][..., k:k + want.shape[-1]], want)
        k += want.shape[-1]
    assert k == channels


def test_detectnet_targets_decode_back_to_the_crop_boxes(fx):
    n_decoded = 0
    for ex in _examples(_train(fx, aois=VEGAS, repeat=2)):
        decoded, _ = decode_detectnet_targets(ex["coverage"], ex["bbox"], cell_size=16)
        boxes = ex["boxes"]
        for d in decoded:  # every decoded box is one of the crop's boxes (within a pixel)
            assert np.min(np.abs(boxes - d).max(axis=1)) < 1.0
        n_decoded += len(decoded)
        owners = {tuple(np.round(d, 2)) for d in decoded}
        for b in boxes:  # a box without cells lost them all to a smaller box
            if tuple(np.round(b, 2)) not in owners:
                area = (b[2] - b[0]) * (b[3] - b[1])
                assert any((o[2] - o[0]) * (o[3] - o[1]) <= area for o in decoded)
    assert n_decoded > 10


def test_rotated_rectangles_follow_crops_and_symmetries_and_decode_back(fx):
    n_decoded = 0
    for ex in _examples(_train(fx, aois=VEGAS, repeat=2, target="oriented_detection")):
        params, _, _, _ = _transform(ex)
        tile = _tile_of(fx, ex)
        boxes, kept = _expected_boxes(fx.polygons[tile], params, CROP)
        rects = ex["rects"][:len(ex["boxes"])].reshape(-1, 4, 2)
        assert not ex["rects"][len(ex["boxes"]):].any()  # padding rows
        order = np.lexsort(np.asarray(boxes).T[::-1])
        got = np.lexsort(ex["boxes"].T[::-1])
        for k, g in zip(order, got):  # each kept building's whole rectangle, moved
            want = affinity.affine_transform(shapely.Polygon(
                labels.rotated_rects_px([kept[k]])[0]), params).exterior.coords[:4]
            # the same ring up to its start (the converter's polygon may start elsewhere)
            assert any(np.allclose(np.roll(rects[g], k, axis=0), want, atol=1e-3) or
                       np.allclose(np.roll(rects[g][::-1], k, axis=0), want, atol=1e-3)
                       for k in range(4)), (rects[g], want)
        # oblique buildings not cut by the crop decode back to their rectangle
        glide = ex["orient"][..., 3] > 0
        decoded, _ = decode_oriented_targets(glide.astype(np.float32), ex["bbox"], ex["orient"])
        for d in decoded:
            inside = [r for r in rects if r.min() >= -1 and r.max() <= CROP + 1]
            assert min(np.abs(np.sort(r, 0) - np.sort(d, 0)).max() for r in inside) < 0.05
        n_decoded += len(decoded)
    assert n_decoded >= 5


def test_keras_targets_of_oriented_detection(fx):
    ds = make_dataset(fx.converted, "train", target="oriented_detection", crop_size=CROP,
                      batch_size=2, repeat=1, sample_weights=True)
    _, targets, weights = next(iter(ds))
    assert sorted(targets) == sorted(weights) == ["bbox", "coverage", "orient"]
    assert targets["orient"].shape[1:] == (CROP // 16, CROP // 16, 5)
    _, targets = next(iter(make_dataset(fx.converted, "train", target="detection",
                                        crop_size=CROP, batch_size=2, repeat=1)))
    assert sorted(targets) == ["bbox", "coverage"]


def test_aoi_selection_and_missing_type_in_an_aoi(fx):
    types = ("MUL-PanSharpen", "RGB-PanSharpen")  # Paris has no RGB-PanSharpen
    with pytest.raises(ValueError, match="AOI_3_Paris.*RGB-PanSharpen"):
        make_dataset(fx.converted, "train", image_types=types, crop_size=CROP,
                     aois=["AOI_2_Vegas", "AOI_3_Paris"])
    # by default: the AOIs that have all the requested types
    ds = make_examples(fx.converted, "val", training=False, image_types=types, batch_size=4)
    ids = [t.decode() for b in _batches(ds) for t in b["tile_id"]]
    assert sorted(ids) == fx.tiles("val", "AOI_2_Vegas")
    ds = _train(fx, image_types=types, repeat=2)
    assert {t.decode().rsplit("_", 1)[0] for b in _batches(ds) for t in b["tile_id"]} == set(
        VEGAS)
    vegas = fx.info.aois["AOI_2_Vegas"]
    info = dataclasses.replace(fx.info, aois={**fx.info.aois, "AOI_2_Vegas": dataclasses.replace(
        vegas, image_types=tuple(t for t in vegas.image_types if t != "RGB-PanSharpen"))})
    with pytest.raises(ValueError, match="no AOI in split 'val' has all of.*Paris lacks"):
        _check_types(info, types, "val", None)
    ds = make_examples(fx.converted, "val", training=False, aois=["AOI_3_Paris"],
                       batch_size=4)
    ids = [t.decode() for b in _batches(ds) for t in b["tile_id"]]
    assert ids == fx.tiles("val", "AOI_3_Paris")


@pytest.mark.parametrize("kw,match", [
    (dict(image_types=("MUL-PanSharpen", "MUL")), "share one pixel grid"),
    (dict(image_types=("3band",)), r"not in this dataset"),
    (dict(bands={"PAN": [2]}, image_types=("PAN",)), r"1-based band indices in 1..1"),
    (dict(bands={"PAN": [1]}), r"not in image_types"),
    (dict(bands={"MUL-PanSharpen": []}), r"non-empty"),
    (dict(target="detection", crop_size=40), "not a multiple of the DetectNet cell_size"),
    (dict(crop_size=512), "exceeds the tiles"),
    (dict(target="mask"), "target must be"),
    (dict(training=False, repeat=True), "exactly once"),
    (dict(normalization="minmax"), "normalization must be"),
    (dict(normalization={"mean": [0] * 3, "std": [1] * 3}), "length 8"),
    (dict(augment={"spin": 1}), "unknown augment option"),
    (dict(boundary_weight=2.0, target="detection"), "boundary_weight"),
    (dict(target="detection", training=False, pad_to_multiple=24),
     "multiple of the DetectNet cell_size"),
    (dict(batch_size=0), "batch_size"),
    ({"image_dtype": "uint8"}, "image_dtype must be one of"),
    ({"image_dtype": "raw", "augment": {"gain": 0.1}}, "radiometric augmentation"),
    ({"image_dtype": "raw", "augment": {"noise_std": 0.1}}, "radiometric augmentation"),
    (dict(repeat=-2), "repeat"),
    (dict(crops_per_tile=0), "crops_per_tile must be a positive int"),
    (dict(training=False, crops_per_tile=2), "crops_per_tile applies to training"),
])
def test_bad_configurations_raise_clear_errors(fx, kw, match):
    args = dict(crop_size=CROP, aois=VEGAS)
    with pytest.raises(ValueError, match=match):
        make_dataset(fx.converted, "train", **{**args, **kw})


def test_unknown_split_and_folder(fx, tmp_path):
    with pytest.raises(ValueError, match="no split 'test'"):
        make_dataset(fx.converted, "test")
    with pytest.raises(ValueError, match="sn_tf_info.json: not found"):
        make_dataset(tmp_path, "train")


def test_input_context_shards_evaluation_exactly_once(fx):
    files = fx.info.split("val").shards
    for n in (2, len(files) + 1):  # by file, then by record (more pipelines than files)
        ids = []
        for i in range(n):
            ctx = tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=i,
                                             num_replicas_in_sync=n)
            ds = make_examples(fx.converted, "val", training=False, batch_size=n,
                               input_context=ctx)
            for b in _batches(ds):
                assert len(b["tile_id"]) == 1  # per-replica batch = global / replicas
                ids += [t.decode() for t in b["tile_id"]]
        assert sorted(ids) == fx.tiles("val")


DISTRIBUTED = r"""
import json, sys
from sn_tf.utils.tfimport import tensorflow
tf = tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from sn_tf import make_dataset
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
data_dir = sys.argv[1]
def fn(ctx):
    return make_dataset(data_dir, "train", crop_size=64, batch_size=4, input_context=ctx,
                        aois=["AOI_2_Vegas"])
dist = strategy.distribute_datasets_from_function(fn)
image, targets = next(iter(dist))
local = strategy.experimental_local_results(image)
print(json.dumps({"replicas": strategy.num_replicas_in_sync,
                  "shapes": [list(x.shape) for x in local],
                  "devices": [x.device for x in local],
                  "sdf": [list(x.shape) for x in strategy.experimental_local_results(
                      targets["sdf"])]}))
"""


def test_mirrored_strategy_gives_each_replica_its_batch(fx):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", DISTRIBUTED, str(fx.converted)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["shapes"] == [[2, 64, 64, 8], [2, 64, 64, 8]]
    assert out["sdf"] == [[2, 64, 64, 1], [2, 64, 64, 1]]
    assert out["devices"][0] != out["devices"][1]


@pytest.mark.parametrize("truncation", [5.0, 50.0])  # below: stored sdf; above: distance
def test_sdf_truncation_re_clips(fx, truncation):
    ds = make_examples(fx.converted, "val", training=False, batch_size=1,
                       sdf_truncation=truncation, aois=VEGAS)
    for ex in _examples(ds):
        tile = ex["tile_id"].decode()
        h, w = fx.sizes[tile]
        d = fx.distance(tile)
        want = np.clip(np.where(fx.mask(tile) > 0, d, -d), -truncation, truncation)
        np.testing.assert_allclose(ex["sdf"][:h, :w, 0], want, atol=0.05)
        assert np.all(ex["sdf"][h:, :, 0] == -truncation)


@pytest.mark.parametrize("normalization", ["percentile", "explicit", None])
def test_normalization_options(fx, normalization):
    stats = fx.info.stats("PAN")
    if normalization == "explicit":
        norm, lo, span = {"mean": [100.0], "std": [4.0]}, 100.0, 4.0
    elif normalization == "percentile":
        norm, lo, span = "percentile", stats.p1[0], stats.p99[0] - stats.p1[0]
    else:
        norm, lo, span = None, 0.0, 1.0
    ds = make_examples(fx.converted, "val", training=False, batch_size=1,
                       image_types=("PAN",), normalization=norm)
    ex = next(_examples(ds))
    raw = next(read_examples(fx.converted, "val", decode_polygons=False))
    assert raw["tile_id"] == ex["tile_id"].decode()
    pan = raw["images"]["PAN"]["data"][..., 0].astype(np.float64)
    h, w = pan.shape
    np.testing.assert_allclose(ex["image"][:h, :w, 0], (pan - lo) / span, rtol=1e-5, atol=1e-5)


def test_show_batch_renders_a_png(fx, tmp_path):
    import rasterio

    sys.path.insert(0, str(REPO / "tools"))
    import show_batch

    out = show_batch.render(fx.converted, tmp_path / "batch.png", crop_size=CROP,
                            batch_size=2, augment=None, image_types=("MUL-PanSharpen",))
    with rasterio.open(tmp_path / "batch.png") as ds:
        png = np.moveaxis(ds.read(), 0, -1)
    np.testing.assert_array_equal(png, out)
    assert png.shape == (4 + 2 * (CROP + 4), 4 + 3 * (CROP + 4), 3)
    assert np.all(png == show_batch.YELLOW, axis=-1).any()  # boxes drawn
    assert np.all(png == show_batch.CYAN, axis=-1).any()  # decoded DetectNet boxes drawn


def test_detection_evaluation_weights_cover_cells_with_real_pixels(fx):
    ds = make_dataset(fx.converted, "val", target="detection", training=False, batch_size=4)
    image, targets, weights = next(iter(ds))
    meta = next(iter(make_examples(fx.converted, "val", target="detection", training=False,
                                   batch_size=4)))
    cells = weights["coverage"].numpy()[..., 0]
    assert cells.shape == targets["coverage"].shape[:3]
    assert image.shape[1] == 16 * cells.shape[1] and image.shape[2] == 16 * cells.shape[2]
    for b, (h, w) in enumerate(zip(meta["height"].numpy(), meta["width"].numpy(),
                                   strict=True)):
        want = np.zeros(cells.shape[1:])
        want[:-(-h // 16), :-(-w // 16)] = 1  # cells holding at least one real pixel
        np.testing.assert_array_equal(cells[b], want)
        assert not targets["coverage"].numpy()[b, ..., 0][want == 0].any()


def test_resampled_type_stacks_with_types_of_its_grid(fx, tmp_path):
    from sn_tf.dataset import converter

    cfg = converter.ConvertConfig(num_workers=1, progress=False, aois=("AOI_2_Vegas",),
                                  image_types=("PAN", "MUL", "MUL-PanSharpen"),
                                  resample_to="MUL-PanSharpen", resample_types=("MUL",))
    converter.convert(fx.source, tmp_path, cfg)
    ds = make_dataset(tmp_path, "train", image_types=("MUL@MUL-PanSharpen", "PAN"),
                      crop_size=CROP, batch_size=2)
    image, targets = next(iter(ds))
    assert image.shape == (2, CROP, CROP, 9) and targets["sdf"].shape == (2, CROP, CROP, 1)
    with pytest.raises(ValueError, match="share one pixel grid"):
        make_dataset(tmp_path, "train", image_types=("MUL", "PAN"), crop_size=16)


def test_importing_the_pipeline_sets_tensorflows_environment_first():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS",
                                                            "TF_CPP_MIN_LOG_LEVEL")}
    code = ("import os, sn_tf.input.pipeline; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), "
            "os.environ.get('TF_CPP_MIN_LOG_LEVEL'))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**env, "PYTHONPATH": str(REPO)}, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["0", "2"]
    assert "oneDNN custom operations are on" not in run.stderr


def test_read_buffer_only_for_remote_files():
    # local shards are read unbuffered (one copy fewer per MB-sized record); gs:// etc.
    # keep TF's buffer, where every small read would be a request
    assert pipeline._read_buffer_size(["/data/a.tfrecord", "rel/b.tfrecord"]) == 0
    assert pipeline._read_buffer_size(["/data/a.tfrecord", "gs://bucket/b.tfrecord"]) is None
