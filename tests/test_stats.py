"""Band statistics: exact on the subsample, mergeable, nodata excluded."""

import numpy as np
import pytest

from sn_tf.dataset.stats import STRIDE, BandStats


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_summary_matches_numpy_on_the_subsample(dtype):
    rng = np.random.default_rng(1)
    tiles = [(rng.normal(300, 50, (40, 30, 3))).clip(0, 250 if dtype == "uint8" else None)
             .astype(dtype) for _ in range(3)]
    s = BandStats(dtype, 3)
    for t in tiles:
        s.add(t)
    sub = np.concatenate([t[::STRIDE, ::STRIDE].reshape(-1, 3) for t in tiles]).astype(float)
    out = s.summary()
    np.testing.assert_allclose(out["mean"], sub.mean(0), rtol=1e-9)
    np.testing.assert_allclose(out["std"], sub.std(0), rtol=1e-6)
    np.testing.assert_array_equal(out["min"], sub.min(0))
    np.testing.assert_array_equal(out["max"], sub.max(0))
    # integers: exact histogram percentile (inverted CDF); floats: linear on the sample
    method = "linear" if dtype == "float32" else "inverted_cdf"
    np.testing.assert_allclose(out["p99"], np.percentile(sub, 99, axis=0, method=method),
                               rtol=1e-6)


def test_merge_and_round_trip_equal_one_accumulator():
    rng = np.random.default_rng(2)
    a, b, both = BandStats("uint16", 2), BandStats("uint16", 2), BandStats("uint16", 2)
    for i in range(4):
        t = rng.integers(0, 2048, (20, 20, 2), dtype=np.uint16)
        (a if i % 2 else b).add(t)
        both.add(t)
    a.merge(BandStats.from_arrays(b.to_arrays("X"), "X"))
    assert a.summary() == both.summary()


def test_nodata_excluded():
    t = np.zeros((10, 10, 1), np.uint16)
    t[:STRIDE] = 7  # the first sampled row: 3 samples (columns 0, 4, 8) equal 7
    s = BandStats("uint16", 1)
    s.add(t, nodata=0)
    assert s.summary()["mean"] == [7.0] and s.summary()["count"] == [3]


@pytest.mark.parametrize("dtype,nodata", [("uint8", 255), ("uint16", 0), ("int16", -3),
                                          ("int16", None)])
def test_histogram_equals_per_band_bincount(dtype, nodata):
    """The band-interleaved bincount equals one full-range bincount per band."""
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -40), min(info.max, 300) if dtype != "uint8" else 255
    s = BandStats(dtype, 3)
    tiles = [rng.integers(lo, hi + 1, (33, 21, 3)).astype(dtype) for _ in range(2)]
    for t in tiles:
        s.add(t, nodata)
    for b in range(3):
        v = np.concatenate([t[::STRIDE, ::STRIDE, b].ravel() for t in tiles]).astype(int)
        v = v[v != nodata] if nodata is not None else v
        ref = np.bincount(v - info.min, minlength=1 << (8 * np.dtype(dtype).itemsize))
        np.testing.assert_array_equal(s.hist[b], ref)
