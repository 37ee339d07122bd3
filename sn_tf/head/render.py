"""Small PNG overlays of predictions: image bands as RGB with building outlines (no TF).

Pixel conventions as everywhere in sn_tf (x = column, y = row, origin at the top-left corner
of the top-left pixel). An overview may be decimated by an integer ``scale`` (overview pixel
(c, r) covers full-resolution pixels [c*s, (c+1)*s) x [r*s, (r+1)*s)); polygons stay in
full-resolution pixel coordinates and are burned through ``Affine.scale(scale)``.
PNGs are written with rasterio's PNG driver (matplotlib and PIL are not dependencies).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

OUTLINE_COLOR = (255, 230, 0)  # yellow
# scored overlays (``outcome_overlay``): what the SpaceNet metric made of each polygon
OUTCOME_COLORS = {"tp": (0, 230, 0),       # green: proposal matched to a truth building
                  "fp": (255, 40, 40),     # red: proposal matching no truth building
                  "fn": (40, 140, 255)}    # blue: truth building no proposal matched


def default_rgb_channels(num_channels: int) -> tuple[int, int, int]:
    """0-based input channels shown as R, G, B: (4, 2, 1) = WorldView bands 5, 3, 2 for 8+
    channels, (0, 1, 2) for 3..7 channels, the first channel as grey otherwise."""
    if num_channels >= 8:
        return (4, 2, 1)
    if num_channels >= 3:
        return (0, 1, 2)
    return (0, 0, 0)


def stretch(image: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> np.ndarray:
    """[H, W, C] any real dtype -> uint8 [H, W, C], each channel linearly stretched between
    its percentiles, computed over the pixels that are not 0 in every channel (SpaceNet
    nodata is 0); an all-zero image stays black."""
    image = np.asarray(image)
    data = np.nan_to_num(image.astype(np.float32))
    valid = np.any(data != 0, axis=-1)
    out = np.zeros(image.shape, np.uint8)
    if not valid.any():
        return out
    for c in range(image.shape[-1]):
        band = data[..., c]
        lo, hi = np.percentile(band[valid], [low_pct, high_pct])
        scaled = (band - lo) / max(float(hi - lo), 1e-9) * 255.0
        out[..., c] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def outline_mask(polygons, shape_hw: tuple[int, int], scale: int = 1) -> np.ndarray:
    """bool [H', W'] mask of the polygons' rings (pixel coordinates of the full image) burned
    into an overview of shape ``shape_hw`` decimated by ``scale`` (all_touched lines)."""
    from affine import Affine
    from rasterio import features

    lines = [p.boundary for p in polygons if p is not None and not p.is_empty]
    mask = np.zeros(shape_hw, np.uint8)
    if lines and shape_hw[0] > 0 and shape_hw[1] > 0:
        features.rasterize([(g, 1) for g in lines], out=mask, transform=Affine.scale(scale),
                           all_touched=True)
    return mask.astype(bool)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write uint8 [H, W, 3] as an 8-bit RGB PNG (rasterio PNG driver, no georeference)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=rgb.shape[1], height=rgb.shape[0],
                           count=3, dtype="uint8") as ds:
            ds.write(np.moveaxis(rgb, -1, 0))
    aux = f"{os.fspath(path)}.aux.xml"  # GDAL may leave a sidecar for PNG; not wanted here
    if os.path.exists(aux):
        os.remove(aux)


def overlay(image_rgb: np.ndarray, polygons, scale: int = 1, color=OUTLINE_COLOR,
            low_pct: float = 2.0, high_pct: float = 98.0) -> np.ndarray:
    """uint8 [H', W', 3]: ``image_rgb`` (raw [H', W', 3] overview) stretched, outlines drawn."""
    rgb = stretch(image_rgb, low_pct, high_pct)
    rgb[outline_mask(polygons, rgb.shape[:2], scale)] = color
    return rgb


def outcome_overlay(image_rgb: np.ndarray, truth, truth_outcomes, proposals,
                    proposal_outcomes, scale: int = 1, low_pct: float = 2.0,
                    high_pct: float = 98.0) -> np.ndarray:
    """uint8 [H', W', 3]: ``image_rgb`` stretched, with the scored polygons drawn in
    ``OUTCOME_COLORS``: missed truth buildings blue, false-positive proposals red, true-
    positive proposals green (drawn in that order, so a match is green on top).

    ``truth``/``proposals``: shapely polygons (full-resolution pixels); ``*_outcomes``: the
    parallel lists of ``sn_tf.spacenet.scoring.match_outcomes`` ("not scored" ones are not drawn).
    """
    rgb = stretch(image_rgb, low_pct, high_pct)
    layers = ((truth, truth_outcomes, "fn"), (proposals, proposal_outcomes, "fp"),
              (proposals, proposal_outcomes, "tp"))
    for polys, outcomes, kind in layers:
        chosen = [p for p, o in zip(polys, outcomes, strict=True) if o == kind]
        rgb[outline_mask(chosen, rgb.shape[:2], scale)] = OUTCOME_COLORS[kind]
    return rgb
