"""The converter as a hostile or unlucky user tries it (issue 13, the writing half).

Every class of bad tile is skipped with a reason naming the file while the run goes on
(exit status 3) and every good tile is kept; problems of the whole run (flags, an unusable
output folder, a full disk, a second writer) are one line without a traceback (exit 1 or
2); ``--resume`` writes again the shards whose inputs changed. Bad inputs are small
generated SpaceNet folders (``fixtures.spacenet``) corrupted with rasterio and json.
"""

import errno
import fcntl
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import rasterio

from sn_tf.dataset import converter, labels, shard_plan, tfrecord
from fixtures.spacenet import make_sn2_aoi

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
TYPES = ("PAN", "MUL-PanSharpen")


# ---- helpers ---------------------------------------------------------------------------
def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "sn_tf.convert", "--noprogress", *args],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def _run(data, out, **kw):
    cfg = converter.ConvertConfig(**{"progress": False, "num_workers": 1, **kw})
    return converter.convert(data, out, cfg)


def _data(root, numbers=tuple(range(1, 7)), types=TYPES) -> pathlib.Path:
    """A generated AOI; returns its folder (``root`` is the data_dir)."""
    make_sn2_aoi(root, numbers=numbers, types=types)
    return pathlib.Path(root) / "AOI_2_Vegas_Train"


def _tif(aoi, itype, n) -> pathlib.Path:
    return aoi / itype / f"{itype}_AOI_2_Vegas_img{n}.tif"


def _label(aoi, n) -> pathlib.Path:
    return aoi / "geojson" / "buildings" / f"buildings_AOI_2_Vegas_img{n}.geojson"


def _rewrite(path, data, dtype, nodata=None, size=None):
    """Write ``data`` [C, H, W] over a GeoTIFF, keeping its georeference (and footprint)."""
    with rasterio.open(path) as ds:
        prof, t = ds.profile, ds.transform
    if size is not None:  # same footprint, other pixel size
        prof["transform"] = rasterio.Affine(t.a * prof["width"] / size, 0, t.c, 0,
                                            t.e * prof["height"] / size, t.f)
    prof.update(dtype=dtype, count=data.shape[0], height=data.shape[1], width=data.shape[2],
                nodata=nodata)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(data.astype(dtype))


def _edit_label(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _tile_ids(out) -> list[str]:
    """Tile id of every record in the shards (found in the record bytes; TF-free)."""
    ids = []
    for shard in sorted(pathlib.Path(out).glob("*.tfrecord-*")):
        for rec in tfrecord.read_records(shard):
            ids.append(re.search(rb"AOI_2_Vegas_img\d+", rec).group().decode())
    return sorted(ids)


def _js(result) -> dict:
    """The description a conversion saved, as its JSON (sn_tf_info.json)."""
    return json.loads(pathlib.Path(result.info.source).read_text())


def _reasons(info) -> dict[int, str]:
    return {int(s["tile_id"].rsplit("img", 1)[1]): s["reason"] for s in info["skipped"]}


def _one_line_error(r, code):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("sn_tf.convert: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ---- bad tiles among good ones: skipped with the file, the run goes on ------------------
LABEL_CORRUPTIONS = {  # tile number -> (edit of the label document, expected reason)
    4: (lambda d: d["features"][0]["geometry"]["coordinates"][0][1].__setitem__(0, float("nan")),
        "feature 0: non-finite coordinate"),
    5: (lambda d: d["crs"]["properties"].__setitem__("name", "urn:ogc:def:crs:EPSG::999999"),
        "unknown CRS"),
    6: (lambda d: d.__setitem__("crs", "EPSG:4326"), "'crs' member must be a JSON object"),
    7: (lambda d: d.__setitem__("features", {"0": d["features"][0]}),
        "'features' must be a JSON array"),
    8: (lambda d: d.__setitem__("features", [7]), "feature 0: expected a JSON object"),
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """14 tiles, 8 of them bad in a different way each (the first, too); converted by the CLI
    with two workers."""
    root = tmp_path_factory.mktemp("mixed")
    aoi = _data(root, numbers=tuple(range(1, 15)))
    rng = np.random.default_rng(1)
    _rewrite(_tif(aoi, "MUL-PanSharpen", 1), rng.random((8, 130, 130)) * 2000, "float32")
    _rewrite(_tif(aoi, "PAN", 2), rng.integers(0, 2048, (3, 130, 130)), "uint16")
    _rewrite(_tif(aoi, "MUL-PanSharpen", 3), rng.integers(0, 2048, (4, 130, 130)), "uint16")
    for n, (edit, _) in LABEL_CORRUPTIONS.items():
        # features 0 must exist: tiles 4..8 have n % 4 >= 1 buildings except 4 and 8
        if n in (4, 8):
            _edit_label(_label(aoi, n), lambda d: d["features"].append(
                json.loads(_label(aoi, 5).read_text())["features"][0]))
        _edit_label(_label(aoi, n), edit)
    out = tmp_path_factory.mktemp("mixed_out")
    r = _cli(f"--data_dir={root}", f"--output_dir={out}", "--num_workers=2",
             "--shard_size_mb=0.3")
    return out, r


def test_every_bad_tile_is_skipped_naming_its_file(mixed):
    out, r = mixed
    assert r.returncode == converter.EXIT_SKIPPED, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    info = json.loads((out / "sn_tf_info.json").read_text())
    why = _reasons(info)
    assert set(why) == set(range(1, 9)), why
    assert "MUL-PanSharpen_AOI_2_Vegas_img1.tif: MUL-PanSharpen pixels have dtype float32" in why[1]
    assert "the dataset's MUL-PanSharpen tiles are uint16, 8 band(s)" in why[1]
    assert "PAN_AOI_2_Vegas_img2.tif: PAN pixels have bands 3" in why[2]
    assert "MUL-PanSharpen_AOI_2_Vegas_img3.tif: MUL-PanSharpen pixels have bands 4" in why[3]
    for n, (_, reason) in LABEL_CORRUPTIONS.items():
        assert f"buildings_AOI_2_Vegas_img{n}.geojson: " in why[n] and reason in why[n], why[n]
    assert "SKIPPED 8 tile(s)" in r.stdout


def test_every_good_tile_is_kept_and_the_description_is_true(mixed):
    out, _ = mixed
    info = json.loads((out / "sn_tf_info.json").read_text())
    good = [f"AOI_2_Vegas_img{n}" for n in range(9, 15)]
    assert _tile_ids(out) == sorted(good)
    assert sum(s["num_examples"] for s in info["splits"].values()) == len(good)
    spec = info["feature_spec"]["image_types"]
    assert spec["MUL-PanSharpen"]["dtype"] == "uint16" and spec["PAN"]["bands"] == 1


# ---- pixels: non-finite values, nodata, negative values --------------------------------
@pytest.fixture(scope="module")
def float_data(tmp_path_factory):
    """PAN float32 with NaN/inf (tile 1), NaN declared as nodata (2), all NaN (3);
    MUL-PanSharpen int16 with negative values everywhere."""
    root = tmp_path_factory.mktemp("float")
    aoi = _data(root, numbers=(1, 2, 3, 5))
    rng = np.random.default_rng(2)
    for n in (1, 2, 3, 5):
        pan = (rng.random((1, 130, 130)) * 1000 + 1).astype("float32")
        nodata = None
        if n == 1:
            pan[0, :4, :5] = np.nan
            pan[0, 10, 10] = np.inf
        elif n == 2:
            pan[0, -3:, -3:] = np.nan
            nodata = float("nan")
        elif n == 3:
            pan[:] = np.nan
        _rewrite(_tif(aoi, "PAN", n), pan, "float32", nodata=nodata)
        _rewrite(_tif(aoi, "MUL-PanSharpen", n), rng.integers(-500, 500, (8, 130, 130)), "int16")
    out = tmp_path_factory.mktemp("float_out")
    return aoi, out, _run(root, out, splits=(("train", 1.0),))


def test_non_finite_pixels_follow_the_rule(float_data):
    from sn_tf.dataset.reader import read_examples

    aoi, out, result = float_data
    assert result.exit_code == converter.EXIT_SKIPPED
    assert _reasons(_js(result)) == {3: f"{_tif(aoi, 'PAN', 3)}: no finite pixel (all 16900 "
                                        "values are NaN or infinite)"}
    notes = {n["tile_id"]: n["note"] for n in _js(result)["notes"]}
    assert notes["AOI_2_Vegas_img1"] == f"{_tif(aoi, 'PAN', 1)}: 21 NaN or infinite pixel " \
                                        "value(s) stored as 0"
    assert "9 NaN or infinite pixel value(s) stored as 0 (the nodata value)" in \
        notes["AOI_2_Vegas_img2"]
    tiles = {t["tile_id"]: t for t in read_examples(out, decode_polygons=False)}
    one = tiles["AOI_2_Vegas_img1"]["images"]["PAN"]
    assert np.isfinite(one["data"]).all() and (one["data"][:4, :5] == 0).all()
    assert one["nodata"] is None
    two = tiles["AOI_2_Vegas_img2"]["images"]["PAN"]
    assert (two["data"][-3:, -3:] == 0).all() and two["nodata"] == 0.0
    st = _js(result)["band_stats"]["PAN"]
    assert all(np.isfinite(v) for k in ("mean", "std", "min", "max") for v in st[k])


def test_negative_int16_pixels_are_values(float_data):
    _, _, result = float_data
    st = _js(result)["band_stats"]["MUL-PanSharpen"]
    assert st["dtype"] == "int16" and st["min"][0] < 0 < st["max"][0]
    assert _js(result)["feature_spec"]["image_types"]["MUL-PanSharpen"]["dtype"] == "int16"


# ---- exceptions sn_tf does not know, unreadable files and folders ----------------------
def test_an_unexpected_exception_is_the_tiles_skip_reason(tmp_path, monkeypatch):
    _data(tmp_path / "d", numbers=(1, 2, 3))
    real = labels.compute_labels

    def boom(polys, height, width, *args):
        if len(polys) == 2:  # tile 2 holds two buildings (fixtures.spacenet.tile_polygons)
            raise ZeroDivisionError("division by zero")
        return real(polys, height, width, *args)

    monkeypatch.setattr(labels, "compute_labels", boom)
    result = _run(tmp_path / "d", tmp_path / "o")
    assert result.exit_code == converter.EXIT_SKIPPED
    reason = _reasons(_js(result))[2]
    assert reason.startswith("AOI_2_Vegas_img2: unexpected ZeroDivisionError: division by zero")
    assert "test_convert_contract.py" in reason and "in boom" in reason  # where it was raised
    assert "PAN_AOI_2_Vegas_img2.tif" in reason and "buildings_AOI_2_Vegas_img2.geojson" in reason
    assert _tile_ids(tmp_path / "o") == ["AOI_2_Vegas_img1", "AOI_2_Vegas_img3"]


def test_unreadable_label_file_and_image_folder(tmp_path, monkeypatch):
    aoi = _data(tmp_path / "d", numbers=(1, 2, 3))
    bad_label, bad_dir = _label(aoi, 2), aoi / "PAN"
    read_text, iterdir = pathlib.Path.read_text, pathlib.Path.iterdir

    def guarded_read(self, *a, **kw):
        if self == bad_label:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_text(self, *a, **kw)

    def guarded_iterdir(self):
        if self == bad_dir:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(pathlib.Path, "read_text", guarded_read)
    monkeypatch.setattr(pathlib.Path, "iterdir", guarded_iterdir)
    result = _run(tmp_path / "d", tmp_path / "o")
    assert result.exit_code == converter.EXIT_SKIPPED
    assert _reasons(_js(result)) == {
        2: f"{bad_label}: cannot read the label file (Permission denied)"}
    assert f"{bad_dir}: cannot list the folder (Permission denied); ignored" in \
        _js(result)["layout_warnings"]
    assert _js(result)["aois"]["AOI_2_Vegas"]["image_types"] == ["MUL-PanSharpen"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_files_by_mode(tmp_path):
    aoi = _data(tmp_path / "d", numbers=(1, 2, 3))
    _label(aoi, 2).chmod(0)
    _tif(aoi, "PAN", 3).chmod(0)
    r = _cli(f"--data_dir={tmp_path / 'd'}", f"--output_dir={tmp_path / 'o'}")
    assert r.returncode == converter.EXIT_SKIPPED and "Traceback" not in r.stderr
    assert "buildings_AOI_2_Vegas_img2.geojson: cannot read" in r.stdout
    assert "PAN_AOI_2_Vegas_img3.tif" in r.stdout


# ---- problems of the whole run: one line, exit 1 or 2 ----------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    _data(root, numbers=(1, 2, 3))
    return root


@pytest.mark.parametrize("options,message", [
    ({"label_grids": ("FOO",)}, "--label_grids: unknown image type(s) ['FOO']"),
    ({"label_grids": ("RGB-PanSharpen",)}, "--label_grids: ['RGB-PanSharpen'] not among the "
                                           "image types converted"),
    ({"resample_to": "FOO"}, "--resample_to: unknown image type(s) ['FOO']"),
    ({"image_types": ("PAN",), "resample_to": "MUL"}, "--resample_to: ['MUL'] not among"),
    ({"image_types": ("FOO",)}, "--image_types: unknown image type(s) ['FOO']"),
    ({"shard_size_mb": 0}, "--shard_size_mb=0: must be a number > 0"),
    ({"shard_size_mb": float("nan")}, "--shard_size_mb=nan: must be a number > 0"),
    ({"sdf_truncation": -1.0}, "--sdf_truncation=-1.0: must be a number > 0"),
    ({"num_workers": 0}, "--num_workers=0: must be an integer >= 1"),
    ({"contact_radius": 0}, "--contact_radius=0: must be an integer >= 1"),
    ({"splits": (("train", -1.0),)}, "fraction of 'train' must be >= 0"),
    ({"name": "a/b"}, "--name='a/b'"),
])
def test_bad_options_are_refused_before_work(small, tmp_path, options, message):
    with pytest.raises(converter.ConvertUsageError) as err:
        _run(small, tmp_path / "o", **options)
    assert message in str(err.value)
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize("flag", ["--label_grids=FOO", "--resample_to=FOO",
                                  "--shard_size_mb=0", "--num_workers=0", "--num_workers=x",
                                  "--splits=train=x", "--image_encoding=nope"])
def test_cli_bad_flags_exit_2_in_one_line(small, tmp_path, flag):
    r = _cli(f"--data_dir={small}", f"--output_dir={tmp_path / 'o'}", flag)
    line = _one_line_error(r, converter.EXIT_USAGE)
    assert flag.split("=")[0].lstrip("-") in line


def test_output_path_that_is_a_file(small, tmp_path):
    (tmp_path / "o").write_text("x")
    line = _one_line_error(_cli(f"--data_dir={small}", f"--output_dir={tmp_path / 'o'}"),
                           converter.EXIT_FATAL)
    assert f"{tmp_path / 'o'}: output path exists and is not a folder" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the folder's mode")
def test_read_only_output_folder(small, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o").chmod(0o555)
    try:
        line = _one_line_error(_cli(f"--data_dir={small}", f"--output_dir={tmp_path / 'o'}"),
                               converter.EXIT_FATAL)
    finally:
        (tmp_path / "o").chmod(0o755)
    assert str(tmp_path / "o") in line and "ermission denied" in line


def test_disk_full_while_writing_is_one_line(small, tmp_path):
    """ENOSPC simulated in the shard writer (one worker: in the CLI's process)."""
    code = (
        "import errno, sys\n"
        "from sn_tf.dataset import tfrecord\n"
        "def full(self, record):\n"
        "    raise OSError(errno.ENOSPC, f'{self.path}: cannot write TFRecord (No space left "
        "on device)')\n"
        "tfrecord.TFRecordWriter.write = full\n"
        "from absl import app\n"
        "from sn_tf import convert\n"
        "convert._define_flags()\n"
        f"sys.argv = ['convert', '--noprogress', '--num_workers=1', '--data_dir={small}', "
        f"'--output_dir={tmp_path / 'o'}']\n"
        "app.run(convert.main, flags_parser=convert._parse_flags)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=ENV)
    line = _one_line_error(r, converter.EXIT_FATAL)
    assert "No space left on device" in line and "free space, then run again with --resume" in line
    assert str(tmp_path / "o") in line
    assert not list((tmp_path / "o").glob("*.tmp-*"))  # the partial shard is removed


def test_a_dead_worker_is_a_convert_error():
    from fixtures.pool import die

    with pytest.raises(converter.ConvertError, match="worker process died.*--resume"):
        converter._pool_run(die, [(9,), (9,)], 2, False, lambda *a: None)


# ---- one writer per output folder --------------------------------------------------------
def test_a_second_writer_refuses(small, tmp_path):
    out = tmp_path / "o"
    (out / converter.WORK_DIR).mkdir(parents=True)
    with open(out / converter.WORK_DIR / converter.LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another open file: as a second process would
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        line = _one_line_error(_cli(f"--data_dir={small}", f"--output_dir={out}"),
                               converter.EXIT_FATAL)
        assert f"{out}: another conversion (pid 4242 on elsewhere) is writing" in line
        with pytest.raises(converter.ConvertError, match="another conversion"):
            _run(small, out)
    assert not list(out.glob("*.tfrecord-*"))
    assert _run(small, out).exit_code == converter.EXIT_OK  # released: the folder is free


def test_the_lock_of_a_killed_writer_is_released(small, tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import pathlib, sys, time\n"
         "from sn_tf.dataset import converter\n"
         f"with converter.output_lock(pathlib.Path({str(out)!r})):\n"
         "    print('locked', flush=True)\n"
         "    time.sleep(600)\n"], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(converter.ConvertError, match="another conversion"):
            _run(small, out)
    finally:
        holder.kill()
        holder.wait()
    assert _run(small, out).exit_code == converter.EXIT_OK


# ---- --resume after an input changed -----------------------------------------------------
def _shard_of(out, tile_id) -> str:
    for done in (out / converter.WORK_DIR).glob("*.done.json"):
        rec = json.loads(done.read_text())
        if any(t == tile_id for t, _ in rec["tiles"]):
            return rec["file"]
    raise AssertionError(tile_id)


def test_resume_writes_again_the_shards_whose_inputs_changed(tmp_path):
    from fixtures.spacenet import geojson_text

    aoi = _data(tmp_path / "d", numbers=(1, 2, 3, 5, 6, 7))
    out = tmp_path / "o"
    kw = {"shard_size_mb": 0.2, "splits": (("train", 1.0),)}
    first = _run(tmp_path / "d", out, **kw)
    shards = sorted(p.name for p in out.glob("*.tfrecord-*"))
    assert first.exit_code == 0 and len(shards) >= 3
    target = _shard_of(out, "AOI_2_Vegas_img3")
    before = {s: (out / s).stat().st_mtime_ns for s in shards}
    label = _label(aoi, 3)
    label.write_text(geojson_text([]))  # the buildings of tile 3 were removed
    again = _run(tmp_path / "d", out, resume=True, **kw)
    assert again.rewritten == [target]
    assert _js(again)["shards_resumed"] == len(shards) - 1
    assert f"{label}: changed (size or modification time) since the earlier run; shard " \
           f"{target} written again" in [n["note"] for n in _js(again)["notes"]]
    assert (out / target).stat().st_mtime_ns != before[target]
    assert all((out / s).stat().st_mtime_ns == before[s] for s in shards if s != target)
    # the new content is in: tile 3's labels now say no building
    from sn_tf.dataset.reader import read_examples

    tile3 = [t for t in read_examples(out, decode_polygons=False)
             if t["tile_id"] == "AOI_2_Vegas_img3"]
    assert len(tile3) == 1 and tile3[0]["labels"]["MUL-PanSharpen"]["mask"].sum() == 0
    # a third resume with nothing changed keeps everything
    third = _run(tmp_path / "d", out, resume=True, **kw)
    assert third.rewritten == [] and _js(third)["shards_resumed"] == len(shards)


def test_resume_notices_an_input_touched_without_a_size_change(tmp_path):
    aoi = _data(tmp_path / "d", numbers=(1, 2))
    out = tmp_path / "o"
    _run(tmp_path / "d", out, splits=(("train", 1.0),))
    tif = _tif(aoi, "PAN", 2)
    st = tif.stat()
    os.utime(tif, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    again = _run(tmp_path / "d", out, resume=True, splits=(("train", 1.0),))
    assert again.rewritten and _js(again)["shards_resumed"] == 0


def test_without_a_contract_a_shard_still_keeps_one_dtype(tmp_path, monkeypatch):
    """No header could be probed (simulated): the shard's first tile sets dtype and bands."""
    aoi = _data(tmp_path / "d", numbers=(1, 2, 3))
    _rewrite(_tif(aoi, "PAN", 2), np.ones((1, 130, 130)), "float32")

    def unreadable(*args):
        raise converter.TileSkipped("probe refused")

    monkeypatch.setattr(shard_plan, "probe_image", unreadable)
    result = _run(tmp_path / "d", tmp_path / "o", splits=(("train", 1.0),))
    assert result.exit_code == converter.EXIT_SKIPPED
    why = _reasons(_js(result))  # tile 2, or the others if tile 2 is the shard's first
    assert why and len(why) + len(_tile_ids(tmp_path / "o")) == 3
    for n, reason in why.items():
        assert f"{_tif(aoi, 'PAN', n)}: PAN pixels are" in reason
        assert "where the shard's first PAN tile has" in reason


def test_sizes_may_vary_dtype_and_bands_may_not(tmp_path):
    """AOIs cut at different sizes, and a tile of another size, convert (the odd tile with
    a note); an AOI of another dtype does not."""
    make_sn2_aoi(tmp_path / "d", aoi="AOI_2_Vegas", numbers=(1, 2, 3), types=TYPES)
    make_sn2_aoi(tmp_path / "d", aoi="AOI_3_Paris", numbers=(4, 5), types=TYPES, size=200)
    pan3 = _tif(tmp_path / "d" / "AOI_2_Vegas_Train", "PAN", 3)
    _rewrite(pan3, np.ones((1, 65, 65)), "uint16", size=65)
    result = _run(tmp_path / "d", tmp_path / "o")
    assert result.exit_code == converter.EXIT_OK, _js(result)["skipped"]
    assert f"{pan3}: 65x65 px where this AOI's PAN tiles are 130x130 px" in \
        [n["note"] for n in _js(result)["notes"]]
    make_sn2_aoi(tmp_path / "d2", aoi="AOI_2_Vegas", numbers=(1, 2, 3), types=TYPES)
    make_sn2_aoi(tmp_path / "d2", aoi="AOI_3_Paris", numbers=(4, 5), types=TYPES)
    paris = tmp_path / "d2" / "AOI_3_Paris_Train" / "PAN"
    for n in (4, 5):
        _rewrite(paris / f"PAN_AOI_3_Paris_img{n}.tif", np.ones((1, 130, 130)), "float32")
    result = _run(tmp_path / "d2", tmp_path / "o2")
    skipped = {s["tile_id"]: s["reason"] for s in _js(result)["skipped"]}
    assert set(skipped) == {"AOI_3_Paris_img4", "AOI_3_Paris_img5"}
    assert "PAN pixels have dtype float32" in skipped["AOI_3_Paris_img4"]
