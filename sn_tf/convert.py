"""Convert SpaceNet folders into sharded TFRecords plus their description.

    python -m sn_tf.convert --data_dir=<SpaceNet root or one AOI folder> --output_dir=<dir>

The flags and ``main``; the converter itself (how it works: splits, shards, workers,
``--resume``, the description ``sn_tf_info.json``) is ``sn_tf.dataset.converter``.

``--beam_pipeline_options="runner=DirectRunner,direct_num_workers=2"``: the same conversion
on Apache Beam (any runner and its options pass through, as ``tfds build
--beam_pipeline_options``; ``sn_tf.dataset.beam_convert``; needs ``pip install sn_tf[beam]``).

Exit status: 0 when every tile was converted, 3 when some tiles were skipped (listed in
sn_tf_info.json and printed), 1 for an unusable input or output folder (or one another
conversion is writing), 2 for bad flags. Errors are one line on stderr naming the path or
flag, without a traceback.
"""

from __future__ import annotations

import os
import sys

from sn_tf.dataset import labels, schema
from sn_tf.dataset.converter import (EXIT_FATAL, EXIT_USAGE, ConvertConfig, ConvertError,
                                     ConvertUsageError, convert, format_summary)
from sn_tf.utils.beam_options import BeamUnavailable, import_beam_module


# ---- CLI -------------------------------------------------------------------------------
def _parse_splits(text: str):
    try:
        pairs = [p.split("=") for p in text.split(",") if p]
        splits = tuple((k.strip(), float(v)) for k, v in pairs)
    except ValueError:
        raise ConvertUsageError(f"--splits={text!r}: expected e.g. train=0.8,val=0.2") from None
    if not splits or any(not f >= 0 for _, f in splits) or sum(f for _, f in splits) <= 0:
        raise ConvertUsageError(f"--splits={text!r}: fractions must be >= 0 and sum > 0")
    return splits


def run(data_dir, output_dir, cfg: ConvertConfig, command_line: str, beam_options: str = ""):
    """The local converter, or the Beam one when ``beam_options`` is given."""
    if not beam_options:
        return convert(data_dir, output_dir, cfg, command_line)
    beam_convert = import_beam_module("sn_tf.dataset.beam_convert")
    return beam_convert.convert_beam(data_dir, output_dir, cfg, beam_options, command_line)


def main(argv):
    """absl entry point."""
    from absl import flags

    FLAGS = flags.FLAGS
    if len(argv) > 1:
        print(f"unexpected arguments: {argv[1:]}", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = ConvertConfig(
            name=FLAGS.name, aois=tuple(FLAGS.aois), image_types=tuple(FLAGS.image_types),
            label_grids=tuple(FLAGS.label_grids), resample_to=FLAGS.resample_to,
            resample_types=tuple(FLAGS.resample_types), resample_method=FLAGS.resample_method,
            splits=_parse_splits(FLAGS.splits), shard_size_mb=FLAGS.shard_size_mb,
            num_workers=FLAGS.num_workers, resume=FLAGS.resume, overwrite=FLAGS.overwrite,
            sdf_truncation=FLAGS.sdf_truncation, contact_radius=FLAGS.contact_radius,
            image_encoding=FLAGS.image_encoding,
            label_encoding=FLAGS.label_encoding, source=FLAGS.source,
            progress=FLAGS.progress and not FLAGS.no_progress, tune_malloc=True)  # a process of its own
        result = run(FLAGS.data_dir, FLAGS.output_dir, cfg, " ".join(sys.argv),
                     FLAGS.beam_pipeline_options)
    except (ConvertUsageError, BeamUnavailable) as exc:
        print(f"sn_tf.convert: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConvertError as exc:
        print(f"sn_tf.convert: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except OSError as exc:  # e.g. sn_tf_info.json on a disk that just filled up
        where = exc.filename or FLAGS.output_dir
        print(f"sn_tf.convert: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FATAL
    print(format_summary(result.info, FLAGS.output_dir))
    if result.rewritten:
        print(f"  written again (input files changed since the earlier run; see the notes): "
              f"{', '.join(result.rewritten)}")
    return result.exit_code


def _define_flags():
    from absl import flags

    flags.DEFINE_string("data_dir", None, "SpaceNet root, or one AOI folder.", required=True)
    flags.DEFINE_string("output_dir", None, "Folder for shards, sn_tf_info.json and the TFDS metadata.",
                        required=True)
    flags.DEFINE_string("name", "spacenet", "Dataset name (shard file prefix).")
    flags.DEFINE_list("aois", [], "AOIs to convert, e.g. AOI_2_Vegas (default: all found).")
    flags.DEFINE_list("image_types", [], "Image types, e.g. PAN,MUL-PanSharpen "
                      "(default: all present).")
    flags.DEFINE_list("label_grids", [], "Image types whose grids get labels "
                      "(default: one per distinct grid).")
    flags.DEFINE_string("resample_to", "", "Also store chosen types resampled onto this "
                        "type's grid, as '<type>@<grid type>'.")
    flags.DEFINE_list("resample_types", [], "Types to resample (default: all not on the grid).")
    flags.DEFINE_enum("resample_method", "bilinear",
                      ["nearest", "bilinear", "cubic", "average", "lanczos"],
                      "Resampling for --resample_to.")
    flags.DEFINE_string("splits", "train=0.8,val=0.2", "Split fractions by tile-id hash.")
    flags.DEFINE_float("shard_size_mb", 150.0, "Target shard size (MB, raw pixels).")
    flags.DEFINE_integer("num_workers", min(2, os.cpu_count() or 1), "Worker processes.")
    flags.DEFINE_bool("resume", False, "Write only the shards a killed run did not finish.")
    flags.DEFINE_bool("overwrite", False, "Replace an existing conversion in output_dir.")
    flags.DEFINE_float("sdf_truncation", 32.0, "Signed distance clipped to +-this (pixels).")
    flags.DEFINE_integer("contact_radius", labels.CONTACT_RADIUS, "Contact layer: pixels whose "
                         "(2r+1)-pixel square window holds two different buildings "
                         "(shared walls, narrow gaps).", lower_bound=1)
    flags.DEFINE_enum("image_encoding", "raw", list(schema.ENCODINGS), "Pixel encoding.")
    flags.DEFINE_enum("label_encoding", "auto", ["auto", *schema.ENCODINGS],
                      "Label array encoding; auto = zlib mask and contact, raw distance and "
                      "sdf.")
    flags.DEFINE_enum("source", "auto", ["auto", "geotiff", "hdf5"],
                      "Pixel source: GeoTIFF, lab HDF5 layers, or GeoTIFF when present.")
    flags.DEFINE_bool("progress", True, "Show a progress bar (--noprogress: none; the "
                      "spelling of every sn_tf CLI).")
    flags.DEFINE_string("beam_pipeline_options", "", "Convert on Apache Beam with these "
                        "options, e.g. 'runner=DirectRunner,direct_num_workers=2' (any runner "
                        "and its options, comma-separated; needs pip install sn_tf[beam]).")
    flags.DEFINE_bool("no_progress", False, "Deprecated spelling of --noprogress (still works).")


def _parse_flags(argv):
    """absl's parse, with a flag error (unknown flag, bad value) one line and exit status 2
    (absl's own handler exits 1, the status of an unusable folder)."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as exc:
        print(f"sn_tf.convert: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main, flags_parser=_parse_flags)
