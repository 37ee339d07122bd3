"""Provenance: the versions of the software that made a file, recorded in one way everywhere.

    package_versions()    # {"sn_tf": "0.1.0", "python": "3.11.7", "numpy": ..., "tensorflow": ...}

The converter records them in ``sn_tf_info.json``, training in ``model_info.json``, export in
``export_info.json``. Versions come from package metadata (``importlib.metadata``), so
nothing heavy is imported: the converter stays TF-free, and a package that is not installed
is recorded as "not installed" instead of failing.
"""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

#: distributions recorded, by the key they are recorded under
PACKAGES = {"numpy": "numpy", "scipy": "scipy", "rasterio": "rasterio", "shapely": "shapely",
            "tensorflow": "tensorflow", "keras": "keras"}


def package_versions() -> dict[str, str]:
    """sn_tf, Python, the key libraries and GDAL (when rasterio is importable), as strings."""
    import sn_tf

    out = {"sn_tf": sn_tf.__version__, "python": platform.python_version()}
    for key, dist in PACKAGES.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:  # e.g. tensorflow-cpu or a source build
            out[key] = "not installed (by package metadata)"
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        out["gdal"] = "not installed"
    return out
