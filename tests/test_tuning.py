"""Choosing the polygon head's parameters on the validation split (sn_tf.training.tuning)."""

import numpy as np
import pytest
from shapely.geometry import box

from sn_tf.head import polygons
from sn_tf.training import tuning


def test_candidates_start_with_the_recipe_and_cover_the_grid():
    cands = tuning.candidates("fcn", {"threshold": 0.5},
                              {"threshold": [0.0, 0.5], "min_seed_area": [12, 30]})
    assert cands[0] == polygons.postprocess_params("fcn", {"threshold": 0.5})
    combos = {(c["threshold"], c["min_seed_area"]) for c in cands}
    assert combos == {(0.0, 12), (0.0, 30), (0.5, 12), (0.5, 30)}
    assert len(cands) == 4  # the recipe's own (0.5, 12) is not tried twice
    assert tuning.candidates("fcn", {}, None) == [polygons.postprocess_params("fcn")]


@pytest.mark.parametrize("space, message", [
    ({"treshold": [0.0]}, "unknown fcn post-processing parameter 'treshold'"),
    ({"threshold": []}, "non-empty list"),
    ({"threshold": 0.5}, "non-empty list"),
])
def test_bad_search_space_is_refused_with_its_name(space, message):
    with pytest.raises(ValueError, match=message):
        tuning.candidates("fcn", {}, space)


def _two_houses_sharing_a_wall():
    """Outputs of one 64 px tile: two 20 px houses sharing the wall x = 30; the interior
    logits are 1.5 in each core and 0.5 on a bridge across the wall."""
    footprint = np.full((64, 64, 1), -5.0, np.float32)
    footprint[10:30, 10:50] = 5.0
    interior = np.full((64, 64, 1), -3.0, np.float32)
    interior[13:27, 13:27] = interior[13:27, 33:47] = 1.5
    interior[13:27, 27:33] = 0.5
    sdf = np.zeros((64, 64, 1), np.float32)
    outputs = [("AOI_3_Paris_img1", {"footprint": footprint, "interior": interior, "sdf": sdf},
                (64, 64))]
    truth = {"AOI_3_Paris_img1": [box(10, 10, 30, 30), box(30, 10, 50, 30)]}
    return outputs, truth


def test_search_finds_the_threshold_that_splits_touching_houses():
    outputs, truth = _two_houses_sharing_a_wall()
    cands = tuning.candidates("fcn", {"interior_threshold": 0.0},
                              {"interior_threshold": [0.0, 1.0]})
    found = tuning.search("fcn", outputs, truth, cands)
    assert found.table[0]["mean_city_f1"] == 0.0  # the recipe's threshold merges the houses
    assert found.params["interior_threshold"] == 1.0
    assert found.result.overall.tp == 2 and found.result.overall.fp == 0
    assert found.result.breakdown["overall"]["touching"].recall == 1.0
    doc = found.to_dict()
    assert doc["chosen"]["interior_threshold"] == 1.0 and len(doc["candidates"]) == 2


def test_ties_keep_the_recipe_parameters():
    outputs, truth = _two_houses_sharing_a_wall()
    cands = tuning.candidates("fcn", {"interior_threshold": 1.0},
                              {"interior_threshold": [1.0, 1.2]})
    assert tuning.search("fcn", outputs, truth, cands).params["interior_threshold"] == 1.0


def test_within_the_tolerance_the_split_that_finds_touching_houses_wins():
    rows = [{"mean_city_f1": 0.907, "touching_recall": 0.84},   # the recipe's parameters
            {"mean_city_f1": 0.910, "touching_recall": 0.77},   # best score, merges more
            {"mean_city_f1": 0.909, "touching_recall": 0.85},
            {"mean_city_f1": 0.890, "touching_recall": 0.95}]   # beyond the tolerance
    assert tuning.choose(rows, tolerance=0.005) == 2
    assert tuning.choose(rows, tolerance=0.0) == 1
    assert tuning.choose(rows[:1] * 3, tolerance=0.005) == 0  # full ties: the earliest
