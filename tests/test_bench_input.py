"""tools/bench_input.py compares loaders at equal work: its per-sample loader builds the
very labels the converter stores, with either EDT."""

import pathlib

import numpy as np
import pytest

from sn_tf.dataset.reader import read_examples
from tools import bench_input

TYPE = bench_input.TYPE


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_input")
    data_dir, meta = bench_input.make_data(root, tiles=3)
    return root, data_dir, meta


@pytest.mark.parametrize("edt", bench_input.EDT_STYLES)
def test_per_sample_labels_equal_the_converted_labels(converted, edt):
    root, data_dir, meta = converted
    stored = {t["tile_id"]: t for t in read_examples(data_dir)}
    assert len(stored) == len(meta["manifest"]["tiles"]) == 3
    buildings = differing = 0
    for tile in meta["manifest"]["tiles"]:
        image, mask, sdf = bench_input.per_sample_tile(root / "src", tile, edt)
        ex = stored[tile["tile_id"]]
        np.testing.assert_array_equal(image, ex["images"][TYPE]["data"])
        lab = ex["labels"][TYPE]
        np.testing.assert_array_equal(mask, lab["mask"])
        want = np.clip(lab["sdf"].astype(np.float32), -bench_input.TRUNCATION,
                       bench_input.TRUNCATION)
        differ = sdf.astype(np.float16).astype(np.float32) != want
        # the same up to which building owns a pixel where two touch (the converter
        # rasterizes pixel-space polygons, the loader map coordinates): a few pixels'
        # distance to the shared wall moves by at most one pixel
        assert differ.mean() < 1e-4, (tile["tile_id"], int(differ.sum()))
        assert np.abs(sdf - want)[differ].max(initial=0) <= 1.0
        differing += int(differ.sum())
        buildings += int(mask.any())
    assert buildings >= 2  # the comparison covers tiles with buildings
    assert differing < 100


def test_per_sample_loader_yields_batches_of_crops(converted):
    root, _, meta = converted
    info = meta["info"]
    ds = bench_input.per_sample_dataset(root / "src", meta["manifest"], info, batch_size=2,
                                        seed=0, raw=True)
    image, targets = next(iter(ds))
    assert image.shape == (2, bench_input.CROP, bench_input.CROP, 8)
    assert image.dtype.name == "uint16"
    sdf, footprint = targets["sdf"].numpy(), targets["footprint"].numpy()
    assert sdf.shape == footprint.shape == (2, bench_input.CROP, bench_input.CROP, 1)
    np.testing.assert_array_equal(footprint[sdf > 0], 1)  # boundary pixels: 0, in the mask
    np.testing.assert_array_equal(footprint[sdf < 0], 0)
    assert (sdf > 0).any() and (sdf < 0).any()


def test_unknown_edt_style_is_refused(converted):
    root, _, meta = converted
    with pytest.raises(ValueError, match="edt must be one of"):
        bench_input.per_sample_tile(pathlib.Path(root / "src"), meta["manifest"]["tiles"][0],
                                    "opencv")
