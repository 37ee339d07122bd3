"""Train a model from a recipe: ``python -m sn_tf.train``.

    python -m sn_tf.train --config=models/fcn.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/detectnet.py:smoke --data_dir=... --model_dir=... \
        --set=train.epochs=3 --set=data.batch_size=4 --mixed_precision=mixed_bfloat16
    python -m sn_tf.train --config=fcn:demo ...   # a recipe shipped with sn_tf (sn_tf.configs)

One host: Keras ``fit`` under MirroredStrategy over its GPUs (the default strategy on CPU).
A killed run resumes from ``<model_dir>/backup`` when started again with the same flags.
Several hosts: set TF_CONFIG on every host and add ``--multiworker`` (BUILD_NOTES.md,
"Training on several hosts").
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Recipe: a shipped recipe name (fcn, detectnet; "
                    "sn_tf.configs) or a file such as models/<name>.py, then [:variant].",
                    required=True)
flags.DEFINE_string("data_dir", None, "Output folder of sn_tf.convert.", required=True)
flags.DEFINE_string("model_dir", None, "Where checkpoints, logs and model_info go.",
                    required=True)
flags.DEFINE_multi_string("set", [], "Recipe override section.key=value (repeatable).")
flags.DEFINE_integer("epochs", None, "Override train.epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Override train.steps_per_epoch.")
flags.DEFINE_integer("batch_size", None, "Override data.batch_size (global).")
flags.DEFINE_float("learning_rate", None, "Override train.learning_rate.")
flags.DEFINE_enum("mixed_precision", None, ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Override train.mixed_precision.")
flags.DEFINE_enum("strategy", "auto", ["auto", "default", "mirrored"],
                  "tf.distribute strategy on one host.")
flags.DEFINE_bool("multiworker", False, "Several hosts: MultiWorkerMirroredStrategy from "
                  "TF_CONFIG with a custom training step.")
flags.DEFINE_integer("seed", None, "Override train.seed (the --seed of every sn_tf CLI).")
flags.DEFINE_string("json", None, "Also write the run summary as JSON to this file (as "
                    "sn_tf.score --json).")
flags.DEFINE_string("summary_json", None, "Deprecated spelling of --json (still works).")


def _overrides() -> list[str]:
    sets = list(FLAGS.set)
    for flag, key in (("epochs", "train.epochs"), ("steps_per_epoch", "train.steps_per_epoch"),
                      ("batch_size", "data.batch_size"), ("learning_rate", "train.learning_rate"),
                      ("mixed_precision", "train.mixed_precision"), ("seed", "train.seed")):
        value = getattr(FLAGS, flag)
        if value is not None:
            sets.append(f"{key}={json.dumps(value)}")
    return sets


def main(argv):
    if len(argv) > 1:
        print(f"sn_tf.train: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    from sn_tf.utils.malloc import keep_freed_memory
    from sn_tf.training.recipes import apply_overrides, load_recipe
    from sn_tf.utils.errors import SnTfError

    keep_freed_memory()  # the input pipeline reuses its record and batch memory
    try:
        config = apply_overrides(load_recipe(FLAGS.config), _overrides())
        from sn_tf.training import trainer

        if FLAGS.multiworker:
            from sn_tf.training.multiworker import train_multiworker

            summary = train_multiworker(config, FLAGS.data_dir, FLAGS.model_dir)
        else:
            summary = trainer.train(config, FLAGS.data_dir, FLAGS.model_dir,
                                     trainer.choose_strategy(FLAGS.strategy))
    except (SnTfError, FileNotFoundError, ValueError) as exc:  # ValueError: the pipeline's checks
        print(f"sn_tf.train: error: {exc}", file=sys.stderr)
        return 1
    best = summary["best_val"]
    print(f"sn_tf.train: {FLAGS.config} -> {summary['model_dir']}: {summary['epochs_run']} "
          f"epoch(s) in {summary['seconds']:.0f} s ({summary['images_per_s']:.1f} img/s)"
          + (f"; best.keras: epoch {summary['best_epoch']}, val SpaceNet score (mean city F1) "
             f"{best.get('mean_city_f1', best['f1']):.3f}, pooled F1 {best['f1']:.3f} "
             f"(P {best['precision']:.3f}, R {best['recall']:.3f})" if best else ""))
    if FLAGS.json or FLAGS.summary_json:
        with open(FLAGS.json or FLAGS.summary_json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    app.run(main)
