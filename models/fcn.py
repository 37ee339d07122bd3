"""FCN recipe: SharpMask-style refinement network on signed-distance labels (8-band input).

    python -m sn_tf.train --config=models/fcn.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/fcn.py:demo ...    # CPU, the demo (a few minutes)
    python -m sn_tf.train --config=models/fcn.py:smoke ...   # CPU, tests (seconds)

Input: MUL-PanSharpen bands 1..8 (16-bit, normalised with the dataset's band statistics).
Targets: footprint (BCE + soft Jaccard) + signed distance truncated at 8 px (Huber), with
boundary-weighted pixels; touching buildings are split by the shared head with seeds where
sdf > postprocess.sdf_level. Runtime and scores: BUILD_NOTES.md ("Training recipes").
"""

from sn_tf.recipes import recipe


def get_config(variant: str = "") -> dict:
    return recipe(
        variant,
        model={"kind": "fcn", "width": 32, "depth": 4, "blocks": 2, "sdf_bins": None,
               "contact": False, "interior": False, "fine_filters": None},
        data={"boundary_weight": 2.0, "sdf_truncation": 8.0},
        loss={"jaccard_weight": 0.5, "sdf_weight": 1.0, "contact_loss_weight": 1.0,
              "contact_jaccard_weight": 0.0, "contact_pos_weight": 1.0,
              "contact_focal_gamma": 0.0, "interior_loss_weight": 1.0,
              "interior_jaccard_weight": 0.0},
        train={"learning_rate": 2e-3},
        postprocess={"threshold": 0.0, "split_with_sdf": True, "sdf_level": 2.0,
                     "min_seed_area": 12, "min_area": 20.0, "simplify": 0.0,
                     "contact_threshold": 0.0, "interior_threshold": 0.0},
        variants={"demo": {"model": {"width": 16, "blocks": 1},
                           "train": {"learning_rate": 3e-3}},
                  "smoke": {"model": {"width": 8, "depth": 3, "blocks": 1},
                            "train": {"learning_rate": 3e-3}}})
