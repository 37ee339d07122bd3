"""Training targets built in the train step from packed labels (recipe
``data.targets_on``, "device" or "auto" with a GPU; ``sn_tf.input.packed``).

The training dataset then yields ``(raw image, packed labels)``; :func:`label_expander`
gives the function that turns packed labels into the targets and per-pixel weights the
host would have built (with the ``sdf_bins`` copy of ``with_sdf_bins_target`` when the
model has that head), :func:`training_batch` applies it to an element (the multi-worker
custom step) and :func:`expand_in_step` makes a compiled Keras model's ``fit`` apply it
inside its train step.

Why the model is not wrapped: ``expand_in_step`` replaces ``train_step`` (and, for the
build Keras does from the first batch under a distribution strategy, ``_symbolic_build``)
on the model instance only. The model stays the plain functional
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
    """None when the recipe's training batches carry finished targets and cut crops, else
    a function ``(x, labels) -> (x, targets, weights or None)``: packed labels (FCN: dict
    of [B, H, W, 1] stored layers; DetectNet: the crops' boxes, rectangles and contact
    cells) made into the targets and weights (dicts of float32 [B, ., ., .] keyed by output
    name, as ``train_dataset`` would deliver them with ``data.targets_on: "host"``) and,
    with ``data.crop_on: "device"``, the image (and the FCN's layers) cut from the
    window's rows first (``sn_tf.input.packed.orient_crops``); for DetectNet with finished
    targets (``targets_on: "host"``, or the ``interior`` target) and ``crop_on: "device"``,
    the image cut by the windows under ``packed.WINDOW`` in its targets, the weights None
    (the element's own stay)."""
    split = setup.config["data"]["train_split"]
    args = (setup.data_dir, split, _target(setup.config), input_config_of(setup, split))
    packed = pipeline.packed_targets(*args)
    if packed is None:
        crop = pipeline.image_cut(*args)  # DetectNet: finished targets, the image to cut
        if not crop:
            return None

        def cut(x, labels):
            image = pk.cut_image(x, labels, crop)
            return image, {k: v for k, v in labels.items() if k != pk.WINDOW}, None

        return cut
    bins = bool(setup.config["model"].get("sdf_bins"))

    def expand(x, labels):
        out = packed.expand(labels)
        targets, weights = out if packed.sample_weights else (out, None)
        if bins:
            _, targets, *rest = with_sdf_bins_target(None, targets, weights)
            weights = rest[0] if rest else None
        return packed.image(x, labels), targets, weights

    return expand


def training_batch(element, expand) -> tuple:
    """``(x, targets, weights or None)`` of a training element ``(x, y)`` or ``(x, y, w)``;
    packed ``y``, or ``y`` carrying the crops' windows (``crop_on="device"``), expanded with
    ``expand`` (``label_expander``; the element's own weights kept where it makes none)."""
    x, y = element[0], element[1]
    w = element[2] if len(element) > 2 else None
    if expand is not None and (pk.is_packed(y) or (isinstance(y, dict) and pk.WINDOW in y)):
        x, y, made = expand(x, y)
        w = w if made is None else made
    return x, y, w


def expand_in_step(model, expand) -> None:
    """Let the compiled ``model``'s ``fit`` take packed training elements: its train step
    expands them with ``expand`` (``label_expander``) and then runs Keras' own step on
    ``(x, targets, weights)``; so does the build Keras makes from the first batch under a
    distribution strategy (``_symbolic_build``: the model, its losses and metrics are built
    from the expanded batch's shapes). Elements with finished targets pass unchanged. Only
    this instance's methods change (module docstring); ``expand`` None: nothing to do."""
    if expand is None:
        return
    cls = type(model)

    def train_step(data):
        x, y, w = training_batch(data, expand)
        return cls.train_step(model, (x, y) if w is None else (x, y, w))

    def symbolic_build(iterator=None, data_batch=None):
        if data_batch is not None:  # the TF trainer hands the first batch itself
            x, y, w = training_batch(data_batch, expand)
            data_batch = (x, y) if w is None else (x, y, w)
        return cls._symbolic_build(model, iterator=iterator, data_batch=data_batch)

    model.train_step = train_step
    model._symbolic_build = symbolic_build
