"""Import TensorFlow once, without its C++ start-up chatter on stderr.

TensorFlow prints oneDNN, CUDA-stub and cuInit lines from C++ before its logging is set up,
which garbles progress bars and CLI output. ``tensorflow()`` silences file descriptor 2
only while importing TF and enumerating devices. Set ``SN_TF_VERBOSE_TF=1`` to see them.
"""

from __future__ import annotations

import contextlib
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


def tensorflow():
    """The ``tensorflow`` module, imported quietly on first use."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _silenced_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
    return tf
