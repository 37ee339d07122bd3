"""Training library: recipe + converted data -> a trained model directory.

``fit`` path (one host, one or many GPUs): ``train(config, data_dir, model_dir)`` builds the
input pipeline, the model and its losses inside the strategy's scope and runs Keras
``model.fit`` with checkpoints, BackupAndRestore, TensorBoard, a CSV log, a learning-rate
schedule and ``SpaceNetValidation`` (the shared polygon head + SpaceNet scoring every N
epochs, keeping the best checkpoint by F1).

Several hosts: Keras 3 ``fit`` fails under ``MultiWorkerMirroredStrategy`` (TF 2.21,
Keras 3.15: "Attempt to convert a value (PerReplica...)"), so ``train_multiworker`` runs a
custom step with ``strategy.run`` on the same datasets, model, losses and checkpoints
(``sn_tf.training.multiworker``).

Input: with the recipes' default ``data.image_dtype: "raw"`` the pipeline feeds stored
band values and ``build_model`` puts the normalisation (and the recipe's gain/offset/noise
augmentation, training only) into the model's first layers (``sn_tf.modeling.model_input``); the
validation, checkpoints and ``ModelInfo.normalizes_input`` follow. ``"float32"``
normalises in the pipeline instead.

The model directory layout is ``sn_tf.training.model_dir``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import pathlib
import time

from sn_tf.dataset import reader
from sn_tf.dataset.info import DatasetError
from sn_tf.dataset.reader import read_truth
from sn_tf.input.cells import DEFAULT_CELL_SIZE
from sn_tf.head import polygons
from sn_tf.spacenet.buildings import Building
from sn_tf.spacenet import scoring
from sn_tf.training import model_dir as md
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
import keras  # noqa: E402  (after the quiet TF import)

from sn_tf import modeling  # noqa: E402
from sn_tf.input import pipeline  # noqa: E402
from sn_tf.modeling import model_input  # noqa: E402
from sn_tf.modeling.layers import synchronized_batchnorm  # noqa: E402
from sn_tf.training import tuning  # noqa: E402
from sn_tf.training import packed_step  # noqa: E402


from sn_tf.training.setup import (  # noqa: E402,F401  (re-exported: the trainer's API)
    ConfigError, Setup, _target, input_config_of, resolve, split_aois, train_dataset)


def predict_split(model, setup: Setup, split: str, max_tiles=None, batch_size=4):
    """Yield (tile_id, outputs dict of numpy [.., .., k] cropped later, (H, W)) per tile.

    The tiles come as ``train_dataset`` feeds them (normalised, or raw float32 padded
    with the band mean for a model that normalises itself), padded to the stride.
    """
    cfg = input_config_of(setup, split, training=False).replace(batch_size=batch_size)
    ds = pipeline.make_examples(setup.data_dir, split, _target(setup.config), False, cfg)
    seen = 0
    for batch in ds:
        outputs = model(batch["image"], training=False)
        outputs = {k: v.numpy() for k, v in outputs.items()}
        for i, tile_id in enumerate(batch["tile_id"].numpy()):
            if max_tiles is not None and seen >= max_tiles:
                return
            yield (tile_id.decode(), {k: v[i] for k, v in outputs.items()},
                   (int(batch["height"][i]), int(batch["width"][i])))
            seen += 1


def evaluate_f1(model, setup: Setup, split: str, max_tiles=None, batch_size=4,
                outputs: list | None = None):
    """SpaceNet score of ``model`` on a split, through the shared polygon head
    (``outputs``: ``predict_split``'s items when already computed)."""
    params = polygons.postprocess_params(setup.kind, setup.config["postprocess"])
    proposals, ids = [], []
    if outputs is None:
        outputs = predict_split(model, setup, split, max_tiles, batch_size)
    for tile_id, outputs, size in outputs:
        ids.append(tile_id)
        proposals += polygons.outputs_to_buildings(setup.kind, outputs, tile_id,
                                                   image_size=size, params=params,
                                                   cell_size=setup.cell_size or
                                                   DEFAULT_CELL_SIZE)
    truth_polys = read_truth(setup.data_dir, split, setup.label_grid)
    truth = [Building(t, p) for t in ids for p in truth_polys.get(t, [])]
    truth += [Building(t, None) for t in ids]  # register images without buildings
    proposals += [Building(t, None) for t in ids]
    return scoring.score_polygons(truth, proposals)


def tune_postprocess(model_dir, setup: Setup, search_space: dict | None = None,
                     verbose: bool = True, outputs: list | None = None):
    """Choose the polygon head's parameters for ``model_dir``'s best checkpoint on the val
    split (``sn_tf.training.tuning``): candidates from ``search_space`` (default: the recipe's
    ``train.postprocess_search``; None or empty: nothing to do, returns None). Writes
    ``postprocess_search.json`` and the choice into ``model_info.json``; returns the
    ``tuning.SearchResult``. ``outputs``: the best checkpoint's val outputs when the
    validation kept them (``SpaceNetValidation.best_outputs``); else they are predicted."""
    t = setup.config["train"]
    space = t.get("postprocess_search") if search_space is None else search_space
    if not space:
        return None
    cands = tuning.candidates(setup.kind, setup.config["postprocess"], space)
    split = setup.config["data"]["val_split"]
    if outputs is None:
        model = keras.saving.load_model(md.checkpoint(model_dir, "best"), compile=False)
        outputs = list(predict_split(model, setup, split, t.get("val_max_tiles"),
                                     int(t.get("val_batch_size", 4))))
    found = tuning.search(setup.kind, outputs, read_truth(setup.data_dir, split, setup.label_grid),
                          cands, setup.cell_size or DEFAULT_CELL_SIZE,
                          float(t.get("postprocess_tolerance", tuning.SCORE_TOLERANCE)))
    tuning.save_choice(model_dir, found, split, verbose)
    return found


#: The validation columns of ``training_log.csv`` (present every epoch; empty where
#: validation did not run).
VAL_KEYS = ("val_score", "val_precision", "val_recall", "val_f1", "val_touching_recall",
            "val_isolated_recall")


def _cell(value) -> str:
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def write_log_row(path, epoch: int, logs: dict) -> None:
    """Put the row of ``epoch`` (0-based) into the CSV training log at ``path``: columns
    ``epoch``, the existing ones, then any new key and every :data:`VAL_KEYS` column (empty
    where a row has no value). Rows of this epoch and later ones (left by a run killed after
    logging but before its backup, and trained again now) are replaced."""
    path = pathlib.Path(path)
    columns, rows = ["epoch"], []
    if path.is_file():
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or columns)
            rows = [r for r in reader if (r.get("epoch") or "").strip().isdigit()
                    and int(r["epoch"]) < epoch]
    columns += [k for k in sorted(set(logs) | set(VAL_KEYS)) if k not in columns]
    rows.append({"epoch": str(epoch), **{k: _cell(v) for k, v in logs.items() if k != "epoch"}})
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


class TrainingLog(keras.callbacks.Callback):
    """``training_log.csv`` with the same columns every epoch (:func:`write_log_row`; Keras'
    CSVLogger fixes its columns at the first epoch, so with ``val_every > 1`` the validation
    columns never appeared). Put it after :class:`SpaceNetValidation`."""

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_epoch_end(self, epoch, logs=None):
        write_log_row(self.path, epoch, dict(logs or {}))


class SpaceNetValidation(keras.callbacks.Callback):
    """Every ``every`` epochs (and the last): polygons + SpaceNet score on the val split.

    Adds ``val_score`` (the SpaceNet score: mean of the per-city F1), ``val_precision``,
    ``val_recall``, ``val_f1`` (pooled over all tiles), ``val_touching_recall`` and
    ``val_isolated_recall`` (recall over truth buildings within 1 px of another one, and
    over the rest: ``ScoreResult.breakdown``) to the epoch logs (so the CSV log and
    TensorBoard record them; put this callback before those), and saves ``best.keras`` and
    ``val_scores.json`` when ``val_score`` improves. The best score survives a resumed run.
    """

    #: the log key ``best.keras`` is chosen on
    MONITOR = "val_score"
    #: the best epoch's val outputs are kept for the head search when they fit in this
    #: (``best_outputs``; the demo's 9 val tiles: ~45 MB)
    KEEP_OUTPUTS_BYTES = 512 * 2 ** 20

    def __init__(self, setup: Setup, model_dir, every: int, max_tiles=None, batch_size=4,
                 is_chief: bool = True):
        super().__init__()
        self.setup, self.dir, self.every = setup, pathlib.Path(model_dir), max(1, int(every))
        self.max_tiles, self.batch_size, self.is_chief = max_tiles, batch_size, is_chief
        scores = self.dir / md.VAL_SCORES
        self.best = -1.0
        self.best_outputs: list | None = None  # predict_split items of best.keras on val
        if scores.exists():
            overall = json.loads(scores.read_text())["overall"]
            # val_scores.json of an older run holds only the pooled F1 it was chosen on
            self.best = overall.get("mean_city_f1", overall["f1"])

    def on_epoch_end(self, epoch, logs=None):
        last = self.params and epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every and not last:
            return
        t0 = time.time()
        with averaged_weights(self.model):
            self._validate(epoch, logs, t0)

    def _validate(self, epoch, logs, t0):
        split = self.setup.config["data"]["val_split"]
        outputs = list(predict_split(self.model, self.setup, split, self.max_tiles,
                                     self.batch_size))
        result = evaluate_f1(self.model, self.setup, split, outputs=outputs)
        o = result.to_dict()["overall"]
        groups = result.breakdown["overall"]
        values = {"val_score": result.mean_city_f1, "val_precision": o["precision"],
                  "val_recall": o["recall"], "val_f1": o["f1"],
                  "val_touching_recall": groups["touching"].recall,
                  "val_isolated_recall": groups["isolated"].recall}
        if logs is not None:
            logs.update(values)
        better = values[self.MONITOR] > self.best
        print(f"\nvalidation (epoch {epoch + 1}): SpaceNet score (mean city F1) "
              f"{values['val_score']:.3f}{' (best so far)' if better else ''}; pooled "
              f"precision {o['precision']:.3f} recall {o['recall']:.3f} F1 {o['f1']:.3f} "
              f"(tp {o['tp']} fp {o['fp']} fn {o['fn']}); recall touching "
              f"{values['val_touching_recall']:.3f} ({groups['touching'].found}/"
              f"{groups['touching'].n}) isolated {values['val_isolated_recall']:.3f} "
              f"({time.time() - t0:.1f} s)", flush=True)
        if better:  # the head search after training reuses them (tune_postprocess)
            size = sum(v.nbytes for _, out, _ in outputs for v in out.values())
            self.best_outputs = outputs if size <= self.KEEP_OUTPUTS_BYTES else None
        if better and self.is_chief:
            self.best = values[self.MONITOR]
            (self.dir / md.BEST).parent.mkdir(parents=True, exist_ok=True)
            self.model.save(self.dir / md.BEST)
            (self.dir / md.VAL_SCORES).write_text(json.dumps(
                {**result.to_dict(), "epoch": epoch + 1, "chosen_on": self.MONITOR}, indent=1))


# ---- model -----------------------------------------------------------------------------
def _steps(setup: Setup, batch_size: int) -> int:
    t, d = setup.config["train"], setup.config["data"]
    return int(t.get("steps_per_epoch") or pipeline.steps_per_epoch(
        setup.data_dir, d["train_split"], batch_size, aois=split_aois(setup, d["train_split"])))


def _optimizer(setup: Setup, steps_per_epoch: int):
    t = setup.config["train"]
    total = max(1, steps_per_epoch * int(t["epochs"]))
    warmup = min(total - 1, int(round(float(t.get("warmup_epochs", 0)) * steps_per_epoch)))
    lr = float(t["learning_rate"])
    schedule = keras.optimizers.schedules.CosineDecay(
        lr / 10 if warmup else lr, decay_steps=total - warmup, alpha=0.05,
        warmup_target=lr if warmup else None, warmup_steps=warmup)
    ema = ema_momentum(t.get("ema_momentum"), total)
    return keras.optimizers.AdamW(schedule, weight_decay=float(t.get("weight_decay", 0.0)),
                                  clipnorm=None, use_ema=ema is not None,
                                  ema_momentum=0.99 if ema is None else ema)


def ema_momentum(momentum, total_steps: int) -> float | None:
    """``train.ema_momentum`` for a run of ``total_steps`` steps: capped at
    ``1 - 5 / total_steps`` so the average spans at most about the last fifth of the run
    (Keras starts it from the first step's weights, without bias correction: a short run,
    e.g. a test's few epochs, would otherwise validate weights close to the initial ones).
    None: no moving average."""
    if momentum is None:
        return None
    return float(min(float(momentum), max(0.0, 1.0 - 5.0 / max(1, total_steps))))


@contextlib.contextmanager
def averaged_weights(model):
    """Inside the block the model holds its optimizer's moving average of the weights.

    With ``train.ema_momentum`` set, the optimizer keeps an exponential moving average of
    every trainable variable (``keras.optimizers.Optimizer(use_ema=True)``); validation and
    ``best.keras`` use the average, training goes on from the raw weights afterwards. Without
    it the block changes nothing. (Keras's own ``SwapEMAWeights(swap_on_epoch=True)`` would
    leave the averaged weights in the model when ``BackupAndRestore`` saves the epoch.)
    """
    optimizer = getattr(model, "optimizer", None)
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        yield
        return
    variables = optimizer._trainable_variables
    raw = [v.numpy() for v in variables]
    for v, a in zip(variables, averages):
        v.assign(a)
    try:
        yield
    finally:
        for v, r in zip(variables, raw):
            v.assign(r)


def build_model(setup: Setup):
    """The uncompiled model of the recipe, for ``setup.num_bands`` input channels.

    With raw input (``data.image_dtype`` "raw") the model is wrapped by
    ``model_input.with_input_stage``: it takes raw band values, normalises them with the
    setup's mean/std (exactly the pipeline's values) and, when the recipe's augmentation
    has gain/offset/noise, jitters them in training.
    """
    m = {k: v for k, v in setup.config["model"].items() if k != "kind"}
    model = modeling.build_model(setup.kind, setup.num_bands, **m)
    if not setup.raw_input:
        return model
    norm = pipeline.normalization_layer(setup.info, setup.image_types, setup.bands,
                                        {"mean": setup.mean, "std": setup.std})
    return model_input.with_input_stage(model, norm, setup.augment_split()[1],
                                        seed=int(setup.config["train"]["seed"]))


def _loss_kwargs(setup: Setup) -> dict:
    """Keyword arguments of ``modeling.losses_for`` for the recipe's ``loss`` section."""
    return dict(setup.config["loss"], sdf_truncation=setup._sdf_truncation(),
                sdf_bins=setup.config["model"].get("sdf_bins"),
                contact=setup.contact_output, interior=setup.interior_output)


def training_losses(setup: Setup) -> dict:
    """The recipe's losses keyed by output name (``modeling.losses_for``): one for every
    trained output, the same for ``fit`` and the multi-worker custom step."""
    return modeling.losses_for(setup.kind, **_loss_kwargs(setup))


def compile_model(model, setup: Setup, steps_per_epoch: int, jit_compile):
    model.compile(optimizer=_optimizer(setup, steps_per_epoch),
                  loss=training_losses(setup),
                  metrics=modeling.metrics_for(setup.kind, contact=setup.contact_output,
                                               interior=setup.interior_output),
                  jit_compile=jit_compile)
    return model


def _jit(setup: Setup):
    j = setup.config["train"].get("jit_compile", "auto")
    if j == "auto":  # XLA pays off on GPUs; on CPU it mostly adds compile time
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(j)


def set_precision(policy: str) -> None:
    """``""``/"float32", "mixed_bfloat16" or "mixed_float16" (outputs stay float32)."""
    keras.mixed_precision.set_global_policy(policy or "float32")


def choose_strategy(name: str = "auto"):
    """"auto": MirroredStrategy over >1 GPU, else the default; "mirrored"; "default"."""
    if name == "mirrored" or (name == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    if name in ("auto", "default"):
        return tf.distribute.get_strategy()
    raise ConfigError(f"unknown strategy {name!r} (auto, default, mirrored; several hosts: "
                      "--multiworker)")


def check_shards(setup: Setup) -> None:
    """ConfigError when shard files of the training or validation split are absent, or
    hold fewer records than described (``reader.check_shards``: their framing is walked;
    else TF fails mid-epoch with a traceback)."""
    data = setup.config["data"]
    for split in (data["train_split"], data["val_split"]):
        items = reader.shards(setup.data_dir, split)
        absent = [s.path for s in items if not pathlib.Path(s.path).is_file()]
        if absent:
            raise ConfigError(f"{setup.data_dir}: no shard files for split {split!r}: "
                              f"{len(absent)} listed in its description are absent "
                              f"(e.g. {pathlib.Path(absent[0]).name}); convert again or copy "
                              f"them")
        try:
            reader.check_shards(items)
        except DatasetError as err:
            raise ConfigError(str(err)) from None


def _write_run_files(setup: Setup, model_dir: pathlib.Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    setup.model_info().save(model_dir)
    (model_dir / md.CONFIG).write_text(json.dumps(setup.config, indent=1))


def train(config: dict, data_dir, model_dir, strategy=None, verbose=2) -> dict:
    """Train with Keras ``fit``; returns a summary (epochs, seconds, best val F1, paths)."""
    md.check_model_dir(model_dir, config)
    setup = resolve(config, data_dir)
    check_shards(setup)
    model_dir = pathlib.Path(model_dir)
    _write_run_files(setup, model_dir)
    t = setup.config["train"]
    set_precision(t.get("mixed_precision", ""))
    try:
        strategy = strategy or choose_strategy()
        batch = int(setup.config["data"]["batch_size"])
        steps = _steps(setup, batch)
        keras.utils.set_random_seed(int(t["seed"]))
        with strategy.scope(), synchronized_batchnorm(strategy.num_replicas_in_sync > 1):
            model = compile_model(build_model(setup), setup, steps, _jit(setup))
        packed_step.expand_in_step(model, packed_step.label_expander(setup))
        if strategy.num_replicas_in_sync > 1:
            ds = strategy.distribute_datasets_from_function(
                lambda ctx: train_dataset(setup, batch, ctx))
        else:
            ds = train_dataset(setup, batch)
        (model_dir / md.LAST).parent.mkdir(parents=True, exist_ok=True)
        # BackupAndRestore LAST: its epoch-end backup marks the epoch done only after the
        # validation, checkpoints and log of that epoch; a run killed during validation
        # trains that epoch again on restart and validates it (before, the backup came first
        # and the killed epoch's validation and its chance at best.keras were lost).
        callbacks = [
            SpaceNetValidation(setup, model_dir, t.get("val_every", 1), t.get("val_max_tiles"),
                               int(t.get("val_batch_size", 4))),
            keras.callbacks.ModelCheckpoint(str(model_dir / md.LAST)),
            TrainingLog(model_dir / md.TRAINING_LOG),
            keras.callbacks.TensorBoard(str(model_dir / md.LOGS), update_freq="epoch"),
            keras.callbacks.BackupAndRestore(str(model_dir / md.BACKUP)),
        ]
        t0 = time.time()
        history = model.fit(ds, epochs=int(t["epochs"]), steps_per_epoch=steps,
                            callbacks=callbacks, verbose=verbose)
        seconds = time.time() - t0
        searched = tune_postprocess(model_dir, setup, verbose=bool(verbose),
                                    outputs=callbacks[0].best_outputs)
    finally:
        set_precision("")
    summary = _summary(model_dir, history.history, seconds, steps * batch * int(t["epochs"]))
    return {**summary, "postprocess": searched.params if searched else None,
            "tuned_val": searched.to_dict()["val"] if searched else None}


def _summary(model_dir, history, seconds, images) -> dict:
    scores = model_dir / md.VAL_SCORES
    best = json.loads(scores.read_text()) if scores.exists() else None
    return {"model_dir": str(model_dir), "epochs_run": len(next(iter(history.values()), [])),
            "seconds": round(seconds, 1), "images_per_s": round(images / max(seconds, 1e-9), 2),
            "history": {k: [float(x) for x in v] for k, v in history.items()},
            "best_val": best["overall"] if best else None,
            "best_epoch": best.get("epoch") if best else None}
