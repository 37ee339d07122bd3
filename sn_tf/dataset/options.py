"""The converter's options (``ConvertConfig``, the CLI flags minus the folders), checked
before anything is read (``check_config``), and its errors.

``ConvertUsageError``: options that cannot work (the CLI's exit status 2); ``ConvertError``:
a run that cannot go on (input or output folder unusable or in use; exit status 1).
"""

from __future__ import annotations

import dataclasses
import math

from sn_tf.dataset import labels, schema
from sn_tf.spacenet import layout
from sn_tf.utils.errors import SnTfError

DEFAULT_SPLITS = (("train", 0.8), ("val", 0.2))


class ConvertError(SnTfError):
    """The conversion cannot run: bad input folder, output folder unusable or in use."""


class ConvertUsageError(ConvertError):
    """The options cannot work (the CLI's exit status 2)."""


@dataclasses.dataclass
class ConvertConfig:
    """Options of one conversion (the CLI flags, minus the folders)."""

    name: str = "spacenet"
    aois: tuple[str, ...] = ()
    image_types: tuple[str, ...] = ()
    label_grids: tuple[str, ...] = ()  # empty = one per distinct grid
    resample_to: str = ""
    resample_types: tuple[str, ...] = ()  # empty = every type not on the target grid
    resample_method: str = "bilinear"
    splits: tuple[tuple[str, float], ...] = DEFAULT_SPLITS
    shard_size_mb: float = 150.0
    num_workers: int = 2
    resume: bool = False
    overwrite: bool = False
    sdf_truncation: float = 32.0
    contact_radius: int = labels.CONTACT_RADIUS
    image_encoding: str = "raw"
    label_encoding: str = "auto"
    source: str = "auto"
    progress: bool = True
    # glibc only: keep freed memory in converting processes (``keep_freed_memory``).
    # None: in spawned workers only, so an in-process (num_workers=1) library caller's
    # allocator is left untouched; True: also in-process (the CLI); False: never
    tune_malloc: bool | None = None


# ---- options ---------------------------------------------------------------------------
RESAMPLE_METHODS = ("nearest", "bilinear", "cubic", "average", "lanczos")
SOURCES = ("auto", "geotiff", "hdf5")


def _positive(name: str, value) -> None:
    """Raise ``ConvertUsageError`` unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ConvertUsageError(f"--{name}={value!r}: must be a number > 0")


def _known_types(flag: str, names) -> None:
    """Raise ``ConvertUsageError`` for names that are no SpaceNet image type."""
    unknown = [n for n in names if n not in layout.ALL_IMAGE_TYPES]
    if unknown:
        raise ConvertUsageError(f"--{flag}: unknown image type(s) {unknown}; known: "
                                f"{list(layout.ALL_IMAGE_TYPES)}")


def _check_splits(splits) -> None:
    names = [n for n, _ in splits]
    if not splits or len(set(names)) != len(names):
        raise ConvertUsageError(f"--splits: expected distinct split names, got {names}")
    for name, frac in splits:
        if not name.isidentifier():
            raise ConvertUsageError(f"--splits: split name {name!r} must be letters, digits "
                                    "and underscores")
        if not isinstance(frac, (int, float)) or not math.isfinite(frac) or frac < 0:
            raise ConvertUsageError(f"--splits: fraction of {name!r} must be >= 0, got {frac!r}")
    if sum(f for _, f in splits) <= 0:
        raise ConvertUsageError("--splits: fractions must sum to more than 0")


def check_config(cfg: ConvertConfig) -> None:
    """Raise ``ConvertUsageError`` for options that cannot work (before any file is read).

    Image types, label grids and ``resample_to`` must be SpaceNet image types (and, when
    ``image_types`` is given, among them); sizes and ``shard_size_mb`` > 0;
    ``num_workers`` and ``contact_radius`` integers >= 1; known encodings and methods.
    """
    _known_types("image_types", cfg.image_types)
    _known_types("label_grids", cfg.label_grids)
    _known_types("resample_types", cfg.resample_types)
    if cfg.resample_to:
        _known_types("resample_to", [cfg.resample_to])
    elif cfg.resample_types:
        raise ConvertUsageError("--resample_types needs --resample_to")
    if cfg.image_types:
        for flag, names in (("label_grids", cfg.label_grids),
                            ("resample_to", [cfg.resample_to] if cfg.resample_to else []),
                            ("resample_types", cfg.resample_types)):
            outside = [n for n in names if n not in cfg.image_types]
            if outside:
                raise ConvertUsageError(f"--{flag}: {outside} not among --image_types "
                                        f"{list(cfg.image_types)}")
    if not cfg.name or not all(c.isalnum() or c in "_." for c in cfg.name) \
            or cfg.name.startswith("."):
        raise ConvertUsageError(f"--name={cfg.name!r}: letters, digits, '_' and '.' only")
    _check_splits(cfg.splits)
    _positive("shard_size_mb", cfg.shard_size_mb)
    _positive("sdf_truncation", cfg.sdf_truncation)
    for name in ("num_workers", "contact_radius"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ConvertUsageError(f"--{name}={value!r}: must be an integer >= 1")
    choices = {"resample_method": RESAMPLE_METHODS, "source": SOURCES,
               "image_encoding": tuple(schema.ENCODINGS),
               "label_encoding": ("auto", *schema.ENCODINGS)}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConvertUsageError(f"--{name}={getattr(cfg, name)!r}: one of {list(allowed)}")


def _check_against_data(cfg: ConvertConfig, types) -> None:
    """Label grids and ``resample_to`` must be among the image types converted."""
    for flag, names in (("label_grids", cfg.label_grids),
                        ("resample_to", [cfg.resample_to] if cfg.resample_to else []),
                        ("resample_types", cfg.resample_types)):
        outside = [n for n in names if n not in types]
        if outside:
            raise ConvertUsageError(f"--{flag}: {outside} not among the image types "
                                    f"converted {list(types)}")
