"""Load any Keras checkpoint sn_tf writes: ``sn_tf.load_model(path)``.

sn_tf's models and losses use custom Keras classes (``sn_tf.modeling``, ``sn_tf.modeling.model_input``),
registered with Keras when those modules are imported. ``import sn_tf`` alone does not import
them (it never imports TensorFlow, so that the scorer and converter stay light); a bare
``keras.saving.load_model("best.keras")`` therefore fails ("Could not locate class
'FootprintLoss'", or for DetectNet a Functional that "could not be deserialized" without the
class named). ``sn_tf.load_model`` registers them first, then loads::

    import sn_tf
    model = sn_tf.load_model("runs/fcn/checkpoints/best.keras")   # compiled: losses, optimizer
    model = sn_tf.load_model("runs/det", compile=False)           # a model dir: best, else last

``sn_tf.register_keras_objects()`` does the registration only (then ``keras.saving.load_model``
works as usual).
"""

from __future__ import annotations

import pathlib


def register_keras_objects() -> None:
    """Import the modules whose custom Keras classes sn_tf checkpoints use (registers them)."""
    import sn_tf.modeling.model_input  # noqa: F401
    import sn_tf.modeling  # noqa: F401


def load_model(path, compile: bool = True, **kwargs):
    """``keras.saving.load_model`` for a checkpoint sn_tf wrote (FCN or DetectNet).

    Args:
      path: a ``.keras`` file, or a model dir (its ``checkpoints/best.keras``, else
        ``last.keras``).
      compile: also restore the losses, metrics and optimizer state (default, as Keras).
      kwargs: passed to ``keras.saving.load_model``.
    """
    import keras

    from sn_tf.training import model_dir as md

    register_keras_objects()
    path = pathlib.Path(path)
    if path.is_dir():
        path = md.checkpoint(path, "best")
    return keras.saving.load_model(path, compile=compile, **kwargs)
