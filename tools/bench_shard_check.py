"""CPU cost of reading shards with their integrity checks (``sn_tf.dataset.reader``).

    .venv/bin/python tools/bench_shard_check.py [--records=20000] [--repeats=5]

Writes one TFRecord file of ``--records`` 1 KB records (small records isolate the per-record
cost), then reads it with tf.data plainly and through ``reader.tf_checked_records`` (the
in-graph count that names a cut, truncated or corrupt shard), interleaved, and times the
framing walk ``tfrecord.count_records`` (``reader.check_shards``). Prints the medians of
process CPU time per record.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.dataset import reader, tfrecord  # noqa: E402
from sn_tf.utils.tfimport import tensorflow  # noqa: E402

tf = tensorflow()


def per_record_us(path: str, n: int, checked: bool) -> float:
    """Process CPU microseconds per record of one pass (tf.data, one length op per record)."""
    ds = (reader.tf_checked_records(tf.constant(path), n) if checked
          else tf.data.TFRecordDataset(path))
    ds = ds.map(tf.strings.length)
    start, seen = time.process_time(), 0
    for _ in ds:
        seen += 1
    assert seen == n
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "small.tfrecord")
        with tfrecord.TFRecordWriter(path) as w:
            for _ in range(args.records):
                w.write([os.urandom(1024)])
        runs = {False: [], True: []}
        for _ in range(args.repeats):
            for checked in (False, True):
                runs[checked].append(per_record_us(path, args.records, checked))
        plain, checked = (statistics.median(runs[k]) for k in (False, True))
        start = time.process_time()
        for _ in range(args.repeats):
            tfrecord.count_records(path)
        walk = (time.process_time() - start) / args.repeats / args.records * 1e6
    print(f"plain tf.data read      {plain:7.1f} us CPU / record")
    print(f"tf_checked_records      {checked:7.1f} us CPU / record  (+{checked - plain:.1f})")
    print(f"framing walk            {walk:7.1f} us CPU / record  (count_records)")


if __name__ == "__main__":
    main()
