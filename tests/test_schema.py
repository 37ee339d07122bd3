"""The data contract: encode/decode round trips, versions, frozen keys, TF == numpy decode."""

import numpy as np
import pytest
import shapely

from sn_tf.dataset import labels, schema


def _tile(dtype="uint16", bands=8, encoding_kw=None):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    hi = min(info.max, 5000) if info else 1.0
    data = (rng.uniform(0, hi, (13, 17, bands))).astype(dtype)
    polys = [shapely.box(2, 3, 9, 8), shapely.Polygon([(10, 1), (16, 2), (12, 9)])]  # 1 px gap
    lab = labels.compute_labels(polys, 13, 17, 4.0)
    return {
        "tile_id": "AOI_2_Vegas_img7", "aoi": "AOI_2_Vegas",
        "images": {"X": {"data": data, "transform_gdal": (-115.3, 2.7e-6, 0.0, 36.2, 0.0, -2.7e-6),
                         "crs": "EPSG:4326", "nodata": None, "label_grid": "X"}},
        "labels": {"X": lab},
    }


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
@pytest.mark.parametrize("enc", ["raw", "zlib"])
def test_round_trip_exact(dtype, enc):
    tile = _tile(dtype)
    back = schema.decode_tile(schema.encode_tile(tile, image_encoding=enc, label_encoding=enc))
    img, src = back["images"]["X"], tile["images"]["X"]
    assert img["data"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(img["data"], src["data"])
    assert img["transform_gdal"] == src["transform_gdal"]  # float64, bit exact
    assert img["crs"] == "EPSG:4326" and img["nodata"] is None and img["label_grid"] == "X"
    lab, slab = back["labels"]["X"], tile["labels"]["X"]
    np.testing.assert_array_equal(lab["mask"], slab["mask"])
    np.testing.assert_allclose(lab["sdf"], slab["sdf"], rtol=1e-3)
    np.testing.assert_array_equal(lab["boxes_xyxy_px"], slab["boxes_xyxy_px"])
    np.testing.assert_array_equal(lab["contact"], slab["contact"])
    np.testing.assert_array_equal(lab["rects_px"], slab["rects_px"])
    assert lab["contact"].any() and lab["rects_px"].shape == (2, 4, 2)
    assert all(a.equals(b) for a, b in zip(lab["polygons_px"], slab["polygons_px"]))
    assert back["tile_id"] == "AOI_2_Vegas_img7" and back["schema_version"] == schema.SCHEMA_VERSION


def test_nodata_round_trip():
    tile = _tile()
    tile["images"]["X"]["nodata"] = 0.0
    assert schema.decode_tile(schema.encode_tile(tile))["images"]["X"]["nodata"] == 0.0


def test_unknown_version_refused():
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    ex = tf.train.Example.FromString(schema.encode_tile(_tile()))
    ex.features.feature[schema.KEY_SCHEMA_VERSION].int64_list.value[:] = [99]
    with pytest.raises(schema.SchemaError, match="schema version 99"):
        schema.decode_tile(ex.SerializeToString())


def _as_version_2(serialized: bytes) -> bytes:
    """A version 3 record rewritten as version 2 wrote it (no contact, no rects_px)."""
    from sn_tf.utils.tfimport import tensorflow

    ex = tensorflow().train.Example.FromString(serialized)
    feat = ex.features.feature
    feat[schema.KEY_SCHEMA_VERSION].int64_list.value[:] = [2]
    for grid in feat[schema.KEY_LABEL_GRIDS].bytes_list.value:
        g = grid.decode()
        del feat[schema.label_key(g, "contact")], feat[schema.label_key(g, "rects_px")]
        for field in ("encoding", "dtypes"):
            del feat[schema.label_key(g, field)].bytes_list.value[-1]
        offsets = feat[schema.label_key(g, "payload_offsets")].bytes_list.value
        offsets[0] = offsets[0][:-8]
    return ex.SerializeToString(deterministic=True)


def test_version_2_records_decode_without_contact_and_rects():
    tile = _tile()
    back = schema.decode_tile(_as_version_2(schema.encode_tile(tile)))
    assert back["schema_version"] == 2
    lab = back["labels"]["X"]
    assert "contact" not in lab and "rects_px" not in lab
    np.testing.assert_array_equal(lab["mask"], tile["labels"]["X"]["mask"])
    np.testing.assert_array_equal(lab["boxes_xyxy_px"], tile["labels"]["X"]["boxes_xyxy_px"])


def test_keys_are_frozen():
    """Changing a key breaks every converted dataset: bump SCHEMA_VERSION and update this."""
    assert schema.SCHEMA_VERSION == 3 and schema.KNOWN_SCHEMA_VERSIONS == (1, 2, 3)
    keys = schema.feature_keys(["PAN"], ["PAN"])
    assert keys == [
        "schema/version", "tile/id", "tile/aoi", "tile/image_types", "tile/label_grids",
        "image/PAN/data", "image/PAN/encoding", "image/PAN/dtype", "image/PAN/shape",
        "image/PAN/transform_gdal", "image/PAN/crs", "image/PAN/nodata",
        "image/PAN/label_grid", "image/PAN/payload_offset",
        "labels/PAN/mask", "labels/PAN/distance", "labels/PAN/sdf", "labels/PAN/contact",
        "labels/PAN/encoding", "labels/PAN/dtypes", "labels/PAN/shape",
        "labels/PAN/boxes_xyxy_px", "labels/PAN/rects_px", "labels/PAN/polygons_wkb",
        "labels/PAN/payload_offsets"]
    assert schema.label_array_fields(2) == ("mask", "distance", "sdf")
    assert schema.label_array_fields(3) == ("mask", "distance", "sdf", "contact")
    # the hand-written serializer's key order is protobuf's only if no key is a prefix
    # of another (upb puts the longer first)
    assert not [(a, b) for a in keys for b in keys if a != b and b.startswith(a)]
    with pytest.raises(schema.SchemaError):
        schema.image_key("PAN", "pixels")


def test_tf_decode_matches_numpy_decode():
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    tile = _tile("uint16")
    ser = schema.encode_tile(tile, image_encoding="zlib", label_encoding="zlib")
    parsed = tf.io.parse_single_example(ser, schema.tf_feature_spec(["X"], ["X"]))
    img = schema.tf_decode_bytes(parsed[schema.image_key("X", "data")], "zlib", "uint16",
                                 parsed[schema.image_key("X", "shape")])
    np.testing.assert_array_equal(img.numpy(), tile["images"]["X"]["data"])
    sdf = schema.tf_decode_bytes(parsed[schema.label_key("X", "sdf")], "zlib", "float16",
                                 parsed[schema.label_key("X", "shape")])
    np.testing.assert_allclose(sdf.numpy(), tile["labels"]["X"]["sdf"], rtol=1e-3)
    gt = schema.tf_decode_transform(parsed[schema.image_key("X", "transform_gdal")])
    assert tuple(gt.numpy()) == tile["images"]["X"]["transform_gdal"]
    boxes = tf.sparse.to_dense(parsed[schema.label_key("X", "boxes_xyxy_px")]).numpy()
    np.testing.assert_array_equal(boxes.reshape(-1, 4), tile["labels"]["X"]["boxes_xyxy_px"])


@pytest.mark.parametrize("with_labels", [True, False])
def test_hand_written_wire_format_equals_protobuf(with_labels):
    """encode_tile's direct serializer == protobuf's deterministic serialization."""
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    tile = _tile("int16")
    if not with_labels:
        tile["labels"] = {}
    tile["labels"] = tile["labels"]
    ours = schema.encode_tile(tile, label_encoding="zlib")
    proto = tf.train.Example.FromString(ours)
    assert proto.SerializeToString(deterministic=True) == ours
    # and edge values: empty lists, negative and large ints, empty strings
    feats = {"a": schema._int_feature([-1, 0, 2 ** 40]), "b": schema._float_feature([]),
             "c": schema._bytes_feature([b"", "x"]), "d": schema._int_feature([])}
    raw = schema._example_bytes(feats)
    ex = tf.train.Example.FromString(raw)
    assert list(ex.features.feature["a"].int64_list.value) == [-1, 0, 2 ** 40]
    assert list(ex.features.feature["c"].bytes_list.value) == [b"", b"x"]
    assert ex.features.feature["b"].WhichOneof("kind") == "float_list"
    assert ex.SerializeToString(deterministic=True) == raw


@pytest.mark.parametrize("enc", ["raw", "zlib"])
def test_payload_offsets_point_at_every_payload(enc):
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    tile = _tile()
    tile["images"]["Y"] = dict(tile["images"]["X"], data=tile["images"]["X"]["data"][..., :3])
    ser = schema.encode_tile(tile, image_encoding=enc, label_encoding=enc)
    ex = tf.train.Example.FromString(ser)
    feat = ex.features.feature

    def value(key):
        return feat[key].bytes_list.value[0]

    def offsets(key):
        return np.frombuffer(value(key), "<i8").tolist()

    found = []
    for itype in ("X", "Y"):
        (off,) = offsets(schema.image_key(itype, "payload_offset"))
        data = value(schema.image_key(itype, "data"))
        found.append(ser[off:off + len(data)] == data)
    offs = offsets(schema.label_key("X", "payload_offsets"))
    for field, off in zip(schema.LABEL_ARRAY_FIELDS, offs, strict=True):
        data = value(schema.label_key("X", field))
        found.append(ser[off:off + len(data)] == data)
    assert found == [True] * 6
    # the TF side: the record itself when the entry before the offset checks, else parsed
    key = schema.label_key("X", "sdf")
    sdf = value(key)
    cases = [(offs[2], len(sdf), True), (offs[1], len(sdf), False),  # distance's payload
             (offs[2] + 1, len(sdf), False), (10 ** 9, len(sdf), False), (-5, len(sdf), False),
             (offs[2], len(sdf) - 2, False),  # a payload of another size than expected
             (2 ** 63 - 10, len(sdf), False)]  # offset + size would overflow int64
    for off, nbytes, cut in cases:
        source, base = schema.tf_payload(tf.constant(ser), key, off, nbytes)
        assert (int(base) == off) == cut
        assert tf.strings.substr(source, base, len(sdf)).numpy() == sdf


def test_offsets_placeholder_is_never_the_shared_empty_bytes():
    with pytest.raises(ValueError, match="at least one offset"):
        schema._offsets_placeholder(0)
