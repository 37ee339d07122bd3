"""Every error sn_tf raises on purpose derives from sn_tf.SnTfError (one ``except`` for a
library caller), found by reading the source (a new error class cannot forget the base)."""

import ast
import importlib
import pathlib

import sn_tf

ROOT = pathlib.Path(sn_tf.__file__).parent
# classes named like errors that are not user-facing errors
NOT_ERRORS = set()


def _error_classes():
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Skipped")):
                module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
                yield module.removesuffix(".__init__"), node.name


def test_every_error_class_derives_from_the_base():
    found = list(_error_classes())
    assert len(found) >= 15
    for module, name in found:
        if (module, name) in NOT_ERRORS:
            continue
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, sn_tf.SnTfError), f"{module}.{name}"


def test_older_bases_still_catch():
    from sn_tf.training.trainer import ConfigError
    from sn_tf.utils.families import FamilyError, get

    assert issubclass(ConfigError, ValueError)
    try:
        get("nope")
    except ValueError as err:  # the callers of before still catch it
        assert isinstance(err, FamilyError) and isinstance(err, sn_tf.SnTfError)


def test_provenance_is_recorded_one_way_everywhere():
    """Converter, trainer and exporter record package_versions(); no stage keeps its own."""
    from sn_tf.utils.provenance import package_versions

    v = package_versions()
    assert v["sn_tf"] == sn_tf.__version__ and {"python", "numpy", "tensorflow", "gdal"} <= set(v)
    for path in ROOT.rglob("*.py"):
        assert "def _versions" not in path.read_text(), path
