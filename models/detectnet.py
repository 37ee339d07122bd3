"""DetectNet recipe: stride-16 inception detector with coverage + box-corner heads.

    python -m sn_tf.train --config=models/detectnet.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/detectnet.py:demo ...    # CPU, the demo
    python -m sn_tf.train --config=models/detectnet.py:smoke ...   # CPU, tests

Input: MUL-PanSharpen bands 1..8. Targets (sn_tf.targets): coverage grid (cells inside the
box shrunk by 0.4) and corner offsets with size and object-count normalisation; losses
coverage L2 (weight 1) and bbox L1 (weight 2), as NVIDIA's DIGITS DetectNet. Boxes from
cells with coverage >= 0.06 are merged by rectangle grouping in the shared head.
Runtime and scores: see BUILD_NOTES.md ("Training recipes").
"""


def get_config(variant: str = "") -> dict:
    config = {
        "model": {"kind": "detectnet", "width": 32, "blocks": [2, 7]},
        "data": {"image_types": ["MUL-PanSharpen"], "bands": None, "crop_size": 512,
                 "batch_size": 16, "train_split": "train", "val_split": "val", "aois": None,
                 "boundary_weight": None, "sdf_truncation": None, "augment": None,
                 "normalization": "dataset_info"},
        "loss": {"coverage_weight": 1.0, "bbox_weight": 2.0},
        "train": {"epochs": 60, "steps_per_epoch": None, "learning_rate": 1e-3,
                  "warmup_epochs": 1, "weight_decay": 1e-4, "seed": 0,
                  "mixed_precision": "", "jit_compile": "auto", "val_every": 5,
                  "val_max_tiles": None, "val_batch_size": 4},
        "postprocess": {"threshold": 0.06, "group_threshold": 3, "eps": 0.02,
                        "min_height": 10.0, "max_boxes": 450},
    }
    if variant == "demo":
        config["model"].update(width=16, blocks=[1, 3])
        config["data"].update(crop_size=256, batch_size=8)
        config["train"].update(epochs=8, steps_per_epoch=12, learning_rate=2e-3,
                               val_every=4)
    elif variant == "smoke":
        config["model"].update(width=8, blocks=[1, 2])
        config["data"].update(crop_size=128, batch_size=4)
        config["train"].update(epochs=2, steps_per_epoch=3, learning_rate=2e-3,
                               warmup_epochs=0, val_every=1, val_max_tiles=4)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} (use '', 'demo' or 'smoke')")
    return config
