"""Joint augmentation ops (sn_tf.input.augment): symmetries, box crop rule, windows, keys."""

import itertools

import numpy as np
import pytest
import shapely

from sn_tf.input import augment as aug
from sn_tf.dataset.labels import rasterize_mask
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
SIZE = 12


def _np_dihedral(x, t, flr, fud):
    if t:
        x = np.swapaxes(x, 0, 1)
    if flr:
        x = x[:, ::-1]
    if fud:
        x = x[::-1]
    return x


def _key(i):
    return tf.constant([7, i], tf.int64)


@pytest.mark.parametrize("t,flr,fud", list(itertools.product([False, True], repeat=3)))
def test_dihedral_moves_image_mask_and_boxes_together(t, flr, fud):
    box = shapely.box(1.3, 2.6, 7.2, 5.4)
    mask = rasterize_mask([box], SIZE, SIZE)
    image = np.random.default_rng(0).integers(0, 9, (SIZE, SIZE, 3)).astype(np.float32)
    args = [tf.constant(v) for v in (t, flr, fud)]
    out = aug.dihedral(tf.constant(image), *args).numpy()
    np.testing.assert_array_equal(out, _np_dihedral(image, t, flr, fud))
    moved_mask = aug.dihedral(tf.constant(mask[..., None]), *args).numpy()[..., 0]
    moved_box = aug.dihedral_boxes(tf.constant([box.bounds], tf.float32), SIZE, *args).numpy()[0]
    assert moved_box[2] > moved_box[0] and moved_box[3] > moved_box[1]
    np.testing.assert_array_equal(moved_mask, rasterize_mask([shapely.box(*moved_box)], SIZE, SIZE))


def _draw_results(flips, rot90, n=64):
    image = np.arange(SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE, 1)
    seen = set()
    for i in range(n):
        t, flr, fud = aug.draw_dihedral(_key(i), flips, rot90)
        seen.add(aug.dihedral(tf.constant(image), t, flr, fud).numpy().tobytes())
    return image, seen


def test_rot90_only_draws_exactly_the_four_rotations():
    image, seen = _draw_results(False, True)
    assert seen == {np.rot90(image, k).tobytes() for k in range(4)}


def test_flips_only_draws_the_four_flip_combinations():
    image, seen = _draw_results(True, False)
    assert seen == {image[::a, ::b].tobytes() for a in (1, -1) for b in (1, -1)}


def test_flips_and_rot90_draw_all_eight_symmetries():
    image, seen = _draw_results(True, True)
    rots = [np.rot90(image, k) for k in range(4)]
    assert seen == {r.tobytes() for r in rots} | {r[:, ::-1].tobytes() for r in rots}
    _, none = _draw_results(False, False, n=8)
    assert none == {image.tobytes()}


def test_crop_boxes_shift_clip_and_drop_rule():
    boxes = tf.constant([[20, 20, 30, 30],   # inside the window
                         [5, 20, 15, 30],    # half outside (50 % visible): kept, clipped
                         [2, 20, 11, 30],    # 1/9 visible: dropped at min_visible 0.25
                         [50, 50, 60, 60],   # outside: dropped
                         [40, 12, 41, 13]], tf.float32)  # 1 px, inside: kept
    out = aug.crop_boxes(boxes, y0=tf.constant(10), x0=tf.constant(10), win=tf.constant(32),
                         crop=32, min_visible=0.25).numpy()
    np.testing.assert_allclose(out, [[10, 10, 20, 20], [0, 10, 5, 20], [30, 2, 31, 3]])
    kept_all = aug.crop_boxes(boxes, tf.constant(10), tf.constant(10), tf.constant(32), 32,
                              0.0).numpy()
    assert len(kept_all) == 4  # min_visible 0: every box with area left in the crop
    scaled = aug.crop_boxes(boxes[:1], tf.constant(10), tf.constant(10), tf.constant(16), 32,
                            0.25).numpy()
    np.testing.assert_allclose(scaled, [[20, 20, 32, 32]])  # (x - 10) * 2, clipped to 32


def test_draw_window_stays_inside_and_scales():
    sizes = set()
    for i in range(40):
        y0, x0, win = (int(v) for v in aug.draw_window(_key(i), 70, 90, 32))
        assert win == 32 and 0 <= y0 <= 70 - 32 and 0 <= x0 <= 90 - 32
        y0, x0, win = (int(v) for v in aug.draw_window(_key(i), 70, 90, 32, (0.5, 2.0)))
        assert 16 <= win <= 64 and y0 + win <= 70 and x0 + win <= 90
        sizes.add(win)
    assert len(sizes) > 5
    y0, x0, win = (int(v) for v in aug.draw_window(_key(0), 40, 40, 32, (0.25, 0.25)))
    assert win == 40  # 32 / 0.25 = 128 clamped to the tile
    with pytest.raises(tf.errors.InvalidArgumentError, match="tile smaller than crop_size"):
        aug.draw_window(_key(0), 20, 90, 32)


def test_focus_window_puts_a_contact_pixel_inside_the_window():
    points = tf.constant([[5, 90], [60, 3]], tf.int64)
    seen = set()
    for i in range(40):
        y0, x0, win = aug.focus_window(_key(i), (tf.constant(0), tf.constant(0),
                                                  tf.constant(16)), points, 70, 100, 1.0)
        y0, x0, win = int(y0), int(x0), int(win)
        assert win == 16 and 0 <= y0 <= 70 - 16 and 0 <= x0 <= 100 - 16
        inside = [(r, c) for r, c in points.numpy().tolist()
                  if y0 <= r < y0 + 16 and x0 <= c < x0 + 16]
        assert inside, (y0, x0)
        seen.add(tuple(inside[0]))
    assert len(seen) == 2  # both points get picked
    # no points, or probability 0: the window is left as drawn
    same = aug.focus_window(_key(0), (tf.constant(3), tf.constant(4), tf.constant(16)),
                            tf.zeros([0, 2], tf.int64), 70, 100, 1.0)
    assert [int(v) for v in same] == [3, 4, 16]
    same = aug.focus_window(_key(0), (tf.constant(3), tf.constant(4), tf.constant(16)),
                            points, 70, 100, 0.0)
    assert [int(v) for v in same] == [3, 4, 16]


def test_focus_corner_is_focus_window_in_numpy():
    # read_batch moves windows with the numpy twin: same corners for the same draws,
    # whatever the layer (sparse, dense, one pixel, empty) and the window's place
    rng = np.random.default_rng(3)
    layers = [rng.random((70, 100)) < 0.02, rng.random((70, 100)) < 0.6,
              np.zeros((70, 100), bool), np.eye(70, 100, 40, dtype=bool)]
    layers[2][69, 99] = True
    layers.append(np.zeros((70, 100), bool))
    for i, hit in enumerate(layers * 8):
        layer = hit.astype(np.uint8) * rng.integers(1, 3)
        key = tf.random.experimental.stateless_fold_in(_key(i), 1)
        window = (tf.constant(int(rng.integers(0, 55))), tf.constant(int(rng.integers(0, 85))),
                  tf.constant(16))
        want = aug.focus_window(key, window, tf.where(layer > 0), 70, 100, 0.8)
        draws = [int(v) for v in aug.focus_draws(key, window[2], 0.8)]
        got = aug.focus_corner(np.flatnonzero(layer > 0), 70, 100, int(window[0]),
                               int(window[1]), 16, *draws)
        assert got == (int(want[0]), int(want[1])), i


def test_focus_pick_is_the_bounded_integer_draw():
    # bits mod N is the draw stateless_uniform(0, N) makes with the same key: the windows
    # focus picked before the draws were split out are the ones it picks now
    for i in range(50):
        key = aug.split_key(_key(i), 4)[1]
        bits = int(tf.random.stateless_uniform([], key, None, None, dtype=tf.uint32))
        for n in (1, 5, 997, 422_500, 2 ** 31 - 1):
            assert int(tf.random.stateless_uniform([], key, 0, n, dtype=tf.int32)) == bits % n


def test_example_key_depends_on_seed_tile_and_epoch_only():
    base = aug.example_key(1, tf.constant("AOI_2_Vegas_img1"), tf.constant(0, tf.int64)).numpy()
    again = aug.example_key(1, tf.constant("AOI_2_Vegas_img1"), tf.constant(0, tf.int64)).numpy()
    np.testing.assert_array_equal(base, again)
    for other in (aug.example_key(2, tf.constant("AOI_2_Vegas_img1"), tf.constant(0, tf.int64)),
                  aug.example_key(1, tf.constant("AOI_2_Vegas_img2"), tf.constant(0, tf.int64)),
                  aug.example_key(1, tf.constant("AOI_2_Vegas_img1"), tf.constant(1, tf.int64))):
        assert not np.array_equal(base, other.numpy())


def test_fused_normalisation_is_normalise_then_gain_and_offset():
    x = np.random.default_rng(1).integers(0, 2000, (5, 7, 2)).astype(np.uint16)
    scale, bias = np.array([0.01, 0.02], np.float32), np.array([-1.0, -3.0], np.float32)
    gain, offset = np.array([1.1, 0.9], np.float32), np.array([0.1, -0.2], np.float32)
    s2, b2 = aug.radiometric_coefficients(tf.constant(scale), tf.constant(bias),
                                          tf.constant(gain), tf.constant(offset))
    out = aug.affine_bands(tf.constant(x), s2, b2).numpy()
    want = (x * scale + bias) * gain + offset
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_noise_is_reproducible_from_the_key():
    x = tf.zeros([16, 16, 3])
    a = aug.add_noise(x, 0.5, _key(1)).numpy()
    np.testing.assert_array_equal(a, aug.add_noise(x, 0.5, _key(1)).numpy())
    assert not np.array_equal(a, aug.add_noise(x, 0.5, _key(2)).numpy())
    assert 0.4 < a.std() < 0.6


def test_radiometric_draws_respect_the_config():
    cfg = aug.AugmentConfig(gain=0.2, offset_std=0.5)
    gain, offset = aug.draw_radiometric(_key(3), 6, cfg)
    assert np.all(np.abs(gain.numpy() - 1) <= 0.2) and np.ptp(gain.numpy()) > 0
    assert np.ptp(offset.numpy()) > 0
    gain, offset = aug.draw_radiometric(_key(3), 6, aug.AugmentConfig())
    assert np.all(gain.numpy() == 1) and np.all(offset.numpy() == 0)


@pytest.mark.parametrize("bad,match", [
    ({"scale_range": (2.0, 1.0)}, "scale_range"),
    ({"gain": 1.5}, "gain"),
    ({"noise_std": -1}, "noise_std"),
    ({"min_box_visible": 2}, "min_box_visible"),
    ({"focus": 1.5}, "focus"),
    ({"rotate": True}, "unknown augment option"),
])
def test_augment_config_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        aug.augment_config(bad)


def test_augment_config_forms():
    assert aug.augment_config(None) == aug.AugmentConfig()
    assert aug.augment_config(False) == aug.NO_AUGMENT
    assert aug.augment_config({"noise_std": 0.1}).noise_std == 0.1
    with pytest.raises(ValueError, match="augment must be"):
        aug.augment_config("flips")
