"""DetectNet recipe: stride-16 inception detector with coverage + box-corner heads.

    python -m sn_tf.train --config=models/detectnet.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/detectnet.py:demo ...    # CPU, the demo
    python -m sn_tf.train --config=models/detectnet.py:smoke ...   # CPU, tests

Input: MUL-PanSharpen bands 1..8. Targets (sn_tf.targets): coverage grid (cells inside the
box shrunk by 0.4) and corner offsets with size and object-count normalisation; losses
coverage L2 (weight 1) and bbox L1 (weight 2), as NVIDIA's DIGITS DetectNet. Boxes from
cells with coverage >= 0.06 are merged by rectangle grouping in the shared head.
Deviation from DIGITS: NVIDIA upscaled Rio tiles to 1280 px so buildings span 50-400 px;
on native 650 px SpaceNet 2 tiles a building spans 1-8 stride-16 cells, and the DIGITS
coverage scale 0.4 gives it 1.4 cells on average, which group threshold 3 then discards.
So coverage covers 0.8 of the box (about 4.5 cells a building) and groups of 2 or more
cells (group_threshold 1, eps 0.2) make a detection.
Runtime and scores: BUILD_NOTES.md ("Training recipes").
"""

from sn_tf.recipes import recipe


def get_config(variant: str = "") -> dict:
    return recipe(
        variant,
        model={"kind": "detectnet", "width": 32, "blocks": [2, 7]},
        data={"cvg_scale": 0.8},
        loss={"coverage_weight": 1.0, "bbox_weight": 2.0},
        postprocess={"threshold": 0.06, "group_threshold": 1, "eps": 0.2,
                     "min_height": 6.0, "max_boxes": 450},
        variants={"demo": {"model": {"width": 16, "blocks": [1, 3]},
                           "train": {"learning_rate": 2e-3, "epochs": 24}},
                  "smoke": {"model": {"width": 8, "blocks": [1, 2]},
                            "train": {"learning_rate": 2e-3}}})
