"""Conversion on Apache Beam (``sn_tf.dataset.beam_convert``, ``convert
--beam_pipeline_options``) equals the local converter on the same inputs: tiles per split,
every record's bytes, the statistics, the description apart from provenance; a bad tile is
a skip reason, not a failed pipeline. DirectRunner with 2 worker processes (slow: each run
starts them)."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from sn_tf.dataset import converter, tfrecord
from sn_tf.dataset import info as dsinfo
from sn_tf.utils import beam_options
from fixtures.spacenet import make_sn2_aoi

pytest.importorskip("apache_beam", reason="Apache Beam not installed (pip install sn_tf[beam])")
from sn_tf.dataset import beam_convert  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# the DirectRunner's Python engine, run directly: the DirectRunner would first try to
# download the Prism runner (BUILD_NOTES.md section 10)
BEAM = "runner=FnApiRunner,direct_num_workers=2"
PROVENANCE = ("created", "elapsed_s", "command_line", "versions")
BAD = "AOI_2_Vegas_img5"


def _source(root: pathlib.Path) -> pathlib.Path:
    """Nine 96 px SN2 tiles in two AOIs; tile img5's label GeoJSON is not JSON."""
    data = root / "data"
    make_sn2_aoi(data, numbers=(1, 2, 3, 5, 8, 13), size=96)
    make_sn2_aoi(data, aoi="AOI_3_Paris", numbers=(4, 6, 7), size=96, seed=1)
    label = data / "AOI_2_Vegas_Train" / "geojson" / "buildings" / f"buildings_{BAD}.geojson"
    label.write_text("{not json")
    return data


def _cfg(**kw) -> converter.ConvertConfig:
    return converter.ConvertConfig(num_workers=1, progress=False, shard_size_mb=0.3,
                                   splits=(("train", 0.7), ("val", 0.3)), **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"local" | "shard" | "tile": (ConvertResult, folder)}: the local converter and the
    Beam one with each fan-out, on the same tiles."""
    root = tmp_path_factory.mktemp("beamconv")
    data = _source(root)
    out = {"local": (converter.convert(data, root / "local", _cfg()), root / "local")}
    for fan_out in ("shard", "tile"):
        out[fan_out] = (beam_convert.convert_beam(data, root / fan_out, _cfg(), BEAM,
                                                  "beam run", fan_out=fan_out),
                        root / fan_out)
    return out


@pytest.fixture(params=["shard", "tile"])
def both(runs, request):
    """(local ConvertResult, Beam ConvertResult, local folder, Beam folder)."""
    (local, lf), (beam, bf) = runs["local"], runs[request.param]
    return local, beam, lf, bf


def _records_by_split(folder: pathlib.Path) -> dict:
    """{split: sorted record payloads of its shards}."""
    out: dict = {}
    for shard in sorted(folder.glob("*.tfrecord-*")):
        split = shard.name.split("-")[1].split(".")[0]
        out.setdefault(split, []).extend(tfrecord.read_records(shard))
    return {k: sorted(v) for k, v in out.items()}


def _tiles_by_split(folder: pathlib.Path) -> dict:
    """{split: sorted tile ids} from the shards' done-records."""
    out: dict = {}
    for done in (folder / converter.WORK_DIR).glob("*.done.json"):
        record = json.loads(done.read_text())
        out.setdefault(record["split"], []).extend(t for t, _ in record["tiles"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.slow
def test_beam_conversion_has_the_local_tiles_and_record_bytes(both):
    local, beam, lf, bf = both
    assert _tiles_by_split(bf) == _tiles_by_split(lf)
    assert sum(map(len, _tiles_by_split(bf).values())) == 8  # 9 tiles, one skipped
    assert _records_by_split(bf) == _records_by_split(lf)
    # the Beam converter keeps the local plan's shards: same files, same bytes
    assert sorted(p.name for p in bf.glob("*.tfrecord-*")) == \
        sorted(p.name for p in lf.glob("*.tfrecord-*"))
    for shard in lf.glob("*.tfrecord-*"):
        assert (bf / shard.name).read_bytes() == shard.read_bytes(), shard.name


@pytest.mark.slow
def test_beam_statistics_and_description_equal_the_local_ones(both):
    local, beam, lf, bf = both
    assert set(beam.info.band_stats) == set(local.info.band_stats) != set()
    for itype, ls in local.info.band_stats.items():
        bs = beam.info.band_stats[itype]
        for field in ("count", "mean", "std", "min", "max", "p1", "p99"):
            np.testing.assert_allclose(getattr(bs, field), getattr(ls, field), rtol=1e-12,
                                       err_msg=f"{itype} {field}")
    docs = [json.loads((f / dsinfo.INFO_FILE).read_text()) for f in (lf, bf)]
    for doc in docs:
        for key in PROVENANCE:
            doc.pop(key)
    assert docs[0] == docs[1]
    assert beam.info.command_line == "beam run"
    for name in ("dataset_info.json", "features.json"):  # TFDS's metadata
        assert json.loads((bf / name).read_text()) == json.loads((lf / name).read_text())


@pytest.mark.slow
def test_a_bad_tile_in_a_beam_run_is_a_skip_reason(both):
    local, beam, lf, bf = both
    assert beam.exit_code == converter.EXIT_SKIPPED == local.exit_code
    assert [s.tile_id for s in beam.info.skipped] == [BAD]
    reason = beam.info.skipped[0].reason
    assert f"buildings_{BAD}.geojson" in reason
    assert reason == local.info.skipped[0].reason


def test_pipeline_options_pass_through():
    assert beam_options.option_flags("runner=DirectRunner, direct_num_workers=2,--x=1") == [
        "--runner=DirectRunner", "--direct_num_workers=2", "--x=1"]
    opts = beam_options.pipeline_options(BEAM).get_all_options()
    assert opts["runner"] == "FnApiRunner" and opts["direct_num_workers"] == 2
    assert opts["direct_running_mode"] == "multi_processing"  # processes, not threads
    opts = beam_options.pipeline_options(BEAM + ",direct_running_mode=multi_threading")
    assert opts.get_all_options()["direct_running_mode"] == "multi_threading"
    opts = beam_options.pipeline_options("runner=DirectRunner,direct_num_workers=2")
    assert opts.get_all_options()["direct_running_mode"] == "multi_processing"


def test_local_paths_are_refused_on_dataflow(tmp_path):
    with pytest.raises(converter.ConvertUsageError, match="a local path on Dataflow"):
        beam_convert.convert_beam(tmp_path, "gs://bucket/out", _cfg(),
                                  "runner=DataflowRunner,project=p,region=r")


def test_resume_is_refused_on_beam(tmp_path):
    with pytest.raises(converter.ConvertUsageError, match="--resume"):
        beam_convert.convert_beam(tmp_path, tmp_path / "out", _cfg(resume=True), BEAM)


def _fake_module(root: pathlib.Path, name: str) -> None:
    """A package ``name`` under ``root`` that fails on import."""
    fake = root / name
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(  # as when it is not installed
        f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n")


@pytest.mark.slow
def test_cli_on_beam_and_without_beam(tmp_path):
    """The CLI converts on Beam (exit 3: a tile skipped, summary printed); with an
    ``apache_beam`` that cannot be imported the local run still works and the Beam flag is
    one line naming the extra."""
    data = _source(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sn_tf.convert", "--noprogress", f"--data_dir={data}",
           "--shard_size_mb=0.3"]
    res = subprocess.run(cmd + [f"--output_dir={out}", f"--beam_pipeline_options={BEAM}"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == converter.EXIT_SKIPPED, res.stderr[-3000:]
    assert "SKIPPED 1 tile(s)" in res.stdout and BAD in res.stdout
    assert dsinfo.load(out).num_examples == 8

    _fake_module(tmp_path / "fake", "apache_beam")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), str(REPO)])}
    res = subprocess.run(cmd + [f"--output_dir={tmp_path / 'out2'}",
                                f"--beam_pipeline_options={BEAM}"],
                         capture_output=True, text=True, timeout=300, env=env, check=False)
    assert res.returncode == converter.EXIT_USAGE
    assert res.stderr.strip().splitlines()[-1] == (
        "sn_tf.convert: error: --beam_pipeline_options needs Apache Beam, which is not "
        "installed: pip install sn_tf[beam]")
    res = subprocess.run(cmd + [f"--output_dir={tmp_path / 'out3'}"], capture_output=True,
                         text=True, timeout=300, env=env, check=False)
    assert res.returncode == converter.EXIT_SKIPPED, res.stderr[-3000:]
