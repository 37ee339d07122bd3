"""Recipes: Python files with ``get_config(variant="")``, shipped ones loadable by name.

The recipes shipped with sn_tf live in ``sn_tf.configs`` (``--config=fcn``,
``--config=detectnet``); any recipe file is loaded by path (``--config=models/fcn.py``, the
repository's experiment recipes, built on the shipped ones). A recipe returns a nested dict
(sections ``model``, ``data``, ``loss``, ``train``, ``postprocess``); a variant (``"smoke"``
for tests and CPU, ``"demo"`` for the demo) is chosen with ``--config=fcn:smoke`` or
``--config=models/fcn.py:smoke``. Values are overridden from the command line
with ``--set=section.key=value`` (value parsed as JSON when it parses, else a string; checked
against the type of the recipe's value, see ``_typed_value``).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import pathlib
import pkgutil

from sn_tf.utils.errors import SnTfError

SECTIONS = ("model", "data", "loss", "train", "postprocess")
SHIPPED_PACKAGE = "sn_tf.configs"  # the recipes shipped with sn_tf, loadable by name


class RecipeError(SnTfError, ValueError):
    """A recipe cannot be loaded, or an override does not fit it."""


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with sn_tf (modules of ``sn_tf.configs``)."""
    package = importlib.import_module(SHIPPED_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def load_recipe(spec: str) -> dict:
    """Load ``path/to/recipe.py[:variant]`` or a shipped recipe ``name[:variant]`` (e.g.
    ``fcn:demo``, :func:`shipped_recipes`) and return its config dict (with ``name``).
    """
    path_text, _, variant = spec.partition(":")
    path = pathlib.Path(path_text)
    if path.is_file():
        module_spec = importlib.util.spec_from_file_location(f"sn_tf_recipe_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise RecipeError(f"{path}: cannot load recipe ({type(exc).__name__}: {exc})") from None
    elif path_text.isidentifier() and path_text in shipped_recipes():
        path = pathlib.Path(path_text)  # named like the module: config["name"] = its stem
        module = importlib.import_module(f"{SHIPPED_PACKAGE}.{path_text}")
    else:
        raise RecipeError(f"{path}: recipe file not found (e.g. models/fcn.py) and no shipped "
                          f"recipe of that name (shipped: {', '.join(shipped_recipes())})")
    if not hasattr(module, "get_config"):
        raise RecipeError(f"{path}: a recipe must define get_config(variant='')")
    try:
        config = module.get_config(variant)
    except ValueError as exc:
        raise RecipeError(f"{path}: {exc}") from None
    missing = [s for s in SECTIONS if s not in config]
    if missing:
        raise RecipeError(f"{path}: recipe lacks section(s) {missing}")
    config = copy.deepcopy(config)
    config.setdefault("name", path.stem)
    config["variant"] = variant
    return config


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: dict, overrides) -> dict:
    """Apply ``section.key=value`` overrides; unknown keys are an error (typos fail loudly)."""
    config = copy.deepcopy(config)
    for item in overrides or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise RecipeError(f"--set {item!r}: expected section.key=value")
        parts = key.strip().split(".")
        node = config
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise RecipeError(f"--set {item!r}: no section {'.'.join(parts[:-1])!r}")
            node = node[p]
        if parts[-1] not in node:
            raise RecipeError(f"--set {item!r}: unknown key {key!r}; known in this section: "
                              f"{sorted(node)}")
        node[parts[-1]] = _typed_value(key.strip(), node[parts[-1]], value.strip())
    return config


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "a boolean (true or false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list (JSON, or comma-separated words)"
    if isinstance(value, dict):
        return "a JSON object"
    return "a string"


def _typed_value(key: str, current, text: str):
    """The override ``text`` of ``key`` as a value of the recipe's type for it.

    JSON when it parses, else a string. ``null`` is accepted everywhere (the recipes use it
    for "off"). Integer keys need an integer, number keys a number, boolean keys true/false,
    object keys a JSON object; a list key given a plain string gets its comma-separated parts
    (``data.image_types=MUL-PanSharpen`` -> ``["MUL-PanSharpen"]``). String keys and keys
    whose recipe value is null take any value (some accept several types, e.g.
    ``train.jit_compile``: "auto" or true/false). Raises :class:`RecipeError` naming the
    key, the expected type and the value.
    """
    value = _parse_value(text)
    if value is None or current is None or isinstance(current, str):
        return value
    if isinstance(current, (list, tuple)) and isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          list: lambda v: isinstance(v, list), tuple: lambda v: isinstance(v, list),
          dict: lambda v: isinstance(v, dict)}.get(type(current), lambda v: True)
    if not ok(value):
        raise RecipeError(f"--set {key}={text}: {key} must be {_type_name(current)}, "
                          f"got {text!r}")
    return value


# ---- shared defaults of the recipes (sn_tf.configs) ---------------------------------
DATA_DEFAULTS = {"image_types": ["MUL-PanSharpen"], "bands": None, "crop_size": 512,
                 "batch_size": 16, "train_split": "train", "val_split": "val", "aois": None,
                 "boundary_weight": None, "contact_weight": None, "interior_level": 1.5,
                 "core_weight": None,
                 "sdf_truncation": None,
                 "cvg_scale": 0.4,
                 "augment": None, "normalization": "dataset_info", "image_dtype": "raw",
                 "crops_per_tile": 1, "reader": "ranged", "targets_on": "auto",
                 "crop_on": "auto"}
# data.image_dtype "raw": the pipeline feeds stored values and the model normalises them
# (and applies gain/offset/noise augmentation) in its first layers, on the accelerator;
# "float32" normalises on the input CPUs (BUILD_NOTES.md section 8).
# data.crops_per_tile k > 1: k training crops per read tile (make_dataset), for hosts
# whose input CPUs cannot keep up (e.g. DetectNet on an H100, BUILD_NOTES.md section 5);
# k consecutive batches then hold the same tiles, and an epoch sees 1/k as many tiles.
# data.reader "ranged": training crops read only their window rows from the shards (same
# crops as "record", which reads whole CRC-checked records; BUILD_NOTES.md section 8).
# data.targets_on "auto" ("device" with a GPU): training batches carry the stored label
# layers (FCN: float16 sdf, uint8 contact layer) or the crops' boxes, rectangles and
# contact cells (DetectNet), and the train step builds the targets and weights from them on
# the accelerator (sn_tf.training.packed_step; the same values as "host", which builds
# them in float32 on the input CPUs; BUILD_NOTES.md section 8, sessions 5 and 7). Without a
# GPU, "auto" keeps "device" for the FCN (no dearer) and "host" for DetectNet (~3 % less
# CPU than in the step).
# data.crop_on "auto": training crops go to the train step as their window's rows and it
# cuts them ("device": the host's input work near its memory floor; FCN image and label
# layers, DetectNet image) when TensorFlow sees a GPU; "host" cuts them in the pipeline,
# no dearer on a CPU-only run (BUILD_NOTES.md section 8, session 6).
TRAIN_DEFAULTS = {"epochs": 60, "steps_per_epoch": None, "learning_rate": 1e-3,
                  "warmup_epochs": 1, "weight_decay": 1e-4, "seed": 0, "mixed_precision": "",
                  "jit_compile": "auto", "val_every": 5, "val_max_tiles": None,
                  "val_batch_size": 4, "postprocess_search": None,
                  "postprocess_tolerance": 0.005, "ema_momentum": None}
# train.postprocess_search {parameter: [values]}: after training, the head's parameters are
# chosen on the val split among these (sn_tf.training.tuning); None keeps the recipe's postprocess.
# train.postprocess_tolerance t: candidates within t of the best val SpaceNet score count as
# equal, and among them the one that finds most buildings sharing a wall wins (the score a
# recipe gives up for separated buildings).
# train.ema_momentum m: validation and best.keras use an exponential moving average of the
# weights (w_avg <- m w_avg + (1 - m) w after every step); None: the raw weights.
# What every recipe's variants change (CPU-sized runs); recipes add their own changes.
VARIANT_DEFAULTS = {
    "demo": {"data": {"crop_size": 256, "batch_size": 8},
             "train": {"epochs": 8, "steps_per_epoch": 12, "val_every": 4}},
    "smoke": {"data": {"crop_size": 128, "batch_size": 4},
              "train": {"epochs": 2, "steps_per_epoch": 3, "warmup_epochs": 0,
                        "val_every": 1, "val_max_tiles": 4}},
}


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for section, values in changes.items():
        out.setdefault(section, {}).update(copy.deepcopy(values))
    return out


def recipe(variant: str, *, model: dict, loss: dict, postprocess: dict, data=None,
           train=None, variants=None) -> dict:
    """A recipe config: shared defaults + the recipe's sections + the variant's changes.

    ``variants``: {"demo": {section: {key: value}}, "smoke": {...}} applied after
    ``VARIANT_DEFAULTS``; the empty variant is the full-size recipe.
    """
    config = {"model": dict(model), "data": {**DATA_DEFAULTS, **(data or {})},
              "loss": dict(loss), "train": {**TRAIN_DEFAULTS, **(train or {})},
              "postprocess": dict(postprocess)}
    if not variant:
        return config
    if variant not in VARIANT_DEFAULTS:
        raise ValueError(f"unknown variant {variant!r} (use '', "
                         f"{', '.join(repr(v) for v in VARIANT_DEFAULTS)})")
    config = _merge(config, VARIANT_DEFAULTS[variant])
    return _merge(config, (variants or {}).get(variant, {}))
