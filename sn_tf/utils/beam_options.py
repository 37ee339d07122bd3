"""Apache Beam for the commands that run on it (``--beam_pipeline_options``), imported only
when asked for: the local paths never import ``apache_beam``.

``pipeline_options("runner=DirectRunner,direct_num_workers=2")`` gives Beam's
``PipelineOptions`` of ``--runner=DirectRunner --direct_num_workers=2``, the form of
``tfds build --beam_pipeline_options``: any runner and any of its options pass through
(Dataflow's ``project``, ``region``, ``temp_location``; Flink's ``flink_master``; ...).
A value cannot hold a comma. One addition: the DirectRunner (or the FnApiRunner) with
``direct_num_workers`` above 1 and no ``direct_running_mode`` runs its workers as
processes (``multi_processing``), not as threads sharing one interpreter's lock.

Beam 2.78's DirectRunner first tries the Prism runner, a binary it downloads from GitHub,
and falls back to its Python engine, the FnApiRunner, when that fails (no network);
``runner=FnApiRunner`` runs that engine directly (what the tests use: the same on every
machine, no download).

A missing ``apache_beam`` is ``BeamUnavailable``, one line naming the extra to install.
"""

from __future__ import annotations

import importlib

from sn_tf.utils.errors import SnTfError

INSTALL_HINT = "pip install sn_tf[beam]"


class BeamUnavailable(SnTfError):
    """``--beam_pipeline_options`` was given but Apache Beam is not installed."""


def import_beam_module(module: str, flag: str = "--beam_pipeline_options"):
    """Import ``module`` (an sn_tf module built on Apache Beam); ``BeamUnavailable`` with
    the install hint when ``apache_beam`` itself is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "apache_beam":
            raise
        raise BeamUnavailable(f"{flag} needs Apache Beam, which is not installed: "
                              f"{INSTALL_HINT}") from None


def option_flags(text: str) -> list[str]:
    """``"a=1,b=2"`` -> ``["--a=1", "--b=2"]`` (entries already starting with ``--`` kept)."""
    flags = []
    for item in (t.strip() for t in text.split(",")):
        if item:
            flags.append(item if item.startswith("--") else f"--{item}")
    return flags


def pipeline_options(text: str):
    """Beam ``PipelineOptions`` of ``--beam_pipeline_options`` (module docstring)."""
    PipelineOptions = import_beam_module(
        "apache_beam.options.pipeline_options").PipelineOptions
    flags = option_flags(text)
    options = PipelineOptions(flags)
    names = {f.split("=")[0].lstrip("-") for f in flags}
    everything = options.get_all_options()
    runner = str(everything.get("runner") or "DirectRunner")
    workers = everything.get("direct_num_workers") or 1
    local = runner.endswith("DirectRunner") or runner.endswith("FnApiRunner")
    if local and workers != 1 and "direct_running_mode" not in names:
        options = PipelineOptions(flags + ["--direct_running_mode=multi_processing"])
    return options


def local_paths_refused(options, paths) -> str | None:
    """Why ``paths`` ({flag: path} or (flag, path) pairs) cannot work with ``options``: on Dataflow every worker
    is a machine of its own, so a local path (not ``gs://`` ...) names nothing the others
    or the launcher see. None when they can (local and cluster runners may share a file
    system)."""
    runner = str(options.get_all_options().get("runner") or "")
    if not runner.endswith("DataflowRunner"):
        return None
    pairs = paths.items() if isinstance(paths, dict) else paths
    local = [f"{flag}={path}" for flag, path in pairs if path and "://" not in str(path)]
    if not local:
        return None
    return (f"{', '.join(local)}: a local path on Dataflow, whose workers do not share this "
            "machine's files; use gs:// URLs")
