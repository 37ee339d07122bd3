"""The TF-free TFRecord writer: byte identity with TensorFlow's, CRCs, and TF-free workers."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from fixtures.spacenet import make_sn2_aoi

from sn_tf.dataset import tfrecord
from sn_tf.dataset.reader import read_examples

REPO = pathlib.Path(__file__).resolve().parents[1]


def _records():
    """Records as lists of buffers: empty, tiny, and larger than the CRC and coalesce sizes."""
    rng = np.random.default_rng(5)
    big = rng.integers(0, 4096, (300, 310, 3), dtype=np.uint16)  # 558,000 bytes
    half = rng.random((257, 129)).astype(np.float16)  # odd sizes, not multiples of any chunk or stage
    return [
        [b""],
        [b"x"],
        [b"head", memoryview(big.reshape(-1).view(np.uint8)), b"mid", half, b"tail"],
        [bytes(range(256)) * 300, bytearray(b"abc"), big],
        [np.arange(10, dtype=np.int64)],
    ]


def _tf():
    from sn_tf.utils.tfimport import tensorflow

    return tensorflow()


def test_crc32c_known_value_and_mask():
    assert tfrecord.crc32c([b"123456789"]) == 0xE3069283  # the CRC-32C check value
    assert tfrecord.crc32c([b"1234", memoryview(b"56789")]) == 0xE3069283
    crc = 0xE3069283
    assert tfrecord.mask_crc(crc) == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2 ** 32


MODES = {"plain": {}, "drop_cache": {"drop_cache": True},
         "direct": {"direct": True, "drop_cache": True}}


@pytest.mark.parametrize("mode", list(MODES))
def test_files_byte_identical_to_tensorflow_writer(tmp_path, mode, monkeypatch):
    tf = _tf()
    monkeypatch.setattr(tfrecord, "STAGE_BYTES", 64 << 10)  # records span many O_DIRECT writes
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "tf.tfrecord"
    joined = [b"".join(bytes(memoryview(p).cast("B")) if not isinstance(p, bytes) else p
                       for p in rec) for rec in _records()]
    with tfrecord.TFRecordWriter(ours, **MODES[mode]) as w:
        lengths = [w.write(rec) for rec in _records()]
    with tf.io.TFRecordWriter(str(theirs)) as w:
        for data in joined:
            w.write(data)
    assert lengths == [len(d) for d in joined]
    assert ours.read_bytes() == theirs.read_bytes()
    got = list(tf.data.TFRecordDataset(str(ours)).as_numpy_iterator())
    assert got == joined
    assert list(tfrecord.read_records(ours)) == joined


def test_direct_writers_in_threads_share_the_stage_pool_safely(tmp_path, monkeypatch):
    # spare O_DIRECT stages are pooled per process: writers in threads must not collide
    import threading

    monkeypatch.setattr(tfrecord, "STAGE_BYTES", 64 << 10)
    records = [[bytes([k]) * (k * 7919 % 200_000 + 1)] for k in range(40)]
    expected = [r[0] for r in records]
    errors = []

    def work(index: int) -> None:
        try:
            for round_ in range(3):
                path = tmp_path / f"t{index}_{round_}.tfrecord"
                with tfrecord.TFRecordWriter(path, direct=True, drop_cache=True) as w:
                    for rec in records:
                        w.write(rec)
                assert list(tfrecord.read_records(path)) == expected
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("where", ["data", "length"])
def test_corrupted_byte_is_detected_by_tensorflow(tmp_path, where):
    tf = _tf()
    path = tmp_path / "x.tfrecord"
    with tfrecord.TFRecordWriter(path) as w:
        for rec in _records():
            w.write(rec)
    raw = bytearray(path.read_bytes())
    first_big = 12 + 4 + 12 + 1 + 4  # records 0 (empty) and 1 (1 byte), then record 2
    raw[first_big + (2 if where == "length" else 12 + 1000)] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    with pytest.raises(tfrecord.TFRecordError, match=f"{path.name}.*byte {first_big}"):
        list(tfrecord.read_records(path))


def test_direct_writes_fall_back_when_refused(tmp_path, monkeypatch):
    """The 4th O_DIRECT write is refused with EINVAL: the rest is written normally."""
    import errno

    monkeypatch.setattr(tfrecord, "STAGE_BYTES", 64 << 10)
    real, calls = os.write, []

    def refuse_fourth(fd, data):
        calls.append(len(data))
        if len(calls) == 4:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data)

    monkeypatch.setattr(tfrecord.os, "write", refuse_fourth)
    path = tmp_path / "d.tfrecord"
    with tfrecord.TFRecordWriter(path, direct=True) as w:
        if w._sink is None:
            pytest.skip("this file system refuses O_DIRECT at open")
        for rec in _records():
            w.write(rec)
    assert len(calls) == 4 and calls[:3] == [64 << 10] * 3  # no O_DIRECT after the refusal
    monkeypatch.undo()
    ref = tmp_path / "ref.tfrecord"
    with tfrecord.TFRecordWriter(ref) as w:
        for rec in _records():
            w.write(rec)
    assert path.read_bytes() == ref.read_bytes()


def test_truncated_file_named_in_the_error(tmp_path):
    path = tmp_path / "t.tfrecord"
    with tfrecord.TFRecordWriter(path) as w:
        w.write([b"a" * 100])
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(tfrecord.TFRecordError, match="t.tfrecord: record at byte 0 is truncated"):
        list(tfrecord.read_records(path))


def test_partial_writes_are_resumed(tmp_path, monkeypatch):
    """os.writev may write fewer bytes than asked: the rest must follow, in order."""
    real = os.writev
    calls = []

    def stingy(fd, buffers):
        budget, out = 7919, []
        for b in buffers:  # at most ~8 KB per call, cutting buffers in the middle
            take = memoryview(b)[:budget]
            out.append(take)
            budget -= len(take)
            if budget == 0:
                break
        calls.append(len(out))
        return real(fd, out)

    monkeypatch.setattr(tfrecord.os, "writev", stingy)
    path = tmp_path / "p.tfrecord"
    with tfrecord.TFRecordWriter(path) as w:
        for rec in _records():
            w.write(rec)
    monkeypatch.undo()
    ref = tmp_path / "ref.tfrecord"
    with tfrecord.TFRecordWriter(ref) as w:
        for rec in _records():
            w.write(rec)
    assert len(calls) > 100
    assert path.read_bytes() == ref.read_bytes()


def test_non_contiguous_buffer_refused(tmp_path):
    with tfrecord.TFRecordWriter(tmp_path / "n.tfrecord") as w, \
            pytest.raises(ValueError, match="C-contiguous"):
        w.write([np.zeros((4, 4), np.uint8)[:, ::2]])


def test_crc_takes_array_views_in_both_implementations():
    # _pieces hands pixel buffers to google-crc32c as uint8 arrays (no copy); the C
    # extension refuses memoryviews, so pin that arrays work in C and pure Python alike
    from google_crc32c import python as pure

    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 4096, (37, 41, 3), dtype=np.uint16)
    want = tfrecord.google_crc32c.extend(0, pixels.tobytes())
    assert tfrecord.crc32c([pixels]) == want
    assert pure.extend(0, next(tfrecord._pieces([pixels]))) == want


def test_pure_python_crc_fallback_warns(monkeypatch, tmp_path):
    monkeypatch.setattr(tfrecord.google_crc32c, "implementation", "python")
    monkeypatch.setattr(tfrecord, "_warned", False)
    with pytest.warns(RuntimeWarning, match="pure-Python"):
        tfrecord.TFRecordWriter(tmp_path / "w.tfrecord").close()


def test_convert_with_two_workers_never_imports_tensorflow(tmp_path):
    """The CLI and its spawned workers run with a 'tensorflow' that fails on import."""
    data = tmp_path / "data"
    expected = make_sn2_aoi(data, numbers=(1, 2, 3, 4), size=65)
    for name in ("tensorflow", "tensorflow_datasets"):  # TFDS's files are written without it
        fake = tmp_path / "fake" / name
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(
            "import os, pathlib\n"
            f"pathlib.Path({str(tmp_path)!r}, f'tf-imported-by-{{os.getpid()}}').touch()\n"
            f"raise ImportError('sn_tf.convert must not import {name}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(REPO)])}
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "sn_tf.convert", "--noprogress",
                          f"--data_dir={data}", f"--output_dir={out}", "--num_workers=2",
                          "--shard_size_mb=0.05"],
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert not list(tmp_path.glob("tf-imported-by-*")), res.stderr
    assert (out / "features.json").is_file() and (out / "dataset_info.json").is_file()
    shards = list(out.glob("*.tfrecord-*"))
    assert len(shards) >= 2  # so both workers had work
    assert sorted(t["tile_id"] for t in read_examples(out)) == sorted(expected)


def test_a_failing_worker_raises_instead_of_hanging_the_pool():
    # ~64 KB of undrained progress messages made spawned workers block at exit, so an
    # exception in one shard hung the pool's shutdown forever; run with a timeout
    code = (
        "import sys; sys.path[:0] = [{repo!r}, {tests!r}]\n"
        "from sn_tf.dataset import converter\n"
        "from fixtures.pool import chatty\n"
        "ticks = []\n"
        "calls = [(i, 2500, i == 0) for i in range(3)]\n"
        "try:\n"
        "    converter._pool_run(chatty, calls, 2, False, lambda *t: ticks.append(t))\n"
        "except RuntimeError as exc:\n"
        "    print('raised:', exc, len(ticks))\n"
    ).format(repo=str(REPO), tests=str(REPO / "tests"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "raised: shard 0 failed" in out.stdout, out.stdout + out.stderr[-2000:]
    ticks = int(out.stdout.split()[-1])
    assert ticks >= 2500  # the failing worker's ticks (and any finished shard's) all arrived
