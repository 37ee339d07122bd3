"""FCN recipe: SharpMask-style refinement network on signed-distance labels (8-band input).

    python -m sn_tf.train --config=models/fcn.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/fcn.py:demo ...    # CPU, the demo (a few minutes)
    python -m sn_tf.train --config=models/fcn.py:smoke ...   # CPU, tests (seconds)

Input: MUL-PanSharpen bands 1..8 (16-bit, normalised with the dataset's band statistics).
Targets: footprint (BCE) + truncated signed distance (Huber); touching buildings are split
by the shared head with seeds where sdf > postprocess.sdf_level.
Runtime and scores: see BUILD_NOTES.md ("Training recipes").
"""


def get_config(variant: str = "") -> dict:
    config = {
        "model": {"kind": "fcn", "width": 32, "depth": 4, "blocks": 2, "sdf_bins": None},
        "data": {"image_types": ["MUL-PanSharpen"], "bands": None, "crop_size": 512,
                 "batch_size": 16, "train_split": "train", "val_split": "val", "aois": None,
                 "boundary_weight": 2.0, "sdf_truncation": None, "augment": None,
                 "normalization": "dataset_info"},
        "loss": {"jaccard_weight": 0.5, "sdf_weight": 1.0},
        "train": {"epochs": 60, "steps_per_epoch": None, "learning_rate": 2e-3,
                  "warmup_epochs": 1, "weight_decay": 1e-4, "seed": 0,
                  "mixed_precision": "", "jit_compile": "auto", "val_every": 5,
                  "val_max_tiles": None, "val_batch_size": 4},
        "postprocess": {"threshold": 0.0, "split_with_sdf": True, "sdf_level": 2.0,
                        "min_area": 20.0, "simplify": 0.0},
    }
    if variant == "demo":
        config["model"].update(width=16, depth=4, blocks=1)
        config["data"].update(crop_size=256, batch_size=8)
        config["train"].update(epochs=8, steps_per_epoch=12, learning_rate=3e-3,
                               val_every=4)
    elif variant == "smoke":
        config["model"].update(width=8, depth=3, blocks=1)
        config["data"].update(crop_size=128, batch_size=4)
        config["train"].update(epochs=2, steps_per_epoch=3, learning_rate=3e-3,
                               warmup_epochs=0, val_every=1, val_max_tiles=4)
    elif variant:
        raise ValueError(f"unknown variant {variant!r} (use '', 'demo' or 'smoke')")
    return config
