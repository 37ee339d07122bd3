"""The model families: one table that every stage asks instead of branching on a name.

    fam = families.get("detectnet")     # FamilyError naming the known families otherwise
    fam.target                          # "detection": what the input pipeline makes
    fam.head_outputs                    # ("coverage", "bbox"): what the polygon head needs
    fam.cell_size                       # 16: pixels per output cell (None: full resolution)
    fam.postprocess                     # the head's default parameters (read-only)
    fam.entry("head")                   # sn_tf.head.polygons.detectnet_buildings
    fam.entry("losses")                 # sn_tf.modeling.detectnet.detectnet_losses

A family is a kind of model with its own target, outputs and polygon head: ``"fcn"`` (the
SharpMask-like FCN on footprint / signed-distance rasters, full resolution) and
``"detectnet"`` (DIGITS' DetectNet: coverage and box grids on cells of ``cell_size`` px).
``model.kind`` in a recipe and ``ModelInfo.kind`` in a model dir or export name one.

Adding a family touches four files: one :class:`Family` row here; its model module in
``sn_tf.modeling`` with the functions named by ``builder``, ``losses`` and ``metrics``; its
head function in ``sn_tf.head`` named by ``head``; a recipe in ``sn_tf.configs``. Stages import
nothing upward: the entry points are ``"module:function"`` strings resolved on use.

TF-free, numpy-free (imported by the converter side and the head alike).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
from typing import Any, Mapping

from sn_tf.utils.errors import SnTfError


class FamilyError(SnTfError, ValueError):
    """An unknown model family (``model.kind`` / ``ModelInfo.kind``)."""


@dataclasses.dataclass(frozen=True)
class Family:
    """What every stage needs to know about one model family.

    name: ``model.kind`` in recipes, ``ModelInfo.kind`` in model dirs and exports.
    target: the input pipeline's target (``sn_tf.input.pipeline.make_dataset(target=...)``);
      ``oriented_target`` replaces it when the recipe sets ``model.oriented``.
    head_outputs: model outputs the polygon head needs (export refuses a model without them).
    optional_head_outputs: outputs the head uses when the export serves them.
    training_only_outputs: auxiliary outputs that only train (left out of the signature).
    interior_key: the ``model`` recipe key that adds the ``interior`` output.
    input_multiple: fixed input-size multiple (DetectNet 16); None: from the model's depth
      (``sn_tf.modeling.stride_for``).
    cell_size: default pixels per output cell (DetectNet 16, ``sn_tf.input.cells``); None:
      outputs at full input resolution.
    builder / losses / metrics / head: ``"module:function"`` of the Keras model builder
      (``builder(num_bands, **model_section)``), its training losses and metrics
      (``losses(**loss_options)``, ``metrics(contact=, interior=)``: dicts keyed by output
      name, through ``sn_tf.modeling.losses_for`` / ``metrics_for``) and of the polygon head
      (``head(outputs, image_id, height, width, params, cell_size)`` -> ``Building`` list).
    postprocess: the head's default parameters (read-only; recipes override them).
    """

    name: str
    target: str
    head_outputs: tuple[str, ...]
    optional_head_outputs: tuple[str, ...]
    training_only_outputs: tuple[str, ...]
    interior_key: str
    input_multiple: int | None
    cell_size: int | None
    builder: str
    losses: str
    metrics: str
    head: str
    postprocess: Mapping[str, Any]
    oriented_target: str | None = None

    def entry(self, which: str):
        """The function named by ``builder`` or ``head`` (imported on first use)."""
        module, _, function = getattr(self, which).partition(":")
        return getattr(importlib.import_module(module), function)

    def target_for(self, model_section: Mapping[str, Any]) -> str:
        """The pipeline target of a recipe's ``model`` section of this family."""
        if self.oriented_target and model_section.get("oriented"):
            return self.oriented_target
        return self.target

    @property
    def full_resolution(self) -> bool:
        """True when every output has one value per input pixel (no cell grid)."""
        return self.cell_size is None


def _frozen(d: dict) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(d))


FCN = Family(
    name="fcn", target="segmentation",
    head_outputs=("footprint", "sdf"), optional_head_outputs=("contact", "interior"),
    training_only_outputs=(), interior_key="interior",
    input_multiple=None, cell_size=None,
    builder="sn_tf.modeling.fcn:build_fcn", losses="sn_tf.modeling.fcn:fcn_losses",
    metrics="sn_tf.modeling.fcn:fcn_metrics", head="sn_tf.head.polygons:fcn_buildings",
    postprocess=_frozen({"threshold": 0.0, "split_with_sdf": True, "sdf_level": 2.0,
                         "min_seed_area": 12, "min_area": 20.0, "simplify": 0.0,
                         "contact_threshold": 0.0, "interior_threshold": 0.0,
                         "merge_level": None, "seed_erosion": 0}))

DETECTNET = Family(
    name="detectnet", target="detection", oriented_target="oriented_detection",
    head_outputs=("coverage", "bbox"), optional_head_outputs=("orient",),
    training_only_outputs=("interior",), interior_key="aux_interior",
    input_multiple=16, cell_size=16,
    builder="sn_tf.modeling.detectnet:build_detectnet",
    losses="sn_tf.modeling.detectnet:detectnet_losses",
    metrics="sn_tf.modeling.detectnet:detectnet_metrics",
    head="sn_tf.head.polygons:detectnet_buildings",
    postprocess=_frozen({"threshold": 0.06, "group_threshold": 3, "eps": 0.02,
                         "min_height": 10.0, "max_boxes": 450, "grouping": "opencv",
                         "rect_gate": 0.9, "nms_iou": 0.1}))

#: Every family by name, in the order the demo trains them.
FAMILIES: Mapping[str, Family] = types.MappingProxyType({f.name: f for f in (FCN, DETECTNET)})
NAMES = tuple(FAMILIES)


def get(name: str) -> Family:
    """The family called ``name``; :class:`FamilyError` naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise FamilyError(f"unknown model kind {name!r}; known: {list(NAMES)}") from None
