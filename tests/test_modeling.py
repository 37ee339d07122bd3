"""Tests of sn_tf.modeling: model shapes/dtypes, training, losses, mixed precision, saving.

Models here are tiny (width 4, a few thousand to ~25k parameters, 32..64 px inputs) so the
whole file runs in well under a minute on a CPU.
"""

import numpy as np
import pytest
from scipy import ndimage

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from sn_tf import modeling  # noqa: E402
from sn_tf.modeling import (BboxLoss, CoverageLoss, FootprintLoss, SdfBinsLoss,  # noqa: E402
                            SdfLoss, build_detectnet, build_fcn, build_model, fcn_stride,
                            losses_for, metrics_for, sdf_bin_centers, sdf_bin_edges,
                            sdf_from_bin_logits, sdf_to_bins, stride_for,
                            with_sdf_bins_target)

TRUNCATION = 6.0
TINY_FCN = dict(width=4, depth=2, blocks=1)
TINY_DETECTNET = dict(width=4, blocks=(1, 1))
# the options models/detectnet.py turns on: stride-8 features and a shared 3x3 head conv
TINY_DETECTNET_PLUS = dict(TINY_DETECTNET, fine_features=True, head_convs=1)
# the same on a grid of 8-pixel cells
TINY_DETECTNET_8 = dict(TINY_DETECTNET_PLUS, cell_size=8)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture
def mixed_bfloat16():
    """Run a test under the mixed_bfloat16 policy and always restore float32."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- synthetic data

def _signed_distance(mask: np.ndarray, truncation: float) -> np.ndarray:
    """The contract's sdf of a boolean [H, W] mask: +d inside, -d outside, 0 on the boundary."""
    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1),
                                   border_value=1)
    boundary = mask & ~inner
    if not boundary.any():
        distance = np.full(mask.shape, mask.shape[0] + mask.shape[1], np.float64)
    else:
        distance = ndimage.distance_transform_edt(~boundary)
    return np.clip(np.where(mask, distance, -distance), -truncation, truncation).astype(np.float32)


def _square_batch(n: int, size: int, bands: int, rng):
    """Images with bright squares on noise -> (x [n,s,s,bands], {"footprint", "sdf"} targets)."""
    x = rng.normal(0.0, 0.3, size=(n, size, size, bands)).astype(np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        for _ in range(2):
            side = int(rng.integers(size // 6, size // 3))
            r, c = rng.integers(0, size - side, size=2)
            masks[i, r:r + side, c:c + side] = True
    x[masks] += 1.5
    sdf = np.stack([_signed_distance(m, TRUNCATION) for m in masks])[..., None]
    return x, {"footprint": masks[..., None].astype(np.float32), "sdf": sdf}


def _detectnet_targets(boxes, height: int, width: int, stride: int = 16, cvg_scale: float = 0.4):
    """DetectNet targets of one image, built by hand from the BUILD_NOTES contract.

    ``boxes``: [(x1, y1, x2, y2)] pixels. Returns coverage [h, w, 1] and bbox [h, w, 9].
    """
    rows, cols = height // stride, width // stride
    owner = np.full((rows, cols), -1)
    cy = (np.arange(rows)[:, None] + 0.5) * stride
    cx = (np.arange(cols)[None, :] + 0.5) * stride
    areas = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in boxes]
    for k in np.argsort(areas)[::-1]:  # larger first, so smaller boxes overwrite (win)
        x1, y1, x2, y2 = boxes[k]
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        hw, hh = (x2 - x1) * cvg_scale / 2, (y2 - y1) * cvg_scale / 2
        inside = (np.abs(cx - mx) <= hw) & (np.abs(cy - my) <= hh)
        if not inside.any():
            inside = np.zeros_like(inside)
            inside[int(my // stride), int(mx // stride)] = True
        owner[inside] = k
    coverage = (owner >= 0).astype(np.float32)[..., None]
    bbox = np.zeros((rows, cols, 9), np.float32)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        cells = owner == k
        ccx, ccy = np.broadcast_to(cx, owner.shape)[cells], np.broadcast_to(cy, owner.shape)[cells]
        bw, bh = x2 - x1, y2 - y1
        bbox[cells, 0:4] = np.stack([x1 - ccx, y1 - ccy, x2 - ccx, y2 - ccy], axis=-1)
        bbox[cells, 4:8] = [1 / bw, 1 / bh, 1 / bw, 1 / bh]
        bbox[cells, 8] = 1.0 / cells.sum() if cells.any() else 0.0
    return coverage, bbox


def _box_batch(n: int, size: int, bands: int, rng):
    """Images with 1-2 bright boxes -> (x, {"coverage": [n,h,w,1], "bbox": [n,h,w,9]})."""
    x = rng.normal(0.0, 0.3, size=(n, size, size, bands)).astype(np.float32)
    coverages, bboxes = [], []
    for i in range(n):
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            w, h = rng.integers(16, 36, size=2)
            x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
            boxes.append((float(x1), float(y1), float(x1 + w), float(y1 + h)))
            x[i, y1:y1 + h, x1:x1 + w] += 1.5
        coverage, bbox = _detectnet_targets(boxes, size, size)
        coverages.append(coverage)
        bboxes.append(bbox)
    return x, {"coverage": np.stack(coverages), "bbox": np.stack(bboxes)}


def _loss_value(loss, y_true, y_pred, sample_weight=None) -> float:
    return float(loss(np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32),
                      sample_weight=sample_weight))


# --------------------------------------------------------------------------- building

@pytest.mark.parametrize("bands", [1, 3, 8, 11])
def test_fcn_output_shapes_and_dtypes(bands):
    model = build_fcn(bands, sdf_bins=8, **TINY_FCN)
    assert model.input_shape == (None, None, None, bands)
    for height, width in [(32, 32), (48, 64)]:
        out = model(np.zeros((2, height, width, bands), np.float32))
        assert set(out) == {"footprint", "sdf", "sdf_bins"}
        assert tuple(out["footprint"].shape) == (2, height, width, 1)
        assert tuple(out["sdf"].shape) == (2, height, width, 1)
        assert tuple(out["sdf_bins"].shape) == (2, height, width, 8)
        assert all(v.dtype == tf.float32 for v in out.values())


def test_fcn_contact_head_and_its_loss():
    model = build_fcn(8, contact=True, **TINY_FCN)
    out = model(np.zeros((2, 32, 48, 8), np.float32))
    assert set(out) == {"footprint", "sdf", "contact"}
    assert tuple(out["contact"].shape) == (2, 32, 48, 1) and out["contact"].dtype == tf.float32
    losses = losses_for("fcn", sdf_truncation=8.0, contact=True, contact_pos_weight=20.0,
                        contact_loss_weight=0.5)
    assert set(losses) == {"footprint", "sdf", "contact"}
    assert losses["contact"].pos_weight == 20.0 and losses["contact"].weight == 0.5
    assert set(metrics_for("fcn", contact=True)) == {"footprint", "sdf", "contact"}
    with pytest.raises(ValueError, match="contact"):
        build_fcn(8, contact="yes", **TINY_FCN)


def test_fcn_interior_head_fine_filters_and_losses():
    model = build_fcn(8, interior=True, fine_filters=12, **TINY_FCN)
    out = model(np.zeros((1, 32, 32, 8), np.float32))
    assert set(out) == {"footprint", "sdf", "interior"}
    assert tuple(out["interior"].shape) == (1, 32, 32, 1)
    assert model.get_layer("interior").input.shape[-1] == 12  # the full-resolution map
    losses = losses_for("fcn", sdf_truncation=8.0, interior=True, interior_loss_weight=2.0,
                        interior_jaccard_weight=0.5)
    assert losses["interior"].weight == 2.0 and losses["interior"].jaccard_weight == 0.5
    assert set(metrics_for("fcn", interior=True)) == {"footprint", "sdf", "interior"}
    with pytest.raises(ValueError, match="fine_filters"):
        build_fcn(8, fine_filters=0, **TINY_FCN)


def test_fcn_without_bins_and_strides():
    model = build_fcn(3, **TINY_FCN)
    assert set(model.output) == {"footprint", "sdf"}
    assert fcn_stride(2) == 4 and fcn_stride(4) == 16
    assert stride_for("fcn", depth=3) == 8 and stride_for("detectnet") == 16
    assert isinstance(build_model("fcn", 3, **TINY_FCN), keras.Model)


@pytest.mark.parametrize("options", [TINY_DETECTNET, TINY_DETECTNET_PLUS, TINY_DETECTNET_8],
                         ids=["digits", "fine_head", "cells_8"])
@pytest.mark.parametrize("bands", [1, 3, 8, 11])
def test_detectnet_output_shapes_and_initial_values(bands, options):
    model = build_detectnet(bands, **options)
    cell = options.get("cell_size", 16)
    for height, width in [(32, 32), (64, 96)]:
        out = model(np.zeros((2, height, width, bands), np.float32))
        assert set(out) == {"coverage", "bbox"}
        assert tuple(out["coverage"].shape) == (2, height // cell, width // cell, 1)
        assert tuple(out["bbox"].shape) == (2, height // cell, width // cell, 4)
        assert all(v.dtype == tf.float32 for v in out.values())
    # documented initial outputs: coverage ~ prior, boxes ~ bbox_scale squares about the cell
    out = build_detectnet(bands, bbox_scale=32.0, coverage_prior=0.1, **options)(
        np.zeros((1, 32, 32, bands), np.float32))
    np.testing.assert_allclose(out["coverage"].numpy(), 0.1, atol=1e-5)
    np.testing.assert_allclose(out["bbox"].numpy()[0, 0, 0], [-16, -16, 16, 16], atol=1e-3)


def test_detectnet_on_8_pixel_cells_merges_stride_8_and_16_features():
    model = build_detectnet(3, oriented=True, **TINY_DETECTNET_8)
    width = TINY_DETECTNET["width"]
    # stride-8 stage (8w) + upsampled stride-16 features (4w) + stride-4 fine features (2w)
    assert model.get_layer("cell8_concat").output.shape[-1] == 14 * width
    assert model.get_layer("head0_conv").output.shape[-1] == 8 * width
    assert "fine3_conv" not in {layer.name for layer in model.layers}
    out = model(np.zeros((1, 48, 64, 3), np.float32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "coverage": (1, 6, 8, 1), "bbox": (1, 6, 8, 4), "orient": (1, 6, 8, 3)}


@pytest.mark.parametrize("cell_size", [16, 8])
def test_detectnet_auxiliary_interior_output_and_loss(cell_size):
    model = build_detectnet(3, aux_interior=True, oriented=True,
                            **dict(TINY_DETECTNET_PLUS, cell_size=cell_size))
    out = model(np.zeros((2, 32, 48, 3), np.float32))
    assert tuple(out["interior"].shape) == (2, 32, 48, 1)   # logits at full resolution
    assert out["interior"].dtype == tf.float32
    assert tuple(out["coverage"].shape) == (2, 32 // cell_size, 48 // cell_size, 1)
    losses = losses_for("detectnet", orient_weight=1.0, interior=True, interior_loss_weight=3.0,
                        interior_jaccard_weight=0.5)
    assert set(losses) == {"coverage", "bbox", "orient", "interior"}
    assert losses["interior"].weight == 3.0 and losses["interior"].jaccard_weight == 0.5
    assert "interior" not in losses_for("detectnet")


def test_detectnet_options_add_layers():
    plain = build_detectnet(3, **TINY_DETECTNET)
    plus = build_detectnet(3, **TINY_DETECTNET_PLUS)
    names = {layer.name for layer in plus.layers}
    assert {"fine3_conv", "fine_concat", "head0_conv"} <= names
    assert not {"fine3_conv", "head0_conv"} & {layer.name for layer in plain.layers}
    # fine features: 16w + 4w channels into the heads; the head conv maps them back to 16w
    width = TINY_DETECTNET["width"]
    assert plus.get_layer("fine_concat").output.shape[-1] == 20 * width
    assert plus.get_layer("head0_conv").output.shape[-1] == 16 * width
    assert plus.get_layer("coverage").input.shape[-1] == 16 * width
    two = build_detectnet(3, head_convs=2, **TINY_DETECTNET)
    assert {"head0_conv", "head1_conv"} <= {layer.name for layer in two.layers}


@pytest.mark.parametrize("call, match", [
    (lambda: build_fcn(0), "num_bands"),
    (lambda: build_fcn(3, width=0), "width"),
    (lambda: build_fcn(3, depth=0), "depth"),
    (lambda: build_fcn(3, depth=7), "depth"),
    (lambda: build_fcn(3, depth=2.5), "depth"),
    (lambda: build_fcn(3, blocks=0), "blocks"),
    (lambda: build_fcn(3, sdf_bins=1), "sdf_bins"),
    (lambda: build_fcn(3, sdf_scale=0.0), "sdf_scale"),
    (lambda: build_detectnet(3, blocks=(1,)), "blocks"),
    (lambda: build_detectnet(3, blocks=3), "blocks"),
    (lambda: build_detectnet(3, blocks=(0, 1)), r"blocks\[0\]"),
    (lambda: build_detectnet(3, width=0), "width"),
    (lambda: build_detectnet(3, coverage_prior=1.0), "coverage_prior"),
    (lambda: build_detectnet(True), "num_bands"),
    (lambda: build_detectnet(3, head_convs=-1), "head_convs"),
    (lambda: build_detectnet(3, head_convs=1.5), "head_convs"),
    (lambda: build_detectnet(3, fine_features="yes"), "fine_features"),
    (lambda: build_detectnet(3, cell_size=4), "cell_size"),
    (lambda: build_detectnet(3, cell_size=8.0), "cell_size"),
    (lambda: build_detectnet(3, aux_interior=1), "aux_interior"),
    (lambda: BboxLoss(count_norm=2.0), "count_norm"),
    (lambda: BboxLoss(count_norm=True), "count_norm"),
    (lambda: build_model("unet", 3), "kind"),
    (lambda: losses_for("fcn", sdf_bins=8), "sdf_truncation"),
    (lambda: losses_for("detectnet", count_norm=-0.5), "count_norm"),
    (lambda: sdf_bin_edges(1, 5.0), "num_bins"),
    (lambda: SdfBinsLoss(8, truncation=-1.0), "truncation"),
    (lambda: FootprintLoss(jaccard_weight=-1.0), "jaccard_weight"),
])
def test_bad_configuration_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------- training

def _first_last_loss(history) -> tuple[float, float]:
    losses = history.history["loss"]
    return float(np.mean(losses[:2])), float(np.mean(losses[-2:]))


def test_fcn_trains_with_bins_and_pixel_sample_weights():
    rng = np.random.default_rng(0)
    x, y = _square_batch(4, 32, 3, rng)
    boundary = (np.abs(y["sdf"]) <= 1.0)
    valid = np.ones_like(boundary, bool)
    valid[:, :, -4:] = False  # a padded strip
    w = (valid * (1.0 + 2.0 * boundary)).astype(np.float32)
    ds = (tf.data.Dataset.from_tensor_slices((x, y, {"footprint": w, "sdf": w}))
          .map(with_sdf_bins_target).batch(4).cache())
    model = build_fcn(3, sdf_bins=6, sdf_scale=TRUNCATION, **TINY_FCN)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=losses_for("fcn", sdf_truncation=TRUNCATION, sdf_bins=6,
                                  jaccard_weight=0.5),
                  metrics=metrics_for("fcn"))
    history = model.fit(ds, epochs=30, shuffle=False, verbose=0)
    first, last = _first_last_loss(history)
    assert np.isfinite(last) and last < 0.6 * first, (first, last)
    assert {"footprint_iou", "sdf_mae", "sdf_bins_loss"} <= set(history.history)


@pytest.mark.parametrize("options, count_norm", [(TINY_DETECTNET, 1.0),
                                                  (TINY_DETECTNET_PLUS, 0.0)],
                         ids=["digits", "fine_head_count_norm_0"])
def test_detectnet_trains(options, count_norm):
    rng = np.random.default_rng(1)
    x, y = _box_batch(4, 64, 8, rng)
    model = build_detectnet(8, **options)
    losses = losses_for("detectnet", count_norm=count_norm)   # recipes reach BboxLoss this way
    assert losses["bbox"].count_norm == count_norm
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=losses,
                  metrics=metrics_for("detectnet"))
    history = model.fit(x, y, batch_size=4, epochs=30, verbose=0)
    first, last = _first_last_loss(history)
    assert np.isfinite(last) and last < 0.6 * first, (first, last)
    assert {"coverage_loss", "bbox_loss", "coverage_iou"} <= set(history.history)


# --------------------------------------------------------------------------- segmentation losses

def test_footprint_loss_values():
    target = np.zeros((2, 4, 4, 1), np.float32)
    target[0, 1:3, 1:3] = 1.0
    exact = np.where(target > 0, 30.0, -30.0)
    assert _loss_value(FootprintLoss(), target, exact) < 1e-6
    assert _loss_value(FootprintLoss(jaccard_weight=1.0), target, exact) < 1e-6
    assert _loss_value(FootprintLoss(), target, np.zeros_like(target)) == pytest.approx(np.log(2))
    # soft Jaccard for p = 0.5 everywhere: image 0 (4 building pixels): intersection 2,
    # union 8 + 4 - 2 = 10, J = 3 / 11; image 1 (empty): J = (0 + 1) / (8 + 1)
    expected = np.log(2) + 0.5 * np.mean([1 - 3 / 11, 1 - 1 / 9])
    assert _loss_value(FootprintLoss(jaccard_weight=0.5), target,
                       np.zeros_like(target)) == pytest.approx(expected, rel=1e-5)


def test_footprint_loss_positive_weight():
    target = np.zeros((1, 2, 2, 1), np.float32)
    target[0, 0, 0] = 1.0
    logits = np.zeros_like(target)  # p = 0.5: every pixel's BCE is log 2
    # one positive weighing 9 and three negatives weighing 1: mean (9 + 3) log 2 / 4
    assert _loss_value(FootprintLoss(pos_weight=9.0), target, logits) == pytest.approx(
        3 * np.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="pos_weight"):
        FootprintLoss(pos_weight=0.0)


def test_sdf_loss_values():
    target = np.linspace(-10, 10, 16, dtype=np.float32).reshape(1, 4, 4, 1)
    assert _loss_value(SdfLoss(TRUNCATION), target, np.clip(target, -6, 6)) == 0.0
    # Huber(delta=1) of a 3 px error is 0.5 + 2 = 2.5 px; divided by T = 10
    flat = np.zeros((1, 2, 2, 1), np.float32)
    assert _loss_value(SdfLoss(10.0), flat, flat + 3.0) == pytest.approx(0.25)
    assert _loss_value(SdfLoss(), flat, flat + 3.0) == pytest.approx(2.5)
    assert _loss_value(SdfLoss(), flat, flat + 0.5) == pytest.approx(0.125)
    assert _loss_value(SdfLoss(delta=2.0, weight=3.0), flat, flat - 1.0) == pytest.approx(1.5)


def test_sdf_bins_loss_zero_at_target_bins():
    target = np.array([-9.0, -6.0, -0.5, 0.0, 0.5, 5.9, 6.0, 20.0], np.float32).reshape(1, 2, 4, 1)
    bins = np.digitize(target[..., 0], sdf_bin_edges(6, TRUNCATION))
    logits = 40.0 * np.eye(6, dtype=np.float32)[bins]
    assert _loss_value(SdfBinsLoss(6, TRUNCATION), target, logits) < 1e-6
    uniform = np.zeros((1, 2, 4, 6), np.float32)
    assert _loss_value(SdfBinsLoss(6, TRUNCATION), target, uniform) == pytest.approx(np.log(6))


def test_segmentation_sample_weights_weighted_mean():
    rng = np.random.default_rng(2)
    target = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float32)
    logits = rng.normal(size=(2, 8, 8, 1)).astype(np.float32)
    per_pixel = np.logaddexp(0, logits) - logits * target  # BCE with logits
    loss = FootprintLoss()
    # uniform weights of any scale leave the (weighted-mean) loss unchanged
    assert _loss_value(loss, target, logits, np.full_like(target, 2.5)) == pytest.approx(
        per_pixel.mean(), rel=1e-5)
    # zero weight removes pixels from both the sum and the divisor
    valid = np.zeros_like(target)
    valid[:, :5] = 1.0
    assert _loss_value(loss, target, logits, valid) == pytest.approx(
        per_pixel[:, :5].mean(), rel=1e-5)
    # an integer weight k counts the pixel k times
    weights = np.ones_like(target)
    weights[0, 0, 0, 0] = 3.0
    expected = (per_pixel.sum() + 2 * per_pixel[0, 0, 0, 0]) / (target.size + 2)
    assert _loss_value(loss, target, logits, weights) == pytest.approx(expected, rel=1e-5)
    assert _loss_value(SdfLoss(), target, target + 1, np.zeros_like(target)) == 0.0


def test_sample_weights_through_evaluate():
    rng = np.random.default_rng(3)
    x, y = _square_batch(2, 32, 3, rng)
    model = build_fcn(3, **TINY_FCN)
    model.compile(loss=losses_for("fcn", sdf_truncation=TRUNCATION))

    def evaluate(weights):
        ds = tf.data.Dataset.from_tensors((x, y) if weights is None else (x, y, weights))
        return model.evaluate(ds, verbose=0, return_dict=True)

    plain = evaluate(None)
    doubled = evaluate({"footprint": 2 * np.ones_like(y["footprint"]),
                        "sdf": 2 * np.ones_like(y["sdf"])})
    assert doubled["loss"] == pytest.approx(plain["loss"], rel=1e-4)
    masked = evaluate({"footprint": np.zeros_like(y["footprint"]), "sdf": np.ones_like(y["sdf"])})
    assert masked["footprint_loss"] == 0.0
    assert masked["sdf_loss"] == pytest.approx(plain["sdf_loss"], rel=1e-4)


def test_sdf_bins_round_trip():
    edges, centers = sdf_bin_edges(8, 4.0), sdf_bin_centers(8, 4.0)
    np.testing.assert_allclose(edges, [-3, -2, -1, 0, 1, 2, 3])
    np.testing.assert_allclose(centers, [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    values = np.array([-100, -4, -3.5, -1, -0.01, 0, 0.01, 3, 3.99, 4, 100], np.float32)
    expected = np.array([0, 0, 0, 3, 3, 4, 4, 7, 7, 7, 7])
    np.testing.assert_array_equal(np.digitize(values, edges), expected)
    np.testing.assert_array_equal(np.asarray(sdf_to_bins(values, 8, 4.0)), expected)
    # every centre lies in its own bin; inside (sdf >= 0) is exactly bin >= K/2
    np.testing.assert_array_equal(np.asarray(sdf_to_bins(centers, 8, 4.0)), np.arange(8))
    assert np.all((np.asarray(sdf_to_bins(values, 8, 4.0)) >= 4) == (values >= 0))
    one_hot = 50.0 * np.eye(8, dtype=np.float32)
    np.testing.assert_allclose(sdf_from_bin_logits(one_hot, 4.0, mode="argmax"), centers)
    np.testing.assert_allclose(sdf_from_bin_logits(one_hot, 4.0), centers, atol=1e-5)
    assert sdf_from_bin_logits(np.zeros(8), 4.0) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="mode"):
        sdf_from_bin_logits(one_hot, 4.0, mode="median")


# --------------------------------------------------------------------------- DetectNet losses

def test_coverage_loss_sums_cells_and_averages_batch():
    target = np.zeros((2, 2, 2, 1), np.float32)
    target[0, 0, 0] = 1.0
    assert _loss_value(CoverageLoss(), target, target) == 0.0
    pred = target.copy()
    pred[0, 0, 0] = 0.5
    pred[1, 1, 1] = 0.5
    # 0.5 * (0.25 + 0.25) summed over cells, divided by B = 2
    assert _loss_value(CoverageLoss(), target, pred) == pytest.approx(0.125)
    assert _loss_value(CoverageLoss(weight=3.0), target, pred) == pytest.approx(0.375)
    # per-image weights as [B, 1, 1, 1]; per-cell weights [B, h, w, 1] (the pipeline's valid cells)
    assert _loss_value(CoverageLoss(), target, pred,
                       np.array([1, 0], np.float32).reshape(2, 1, 1, 1)) == pytest.approx(0.0625)
    cells = np.ones_like(target)
    cells[1, 1, 1] = 0.0
    assert _loss_value(CoverageLoss(), target, pred, cells) == pytest.approx(0.0625)


def test_detectnet_cell_weights_through_evaluate():
    rng = np.random.default_rng(7)
    x, y = _box_batch(2, 64, 3, rng)
    model = build_detectnet(3, **TINY_DETECTNET)
    model.compile(loss=losses_for("detectnet"))

    def evaluate(cells):
        weights = {"coverage": cells, "bbox": cells}
        return model.evaluate(tf.data.Dataset.from_tensors((x, y, weights)), verbose=0,
                              return_dict=True)

    plain = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    ones = evaluate(np.ones_like(y["coverage"]))
    assert ones["loss"] == pytest.approx(plain["loss"], rel=1e-4)
    assert plain["bbox_loss"] > 0 and plain["coverage_loss"] > 0
    zeros = evaluate(np.zeros_like(y["coverage"]))
    assert zeros["coverage_loss"] == 0.0 and zeros["bbox_loss"] == 0.0


def test_bbox_loss_contract():
    # a 56 x 16 px box centred on (32, 8): its 0.4-shrunk box holds the centres of cells
    # (0, 1) and (0, 2), which it owns, so each has object-count normalisation 1/2
    coverage, bbox = _detectnet_targets([(4.0, 0.0, 60.0, 16.0)], 32, 64)
    y_true = bbox[None]
    owned = coverage[..., 0] > 0
    assert owned.sum() == 2 and np.allclose(bbox[owned, 8], 0.5)
    offsets = y_true[..., :4]
    assert _loss_value(BboxLoss(), y_true, offsets) == 0.0
    # cells without coverage are ignored whatever is predicted there
    wild = np.where(owned[None, ..., None], offsets, 1e6).astype(np.float32)
    assert _loss_value(BboxLoss(), y_true, wild) == 0.0
    # 7 px error on x1 of the 56 px wide box in both owned cells: |7/56| * 1/2 * 2 cells = 0.125,
    # times the default weight 2
    shifted = offsets.copy()
    shifted[..., 0] += 7.0
    assert _loss_value(BboxLoss(), y_true, shifted) == pytest.approx(0.25)
    assert _loss_value(BboxLoss(weight=1.0), y_true, shifted) == pytest.approx(0.125)
    # the same image twice in a batch: the loss is per image (sum over cells / B)
    assert _loss_value(BboxLoss(), np.concatenate([y_true] * 2),
                       np.concatenate([shifted] * 2)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="9"):
        BboxLoss()(y_true[..., :8], offsets)


def test_bbox_loss_count_norm():
    # the box of test_bbox_loss_contract (2 owned cells, n = 1/2) and a 16 x 16 px box that
    # owns the single cell (1, 0): 7 px error on x1 everywhere
    coverage, bbox = _detectnet_targets([(4.0, 0.0, 60.0, 16.0), (0.0, 16.0, 16.0, 32.0)], 32, 64)
    y_true = bbox[None]
    owned = coverage[..., 0] > 0
    assert owned.sum() == 3 and sorted(bbox[owned, 8]) == [0.5, 0.5, 1.0]
    shifted = y_true[..., :4].copy()
    shifted[..., 0] += 7.0
    big, small = 7.0 / 56.0, 7.0 / 16.0  # size-normalised error of one cell of each box
    # DIGITS (count_norm 1, the default): each box weighs 1 in total
    assert BboxLoss().count_norm == 1.0
    assert _loss_value(BboxLoss(weight=1.0), y_true, shifted) == pytest.approx(big + small)
    assert _loss_value(BboxLoss(weight=1.0, count_norm=1.0), y_true,
                       shifted) == pytest.approx(big + small)
    # count_norm 0: every covered cell weighs 1, so the 2-cell box counts twice
    assert _loss_value(BboxLoss(weight=1.0, count_norm=0.0), y_true,
                       shifted) == pytest.approx(2 * big + small)
    # count_norm 0.5: n ** 0.5 per cell
    assert _loss_value(BboxLoss(weight=1.0, count_norm=0.5), y_true,
                       shifted) == pytest.approx(2 * big * 0.5 ** 0.5 + small, rel=1e-5)
    # whatever count_norm, cells without coverage contribute nothing and weight multiplies
    wild = np.where(owned[None, ..., None], y_true[..., :4], 1e6).astype(np.float32)
    for p in (0.0, 0.5):
        assert _loss_value(BboxLoss(count_norm=p), y_true, wild) == 0.0
        assert _loss_value(BboxLoss(count_norm=p), y_true, shifted) == pytest.approx(
            2 * _loss_value(BboxLoss(weight=1.0, count_norm=p), y_true, shifted))


def test_losses_for_and_config_round_trip():
    fcn = losses_for("fcn", sdf_truncation=5.0, sdf_bins=10, jaccard_weight=0.2)
    assert set(fcn) == {"footprint", "sdf", "sdf_bins"}
    det = losses_for("detectnet")
    assert set(det) == {"coverage", "bbox"}
    assert det["coverage"].weight == 1.0 and det["bbox"].weight == 2.0
    assert det["bbox"].count_norm == 1.0  # DIGITS object-count normalisation by default
    for loss in [*fcn.values(), *det.values(), BboxLoss(weight=3.0, count_norm=0.0)]:
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()


# --------------------------------------------------------------------------- mixed precision

@pytest.mark.usefixtures("mixed_bfloat16")
def test_mixed_precision_fcn_trains_with_float32_outputs():
    rng = np.random.default_rng(4)
    x, y = _square_batch(2, 32, 8, rng)
    y = with_sdf_bins_target(x, y)[1]
    model = build_fcn(8, sdf_bins=4, **TINY_FCN)
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    model.compile(optimizer="adam", loss=losses_for("fcn", sdf_truncation=TRUNCATION, sdf_bins=4))
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and {"footprint_loss", "sdf_bins_loss"} <= set(logs)
    assert all(v.dtype == tf.float32 for v in model(x).values())


@pytest.mark.usefixtures("mixed_bfloat16")
def test_mixed_precision_detectnet_trains_with_float32_outputs():
    rng = np.random.default_rng(5)
    x, y = _box_batch(2, 64, 3, rng)
    model = build_detectnet(3, **TINY_DETECTNET)
    assert model.get_layer("stem1_conv").compute_dtype == "bfloat16"
    model.compile(optimizer="adam", loss=losses_for("detectnet"))
    assert np.isfinite(model.train_on_batch(x, y, return_dict=True)["loss"])
    assert all(v.dtype == tf.float32 for v in model(x).values())


# --------------------------------------------------------------------------- saving

# Keras' own weight saving converts TF variables with np.array(), which numpy 2 flags; not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("kind", ["fcn", "detectnet", "detectnet_plus"])
def test_save_and_reload_keras(kind, tmp_path):
    rng = np.random.default_rng(6)
    if kind == "fcn":
        x, y = _square_batch(2, 32, 3, rng)
        y = with_sdf_bins_target(x, y)[1]
        model = build_model("fcn", 3, sdf_bins=4, **TINY_FCN)
        losses = losses_for("fcn", sdf_truncation=TRUNCATION, sdf_bins=4, jaccard_weight=0.3)
    elif kind == "detectnet":
        x, y = _box_batch(2, 64, 3, rng)
        model = build_model("detectnet", 3, **TINY_DETECTNET)
        losses = losses_for("detectnet")
    else:  # the recipe's options, and a non-default BboxLoss that must reload with the model
        x, y = _box_batch(2, 64, 3, rng)
        model = build_model("detectnet", 3, **TINY_DETECTNET_PLUS)
        losses = {"coverage": CoverageLoss(), "bbox": BboxLoss(count_norm=0.0)}
    model.compile(optimizer="adam", loss=losses)
    model.train_on_batch(x, y)  # move BN statistics away from their initial values
    path = tmp_path / f"{kind}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    before, after = model.predict(x, verbose=0), restored.predict(x, verbose=0)
    assert set(before) == set(after)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-5)
    original = model.evaluate(x, y, verbose=0, return_dict=True)
    reloaded = restored.evaluate(x, y, verbose=0, return_dict=True)
    assert reloaded["loss"] == pytest.approx(original["loss"], rel=1e-4)


def test_package_exports():
    for name in modeling.__all__:
        assert hasattr(modeling, name), name
