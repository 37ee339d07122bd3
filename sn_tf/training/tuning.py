"""Choose the shared polygon head's parameters on the validation split.

The head's thresholds (e.g. the FCN's ``interior_threshold``, ``min_seed_area`` and
footprint ``threshold``) decide how touching buildings are split; which values suit a model
depends on the model. ``train.postprocess_search`` in a recipe lists candidate values per
post-processing parameter::

    "postprocess_search": {"interior_threshold": [-1.0, 0.0, 1.0, 2.0],
                           "min_seed_area": [12, 30], "threshold": [-0.5, 0.0, 0.5]}

After training, ``training.tune_postprocess`` runs the chosen checkpoint (``best.keras``)
once over the validation split; :func:`search` scores every combination (cartesian product, each on top of the
recipe's ``postprocess``) through the shared head with the SpaceNet metric, and keeps the
one with the best SpaceNet score (mean city F1), where candidates within
``SCORE_TOLERANCE`` of the best count as equal and the one that finds most buildings
sharing a wall wins (then the earlier: the recipe's own parameters first). The choice goes into ``model_info.json`` (so export,
predict and the demo use it) and the whole table into ``postprocess_search.json``. The
test split is never looked at.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import time

from sn_tf.training import model_dir as md
from sn_tf.training.recipes import TRAIN_DEFAULTS
from sn_tf.head import polygons
from sn_tf.input.cells import DEFAULT_CELL_SIZE
from sn_tf.spacenet.buildings import Building
from sn_tf.spacenet import scoring

SEARCH_FILE = "postprocess_search.json"

#: Candidates whose val SpaceNet score is within this of the best count as equally good;
#: among them the one with the highest touching recall wins. The demo's val split holds
#: ~375 buildings over 2 cities: one building more or less moves the score by ~0.003, so
#: smaller differences are noise, and the threshold that separates neighbours is preferred.
SCORE_TOLERANCE = TRAIN_DEFAULTS["postprocess_tolerance"]


def candidates(kind: str, base: dict, search: dict | None) -> list[dict]:
    """Post-processing parameter sets to try: ``base`` first, then every combination.

    ``base``: the recipe's ``postprocess`` overrides; ``search``: {parameter: [values]}.
    Each candidate is a full ``polygons.postprocess_params(kind, ...)`` dict; unknown
    parameter names or empty value lists raise ValueError naming them. Duplicates of
    ``base`` are dropped.
    """
    first = polygons.postprocess_params(kind, base)
    if not search:
        return [first]
    for name, values in search.items():
        if name not in first:
            raise ValueError(f"train.postprocess_search: unknown {kind} post-processing "
                             f"parameter {name!r}; known: {sorted(first)}")
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"train.postprocess_search.{name}: expected a non-empty list "
                             f"of values, got {values!r}")
    out = [first]
    names = list(search)
    for combo in itertools.product(*(search[n] for n in names)):
        params = polygons.postprocess_params(kind, {**first, **dict(zip(names, combo))})
        if params not in out:
            out.append(params)
    return out


@dataclasses.dataclass
class SearchResult:
    """The chosen parameters, their validation result and every candidate's scores."""

    params: dict
    result: scoring.ScoreResult
    table: list[dict]
    seconds: float
    tolerance: float = SCORE_TOLERANCE

    def to_dict(self) -> dict:
        return {"chosen": self.params, "seconds": self.seconds,
                "chosen_on": f"touching recall among candidates within {self.tolerance} of "
                             f"the best mean city F1",
                "val": self.result.to_dict()["overall"],
                "val_breakdown": {k: v.to_dict() for k, v in
                                  self.result.breakdown["overall"].items()},
                "candidates": self.table}




def search(kind: str, outputs: list, truth: dict, cands: list[dict], cell_size: int = DEFAULT_CELL_SIZE,
           tolerance: float = SCORE_TOLERANCE) -> SearchResult:
    """Score each candidate on predicted ``outputs`` of one split and choose one.

    outputs: [(tile_id, {output name: array [H', W', C]}, (height, width))] as yielded by
    ``training.predict_split``; truth: {tile_id: [shapely polygon in pixel coordinates]};
    cell_size: DetectNet pixels per output cell (ignored for the FCN). The choice: among candidates whose SpaceNet score (mean city F1) is within
    ``tolerance`` of the best, the highest touching recall, then the highest score, then
    the earliest (the recipe's own parameters first).
    """
    t0 = time.time()
    ids = [tid for tid, _, _ in outputs]
    truth_b = [Building(t, p) for t in ids for p in truth.get(t, [])]
    truth_b += [Building(t, None) for t in ids]
    results, table = [], []
    for params in cands:
        props = [Building(t, None) for t in ids]
        for tid, out, size in outputs:
            props += polygons.outputs_to_buildings(kind, out, tid, image_size=size,
                                                   params=params, cell_size=cell_size)
        result = scoring.score_polygons(truth_b, props)
        groups = result.breakdown["overall"]
        results.append(result)
        table.append({"params": params, "mean_city_f1": result.mean_city_f1,
                      "f1": result.overall.f1, "touching_recall": groups["touching"].recall,
                      "isolated_recall": groups["isolated"].recall})
    i = choose(table, tolerance)
    return SearchResult(cands[i], results[i], table, round(time.time() - t0, 1), tolerance)


def choose(table: list[dict], tolerance: float = SCORE_TOLERANCE) -> int:
    """Index of the chosen row of ``table`` (rows with ``mean_city_f1`` and
    ``touching_recall``): among rows within ``tolerance`` of the best score, the highest
    touching recall, then the highest score, then the earliest."""
    top = max(r["mean_city_f1"] for r in table)
    return min((i for i, r in enumerate(table) if r["mean_city_f1"] >= top - tolerance),
               key=lambda i: (-table[i]["touching_recall"], -table[i]["mean_city_f1"], i))


def save_choice(model_dir, found: SearchResult, split: str, verbose: bool = True) -> None:
    """Write ``found``'s parameters into ``model_dir``'s ``model_info.json`` (export and
    predict read them there) and the whole search into ``postprocess_search.json``."""
    model_dir = pathlib.Path(model_dir)
    info = md.ModelInfo.load(model_dir)
    info.postprocess = found.params
    info.save(model_dir)
    (model_dir / SEARCH_FILE).write_text(json.dumps(found.to_dict(), indent=1))
    if verbose:
        base = found.table[0]
        changed = {k: v for k, v in found.params.items() if v != base["params"][k]}
        b = found.result.breakdown["overall"]
        print(f"post-processing chosen on '{split}' ({len(found.table)} candidates, "
              f"{found.seconds:.0f} s): {changed or 'the recipe parameters'}; SpaceNet score "
              f"{base['mean_city_f1']:.3f} -> {found.result.mean_city_f1:.3f}, touching recall "
              f"{base['touching_recall']:.3f} -> {b['touching'].recall:.3f}, isolated "
              f"{b['isolated'].recall:.3f}", flush=True)
