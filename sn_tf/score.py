"""``python -m sn_tf.score``: SpaceNet precision / recall / F1 of proposals against truth.

    python -m sn_tf.score --truth=PATH --proposals=PATH [--iou=0.5] [--min_area=20]
        [--json=FILE] [--repair_proposals=true] [--iou_inclusive=false] [--skip_malformed=false]
        [--touch_distance=1] [--size_classes=100,1000]

PATH is a SpaceNet CSV, a GeoJSON file, or a folder of them. Areas and distances are in pixels
(the SpaceNet rule: area >= 20 px); GeoJSON in map coordinates is converted with --gsd metres
per pixel; proposals in another map CRS than the truth are reprojected to the truth's CRS;
pixel against map coordinates is refused. Warnings (stderr and ``"warnings"`` in the JSON)
name empty inputs, reprojections, images only in the proposals (scored: false positives) and
cities only in the proposals (not scored). Prints a table per city and
overall (the SpaceNet 2 score is the mean of the city F1 values); ``--json`` also writes
``{"overall": {...}, "cities": {...}, "images": {...}}`` (each with tp, fp, fn, precision,
recall, f1; overall adds ``mean_city_f1``; every image lists ``truth_best_iou``, the best IoU of
each kept truth building, ``truth_matched`` and ``truth_touching``). A second table gives the
recall over touching and isolated truth buildings (touching: another truth building within
``--touch_distance``, in the truth's units) and per size class, per city and overall
(``"breakdown"`` in the JSON): a low touching recall means the model merges neighbours.
Imports numpy, shapely and absl only (never TensorFlow).
Exit status: 0 on success, 1 on an input problem (message on stderr, no traceback).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("truth", None, "Truth: SpaceNet CSV, GeoJSON, or folder of them.")
flags.DEFINE_string("proposals", None, "Proposals: SpaceNet CSV, GeoJSON, or folder of them.")
flags.DEFINE_float("iou", 0.5, "IoU threshold in (0, 1]; a match needs IoU > iou.")
flags.DEFINE_bool("iou_inclusive", False, "Match when IoU >= iou instead of the official >.")
flags.DEFINE_float("min_area", 20.0, "Drop truth and proposal polygons with area < min_area "
                   "pixels (the SpaceNet rule; map-coordinate GeoJSON is converted with --gsd).")
flags.DEFINE_float("gsd", 0.3, "Metres per pixel used to apply the pixel rules (--min_area, "
                   "--touch_distance, --size_classes) to GeoJSON in map coordinates (0.3: "
                   "SpaceNet 2 tiles; 0.5: SpaceNet 1 Rio 3-band).")
flags.DEFINE_string("json", None, "Also write the full result as JSON to this file.")
flags.DEFINE_bool("repair_proposals", True, "buffer(0) invalid proposals as the reference Python "
                  "scorers do (the official Java tester does not repair).")
flags.DEFINE_float("touch_distance", 1.0, "Breakdown: a truth building within this distance of "
                   "another truth building of its image is 'touching' (pixels).")
flags.DEFINE_list("size_classes", ["100", "1000"], "Breakdown: ascending area edges of the size "
                  "classes (pixels).")
flags.DEFINE_bool("skip_malformed", False, "Skip malformed rows with a warning instead of "
                  "stopping with an error.")


def _fail(message: str) -> None:
    """Print ``message`` to stderr and exit with status 1 (no traceback)."""
    print(f"sn_tf.score: error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv) -> None:
    """Score, print the table, optionally write JSON."""
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.truth or not FLAGS.proposals:
        _fail("--truth and --proposals are required")
    from sn_tf.spacenet.building_readers import SpaceNetFormatError
    from sn_tf.spacenet.scoring import score_polygons

    try:
        size_classes = [float(v) for v in FLAGS.size_classes]
    except ValueError:
        _fail(f"--size_classes: expected comma-separated numbers, got "
              f"{','.join(FLAGS.size_classes)!r}")
    try:
        result = score_polygons(FLAGS.truth, FLAGS.proposals, FLAGS.iou, FLAGS.min_area,
                                iou_inclusive=FLAGS.iou_inclusive,
                                repair_proposals=FLAGS.repair_proposals,
                                on_error="skip" if FLAGS.skip_malformed else "raise",
                                touch_distance=FLAGS.touch_distance, size_classes=size_classes,
                                gsd=FLAGS.gsd)
    except (OSError, SpaceNetFormatError, ValueError) as err:
        _fail(str(err))
    for issue in result.issues:
        print(f"sn_tf.score: warning: skipped {issue}", file=sys.stderr)
    for warning in result.warnings:
        print(f"sn_tf.score: warning: {warning}", file=sys.stderr)
    print(result.format_table())
    if FLAGS.json:
        try:
            with open(FLAGS.json, "w") as f:
                json.dump(result.to_dict(), f, indent=1)
                f.write("\n")
        except OSError as err:
            _fail(f"cannot write {FLAGS.json}: {err.strerror}")
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
