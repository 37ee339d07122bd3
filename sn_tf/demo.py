"""The end-to-end demo (``make demo``): sample -> convert -> train -> export -> predict -> score.

    python -m sn_tf.demo --output_dir=demo_out [--tiles_per_aoi=40] [--variant=demo]

1. writes a synthetic SpaceNet dataset (AOI_2_Vegas, AOI_3_Paris in the SpaceNet 2 layout,
   AOI_1_Rio in the SpaceNet 1 layout) to ``<out>/spacenet``;
2. converts it to sharded TFRecords in ``<out>/tfrecords`` with three splits (``DEMO_SPLITS``:
   train 0.65, val 0.15, test 0.2 of the tiles, by tile-id hash);
3. trains both shipped recipes (``sn_tf.configs``: ``fcn``, ``detectnet``, the ``demo`` variant:
   a few minutes on a CPU) into ``<out>/models/<recipe>``; the in-training validation on
   ``val`` picks ``best.keras``;
4. exports each best checkpoint as a SavedModel (``<out>/export/<recipe>``);
5. predicts the held-out ``test`` split (used neither for training nor for choosing the
   checkpoint) with the SavedModels through the shared polygon head
   (``<out>/predictions/<recipe>``: SpaceNet CSV + GeoJSON per tile; PNG overlays in
   ``<out>/overlays/<recipe>``), scores them, and writes ``<out>/scores.json`` =
   ``{"fcn": <sn_tf.score --json output>, "detectnet": ...}``.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import time
import warnings

RECIPES = ("fcn", "detectnet")
DEMO_AOIS = ("AOI_2_Vegas", "AOI_3_Paris", "AOI_1_Rio")
# val chooses the checkpoint, test is scored: a score on the split that chose the checkpoint
# would be biased upwards (measured: 0.628 for the chosen vs 0.566 for the last DetectNet epoch)
DEMO_SPLITS = (("train", 0.65), ("val", 0.15), ("test", 0.2))
HELD_OUT = "test"


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_demo(output_dir, tiles_per_aoi: int = 40, variant: str = "demo", seed: int = 0,
             recipes=RECIPES, overrides=(), verbose: int = 2) -> dict:
    """Run every stage into ``output_dir``; returns {recipe: score dict} (scores.json)."""
    from sn_tf.dataset import converter
    from sn_tf.spacenet.synthetic import write_sample

    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    _step(f"1/5 synthetic SpaceNet sample ({tiles_per_aoi} tiles per SpaceNet 2 AOI)")
    write_sample(out / "spacenet", aois=DEMO_AOIS, tiles_per_aoi=tiles_per_aoi, seed=seed)
    _step("2/5 convert to TFRecords")
    tfr = out / "tfrecords"
    if tfr.exists():
        shutil.rmtree(tfr)
    result = converter.convert(out / "spacenet", tfr, converter.ConvertConfig(
        num_workers=2, progress=verbose > 0, splits=DEMO_SPLITS))
    print(converter.format_summary(result.info, tfr).split("\n  total")[0])
    scores, timings = {}, {}
    for name in recipes:
        scores[name], timings[name] = _train_export_predict(name, variant, tfr, out,
                                                           overrides, verbose)
    (out / "scores.json").write_text(json.dumps(scores, indent=1))
    _print_summary(scores, timings, out, time.time() - t_start)
    return scores


def _train_export_predict(name, variant, tfr, out, overrides, verbose):
    from sn_tf.serving import predictor, sources, writers
    from sn_tf.training import trainer
    from sn_tf.serving.exporter import export_model
    from sn_tf.training.recipes import apply_overrides, load_recipe

    spec = f"{name}:{variant}"  # a recipe shipped with sn_tf (sn_tf.configs)
    _step(f"3/5 train {name} ({spec})")
    model_dir = out / "models" / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    t0 = time.time()
    summary = trainer.train(apply_overrides(load_recipe(spec), overrides), tfr, model_dir,
                            verbose=verbose)
    train_s = time.time() - t0
    _step(f"4/5 export {name}")
    export_dir = export_model(model_dir, out / "export" / name, overwrite=True)
    print(f"SavedModel: {export_dir}")
    _step(f"5/5 predict the held-out '{HELD_OUT}' split with the SavedModel ({name})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sources.PredictWarning)  # Rio tiles lack MUL bands
        predictions, truth = predictor.predict_tfrecords(
            predictor.Predictor(export_dir), tfr, HELD_OUT, progress=verbose > 0,
            overlays_dir=out / "overlays" / name)
    writers.write_predictions(predictions, out / "predictions" / name)
    result = writers.score(predictions, truth)
    writers.write_score(result, out / "predictions" / name)
    print(result.format_table())
    return result.to_dict(), {"train_s": round(train_s, 1), "epochs": summary["epochs_run"],
                              "images_per_s": summary["images_per_s"]}


def _print_summary(scores: dict, timings: dict, out: pathlib.Path, seconds: float) -> None:
    print(f"\n== demo results (held-out '{HELD_OUT}' split, SpaceNet metric, IoU > 0.5)")
    print(f"{'recipe':10s} {'TP':>5s} {'FP':>5s} {'FN':>5s} {'precision':>9s} {'recall':>7s} "
          f"{'F1':>6s} {'score':>6s} {'touching':>9s} {'isolated':>9s} {'train':>8s}")
    for name, s in scores.items():
        o, b = s["overall"], s["breakdown"]["overall"]
        print(f"{name:10s} {o['tp']:5d} {o['fp']:5d} {o['fn']:5d} {o['precision']:9.3f} "
              f"{o['recall']:7.3f} {o['f1']:6.3f} {o['mean_city_f1']:6.3f} "
              f"{b['touching']['recall']:9.3f} {b['isolated']['recall']:9.3f} "
              f"{timings[name]['train_s']:7.0f}s")
    print("score = SpaceNet score (mean city F1); touching / isolated = recall over truth "
          "buildings within 1 px of another one / the others")
    print(f"\nEverything is in {out.resolve()}  ({seconds / 60:.1f} min):")
    print("  scores.json, predictions/<recipe>/ (CSV + GeoJSON), overlays/<recipe>/*.png,\n"
          "  models/<recipe>/ (checkpoints, TensorBoard logs), export/<recipe>/ (SavedModel),\n"
          "  tfrecords/ (shards + sn_tf_info.json), spacenet/ (the generated dataset)")


def main(argv):
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        print(f"sn_tf.demo: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    from sn_tf.utils.malloc import keep_freed_memory

    keep_freed_memory()  # conversion and the input pipelines reuse freed memory (a process
    # of its own, like the converter and training CLIs)
    run_demo(FLAGS.output_dir, FLAGS.tiles_per_aoi, FLAGS.variant, FLAGS.seed,
             tuple(FLAGS.recipes), tuple(FLAGS.set))
    return 0


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("output_dir", "demo_out", "Folder for everything the demo writes.")
    flags.DEFINE_integer("tiles_per_aoi", 40, "Synthetic tiles per SpaceNet 2 AOI.")
    flags.DEFINE_string("variant", "demo", "Recipe variant to train ('demo', 'smoke', '').")
    flags.DEFINE_integer("seed", 0, "Seed of the synthetic dataset.")
    flags.DEFINE_list("recipes", list(RECIPES), "Recipes to run.")
    flags.DEFINE_multi_string("set", [], "Recipe override section.key=value for all recipes.")
    app.run(main)
