"""The input pipeline's configuration object (sn_tf.input.config)."""

import numpy as np
import pytest

from sn_tf.input.config import InputConfig, input_config


def test_keywords_update_a_frozen_config_and_unknown_names_are_refused():
    base = InputConfig(crop_size=128, bands={"PAN": [1]}, aois=["AOI_2_Vegas"])
    assert base.bands == {"PAN": (1,)} and base.aois == ("AOI_2_Vegas",)
    cfg = input_config(base, {"batch_size": 2})
    assert (cfg.crop_size, cfg.batch_size) == (128, 2) and base.batch_size == 8
    with pytest.raises(TypeError, match=r"unknown input option\(s\) \['crop'\]; known: .*crop_size"):
        input_config(base, {"crop": 3})
    with pytest.raises(TypeError, match="config must be an InputConfig"):
        input_config({"crop_size": 3}, {})
    with pytest.raises(Exception):
        base.crop_size = 3  # frozen


def test_config_and_keywords_give_the_same_batches(sample_tfr):
    tfr = sample_tfr
    from sn_tf import make_dataset

    kw = dict(crop_size=64, batch_size=2, seed=3, repeat=False, deterministic=True,
              augment=False, num_parallel_reads=None)
    a = next(iter(make_dataset(tfr, "train", **kw)))
    b = next(iter(make_dataset(tfr, "train", "segmentation", True, InputConfig(**kw))))
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    with pytest.raises(TypeError, match="unknown input option"):
        make_dataset(tfr, "train", crop=64)
