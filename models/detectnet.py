"""DetectNet recipe: stride-16 inception detector with coverage + box-corner heads.

    python -m sn_tf.train --config=models/detectnet.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/detectnet.py:demo ...    # CPU, the demo
    python -m sn_tf.train --config=models/detectnet.py:smoke ...   # CPU, tests

Input: MUL-PanSharpen bands 1..8. Targets (sn_tf.targets): coverage grid (cells inside the
box shrunk by 0.4) and corner offsets with size and object-count normalisation; losses
coverage L2 (weight 1) and bbox L1 (weight 2), as NVIDIA's DIGITS DetectNet. Boxes from
cells with coverage >= 0.06 are merged by rectangle grouping in the shared head.
Runtime and scores: BUILD_NOTES.md ("Training recipes").
"""

from sn_tf.recipes import recipe


def get_config(variant: str = "") -> dict:
    return recipe(
        variant,
        model={"kind": "detectnet", "width": 32, "blocks": [2, 7]},
        loss={"coverage_weight": 1.0, "bbox_weight": 2.0},
        postprocess={"threshold": 0.06, "group_threshold": 3, "eps": 0.02,
                     "min_height": 10.0, "max_boxes": 450},
        variants={"demo": {"model": {"width": 16, "blocks": [1, 3]},
                           "train": {"learning_rate": 2e-3}},
                  "smoke": {"model": {"width": 8, "blocks": [1, 2]},
                            "train": {"learning_rate": 2e-3}}})
