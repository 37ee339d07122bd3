"""sn_tf.utils.malloc: after keep_freed_memory, large arrays come from malloc's heap, not mmap;
after return_freed_memory, from their own mappings again."""

import os
import subprocess
import sys

import pytest

from sn_tf.utils import malloc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# in a fresh process: mmapped bytes held while a 16 MB numpy array is alive
_PROBE = """
import sys
sys.path.insert(0, {repo!r})
import numpy as np
from sn_tf.utils import malloc
{setup}
before = malloc.mmapped_bytes()
a = np.ones(16 << 20, np.uint8)
during = malloc.mmapped_bytes()
del a
b = np.ones(16 << 20, np.uint8)  # freed memory is reused: the heap does not grow again
print(applied, during - before, malloc.mmapped_bytes() - before)
"""


SETUPS = {"none": "applied = None", "keep": "applied = malloc.keep_freed_memory()",
          "return": "malloc.keep_freed_memory()\napplied = malloc.return_freed_memory()"}


def _probe(setup: str) -> list[str]:
    res = subprocess.run([sys.executable, "-c", _PROBE.format(repo=REPO, setup=SETUPS[setup])],
                         capture_output=True, text=True, check=True)
    return res.stdout.split()


@pytest.mark.skipif(malloc.mmapped_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")
def test_large_arrays_leave_mmap_after_keep_freed_memory():
    applied, during, after = _probe("none")
    assert applied == "None" and int(during) >= 16 << 20  # glibc's default: a fresh mmap
    applied, during, after = _probe("keep")
    assert applied == "True"
    assert int(during) == 0 and int(after) == 0  # served from (and returned to) the heap


def test_keep_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(malloc, "_libc", lambda: None)
    assert malloc.keep_freed_memory() is False
    assert malloc.mmapped_bytes() is None


@pytest.mark.skipif(malloc.mmapped_bytes() is None, reason="needs glibc >= 2.33 (mallinfo2)")
def test_return_freed_memory_maps_large_arrays_again():
    applied, during, after = _probe("return")  # undoes keep_freed_memory
    assert applied == "True"
    # a and then b each have their own mapping (a's was unmapped when freed): glibc's
    # dynamic threshold did not rise to 16 MB when a was freed
    assert int(during) >= 16 << 20 and int(after) >= 16 << 20


def test_return_freed_memory_is_a_no_op_off_glibc(monkeypatch):
    monkeypatch.setattr(malloc, "_libc", lambda: None)
    assert malloc.return_freed_memory() is False
