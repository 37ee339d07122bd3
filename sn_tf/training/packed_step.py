"""Segmentation targets built in the train step from packed labels (recipe
``data.targets_on: "device"``; ``sn_tf.input.packed``).

The training dataset then yields ``(raw image, packed labels)``; :func:`label_expander`
gives the function that turns packed labels into the targets and per-pixel weights the
host would have built (with the ``sdf_bins`` copy of ``with_sdf_bins_target`` when the
model has that head), :func:`training_batch` applies it to an element (the multi-worker
custom step) and :func:`expand_in_step` makes a compiled Keras model's ``fit`` apply it
inside its train step.

Why the model is not wrapped: ``expand_in_step`` replaces ``train_step`` (and, for the
build Keras does from the first batch under a distribution strategy, ``compute_loss`` and
``compute_metrics``) on the model instance only. The model stays the plain functional
model: ``model.save`` (``last.keras``, ``best.keras``), ``BackupAndRestore``, validation,
``predict`` and export see exactly what they see with host-built targets, and the saved
files load with ``keras.saving.load_model`` as before.
"""

from __future__ import annotations

from sn_tf.input import packed as pk
from sn_tf.input import pipeline
from sn_tf.modeling import with_sdf_bins_target
from sn_tf.training.setup import Setup, _target, input_config_of


def label_expander(setup: Setup):
    """None when the recipe's training batches carry finished targets, else a function
    ``packed labels (dict of [B, H, W, 1] stored layers) -> (targets, weights or None)``
    (dicts of float32 [B, H, W, 1] keyed by output name, as ``train_dataset`` would
    deliver them with ``data.targets_on: "host"``)."""
    split = setup.config["data"]["train_split"]
    packed = pipeline.packed_targets(setup.data_dir, split, _target(setup.config),
                                     input_config_of(setup, split))
    if packed is None:
        return None
    bins = bool(setup.config["model"].get("sdf_bins"))

    def expand(labels):
        out = packed.expand(labels)
        targets, weights = out if packed.sample_weights else (out, None)
        if bins:
            _, targets, *rest = with_sdf_bins_target(None, targets, weights)
            weights = rest[0] if rest else None
        return targets, weights

    return expand


def training_batch(element, expand) -> tuple:
    """``(x, targets, weights or None)`` of a training element ``(x, y)`` or ``(x, y, w)``;
    packed ``y`` expanded with ``expand`` (``label_expander``)."""
    x, y = element[0], element[1]
    w = element[2] if len(element) > 2 else None
    if expand is not None and pk.is_packed(y):
        y, w = expand(y)
    return x, y, w


def expand_in_step(model, expand) -> None:
    """Let the compiled ``model``'s ``fit`` take packed training elements: its train step
    expands them with ``expand`` (``label_expander``) and then runs Keras' own step on
    ``(x, targets, weights)``. Elements with finished targets pass unchanged. Only this
    instance's methods change (module docstring); ``expand`` None: nothing to do."""
    if expand is None:
        return
    cls = type(model)

    def train_step(data):
        x, y, w = training_batch(data, expand)
        return cls.train_step(model, (x, y) if w is None else (x, y, w))

    def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if pk.is_packed(y):  # Keras' symbolic build from the first (packed) batch
            y, sample_weight = expand(y)
        return cls.compute_loss(model, x, y, y_pred, sample_weight, training=training)

    def compute_metrics(x, y, y_pred, sample_weight=None):
        if pk.is_packed(y):
            y, sample_weight = expand(y)
        return cls.compute_metrics(model, x, y, y_pred, sample_weight=sample_weight)

    model.train_step = train_step
    model.compute_loss = compute_loss
    model.compute_metrics = compute_metrics
