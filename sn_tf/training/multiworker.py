"""Training on several hosts: Keras 3 ``fit`` fails under ``MultiWorkerMirroredStrategy``
(TF 2.21, Keras 3.15: "Attempt to convert a value (PerReplica...)"), so
``train_multiworker`` runs a custom step with ``strategy.run`` on the same datasets, model,
losses, validation, checkpoints and head search as ``trainer.train``.
"""

from __future__ import annotations

import math
import pathlib
import time

import numpy as np

from sn_tf.training import model_dir as md
from sn_tf.training.trainer import (SpaceNetValidation, _optimizer, _steps, _summary,
                                    _write_run_files, build_model, check_shards, keras, resolve,
                                    tf, train_dataset, training_losses, tune_postprocess,
                                    write_log_row)
from sn_tf.modeling.layers import synchronized_batchnorm
from sn_tf.training import packed_step


def _loss_sum(losses: dict, targets: dict, outputs: dict, weights) -> "tf.Tensor":
    total = 0.0
    for name, fn in losses.items():
        w = None if weights is None else weights.get(name)
        total += fn(targets[name], outputs[name], sample_weight=w)
    return total


def train_multiworker(config: dict, data_dir, model_dir, verbose=True) -> dict:
    """Custom-step training under ``MultiWorkerMirroredStrategy`` (cluster from TF_CONFIG).

    Every worker runs this same function. The global batch is ``data.batch_size``, split
    across all replicas of all workers; gradients are all-reduced by the optimizer. Only
    the chief writes the model directory (workers write to ``model_dir/worker-<i>``, as
    tf.distribute recommends); validation runs on the chief.
    """
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    is_chief = task_type in (None, "chief") or (task_type == "worker" and task_id == 0)
    out = pathlib.Path(model_dir) if is_chief else pathlib.Path(model_dir) / f"worker-{task_id}"
    md.check_model_dir(out, config)
    setup = resolve(config, data_dir)
    check_shards(setup)
    _write_run_files(setup, out)
    t = setup.config["train"]
    batch = int(setup.config["data"]["batch_size"])
    steps = _steps(setup, batch)
    keras.utils.set_random_seed(int(t["seed"]))
    with strategy.scope(), synchronized_batchnorm(True):
        model = build_model(setup)
        losses = training_losses(setup)  # was built apart: FCN contact/interior went untrained
        optimizer = _optimizer(setup, steps)
        optimizer.build(model.trainable_variables)
    ds = strategy.distribute_datasets_from_function(lambda ctx: train_dataset(setup, batch, ctx))
    iterator = iter(ds)
    replicas = strategy.num_replicas_in_sync

    expand = packed_step.label_expander(setup)  # packed labels: targets built here

    def step_fn(element):
        x, y, w = packed_step.training_batch(element, expand)
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            loss = _loss_sum(losses, y, outputs, w) / replicas
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def train_step(it):
        per_replica = strategy.run(step_fn, args=(next(it),))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    validation = SpaceNetValidation(setup, out, t.get("val_every", 1), t.get("val_max_tiles"),
                                    int(t.get("val_batch_size", 4)), is_chief=is_chief)
    validation.set_model(model)
    validation.set_params({"epochs": int(t["epochs"])})
    log_rows, t0 = [], time.time()
    for epoch in range(int(t["epochs"])):
        losses_seen = [float(train_step(iterator)) for _ in range(steps)]
        logs = {"epoch": epoch, "loss": float(np.mean(losses_seen))}
        if is_chief:
            validation.on_epoch_end(epoch, logs)
        log_rows.append(logs)
        if verbose and is_chief:
            print(f"epoch {epoch + 1}: loss {logs['loss']:.4f}", flush=True)
    (out / md.LAST).parent.mkdir(parents=True, exist_ok=True)
    model.save(out / md.LAST)  # every worker saves (collective ops); only the chief's is kept
    if is_chief:
        tune_postprocess(out, setup, verbose=verbose, outputs=validation.best_outputs)
    (out / md.TRAINING_LOG).unlink(missing_ok=True)
    for row in log_rows:
        write_log_row(out / md.TRAINING_LOG, row["epoch"], row)
    history = {k: [r.get(k, math.nan) for r in log_rows] for k in log_rows[0] if k != "epoch"}
    return {**_summary(out, history, time.time() - t0, steps * batch * int(t["epochs"])),
            "task": f"{task_type}:{task_id}", "is_chief": is_chief}
