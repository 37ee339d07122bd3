"""Import TensorFlow once, without its C++ start-up chatter on stderr, with safe defaults.

TensorFlow prints oneDNN, CUDA-stub and cuInit lines from C++ before its logging is set up,
which garbles progress bars and CLI output. ``tensorflow()`` silences file descriptor 2
only while importing TF and enumerating devices. Set ``SN_TF_VERBOSE_TF=1`` to see them.

oneDNN custom ops are OFF by default (``TF_ENABLE_ONEDNN_OPTS=0``, unless the environment
sets it): with TF 2.21 on AVX-512 CPUs they corrupt the heap during training steps of
the FCN ("double free or corruption", "corrupted size vs. prev_size"; BUILD_NOTES.md).
Every sn_tf module imports TensorFlow through ``tensorflow()`` (or imports this module
first), so the setting is in place before TF loads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys


@contextlib.contextmanager
def _silenced_stderr():
    if os.environ.get("SN_TF_VERBOSE_TF") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _defaults() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


_defaults()  # on import too: a module that imports this one before any TF-using library
# (e.g. keras) gets the settings even if it never calls tensorflow()


def tensorflow():
    """The ``tensorflow`` module, imported quietly on first use."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    _defaults()
    with _silenced_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    if os.environ.get("SN_TF_VERBOSE_TF") != "1":
        # TF's Python INFO lines (SavedModel writing, dataset defaults) go through absl
        # logging in absl apps; keep warnings and errors.
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    return tf
