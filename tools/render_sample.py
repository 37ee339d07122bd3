"""Render one SpaceNet tile (real or from ``sn_tf.sample``) to a PNG for a visual check.

    V=DIR/AOI_2_Vegas_Train
    python tools/render_sample.py --output=/tmp/tile.png \
        --image=$V/MUL-PanSharpen/MUL-PanSharpen_AOI_2_Vegas_img42.tif \
        --label=$V/geojson/buildings/buildings_AOI_2_Vegas_img42.geojson

Three bands (1-based, default R, G, B of the file: 5,3,2 for 8 bands, 1,2,3 for 3 bands, the
single band of PAN) are stretched per band between the given percentiles to 8 bits; building
outlines from the label GeoJSON (lon/lat, burned with the image transform) are drawn in yellow,
invalid (self-intersecting) polygons in red. The PNG is written by a small zlib-based writer.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import rasterio
import shapely
from rasterio import features
from shapely.geometry import shape

YELLOW = (255, 230, 0)
RED = (255, 40, 40)


def default_bands(count: int) -> list[int]:
    """1-based bands shown as R, G, B for a file with ``count`` bands."""
    if count >= 8:
        return [5, 3, 2]
    if count >= 3:
        return [1, 2, 3]
    return [1, 1, 1]


def stretch(img: np.ndarray, low_pct: float = 2.0, high_pct: float = 98.0) -> np.ndarray:
    """[B, H, W] any dtype -> uint8 [B, H, W], each band linearly stretched between percentiles."""
    out = np.empty(img.shape, np.uint8)
    for i, band in enumerate(img.astype(np.float64)):
        lo, hi = np.percentile(band, [low_pct, high_pct])
        scaled = (band - lo) / max(hi - lo, 1e-9) * 255.0
        out[i] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


def outline_masks(label_path: str, transform, shape_hw: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(valid, invalid) bool [H, W] masks of polygon outlines burned with all_touched=True."""
    text = open(label_path).read().strip()
    feats = json.loads(text)["features"] if text else []
    valid, invalid = [], []
    for f in feats:
        geom = shape(f["geometry"])
        (valid if geom.is_valid else invalid).append(shapely.force_2d(geom).boundary)
    masks = []
    for lines in (valid, invalid):
        m = np.zeros(shape_hw, np.uint8)
        if lines:
            features.rasterize([(g, 1) for g in lines], out=m, transform=transform,
                               all_touched=True)
        masks.append(m.astype(bool))
    return masks[0], masks[1]


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG file bytes (8-bit RGB, no filtering, zlib level 6)."""
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        """One PNG chunk: length, tag, data, CRC."""
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def render(image_path: str, label_path: str | None = None, bands: list[int] | None = None,
           percentiles: tuple[float, float] = (2.0, 98.0), zoom: int = 1) -> np.ndarray:
    """uint8 [H * zoom, W * zoom, 3] picture of a tile with building outlines."""
    with rasterio.open(image_path) as src:
        bands = bands or default_bands(src.count)
        img = src.read(bands)
        transform = src.transform
    rgb = np.moveaxis(stretch(img, *percentiles), 0, -1).copy()
    if zoom > 1:
        rgb = rgb.repeat(zoom, 0).repeat(zoom, 1)
        transform = transform * transform.scale(1.0 / zoom)
    if label_path:
        valid, invalid = outline_masks(label_path, transform, rgb.shape[:2])
        rgb[valid] = YELLOW
        rgb[invalid] = RED
    return rgb


def main(argv) -> None:
    """Write the PNG named by --output."""
    del argv
    fl = flags.FLAGS
    bands = [int(b) for b in fl.bands] if fl.bands else None
    rgb = render(fl.image, fl.label, bands, (fl.low_pct, fl.high_pct), fl.zoom)
    with open(fl.output, "wb") as f:
        f.write(png_bytes(rgb))
    print(f"wrote {fl.output} ({rgb.shape[1]}x{rgb.shape[0]})")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("image", None, "GeoTIFF tile to render.")
    flags.DEFINE_string("label", None, "Label GeoJSON (lon/lat) whose outlines are drawn.")
    flags.DEFINE_string("output", None, "PNG to write.")
    flags.DEFINE_list("bands", None, "1-based bands shown as R,G,B (default by band count).")
    flags.DEFINE_float("low_pct", 2.0, "Lower stretch percentile.")
    flags.DEFINE_float("high_pct", 98.0, "Upper stretch percentile.")
    flags.DEFINE_integer("zoom", 1, "Integer nearest-neighbour upscaling (e.g. 4 for MUL).")
    flags.mark_flags_as_required(["image", "output"])
    app.run(main)
