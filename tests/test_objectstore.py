"""Converting from and into an object store (``s3://``; ``sn_tf.utils.objectstore``),
locally and on Beam, against a local S3-compatible server the tests start (``moto`` in
server mode on 127.0.0.1; no network). Skipped with the reason where moto, boto3 or Beam
are missing or the server does not start. The result must equal a local-folder conversion
of the same tiles."""

import json
import pathlib

import pytest

from sn_tf.dataset import converter
from sn_tf.dataset import info as dsinfo
from fixtures.spacenet import make_sn2_aoi

pytest.importorskip("apache_beam", reason="Apache Beam not installed (pip install sn_tf[beam])")
from sn_tf.utils import objectstore  # noqa: E402

# the DirectRunner's Python engine, run directly: the DirectRunner would first try to
# download the Prism runner (BUILD_NOTES.md section 10)
BEAM = "runner=FnApiRunner,direct_num_workers=2"
PROVENANCE = ("created", "elapsed_s", "command_line", "versions")


@pytest.fixture(scope="module")
def data(s3, tmp_path_factory):
    """(local source folder, the same uploaded to s3://BUCKET/src, local conversion)."""
    root = tmp_path_factory.mktemp("storedata")
    make_sn2_aoi(root / "src", numbers=(1, 2, 3, 5, 8), size=80)
    objectstore.upload_tree(root / "src", f"{s3}/src")
    local = converter.convert(root / "src", root / "local", _cfg())
    return root / "src", f"{s3}/src", root / "local", local


def _cfg(**kw) -> converter.ConvertConfig:
    return converter.ConvertConfig(num_workers=1, progress=False, shard_size_mb=0.2,
                                   splits=(("train", 0.6), ("val", 0.4)), **kw)


def _doc(info: dsinfo.DatasetInfo, source: str = "", url: str = "") -> dict:
    """The description as JSON without provenance and the AOIs' source folders, the
    files named in notes and reasons under the local ``source`` folder named under ``url``."""
    text = json.dumps(info.to_json())
    doc = json.loads(text.replace(str(source), url) if source else text)
    for key in PROVENANCE:
        doc.pop(key)
    for aoi in doc["aois"].values():
        aoi.pop("folder")
    return doc


def _same_shards(url: str, local: pathlib.Path) -> None:
    """The objects under ``url`` that are shards equal the local folder's, byte for byte."""
    names = sorted(p.name for p in local.glob("*.tfrecord-*"))
    assert names
    listed = {u[len(url) + 1:] for u in objectstore.list_objects(url)}
    assert {n for n in listed if ".tfrecord-" in n} == set(names)  # no .sn_tf_work/
    for name in names:
        got = objectstore.ObjectPath(f"{url}/{name}").read_bytes()
        assert got == (local / name).read_bytes(), name


def test_object_paths_walk_a_prefix_like_a_folder(data):
    _, url, _, _ = data
    root = objectstore.as_path(url)
    assert isinstance(root, objectstore.ObjectPath) and root.is_dir()
    aoi = next(root.iterdir())
    assert aoi.name == "AOI_2_Vegas_Train" and aoi.is_dir() and not aoi.is_file()
    pan = sorted((aoi / "PAN").iterdir())
    assert [p.name for p in pan][:2] == ["PAN_AOI_2_Vegas_img1.tif", "PAN_AOI_2_Vegas_img2.tif"]
    lone = objectstore.ObjectPath(str(pan[0]))  # no listing: asks the store
    assert lone.is_file() and lone.stat().st_size == pan[0].stat().st_size > 0
    assert not objectstore.ObjectPath(f"{url}/nothing/here.tif").exists()
    assert not objectstore.as_path(f"{url}/nothing").is_dir()


def test_local_conversion_reads_from_and_writes_to_s3(data, s3):
    src, url, local_dir, local = data
    from_store = converter.convert(url, f"{s3}/out1", _cfg())
    assert from_store.info.notes  # an empty label file: the note names the object
    assert _doc(from_store.info) == _doc(local.info, src, url)
    assert from_store.info.aois["AOI_2_Vegas"].folder == f"{url}/AOI_2_Vegas_Train"
    _same_shards(f"{s3}/out1", local_dir)
    assert _doc(dsinfo.load(f"{s3}/out1")) == _doc(local.info, src, url)  # read back
    with pytest.raises(converter.ConvertError, match="already holds a conversion"):
        converter.convert(src, f"{s3}/out1", _cfg())
    with pytest.raises(converter.ConvertUsageError, match="--resume"):
        converter.convert(src, f"{s3}/out1", _cfg(resume=True))
    again = converter.convert(src, f"{s3}/out1", _cfg(overwrite=True))
    assert _doc(again.info) == _doc(local.info)
    _same_shards(f"{s3}/out1", local_dir)


@pytest.mark.slow
def test_beam_conversion_from_s3_into_s3_equals_the_local_one(data, s3):
    from sn_tf.dataset import beam_convert

    src, url, local_dir, local = data
    result = beam_convert.convert_beam(url, f"{s3}/out_beam", _cfg(), BEAM)
    assert _doc(result.info) == _doc(local.info, src, url)
    _same_shards(f"{s3}/out_beam", local_dir)
