"""The model-family table (sn_tf.utils.families) agrees with the code it names."""

import numpy as np
import pytest

from sn_tf.utils import families


def test_unknown_family_names_the_known_ones():
    with pytest.raises(families.FamilyError, match=r"unknown model kind 'unet'.*fcn.*detectnet"):
        families.get("unet")


@pytest.mark.parametrize("name", families.NAMES)
def test_entry_points_resolve_and_defaults_are_the_heads(name):
    from sn_tf.head import polygons

    fam = families.get(name)
    assert all(callable(fam.entry(e)) for e in ("builder", "losses", "metrics", "head"))
    assert polygons.postprocess_params(name) == dict(fam.postprocess)
    with pytest.raises(TypeError):
        fam.postprocess["threshold"] = 1.0  # read-only: recipes override, never mutate


@pytest.mark.parametrize("name", families.NAMES)
def test_the_built_model_has_the_outputs_the_table_promises(name):
    from sn_tf import modeling

    fam = families.get(name)
    small = {"fcn": {"width": 8, "depth": 3, "blocks": 1, "interior": True},
             "detectnet": {"width": 8, "blocks": (1, 1), "aux_interior": True}}[name]
    model = modeling.build_model(name, 3, **small)
    names = set(model.output_names)
    assert set(fam.head_outputs) <= names
    assert set(fam.training_only_outputs) <= names
    side = 2 * modeling.stride_for(name, depth=3)
    outputs = model(np.zeros((1, side, side, 3), np.float32), training=False)
    cell = fam.cell_size or 1
    for out in fam.head_outputs:
        assert tuple(outputs[out].shape[1:3]) == (side // cell, side // cell)


def test_targets():
    assert families.FCN.target_for({}) == "segmentation"
    assert families.DETECTNET.target_for({"oriented": False}) == "detection"
    assert families.DETECTNET.target_for({"oriented": True}) == "oriented_detection"
    assert families.FCN.full_resolution and not families.DETECTNET.full_resolution
