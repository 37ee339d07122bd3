"""Shared pytest fixtures.

Converted datasets, made once per test session and shared (read-only: a test that changes
one copies it first):
``known_dataset``: the exactly-known fixture of ``fixtures.datasets.write_dataset`` (polygons
and pixels derivable from the tile number; Vegas train/val, Paris train/val).
``sample_tfr``: the synthetic sample (6 Vegas + 6 Paris + 4 Rio tiles, seed 3) converted
with splits train/val 0.5/0.5, what the training, recipe and input-config tests train on.

``realdata``: the folder ``../shared/realdata`` beside the repository (real SpaceNet sample
files with known answers). Tests that use it are skipped, with the reason, where it is absent,
so a user's clone passes. Override the location with ``SN_TF_REALDATA=/path``.
"""

import os
import pathlib

import pytest

# Before anything imports TensorFlow (see sn_tf/utils/tfimport.py: oneDNN custom ops corrupt the
# heap during FCN training steps on this CPU with TF 2.21).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]


def _realdata_dir() -> pathlib.Path:
    env = os.environ.get("SN_TF_REALDATA")
    return pathlib.Path(env) if env else REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> pathlib.Path:
    """Path of ../shared/realdata; skips the test with a clear reason where it is absent."""
    path = _realdata_dir()
    if not (path / "SOURCES.md").is_file():
        pytest.skip(f"real SpaceNet sample data not found at {path} "
                    "(set SN_TF_REALDATA or place shared/realdata beside the repo)")
    return path


@pytest.fixture(scope="session")
def known_dataset(tmp_path_factory):
    """``fixtures.datasets.write_dataset`` converted once per session (read-only)."""
    from fixtures.datasets import write_dataset

    return write_dataset(tmp_path_factory.mktemp("known_dataset"))


@pytest.fixture(scope="session")
def sample_tfr(tmp_path_factory):
    """6 Vegas + 6 Paris (+ 4 Rio, without the recipes' image type) synthetic tiles, half
    train, half val, converted once per session (read-only)."""
    from sn_tf.dataset import converter
    from sn_tf.spacenet.synthetic import write_sample

    data = tmp_path_factory.mktemp("sample_data")
    write_sample(data, aois=("AOI_2_Vegas", "AOI_3_Paris", "AOI_1_Rio"), tiles_per_aoi=6,
                 seed=3)
    out = tmp_path_factory.mktemp("sample_tfr")
    converter.convert(data, out, converter.ConvertConfig(num_workers=1, progress=False,
                                                         splits=(("train", 0.5), ("val", 0.5))))
    return out

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """``s3://<bucket>`` on a local moto S3 server for one test module
    (``fixtures.s3server``); skips the test with the reason where the server cannot start.
    Module scope: the server's AWS_* environment must not reach later modules (with boto3
    installed, rasterio then opens an AWS session and logs, e.g., in CLI subprocesses)."""
    from fixtures.s3server import moto_s3

    with moto_s3(tmp_path_factory.mktemp("moto")) as url:
        yield url
