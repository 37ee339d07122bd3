"""The model directory: what training leaves behind and export/predict read (no TF import).

Layout of ``--model_dir``::

    model_info.json          ModelInfo: model kind, input bands, normalisation, stride,
                             post-processing parameters, recipe, versions
    config.json              the resolved recipe (after flag overrides)
    checkpoints/last.keras   the model after the last epoch
    checkpoints/best.keras   the model with the best validation F1 (shared polygon head)
    backup/                  keras.callbacks.BackupAndRestore state (resume a killed run)
    logs/                    TensorBoard event files
    training_log.csv         one row per epoch, the same columns every epoch (losses,
                             metrics, and VAL_KEYS: filled where validation ran, else empty)
    val_scores.json          the SpaceNet score of the best epoch (``sn_tf.score --json`` form)
    postprocess_search.json  the polygon head's parameters chosen on val (``sn_tf.training.tuning``)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from sn_tf.utils import families
from sn_tf.utils.errors import SnTfError

MODEL_INFO = "model_info.json"
CONFIG = "config.json"
LAST = "checkpoints/last.keras"
BEST = "checkpoints/best.keras"
BACKUP = "backup"
LOGS = "logs"
TRAINING_LOG = "training_log.csv"
VAL_SCORES = "val_scores.json"
MODEL_INFO_VERSION = 1


@dataclasses.dataclass
class ModelInfo:
    """Everything needed to feed a trained model raw bands and turn its outputs into polygons.

    kind: "fcn" | "detectnet".  image_types / bands: the input stack, in order: for each
    image type the 1-based band indices taken from it (e.g. {"MUL-PanSharpen": [1..8]}).
    input_dtypes: stored dtype of each image type.  mean / std: per input channel
    (length = number of channels); the model input is (raw - mean) / std.  stride: input
    height and width must be multiples of it (the serving function pads).  postprocess:
    parameters of the shared polygon head (e.g. threshold, min_area, sdf_level for the FCN;
    coverage threshold, grouping, group threshold, eps, nms_iou, rect_gate, min_height,
    max_boxes for DetectNet; the family's ``postprocess`` (``sn_tf.utils.families``) fills keys an older file lacks).
    recipe: the recipe name (e.g. "fcn").  versions: package versions at training time.
    normalizes_input: True when the model's first layers normalise raw bands themselves
    (trained on ``image_dtype="raw"`` batches): feed it raw values cast to float32 and pad
    with ``mean``; False: feed ``(raw - mean) / std`` and pad with 0.
    source_bands: band count of each image type in the training data (e.g.
    {"MUL-PanSharpen": 8}); inputs with another count are refused by ``sn_tf.predict`` even
    when they hold the bands the model reads (an 8-band file where a 3-band type is expected
    is most likely the wrong file). Empty for model infos written before it existed: then
    only "at least the highest band read" is checked.
    cell_size: DetectNet only: pixels per output grid cell (``sn_tf.input.cells``; 16 or 8), the
    one the model was built and trained with; export, predict and the polygon head read it
    from here. None for the FCN and in model infos written before it existed (then 16,
    ``sn_tf.input.cells.DEFAULT_CELL_SIZE``: use :meth:`grid_cell_size`).
    """

    kind: str
    image_types: list[str]
    bands: dict[str, list[int]]
    input_dtypes: dict[str, str]
    mean: list[float]
    std: list[float]
    stride: int
    postprocess: dict
    recipe: str = ""
    sdf_truncation: float | None = None
    versions: dict = dataclasses.field(default_factory=dict)
    format_version: int = MODEL_INFO_VERSION
    normalizes_input: bool = False
    source_bands: dict[str, int] = dataclasses.field(default_factory=dict)
    cell_size: int | None = None

    @property
    def num_bands(self) -> int:
        """Channels of the model input."""
        return sum(len(self.bands[t]) for t in self.image_types)

    def grid_cell_size(self) -> int:
        """Pixels per cell of the model's outputs: 1 for the FCN (full resolution), the
        DetectNet ``cell_size`` (16 when the model info predates it)."""
        default = families.get(self.kind).cell_size
        if default is None:
            return 1
        return default if self.cell_size is None else int(self.cell_size)

    def save(self, directory) -> pathlib.Path:
        """Write ``model_info.json`` into ``directory``."""
        path = pathlib.Path(directory) / MODEL_INFO
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        return path

    @classmethod
    def load(cls, directory) -> "ModelInfo":
        """Read ``model_info.json`` from ``directory`` (a model dir or an export dir)."""
        path = pathlib.Path(directory) / MODEL_INFO
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; is {directory} a sn_tf model or "
                                    "export directory?")
        doc = json.loads(path.read_text())
        if doc.get("format_version") != MODEL_INFO_VERSION:
            raise ValueError(f"{path}: model info format {doc.get('format_version')} is not "
                             f"known to this sn_tf ({MODEL_INFO_VERSION})")
        return cls(**doc)


#: Keys of the input and model sections that decide the weights: a model dir trained with
#: other values holds another model (``check_model_dir``).
MODEL_KEYS = ("data.image_types", "data.bands", "model")


class ModelDirError(SnTfError, ValueError):
    """The model directory cannot be used (a file, or it holds another model)."""


def _flatten(prefix: str, value) -> dict:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flatten(f"{prefix}.{key}", sub).items()}
    return {prefix: value}


def _model_keys(config: dict) -> dict:
    out = {}
    for key in MODEL_KEYS:
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out.update(_flatten(key, node))
    return out


def check_model_dir(model_dir, config: dict) -> None:
    """Refuse, before anything is written, a ``model_dir`` that is not a folder or whose
    ``config.json`` describes another model (other input bands or model section: its
    checkpoints could not be resumed). Raises :class:`ModelDirError` (one line)."""
    d = pathlib.Path(model_dir)
    if d.exists() and not d.is_dir():
        raise ModelDirError(f"{d}: --model_dir is a file, not a folder")
    path = d / CONFIG
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelDirError(f"{path}: unreadable ({err}); use another --model_dir") from None
    before, now = _model_keys(old), _model_keys(config)
    diffs = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if diffs:
        shown = "; ".join(f"{k}: {json.dumps(before.get(k))} there, {json.dumps(now.get(k))} now"
                          for k in diffs[:3])
        raise ModelDirError(f"{d} holds another model ({shown}{'; ...' if len(diffs) > 3 else ''}"
                            "); use a new --model_dir or delete this one")


def checkpoint(model_dir, which: str = "best") -> pathlib.Path:
    """Path of the best (fallback: last) or last checkpoint of a model dir."""
    d = pathlib.Path(model_dir)
    order = [BEST, LAST] if which == "best" else [LAST]
    for rel in order:
        if (d / rel).is_file():
            return d / rel
    raise FileNotFoundError(f"{d}: no checkpoint ({' or '.join(order)}); train first")
