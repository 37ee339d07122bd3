"""Training throughput of both recipes: float32 against mixed precision, on this device.

    .venv/bin/python tools/bench_train.py [--variant=] [--steps=4] [--policy=mixed_bfloat16]

For each recipe (models/fcn.py, models/detectnet.py) at the variant's crop and batch size,
times ``model.fit`` steps on an in-memory batch (so the input pipeline is not measured:
tools/bench_input.py does that) under float32 and under the mixed policy, in one run,
and prints images/s and the ratio mixed/float32. The model and losses are the ones
``sn_tf.training.trainer`` builds from the recipe: with ``data.image_dtype`` "raw" (the recipes'
default) the batch is uint16 and the model starts with the normalisation layer and, when the
recipe's augmentation has gain/offset/noise, the training-only radiometric jitter. On a CPU, ``mixed_bfloat16`` is usually
slower (bfloat16 matmuls are emulated unless the CPU has AVX512-BF16/AMX and oneDNN is
enabled); on GPUs use ``--policy=mixed_float16`` or ``mixed_bfloat16`` (A100/H100).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from sn_tf.dataset import info as dsinfo, schema  # noqa: E402
from sn_tf.training.recipes import load_recipe  # noqa: E402
from sn_tf.utils.tfimport import tensorflow  # noqa: E402

tf = tensorflow()
import keras  # noqa: E402

from sn_tf.input import augment, pipeline  # noqa: E402
from sn_tf.modeling import model_input  # noqa: E402
from sn_tf import modeling  # noqa: E402

BANDS = 8
TYPE = "MUL-PanSharpen"
MEAN, STD = 400.0, 150.0  # plausible 11-bit band statistics for the fake raw batch


def fake_batch(kind: str, batch: int, crop: int, bands: int = BANDS, raw: bool = False):
    """A plausible (image, targets) batch for ``kind`` at ``crop`` x ``crop``; the image is
    float32 N(0, 1) (normalised) or, with ``raw``, uint16 around ``MEAN`` +- ``STD``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, crop, crop, bands)).astype("float32")
    if raw:
        x = np.clip(x * STD + MEAN, 0, 2047).astype("uint16")
    if kind == "fcn":
        fp = (rng.random((batch, crop, crop, 1)) > 0.8).astype("float32")
        return x, {"footprint": fp, "sdf": (fp * 2 - 1) * 4}
    g = crop // 16
    cov = (rng.random((batch, g, g, 1)) > 0.9).astype("float32")
    bbox = np.concatenate([rng.normal(0, 10, (batch, g, g, 4)),
                           np.full((batch, g, g, 4), 1 / 30), cov], -1).astype("float32")
    return x, {"coverage": cov, "bbox": bbox * np.concatenate(
        [np.repeat(cov, 8, -1), cov], -1)}


def build(cfg: dict):
    """(compiled model, raw input?) as ``sn_tf.training.trainer`` builds them from the recipe."""
    kind = cfg["model"]["kind"]
    m = {k: v for k, v in cfg["model"].items() if k != "kind"}
    if "blocks" in m and kind == "detectnet":
        m["blocks"] = tuple(m["blocks"])
    model = modeling.build_model(kind, BANDS, **m)
    raw = cfg["data"].get("image_dtype", "float32") == "raw"
    if raw:
        info = dsinfo.DatasetInfo(  # the one stored type the normalisation layer needs
            name="bench", schema_version=schema.SCHEMA_VERSION, image_types={
                TYPE: dsinfo.ImageTypeInfo(TYPE, "uint16", BANDS, (650, 650, BANDS), "", "",
                                           "raw")},
            label_grids={}, splits={}, aois={}, band_stats={}, band_stats_split="train")
        norm = pipeline.normalization_layer(info, (TYPE,), None,
                                            {"mean": [MEAN] * BANDS, "std": [STD] * BANDS})
        aug = augment.augment_config(cfg["data"].get("augment"))
        radiometric = {k: getattr(aug, k) for k in ("gain", "offset_std", "noise_std")}
        model = model_input.with_input_stage(model, norm, radiometric, seed=0)
    loss_kw = dict(cfg["loss"])
    if kind == "fcn":
        loss_kw.update(sdf_truncation=float(cfg["data"].get("sdf_truncation") or 8.0),
                       sdf_bins=cfg["model"].get("sdf_bins"))
    model.compile("adam", loss=modeling.losses_for(kind, **loss_kw), jit_compile=False)
    return model, raw


def images_per_s(cfg: dict, policy: str, steps: int) -> float:
    keras.mixed_precision.set_global_policy(policy)
    try:
        kind = cfg["model"]["kind"]
        model, raw = build(cfg)
        batch, crop = int(cfg["data"]["batch_size"]), int(cfg["data"]["crop_size"])
        x, y = fake_batch(kind, batch, crop, raw=raw)
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # build + trace
        t0 = time.perf_counter()
        model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * batch / (time.perf_counter() - t0)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="", help="recipe variant ('', demo, smoke)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--policy", default="mixed_bfloat16")
    args = ap.parse_args()
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    results = {}
    for name in ("fcn", "detectnet"):
        cfg = load_recipe(f"{REPO / 'models' / name}.py:{args.variant}")
        f32 = images_per_s(cfg, "float32", args.steps)
        mixed = images_per_s(cfg, args.policy, args.steps)
        results[name] = {"crop": cfg["data"]["crop_size"], "batch": cfg["data"]["batch_size"],
                         "float32_img_s": round(f32, 2), f"{args.policy}_img_s": round(mixed, 2),
                         "ratio": round(mixed / f32, 2)}
        print(f"{name:10s} crop {cfg['data']['crop_size']} batch {cfg['data']['batch_size']} "
              f"on {device}: float32 {f32:7.2f} img/s   {args.policy} {mixed:7.2f} img/s   "
              f"ratio {mixed / f32:.2f}")
    print(json.dumps({"device": device, "variant": args.variant, **results}))


if __name__ == "__main__":
    main()
