"""Render one batch of ``sn_tf.input.pipeline.make_examples`` to a PNG, to see labels sit on buildings.

    .venv/bin/python tools/show_batch.py --data_dir=<converted> --output=batch.png \
        [--split=train] [--image_types=MUL-PanSharpen] [--rgb=5,3,2] [--crop_size=256] \
        [--batch_size=4] [--seed=0] [--augment=default|none|all] [--eval]

One row per example, three panels:
  1. the image as RGB from ``--rgb`` (1-based indices into the stacked channels; default
     bands 5,3,2 of MUL-PanSharpen, 1,2,3 of RGB-PanSharpen), 2-98 percentile stretch per
     channel; footprint tinted orange with its boundary in red; boxes in yellow;
  2. the signed distance (blue outside, white on the boundary, red inside, +-T);
  3. DetectNet coverage cells (green) over the grey image, with the boxes decoded from the
     ``bbox`` target in cyan (they must coincide with the yellow boxes of panel 1).
Written with rasterio's PNG driver (no matplotlib / PIL).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sn_tf.input.targets import decode_detectnet_targets  # noqa: E402

YELLOW, CYAN, RED = (255, 230, 0), (0, 230, 255), (230, 20, 20)
AUGMENTS = {"default": None, "none": False,
            "all": {"scale_range": (0.8, 1.25), "gain": 0.1, "offset_std": 0.1,
                    "noise_std": 0.05}}


def stretch(image: np.ndarray, low: float = 2, high: float = 98) -> np.ndarray:
    """uint8 [H, W, C]: per-channel linear stretch of the ``low``..``high`` percentiles."""
    lo = np.percentile(image, low, axis=(0, 1))
    hi = np.percentile(image, high, axis=(0, 1))
    out = (image - lo) / np.where(hi > lo, hi - lo, 1.0)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: mask pixels with a 4-neighbour outside the mask."""
    m = np.pad(mask.astype(bool), 1)
    inner = m[1:-1, 1:-1]
    return inner & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, color) -> None:
    """Draw 1-pixel outlines of xyxy pixel boxes (corner convention) into ``rgb`` in place."""
    h, w = rgb.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
        if x2 <= x1 or y2 <= y1:
            continue
        c0, c1 = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.ceil(x2) - 1, 0, w - 1))
        r0, r1 = int(np.clip(np.floor(y1), 0, h - 1)), int(np.clip(np.ceil(y2) - 1, 0, h - 1))
        rgb[r0, c0:c1 + 1] = rgb[r1, c0:c1 + 1] = color
        rgb[r0:r1 + 1, c0] = rgb[r0:r1 + 1, c1] = color


def rgb_panel(image, footprint, boxes, rgb_channels) -> np.ndarray:
    """Panel 1: stretched RGB, footprint tint and boundary, boxes."""
    if image.shape[-1] == 1:
        rgb = np.repeat(stretch(image), 3, axis=-1)
    else:
        rgb = stretch(image[..., rgb_channels])
    inside = footprint > 0.5
    tint = np.array([255, 140, 0], np.float32)
    rgb = rgb.astype(np.float32)
    rgb[inside] = 0.65 * rgb[inside] + 0.35 * tint
    rgb = rgb.astype(np.uint8)
    rgb[boundary(inside)] = RED
    draw_boxes(rgb, boxes, YELLOW)
    return rgb


def sdf_panel(sdf, truncation: float, boxes) -> np.ndarray:
    """Panel 2: diverging colour map of the sdf (blue -T, white 0, red +T), boxes."""
    t = np.clip(sdf / truncation, -1, 1)[..., None]
    white = np.array([255, 255, 255], np.float32)
    red, blue = np.array([200, 20, 20], np.float32), np.array([20, 60, 200], np.float32)
    rgb = np.where(t >= 0, white + t * (red - white), white - t * (blue - white))
    rgb = rgb.astype(np.uint8)
    draw_boxes(rgb, boxes, YELLOW)
    return rgb


def coverage_panel(image, coverage, bbox, cell_size: int) -> np.ndarray:
    """Panel 3: coverage cells in green over the grey image, decoded boxes in cyan."""
    grey = stretch(image.mean(axis=-1, keepdims=True))[..., 0].astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    cells = np.kron(coverage[..., 0], np.ones((cell_size, cell_size)))
    cells = cells[:rgb.shape[0], :rgb.shape[1]]
    green = np.array([0, 220, 0], np.float32)
    on = cells > 0.5
    rgb[on] = 0.5 * rgb[on] + 0.5 * green
    rgb = rgb.astype(np.uint8)
    decoded, _ = decode_detectnet_targets(coverage, bbox, cell_size)
    draw_boxes(rgb, decoded, CYAN)
    return rgb


def mosaic(rows, gap: int = 4) -> np.ndarray:
    """Tile panels: a list of rows, each a list of [H, W, 3] uint8 panels (white gaps)."""
    height = sum(max(p.shape[0] for p in r) for r in rows) + gap * (len(rows) + 1)
    width = max(sum(p.shape[1] for p in r) + gap * (len(r) + 1) for r in rows)
    out = np.full((height, width, 3), 255, np.uint8)
    y = gap
    for r in rows:
        x = gap
        for p in r:
            out[y:y + p.shape[0], x:x + p.shape[1]] = p
            x += p.shape[1] + gap
        y += max(p.shape[0] for p in r) + gap
    return out


def write_png(path, rgb: np.ndarray) -> None:
    """Write uint8 [H, W, 3] with rasterio's PNG driver."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="PNG", width=rgb.shape[1], height=rgb.shape[0],
                           count=3, dtype="uint8") as ds:
            ds.write(np.moveaxis(rgb, -1, 0))


def default_rgb(image_types) -> list[int]:
    """1-based channel indices of R, G, B in the stack of ``image_types``."""
    first = image_types[0]
    if first in ("MUL-PanSharpen", "MUL", "8band") or first.startswith("MUL@"):
        return [5, 3, 2]
    return [1, 2, 3]


def render(data_dir, output, split="train", image_types=("MUL-PanSharpen",), rgb=None,
           crop_size=256, batch_size=4, seed=0, augment=None, training=True,
           cell_size: int = 16) -> np.ndarray:
    """Render the first batch to ``output``; returns the mosaic (uint8 [H, W, 3])."""
    from sn_tf.input.pipeline import make_examples

    ds = make_examples(data_dir, split, target="all", training=training,
                       image_types=tuple(image_types), normalization=None,
                       crop_size=crop_size, batch_size=batch_size, seed=seed, augment=augment,
                       cell_size=cell_size, deterministic=True)
    batch = {k: v.numpy() for k, v in next(iter(ds)).items()}
    channels = [c - 1 for c in (rgb or default_rgb(image_types))]
    if batch["image"].shape[-1] > 1 and max(channels) >= batch["image"].shape[-1]:
        raise ValueError(f"--rgb {rgb} out of range for {batch['image'].shape[-1]} channels")
    truncation = float(np.abs(batch["sdf"]).max()) or 1.0
    rows = []
    for i in range(len(batch["image"])):
        image, boxes = batch["image"][i], batch["boxes"][i]
        rows.append([rgb_panel(image, batch["footprint"][i, ..., 0], boxes, channels),
                     sdf_panel(batch["sdf"][i, ..., 0], truncation, boxes),
                     coverage_panel(image, batch["coverage"][i], batch["bbox"][i], cell_size)])
    out = mosaic(rows)
    write_png(output, out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", required=True, help="output folder of sn_tf.convert")
    p.add_argument("--output", required=True, help="PNG file to write")
    p.add_argument("--split", default="train")
    p.add_argument("--image_types", default="MUL-PanSharpen", help="comma-separated")
    p.add_argument("--rgb", default="", help="1-based channels for R,G,B (e.g. 5,3,2)")
    p.add_argument("--crop_size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", choices=sorted(AUGMENTS), default="default")
    p.add_argument("--eval", action="store_true", help="whole padded tiles (training=False)")
    args = p.parse_args(argv)
    rgb = [int(c) for c in args.rgb.split(",")] if args.rgb else None
    out = render(args.data_dir, args.output, args.split, args.image_types.split(","), rgb,
                 args.crop_size, args.batch_size, args.seed, AUGMENTS[args.augment],
                 training=not args.eval)
    print(f"wrote {args.output} ({out.shape[1]}x{out.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
