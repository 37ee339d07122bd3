"""The ONE polygon head: model outputs (rasters or DetectNet grids) -> building polygons.

Every producer of buildings in sn_tf (the FCN, DetectNet, users' own rasters) goes through
:func:`outputs_to_buildings` (with :func:`postprocess_params`) or its two paths,
``sn_tf.head.rasters`` and ``sn_tf.head.detections``; every consumer (the SpaceNet CSV /
GeoJSON writers, ``sn_tf.spacenet.scoring``) reads the same record type,
``sn_tf.spacenet.buildings.Building``.

Coordinate conventions (BUILD_NOTES.md section 1):

* pixel coordinates: ``x`` = column, ``y`` = row, origin at the top-left CORNER of the top-left
  pixel; pixel (c, r) covers [c, c+1) x [r, r+1). A polygon traced from a raster therefore has
  integer vertices and its area equals its pixel count.
* a transform is either a GDAL geotransform tuple ``(GT0, .., GT5)`` with
  ``x_map = GT0 + col*GT1 + row*GT2`` and ``y_map = GT3 + col*GT4 + row*GT5``, or a rasterio
  ``Affine`` (``a, b, c, d, e, f = GT1, GT2, GT0, GT4, GT5, GT3``). With a transform, polygons
  come out in map coordinates and areas (``min_area``) are in map units (m2 in a UTM CRS).

Heavy dependencies (rasterio, scipy) are imported inside the functions that need them.
"""

from __future__ import annotations

import math

import numpy as np

from sn_tf.head.detections import GROUPINGS, ORIENTED_GROUPINGS, buildings_from_detectnet
from sn_tf.head.rasters import polygons_from_raster
from sn_tf.input.cells import DEFAULT_CELL_SIZE
from sn_tf.spacenet.buildings import Building
from sn_tf.utils import families


# ----------------------------------------------------------------------------------------------
# Model outputs -> buildings (the one path used by training validation, predict and the demo)

# DetectNet's ``max_boxes`` is per SpaceNet tile area (650 x 650 px): ``outputs_to_buildings``
# scales it with the image area, so a whole scene is not capped at one tile's count.
MAX_BOXES_AREA = 650 * 650

def postprocess_params(kind: str, overrides: dict | None = None) -> dict:
    """Default post-processing of a model kind, updated with ``overrides``."""
    params = dict(families.get(kind).postprocess)
    unknown = set(overrides or {}) - set(params)
    if unknown:
        raise ValueError(f"unknown {kind} post-processing parameter(s) {sorted(unknown)}; "
                         f"known: {sorted(params)}")
    params.update(overrides or {})
    known = sorted(set(GROUPINGS) | set(ORIENTED_GROUPINGS))
    if "grouping" in params and params["grouping"] not in known:  # fail at config time
        raise ValueError(f"grouping must be one of {known}, got {params['grouping']!r}")
    return params


def outputs_to_buildings(kind: str, outputs: dict, image_id: str, *,
                         image_size: tuple[int, int], params: dict | None = None,
                         cell_size: int = DEFAULT_CELL_SIZE) -> list[Building]:
    """One image's raw model outputs -> building records in PIXEL coordinates.

    kind "fcn": ``outputs["footprint"]`` logits [H', W', 1] (and ``outputs["sdf"]`` [H', W', 1]
    in pixels, used to split touching buildings: seeds where sdf > ``sdf_level``; with an
    ``outputs["interior"]`` [H', W', 1] (logits of the building cores) the seeds are instead
    where interior > ``interior_threshold``; ``outputs["contact"]`` logits [H', W', 1]
    when the model has them: pixels with contact logit > ``contact_threshold`` never seed;
    ``merge_level`` (None: off) joins split regions whose boundary stays above it in the
    seed raster; ``seed_erosion`` (pixels, 0: off) erodes the seeds first, cutting thin
    bridges of a core across a wall; ``split_with_sdf`` False: no splitting);
    kind "detectnet": ``outputs["coverage"]``
    [h, w, 1] and ``outputs["bbox"]`` [h, w, 4], and for an oriented model
    ``outputs["orient"]`` [h, w, 3] (then the buildings are rotated rectangles, see
    :func:`buildings_from_detectnet`) on a grid of ``cell_size`` pixel cells (the model's,
    ``ModelInfo.cell_size``; FCN outputs ignore it). ``image_size`` = (H, W) of the valid image
    (outputs of padded inputs are cropped to it). ``params``: ``postprocess_params(kind)``
    overrides; ``min_area`` is in pixels; DetectNet's ``max_boxes`` counts per
    ``MAX_BOXES_AREA`` pixels of the image (never fewer than ``max_boxes``). Map coordinates
    come later, from the writers.
    """
    p = postprocess_params(kind, params)
    height, width = image_size
    head = families.get(kind).entry("head")
    return head(outputs, image_id, height, width, p, cell_size)


def fcn_buildings(outputs: dict, image_id: str, height: int, width: int, p: dict,
                  cell_size: int | None = None) -> list[Building]:
    """The FCN family's head (``outputs_to_buildings`` documents ``outputs`` and ``p``,
    the full post-processing parameters); ``cell_size`` is ignored (full resolution)."""
    logits = np.asarray(outputs["footprint"])[:height, :width, 0]
    # seeds: the interior head's cores (logit > interior_threshold) when the model has
    # one, else the sdf's (sdf > sdf_level)
    seeds, level = None, float(p["sdf_level"])
    if p["split_with_sdf"]:
        if outputs.get("interior") is not None:
            seeds, level = outputs["interior"], float(p["interior_threshold"])
        else:
            seeds = outputs["sdf"]
        seeds = np.asarray(seeds)[:height, :width, 0]
    contact = outputs.get("contact")
    if contact is not None:
        contact = np.asarray(contact)[:height, :width, 0]
    return polygons_from_raster(logits, image_id, threshold=p["threshold"], kind="logit",
                                min_area=p["min_area"], simplify=p["simplify"], sdf=seeds,
                                sdf_level=level,
                                min_seed_area=int(p["min_seed_area"]), contact=contact,
                                contact_threshold=float(p["contact_threshold"]),
                                merge_level=None if p["merge_level"] is None
                                else float(p["merge_level"]),
                                seed_erosion=int(p["seed_erosion"]))


def detectnet_buildings(outputs: dict, image_id: str, height: int, width: int, p: dict,
                        cell_size: int = DEFAULT_CELL_SIZE) -> list[Building]:
    """The DetectNet family's head (``outputs_to_buildings`` documents ``outputs`` and ``p``)
    on a grid of ``cell_size`` pixel cells."""
    return buildings_from_detectnet(
        outputs["coverage"], outputs["bbox"], image_id, cell_size=cell_size,
        threshold=p["threshold"], group_threshold=p["group_threshold"], eps=p["eps"],
        min_height=p["min_height"], grouping=p["grouping"], image_size=(height, width),
        max_boxes=max(int(p["max_boxes"]),
                      math.ceil(p["max_boxes"] * height * width / MAX_BOXES_AREA)),
        orient=outputs.get("orient"), rect_gate=p["rect_gate"], nms_iou=p["nms_iou"])
