"""Write a synthetic SpaceNet dataset (the SpaceNet 1 and 2 layouts) for demos and tests.

    python -m sn_tf.sample --output_dir=DIR [--aois=AOI_2_Vegas,...] [--tiles_per_aoi=N]

The flags and ``main``; the generator is ``sn_tf.spacenet.synthetic`` (``write_sample``).
"""

from __future__ import annotations

import sys
import time

from sn_tf.spacenet.synthetic import format_summary, write_sample
from sn_tf.spacenet.synthetic_aois import DEFAULT_AOIS


def main(argv=None) -> None:
    """CLI entry point (absl flags are defined here only)."""
    from absl import app, flags

    flags.DEFINE_string("output_dir", None, "Folder to write the sample dataset into.")
    flags.DEFINE_list("aois", list(DEFAULT_AOIS), "AOIs to generate.")
    flags.DEFINE_integer("tiles_per_aoi", None,
                         "Tiles per AOI (default: 12 per SpaceNet 2 AOI, 6 for Rio).")
    flags.DEFINE_integer("seed", 0, "Random seed (same seed -> identical files).")
    flags.DEFINE_enum("pan_dtype", "uint16", ["uint16", "float64"], "PAN pixel type.")
    flags.mark_flag_as_required("output_dir")
    fl = flags.FLAGS

    def run(_argv):
        start = time.perf_counter()
        manifest = write_sample(fl.output_dir, aois=fl.aois, tiles_per_aoi=fl.tiles_per_aoi,
                                seed=fl.seed, pan_dtype=fl.pan_dtype)
        print(format_summary(manifest, fl.output_dir, time.perf_counter() - start))

    app.run(run, argv=argv if argv is not None else sys.argv)


if __name__ == "__main__":
    main()
