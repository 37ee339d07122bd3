"""sn_tf: the SpaceNet building dataset as a first-class TensorFlow citizen.

Public names are imported lazily so that ``import sn_tf`` (and CLIs such as
``python -m sn_tf.score``) never pay for importing TensorFlow unless they use it.

    sn_tf.read_examples(path, split=None)   -> iterator of decoded tile dicts (numpy)
    sn_tf.make_dataset(data_dir, split, ...) -> tf.data.Dataset of (inputs, targets)
    sn_tf.score_polygons(truth, proposals)   -> SpaceNet precision / recall / F1
    sn_tf.load_model(path, compile=True)     -> any Keras checkpoint sn_tf wrote (registers
                                                sn_tf's custom classes first; sn_tf.training.checkpoints)
    sn_tf.SnTfError                          -> base of every error about the user's input,
                                                data, flags or configuration (sn_tf.utils.errors)
    sn_tf.keep_freed_memory()                -> glibc malloc keeps freed memory (~30 % more
                                                training crops per CPU-second; sn_tf.utils.malloc)
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "read_examples": "sn_tf.dataset.reader",
    "make_dataset": "sn_tf.input.pipeline",
    "keep_freed_memory": "sn_tf.utils.malloc",
    "score_polygons": "sn_tf.spacenet.scoring",
    "load_model": "sn_tf.training.checkpoints",
    "register_keras_objects": "sn_tf.training.checkpoints",
    "SnTfError": "sn_tf.utils.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sn_tf' has no attribute {name!r}")


def __dir__():
    return __all__
