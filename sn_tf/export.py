"""``python -m sn_tf.export``: a trained model dir -> a self-contained TF SavedModel.

    python -m sn_tf.export --model_dir=runs/fcn --export_dir=exports/fcn [--checkpoint=best]

The flags and ``main``; the export format, the serving signature and the library
(``export_model``, ``load_export``) are ``sn_tf.serving.exporter``.

Exit status: 0 on success, 1 on an input problem (message on stderr, no traceback).
"""

from __future__ import annotations

import sys

from sn_tf.serving.exporter import SERVE, ExportError, export_model, serving_dtype
from sn_tf.training import model_dir as md



def main(argv) -> None:
    """Export per the flags; exit 1 with a one-line message on an input problem."""
    from absl import flags

    fl = flags.FLAGS
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not fl.model_dir or not fl.export_dir:
        _fail("--model_dir and --export_dir are required")
    try:
        path = export_model(fl.model_dir, fl.export_dir, fl.checkpoint, fl.overwrite)
    except ExportError as err:
        _fail(str(err))
    info = md.ModelInfo.load(path)
    print(f"exported {info.kind} ({fl.checkpoint} checkpoint of {fl.model_dir}) to {path}: "
          f"signature '{SERVE}' takes {serving_dtype(info)} [B, H, W, {info.num_bands}]")


def _fail(message: str) -> None:
    """Print ``message`` to stderr and exit with status 1 (no traceback)."""
    print(f"sn_tf.export: error: {message}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("model_dir", None, "Model dir written by sn_tf.train "
                        "(model_info.json, checkpoints/).")
    flags.DEFINE_string("export_dir", None, "Directory to write the SavedModel and metadata to.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Checkpoint to export (best falls "
                      "back to last when there is no best).")
    flags.DEFINE_bool("overwrite", False, "Replace an earlier sn_tf export in --export_dir.")
    app.run(main)
