"""FCN recipe: SharpMask-style refinement network on signed-distance labels (8-band input).

    python -m sn_tf.train --config=fcn --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=fcn:demo ...    # CPU, the demo (~5.5 minutes)
    python -m sn_tf.train --config=fcn:smoke ...   # CPU, tests (seconds)

Input: MUL-PanSharpen bands 1..8 (16-bit, normalised in the model with the dataset's band
statistics). Outputs: footprint logits (BCE + soft Jaccard), the signed distance truncated
at 8 px (Huber, boundary-weighted pixels) and the building interiors (logits of
sdf > ``data.interior_level`` = 1.5 px: cores that stay apart across a shared wall; BCE +
soft Jaccard 0.5). Touching buildings: pixels near a wall shared by two buildings weigh
``data.contact_weight`` = 5 times more in every loss, and ``data.augment.focus`` = 0.7
moves 70 % of the training crops onto such a wall. The shared head seeds one building per
interior component (``postprocess.interior_threshold``); its thresholds are chosen after
training on the val split (``train.postprocess_search``, ``sn_tf.training.tuning``), where
``train.postprocess_tolerance`` = 0.03 gives up to 0.03 of val SpaceNet score for more
separated buildings (merging split regions back removes roof-ridge fragments and also
rejoins rows of houses; BUILD_NOTES.md section 5, session 4).
The moving average of the weights (``train.ema_momentum``) is an option, off: with it
the demo's test touching recall was 0.80 / 0.78 against 0.89 / 0.87 without it on the same
seeds (BUILD_NOTES.md section 5).
The demo variant trains 56 epochs (validated at the last; 60 measured, 56 fits make
demo's 12 minutes): with 60 against 48, test touching recall 0.877 vs 0.83-0.85 (seed 0)
and 0.965 vs 0.870 on an unseen sample (seed 13; BUILD_NOTES.md section 5, session 5); the
val score was still rising at epoch 48.
Why this design, the runs behind it and the scores: BUILD_NOTES.md (issue 11 section).
The ``contact`` output (``model.contact``) and the discretised distance
(``model.sdf_bins``) were measured and not kept; they remain options.
"""

from sn_tf.training.recipes import recipe

HEAD_SEARCH = {"interior_threshold": [0.0, 1.0, 2.0, 3.0],
               "merge_level": [None, -3.0, -2.0, -1.0], "seed_erosion": [0, 1]}
#: Val SpaceNet score the head search gives up for buildings that share a wall: candidates
#: within it of the best score count as equal and the one that finds most touching buildings
#: wins (BUILD_NOTES.md section 5: merging split regions back raises the score by removing
#: roofs cut along their ridge, and merges rows of houses as well).
HEAD_TOLERANCE = 0.03


def get_config(variant: str = "") -> dict:
    return recipe(
        variant,
        model={"kind": "fcn", "width": 32, "depth": 4, "blocks": 2, "sdf_bins": None,
               "contact": False, "interior": True, "fine_filters": None},
        data={"boundary_weight": 2.0, "sdf_truncation": 8.0, "contact_weight": 5.0,
              "interior_level": 1.5, "augment": {"focus": 0.7}},
        loss={"jaccard_weight": 0.5, "sdf_weight": 1.0, "contact_loss_weight": 1.0,
              "contact_jaccard_weight": 0.0, "contact_pos_weight": 1.0,
              "contact_focal_gamma": 0.0, "interior_loss_weight": 1.0,
              "interior_jaccard_weight": 0.5, "interior_focal_gamma": 0.0},
        train={"learning_rate": 2e-3, "postprocess_search": HEAD_SEARCH,
               "postprocess_tolerance": HEAD_TOLERANCE},
        postprocess={"threshold": 0.0, "split_with_sdf": True, "sdf_level": 2.0,
                     "min_seed_area": 12, "min_area": 20.0, "simplify": 0.0,
                     "contact_threshold": 0.0, "interior_threshold": 0.0, "merge_level": None,
                     "seed_erosion": 0},
        variants={"demo": {"model": {"width": 16, "blocks": 1, "fine_filters": 16},
                           "data": {"crop_size": 128},
                           "train": {"learning_rate": 3e-3, "epochs": 56, "val_every": 56}},
                  "smoke": {"model": {"width": 8, "depth": 3, "blocks": 1},
                            "train": {"learning_rate": 3e-3,
                                      "postprocess_search": {"interior_threshold": [0.0, 1.0]}}}})
