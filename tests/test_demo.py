"""The demo's whole path (sample -> convert -> train -> export -> predict -> score), smoke size."""

import json

import pytest

from sn_tf.dataset import info as dsinfo


@pytest.mark.slow
def test_demo_path_in_smoke_size(tmp_path):
    from sn_tf.demo import run_demo

    out = tmp_path / "demo"
    scores = run_demo(out, tiles_per_aoi=7, variant="smoke", verbose=0)
    assert set(scores) == {"fcn", "detectnet"}
    assert json.loads((out / "scores.json").read_text()) == scores
    for name, s in scores.items():
        o = s["overall"]
        assert o["tp"] + o["fn"] > 0  # the held-out split has buildings to find
        assert 0.0 <= o["f1"] <= 1.0
        assert s["breakdown"]["overall"]["touching"]["n"] > 0  # the sample has row houses
        assert s["cities"] and set(s["cities"]) <= {"AOI_2_Vegas", "AOI_3_Paris"}  # no Rio
        assert (out / "export" / name / "saved_model.pb").exists()
        assert (out / "models" / name / "checkpoints" / "best.keras").exists()
        assert (out / "predictions" / name / "predictions.csv").exists()
        assert list((out / "predictions" / name).glob("*.geojson"))
        assert list((out / "overlays" / name).glob("*.png"))
    # scored: exactly the held-out 'test' tiles that have the model's image type (not Rio),
    # none of which trained the model or chose its checkpoint
    info = dsinfo.load(out / "tfrecords")
    assert set(info.splits) == {"train", "val", "test"}, list(info.splits)
    test_ids = {p.stem for p in (out / "predictions" / "fcn").glob("*.geojson")}
    assert test_ids and all(i.startswith(("AOI_2_Vegas", "AOI_3_Paris")) for i in test_ids)
    assert scores["fcn"]["overall"]["n_images"] == len(test_ids)
