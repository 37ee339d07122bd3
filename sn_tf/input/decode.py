"""One record -> one example: parsing, window decoding, targets (tf.data graph functions).

``_feature_spec`` / ``_cut_payloads`` (which payloads to parse), ``_decode_window`` (a
window of a raw, zlib or PNG payload without decoding the whole tile), ``_train_example``
(random crop, augmentation, targets) and ``_eval_example`` (whole padded tile). Driven by a
``sn_tf.input.plan._Plan``; batched and assembled by ``sn_tf.input.pipeline``.
"""

from __future__ import annotations

import numpy as np

from sn_tf.dataset import schema
from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()

from sn_tf.input import augment as aug  # noqa: E402  (after TF is imported quietly)
from sn_tf.input import ranged  # noqa: E402
from sn_tf.input.packed import PackedDetection  # noqa: E402
from sn_tf.input import targets as tg  # noqa: E402
from sn_tf.input.plan import _Plan, _TypeSpec  # noqa: E402


# ---- parsing and decoding (one example) ------------------------------------------------------
def _feature_spec(plan: _Plan) -> dict:
    """The schema's parse spec restricted to the features this plan reads.

    Payloads cut from the record (``_cut_payloads``) are not parsed (a copy of MBs);
    their offsets are.
    """
    full = schema.tf_feature_spec([t.name for t in plan.types], [plan.grid])
    cut = _cut_payloads(plan)
    keys = [schema.KEY_SCHEMA_VERSION, schema.KEY_TILE_ID, schema.KEY_AOI,
            schema.label_key(plan.grid, "shape")]
    if plan.boxes or not plan.training:
        keys += [schema.label_key(plan.grid, "boxes_xyxy_px"),
                 schema.label_key(plan.grid, "rects_px")]
    keys += [schema.image_key(t.name, "shape") for t in plan.types]
    keys += [k for k in ([schema.image_key(t.name, "data") for t in plan.types]
                         + [schema.label_key(plan.grid, f) for f in plan.label_fields])
             if k not in cut]
    if plan.training and plan.augment.focus > 0:  # the whole contact layer picks windows
        keys.append(schema.label_key(plan.grid, "contact"))
    keys = list(dict.fromkeys(keys))
    if not plan.ranged:  # ranged reads know each payload's place from the shard index
        keys += sorted({offsets_key for offsets_key, _, _ in cut.values()})
    if not plan.training:
        first = plan.types[0].name
        keys += [schema.image_key(first, "transform_gdal"), schema.image_key(first, "crs")]
    return {k: full[k] for k in keys}


def _cut_payloads(plan: _Plan) -> dict[str, tuple[str, int, int]]:
    """The payloads this plan cuts from the record: {feature key: (offsets key, index in
    the offsets, bytes of the dataset's example tile)}."""
    out = {schema.image_key(t.name, "data"): (schema.image_key(t.name, "payload_offset"), 0,
                                              t.example_bytes)
           for t in plan.types if plan.cut_from_record(t.encoding)}
    for f in plan.label_fields:
        dtype, encoding = plan.label_arrays[f]
        if plan.cut_from_record(encoding):
            out[schema.label_key(plan.grid, f)] = (
                schema.label_key(plan.grid, "payload_offsets"),
                schema.LABEL_ARRAY_FIELDS.index(f),
                int(np.prod(plan.grid_shape)) * np.dtype(dtype).itemsize)
    return out


def _with_payload_sources(feat: dict, record, plan: _Plan) -> dict:
    """Parsed features plus, for each payload cut from the record, ``(source, base)``
    under ``_SOURCE``/``_BASE`` + key (``schema.tf_payload``): the record and the offset
    when it checks, else the parsed value and 0. Once per tile, before any crops."""
    feat, offsets = dict(feat), {}
    for key, (offsets_key, index, nbytes) in _cut_payloads(plan).items():
        if offsets_key not in offsets:  # none (b"") -> zeros, an offset that never checks
            offsets[offsets_key] = tf.concat([schema.tf_decode_offsets(feat[offsets_key]),
                                              tf.zeros([len(schema.LABEL_ARRAY_FIELDS)],
                                                       tf.int64)], 0)
        feat[_SOURCE + key], feat[_BASE + key] = schema.tf_payload(
            record, key, offsets[offsets_key][index], nbytes)
    return feat


_SOURCE, _BASE = "_source:", "_base:"  # internal feature names (not schema keys)
_FILE, _POS, _SIZE = "_file:", "_pos:", "_size:"  # a payload's place in its shard (ranged)
_ROW = "_row"  # the example's row of the shard index (ranged)


def _ranged_window(feat: dict, key: str, dtype: str, shape, window, flip_rows=None):
    """Pixels [win, win, C] (``dtype``) of ``window = (y0, x0, win)`` of the raw payload
    ``key``, read from its shard file (``sn_tf.input.ranged.read_window``: one pass over
    the window's rows; rows reversed where ``flip_rows``). shape: (H, W, C) with a Python
    int C; the payload must hold H * W * C values (checked, else an error naming the file).
    """
    y0, x0, win = window
    channels = int(shape[2])
    itemsize = np.dtype(dtype).itemsize

    def read(path, pos, size, height, width, y0, x0, win, flip):
        if size != int(height) * int(width) * channels * itemsize:
            raise ranged.ShardError(
                f"{path.decode()}: payload {key} at byte {pos} holds {size} bytes, not "
                f"{height} x {width} x {channels} {dtype} values")
        out = ranged.read_window(path, int(pos), int(width), channels * itemsize, int(y0),
                                 int(x0), int(win), bool(flip))
        return out.view(np.dtype(dtype).newbyteorder("<")).reshape(win, win, channels)

    flip = tf.constant(False) if flip_rows is None else flip_rows
    x = tf.numpy_function(read, [feat[_FILE + key], feat[_POS + key], feat[_SIZE + key],
                                 shape[0], shape[1], y0, x0, win, flip],
                          tf.dtypes.as_dtype(dtype), stateful=False)
    return tf.reshape(x, [win, win, channels])


def _payload_bytes(feat: dict, key: str):
    """``(data, base)``: where a payload's bytes start (``_with_payload_sources`` when it
    was cut from the record, else the parsed feature and 0)."""
    if _SOURCE + key in feat:
        return feat[_SOURCE + key], feat[_BASE + key]
    return feat[key], 0


def _check_example(feat: dict, plan: _Plan):
    """Graph assertions: known schema version, every image type present and on the grid."""
    tile_id = feat[schema.KEY_TILE_ID]
    ops = [tf.debugging.Assert(
        tf.reduce_any(tf.equal(feat[schema.KEY_SCHEMA_VERSION],
                               tf.constant(schema.KNOWN_SCHEMA_VERSIONS, tf.int64))),
        ["unknown schema version in tile", tile_id])]
    hw = feat[schema.label_key(plan.grid, "shape")]
    for t in plan.types:
        shape = feat[schema.image_key(t.name, "shape")]
        ops.append(tf.debugging.Assert(
            tf.reduce_all(tf.equal(shape, tf.concat([hw, [t.num_bands]], 0))),
            [f"image {t.name} missing or not on the {plan.grid} label grid in tile",
             tile_id, "image shape", shape, "label shape", hw]))
    return ops


def _decode_window(data, encoding: str, dtype: str, shape, window, flip_rows=None, base=0):
    """Pixels of ``window = (y0, x0, win)`` of an encoded HWC array (shape int32 [3]; a
    Python int channel count ``shape[2]`` gives the result a static channel dimension).

    base: where the array's bytes start in ``data`` (raw only; int64 scalar or 0).

    flip_rows: optional bool scalar tensor: rows in reverse order (an up-down flip).
    Raw arrays decode only the window: one byte range per row (``substr`` with a vector
    of row offsets, so the column crop and the row order cost nothing beyond the one copy
    into the output; measured 0.6 ms less per 512 x 512 x 8 uint16 crop than a row-block
    substr + column slice + ``tf.reverse``).
    """
    y0, x0, win = window
    if encoding == "raw":
        pixel_bytes = shape[2] * np.dtype(dtype).itemsize
        rows = tf.range(win)
        if flip_rows is not None:
            rows = tf.where(flip_rows, win - 1 - rows, rows)
        offsets = (tf.cast(y0 + rows, tf.int64) * tf.cast(shape[1] * pixel_bytes, tf.int64)
                   + tf.cast(x0 * pixel_bytes, tf.int64) + base)
        parts = tf.strings.substr(data, offsets,
                                  tf.fill([win], tf.cast(win * pixel_bytes, tf.int64)))
        flat = tf.io.decode_raw(parts, tf.dtypes.as_dtype(dtype), little_endian=True)
        return tf.reshape(flat, [-1, win, shape[2]])
    x = schema.tf_decode_bytes(data, encoding, dtype, shape)[y0:y0 + win, x0:x0 + win]
    if flip_rows is None:
        return x
    return tf.cond(flip_rows, lambda: tf.reverse(x, [0]), lambda: tf.identity(x))


def _decode_image_window(feat: dict, t: _TypeSpec, window, flip_rows, plan: _Plan):
    """Window of one image type [win, win, selected channels], source dtype."""
    shape = tf.cast(feat[schema.image_key(t.name, "shape")], tf.int32)
    shape = [shape[0], shape[1], t.num_bands]  # static channels (checked by _check_example)
    key = schema.image_key(t.name, "data")
    if _FILE + key in feat:
        x = _ranged_window(feat, key, t.dtype, shape, window, flip_rows)
    else:
        data, base = _payload_bytes(feat, key)
        x = _decode_window(data, t.encoding, t.dtype, shape, window, flip_rows, base)
    return x if t.all_channels else tf.gather(x, list(t.channels), axis=2)


def _decode_image(feat: dict, t: _TypeSpec):
    """The whole image of one type [H, W, selected channels], source dtype."""
    shape = tf.cast(feat[schema.image_key(t.name, "shape")], tf.int32)
    x = schema.tf_decode_bytes(feat[schema.image_key(t.name, "data")], t.encoding, t.dtype,
                               shape)
    return x if t.all_channels else tf.gather(x, list(t.channels), axis=2)


def _stack(parts: list, plan: _Plan):
    """Concatenate per-type images on the channel axis in the plan's common dtype."""
    dtype = tf.dtypes.as_dtype(plan.common_dtype)
    parts = [p if p.dtype == dtype else tf.cast(p, dtype) for p in parts]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)


def _decode_labels(feat: dict, plan: _Plan, window=None, flip_rows=None):
    """Label arrays ``plan.label_fields`` stacked [H, W, L] (float, stored dtype), or None.

    window: ``(y0, x0, win)`` to decode only that window (rows reversed where
    ``flip_rows``); None = whole tile.
    """
    if not plan.label_fields:
        return None
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    layers = []
    for field in plan.label_fields:
        dtype, encoding = plan.label_arrays[field]
        key = schema.label_key(plan.grid, field)
        if window is None:
            layers.append(schema.tf_decode_bytes(feat[key], encoding, dtype,
                                                 tf.concat([hw, [1]], 0)))
            continue
        if _FILE + key in feat:
            layers.append(_ranged_window(feat, key, dtype, [hw[0], hw[1], 1], window,
                                         flip_rows))
            continue
        data, base = _payload_bytes(feat, key)
        layers.append(_decode_window(data, encoding, dtype, [hw[0], hw[1], 1], window,
                                     flip_rows, base))
    dtype = next((x.dtype for x in layers if x.dtype.is_floating), tf.float32)
    layers = [x if x.dtype == dtype else tf.cast(x, dtype) for x in layers]
    return layers[0] if len(layers) == 1 else tf.concat(layers, axis=-1)


def _boxes(feat: dict, plan: _Plan):
    """float32 [N, 4] boxes of the tile (xyxy pixels)."""
    flat = tf.sparse.to_dense(feat[schema.label_key(plan.grid, "boxes_xyxy_px")])
    return tf.reshape(flat, [-1, 4])


def _rects(feat: dict, plan: _Plan, boxes):
    """float32 [N, 8] rotated rectangles of the tile (4 (x, y) vertices each, pixels),
    parallel to ``boxes`` [N, 4]. Records before schema version 3 store none: then each
    box's corners (axis-aligned rectangles: obliquity 1, no gliding target)."""
    flat = tf.sparse.to_dense(feat[schema.label_key(plan.grid, "rects_px")])
    x1, y1, x2, y2 = tf.unstack(boxes, num=4, axis=-1)
    corners = tf.stack([x1, y1, x2, y1, x2, y2, x1, y2], axis=-1)
    stored = tf.equal(tf.size(flat), 2 * tf.size(boxes))
    return tf.cond(stored, lambda: tf.reshape(flat, [-1, 8]), lambda: corners)


def _seg_targets(labels, scale, plan: _Plan, contact=None) -> dict:
    """footprint and sdf float32 [..., H, W, 1] (and ``contact`` when the plan has it) from
    the stacked label arrays [..., H, W, L] (order ``plan.label_fields``); ``contact``: the
    contact layer [..., H, W, 1] in its stored dtype when it is not the last of ``labels``
    (``read_batch``)."""
    if plan.label_fields[0] == "sdf":
        out = tg.segmentation_targets_from_sdf(labels[..., :1], scale, plan.truncation)
    else:
        out = tg.segmentation_targets(labels[..., :1], labels[..., 1:2], scale,
                                      plan.truncation)
    layer = labels[..., -1:] if contact is None else contact
    if plan.contact:
        out["contact"] = tf.cast(layer > 0, tf.float32)
    elif plan.contact_weight is not None:  # weights only: carried under an internal name
        out[_CONTACT_WEIGHT] = tf.cast(layer > 0, tf.float32)
    return out


_CONTACT_WEIGHT = "_contact"  # internal batch key: the contact layer for the weights only


def _to_stored(image, plan: _Plan):
    """A float32 (resampled) raw image back in the plan's common dtype (rounded if integer)."""
    dtype = tf.dtypes.as_dtype(plan.common_dtype)
    if dtype == image.dtype:
        return image
    return tf.saturate_cast(tf.round(image) if dtype.is_integer else image, dtype)


def _normalise(image, scale, bias, plan: _Plan, noise_key=None):
    """Image in the plan's output dtype: ``image * scale + bias`` (+ noise), or as is (raw)."""
    if plan.raw:
        return image
    image = aug.affine_bands(image, scale, bias)
    if noise_key is not None:
        image = aug.add_noise(image, plan.augment.noise_std, noise_key)
    return image if plan.image_dtype == "float32" else tf.cast(image, plan.image_dtype)


def _train_example(feat: dict, draw, plan: _Plan, contact=None) -> dict:
    """One random augmented crop (image in the output dtype, targets, boxes, tile id, AOI).

    draw: int64 scalar, the index of this crop's random draws for the tile: the epoch, or
    ``epoch * crops_per_tile + i`` for the i-th crop of a tile (``_repeat_crops``).
    contact: a batch read's ``ranged.SparseLayers`` of the contact layer, where focus
    picks its points (``_sparse_focus``) instead of decoding the whole layer here.

    Geometric ops run on the source dtype (uint16 images, float16 labels) before the
    float32 normalisation, so they move half the bytes; ``image_dtype="raw"`` stops there.
    """
    cfg = plan.augment
    crop = plan.crop
    tile_id = feat[schema.KEY_TILE_ID]
    keys = aug.split_key(aug.example_key(plan.seed, tile_id, draw), 4)
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    with tf.control_dependencies(_check_example(feat, plan)):
        window = aug.draw_window(keys[0], hw[0], hw[1], crop, cfg.scale_range)
    focus_key = tf.random.experimental.stateless_fold_in(keys[0], 1)  # focus's own key:
    # the other draws stay those of focus = 0
    if cfg.focus > 0 and not plan.focus_in_read:
        if contact is not None:
            window = _sparse_focus(feat, contact, focus_key, window, hw, cfg.focus)
        else:
            window = aug.focus_window(focus_key, window, _contact_points(feat, plan), hw[0],
                                      hw[1], cfg.focus)
    t, flr, fud = aug.draw_dihedral(keys[1], cfg.flips, cfg.rot90)
    if plan.batch_read:
        out = _crop_to_read(feat, plan, window, t, flr, fud)
        if plan.focus_in_read:  # read_batch moves the window (aug.focus_corner)
            use, bits, dy, dx = aug.focus_draws(focus_key, window[2], cfg.focus)
            out[_READ + "focus"] = tf.stack([tf.cast(use, tf.int64), tf.cast(bits, tf.int64),
                                             tf.cast(dy, tf.int64), tf.cast(dx, tf.int64)])
            out[_READ + "row"] = feat[_ROW]  # whose contact layer picks the window
        return out
    if cfg.scale_range is None:  # rows flipped while decoding; then columns, transpose
        rows, cols = aug.split_dihedral(t, flr, fud) if cfg.flips or cfg.rot90 else (None,
                                                                                    None)

        def geometric(x):  # static [crop, crop, C]: 2-D views in flip_transpose
            x = tf.ensure_shape(x, [crop, crop, x.shape[-1]])
            return x if cols is None else aug.flip_transpose(x, cols, t)
    else:  # resample first (nearest-neighbour ties are not flip-symmetric), then symmetry
        rows = None

        def geometric(x):
            return aug.dihedral(x, t, flr, fud)
    image = _stack([_decode_image_window(feat, tp, window, rows, plan) for tp in plan.types],
                   plan)
    labels = _decode_labels(feat, plan, window, rows)
    if cfg.scale_range is not None:
        image, labels = aug.resize_window(image, labels, crop)
        if plan.raw:
            image = _to_stored(image, plan)
    image = tf.ensure_shape(geometric(image), [crop, crop, plan.channels])
    gain, offset = aug.draw_radiometric(keys[2], plan.channels, cfg)
    scale, bias = aug.radiometric_coefficients(plan.norm_scale, plan.norm_bias, gain, offset)
    image = _normalise(image, scale, bias, plan, keys[3] if cfg.noise_std > 0 else None)
    out = {"image": image, "tile_id": tile_id, "aoi": feat[schema.KEY_AOI],
           **_crop_boxes(feat, plan, window, t, flr, fud)}
    if labels is not None:
        labels = tf.ensure_shape(geometric(labels), [crop, crop, len(plan.label_fields)])
        if _batched_sdf(plan):  # the stored sdf crosses the batch, targets after it
            out[_STORED_SDF] = labels
        else:
            zoom = None if cfg.scale_range is None else tf.cast(crop, tf.float32) / tf.cast(
                window[2], tf.float32)
            out.update(_seg_targets(labels, zoom, plan))
    return out


_STORED_SDF = "_stored_sdf"  # internal batch key, replaced by the targets in _finish_batch
_STORED_CONTACT = "_stored_contact"  # read_batch's contact layer (stored dtype), ditto
_READ = "_read:"  # internal batch keys: what ``read_batch`` reads (``plan.batch_read``)


def _crop_to_read(feat: dict, plan: _Plan, window, t, flr, fud) -> dict:
    """One training crop of a ``plan.batch_read`` plan, not yet read: boxes, rectangles,
    tile id and AOI as ``_train_example`` makes them, plus under ``_READ`` keys where its
    pixels are (per payload: file, position, size), the tile's height and width, the
    window's corner and the symmetry as (row flip, column flip, transpose) of
    ``aug.split_dihedral`` (``read_batch`` reads them after batching)."""
    rows, cols = aug.split_dihedral(t, flr, fud)
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    with tf.control_dependencies(_check_example(feat, plan)):
        hw = tf.identity(hw)
    out = {_READ + "hw": hw, _READ + "yx": tf.stack(window[:2]),
           _READ + "sym": tf.stack([rows, cols, t])}
    for key in _read_keys(plan):
        if _FILE + key in feat:  # a raw payload: read by window from its shard
            out[_READ + "pos:" + key] = tf.stack([feat[_POS + key], feat[_SIZE + key]])
            out[_READ + "file:" + key] = feat[_FILE + key]
        else:  # a compressed label layer: read_batch cuts it from the rows' SparseLayers
            out[_READ + "row"] = feat[_ROW]
    out.update({"tile_id": feat[schema.KEY_TILE_ID], "aoi": feat[schema.KEY_AOI],
                **_crop_boxes(feat, plan, window, t, flr, fud)})
    return out


def _crop_boxes(feat: dict, plan: _Plan, window, t, flr, fud) -> dict:
    """``{"boxes": float32 [N, 4] xyxy, "rects": float32 [N, 8]}`` of a training crop:
    the tile's boxes and rectangles cut to ``window = (y0, x0, win)`` and given the crop's
    symmetry (``aug.draw_dihedral``'s transpose and flips), in crop pixels; ``{}`` for a
    plan without boxes (``plan.boxes``)."""
    if not plan.boxes:
        return {}
    boxes = _boxes(feat, plan)
    boxes, rects = aug.crop_boxes_and_rects(boxes, _rects(feat, plan, boxes), window[0],
                                            window[1], window[2], plan.crop,
                                            plan.augment.min_box_visible)
    return {"boxes": aug.dihedral_boxes(boxes, plan.crop, t, flr, fud),
            "rects": aug.dihedral_rects(rects, plan.crop, t, flr, fud)}


def _read_keys(plan: _Plan) -> list[str]:
    """The payload keys a ``plan.batch_read`` crop reads: the image, then the sdf and the
    contact layer if any."""
    return ([schema.image_key(plan.types[0].name, "data")]
            + [schema.label_key(plan.grid, f) for f in plan.label_fields])


def read_batch(batch: dict, plan: _Plan, pool, contact=None) -> dict:
    """``batch`` of ``_crop_to_read`` crops with the ``_READ`` keys replaced by ``image``
    [B, crop, crop, C] (stored dtype), with the sdf ``_STORED_SDF`` [B, crop, crop, 1]
    (float16) and with the contact layer ``_STORED_CONTACT`` [B, crop, crop, 1] (uint8), read by
    ``ranged.read_crops`` into buffers of ``pool`` (a ``ranged.BufferPool``), or for a
    compressed contact layer cut from ``contact`` (the index rows' ``ranged.SparseLayers``),
    with the crops' symmetries applied. With ``plan.focus_in_read`` the windows are first
    moved onto contact pixels (``_contact_layer``). With ``plan.device_crop`` the image (and
    with ``plan.label_rows`` each layer) is the window's rows instead, [B, crop, S, .] (S =
    ``_span(plan)`` columns, ``ranged.read_rows`` / ``ranged.sparse_rows``), and
    ``_WINDOW`` int32 [B, 4] tells the train step how to cut them
    (``sn_tf.input.packed.orient_crops``)."""
    out = {k: v for k, v in batch.items() if not k.startswith(_READ)}
    hw, yx, sym = batch[_READ + "hw"], batch[_READ + "yx"], batch[_READ + "sym"]
    keys = _read_keys(plan)
    t = plan.types[0]
    layouts = [(t.dtype, t.num_bands)] + [(plan.label_arrays[f][0], 1)
                                          for f in plan.label_fields]
    contact_key = schema.label_key(plan.grid, "contact")
    cells = _cells_of(plan)
    layer = None
    if _READ + "row" in batch:  # the compressed contact layer, from its sparse pixels
        yx, layer = _contact_layer(batch, plan, contact, contact_key in keys)
    arrays = {}
    for key, (dtype, channels) in zip(keys, layouts):
        rows = plan.device_crop and (key == keys[0] or plan.label_rows)
        width = _span(plan) if rows else plan.crop
        if key == contact_key and layer is not None:
            x = layer
        elif rows:
            def read(paths, pos, hw, yx, _dtype=dtype, _channels=channels, _width=width):
                return ranged.read_rows(pool, _dtype, _channels, plan.crop, _width, paths,
                                        pos[:, 0], pos[:, 1], hw[:, 0], hw[:, 1], yx[:, 0],
                                        yx[:, 1])

            args = [batch[_READ + "file:" + key], batch[_READ + "pos:" + key], hw, yx]
            x = tf.numpy_function(read, args, tf.dtypes.as_dtype(dtype), stateful=True)
        else:
            def read(paths, pos, hw, yx, sym, _dtype=dtype, _channels=channels):
                return ranged.read_crops(pool, _dtype, _channels, plan.crop, paths,
                                         pos[:, 0], pos[:, 1], hw[:, 0], hw[:, 1], yx[:, 0],
                                         yx[:, 1], sym[:, 0], sym[:, 1], sym[:, 2])

            args = [batch[_READ + "file:" + key], batch[_READ + "pos:" + key], hw, yx, sym]
            x = tf.numpy_function(read, args, tf.dtypes.as_dtype(dtype), stateful=True)
        if key == contact_key and cells:  # DetectNet's packed weights: the held cells
            if layer is None:  # a raw layer read by window
                x = tg.held_cells(x, cells)
            arrays[key] = tf.ensure_shape(x, [None, plan.crop // cells, plan.crop // cells, 1])
        else:
            arrays[key] = tf.ensure_shape(x, [None, plan.crop, width, channels])
    out["image"] = arrays[keys[0]]
    sdf_key = schema.label_key(plan.grid, "sdf")
    if sdf_key in arrays:
        out[_STORED_SDF] = arrays[sdf_key]
    if contact_key in arrays:  # the contact layer stays uint8 (no float16 channel beside
        out[_STORED_CONTACT] = arrays[contact_key]  # the sdf), or DetectNet's held cells
    if plan.device_crop:  # the column within the delivered span, then the symmetry
        first = tf.numpy_function(lambda w, x0: ranged.row_span(w, _span(plan), x0),
                                  [hw[:, 1], yx[:, 1]], tf.int32, stateful=False)
        out[_WINDOW] = tf.concat([(yx[:, 1] - first)[:, None], tf.cast(sym, tf.int32)], 1)
    return out


_WINDOW = "_window"  # internal batch key: read_batch's crop windows (plan.device_crop)


def _cells_of(plan: _Plan) -> int:
    """The cell size when a batch read delivers the contact layer as DetectNet's held
    cells (packed DetectNet labels, ``sn_tf.input.packed.PackedDetection``), else 0."""
    return plan.packed.cell_size if isinstance(plan.packed, PackedDetection) else 0


def _span(plan: _Plan) -> int:
    """Columns of the rows a ``plan.device_crop`` batch delivers: the dataset's tile
    width (its label grid's example shape), at least the crop."""
    return max(int(plan.grid_shape[1]), plan.crop)


def _contact_layer(batch: dict, plan: _Plan, contact, cut: bool):
    """``(yx, layer)`` of a batch whose compressed contact layer comes from ``contact``
    (``ranged.SparseLayers`` of the index rows ``_READ + "row"``): int32 [B, 2] window
    corners, moved onto contact pixels by ``aug.focus_corner`` (the crops' ``focus_draws``)
    when the batch has ``_READ + "focus"``, else as drawn; with ``cut`` the layer's crops
    in its stored dtype ([B, crop, crop, 1] with the crops' symmetries,
    ``ranged.sparse_crops``, or the window's rows with ``plan.label_rows``,
    ``ranged.sparse_rows``, or for packed DetectNet labels the held cells uint8
    [B, crop / S, crop / S, 1], ``ranged.sparse_cells``), else None."""
    crop, rows, cells = plan.crop, plan.label_rows, _cells_of(plan)
    dtype = "uint8" if cells else plan.label_arrays["contact"][0]
    focus = _READ + "focus" in batch

    def cut_layer(index_rows, hw, yx, draws, sym):
        if focus:
            yx = np.array([aug.focus_corner(contact.get(int(r), int(h), int(w))[0], int(h),
                                            int(w), int(y), int(x), crop, *d)
                           for r, (h, w), (y, x), d in zip(index_rows, hw, yx, draws)],
                          np.int32).reshape(-1, 2)
        if not cut:
            return yx, np.zeros((0, crop, crop, 1), dtype)
        if cells:
            return yx, ranged.sparse_cells(contact, crop, cells, index_rows, hw[:, 0],
                                           hw[:, 1], yx[:, 0], yx[:, 1], sym[:, 0],
                                           sym[:, 1], sym[:, 2])
        if rows:
            return yx, ranged.sparse_rows(contact, dtype, crop, _span(plan), index_rows,
                                          hw[:, 0], hw[:, 1], yx[:, 0], yx[:, 1])
        return yx, ranged.sparse_crops(contact, dtype, crop, index_rows, hw[:, 0], hw[:, 1],
                                       yx[:, 0], yx[:, 1], sym[:, 0], sym[:, 1], sym[:, 2])

    n = tf.shape(batch[_READ + "yx"])[0]
    draws = batch[_READ + "focus"] if focus else tf.zeros([n, 4], tf.int64)
    yx, layer = tf.numpy_function(
        cut_layer, [batch[_READ + "row"], batch[_READ + "hw"], batch[_READ + "yx"], draws,
                    batch[_READ + "sym"]],
        [tf.int32, tf.dtypes.as_dtype(dtype)], stateful=True)
    return tf.ensure_shape(yx, [None, 2]), (layer if cut else None)


def _sparse_focus(feat: dict, contact, key, window, hw, probability: float):
    """``aug.focus_window``'s move of ``window = (y0, x0, win)`` (int32 scalars) for one
    crop, its points the tile's contact pixels from ``contact`` (``ranged.SparseLayers``,
    by the example's index row) and its draws ``aug.focus_draws(key, ...)``: one
    ``aug.focus_corner`` call in numpy instead of the whole layer decoded in the graph."""
    win = window[2]
    draws = tf.stack([tf.cast(d, tf.int64) for d in aug.focus_draws(key, win, probability)])

    def move(row, hw, yx, win, draws):
        h, w = int(hw[0]), int(hw[1])
        points = contact.get(int(row), h, w)[0]
        return np.array(aug.focus_corner(points, h, w, int(yx[0]), int(yx[1]), int(win),
                                         *draws), np.int32)

    yx = tf.numpy_function(move, [feat[_ROW], hw, tf.stack(window[:2]), win, draws],
                           tf.int32, stateful=True)
    yx = tf.ensure_shape(yx, [2])
    return yx[0], yx[1], win


def _contact_points(feat: dict, plan: _Plan):
    """int64 [N, 2] (row, column) of the tile's contact pixels (the whole layer decoded)."""
    dtype, encoding = plan.label_arrays["contact"]
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    layer = schema.tf_decode_bytes(feat[schema.label_key(plan.grid, "contact")], encoding,
                                   dtype, hw)
    return tf.where(layer > 0)


def _batched_sdf(plan: _Plan) -> bool:
    """True when training crops carry the stored sdf (e.g. float16 [crop, crop, 1], and the
    contact layer beside it when asked for) through batching and ``_finish_batch`` builds
    the targets from it: sdf-based labels and no scale jitter (no per-example factor). A quarter of the bytes of the two float32
    targets cross the batch copy (this pipeline is bound by memory traffic: reading,
    parsing and copying ~50 MB per 512 px crop); measured ~2 % less CPU per crop.
    """
    return (plan.training and plan.label_fields[:1] == ("sdf",)
            and plan.augment.scale_range is None)


def _pad_example(x, multiple: int, value=0.0):
    """Pad [H, W, ...] at the bottom/right to multiples of ``multiple`` with scalar ``value``."""
    shape = tf.shape(x)
    pads = [[0, (-shape[0]) % multiple], [0, (-shape[1]) % multiple]]
    return tf.pad(x, pads + [[0, 0]] * (len(x.shape) - 2), constant_values=value)


def _eval_example(feat: dict, plan: _Plan) -> dict:
    """One whole tile, normalised and padded, with its georeference (no augmentation).

    Raw (``image_dtype="raw"``) tiles come as float32 stored values; their padding gets
    the band mean in ``_finish_batch`` (after batching, which pads too).
    """
    hw = tf.cast(feat[schema.label_key(plan.grid, "shape")], tf.int32)
    with tf.control_dependencies(_check_example(feat, plan)):
        image = _stack([_decode_image(feat, t) for t in plan.types], plan)
    if plan.raw:
        image = tf.cast(image, tf.float32)
    else:
        image = _normalise(image, tf.constant(plan.norm_scale), tf.constant(plan.norm_bias),
                           plan)
    first = plan.types[0].name
    boxes = _boxes(feat, plan)
    out = {"image": _pad_example(image, plan.pad_multiple),
           "boxes": boxes, "rects": _rects(feat, plan, boxes),
           "tile_id": feat[schema.KEY_TILE_ID], "aoi": feat[schema.KEY_AOI],
           "transform_gdal": schema.tf_decode_transform(
               feat[schema.image_key(first, "transform_gdal")]),
           "crs": feat[schema.image_key(first, "crs")], "height": hw[0], "width": hw[1]}
    labels = _decode_labels(feat, plan)
    if labels is not None:
        seg = _seg_targets(labels, None, plan)
        out["footprint"] = _pad_example(seg["footprint"], plan.pad_multiple)
        out["sdf"] = _pad_example(seg["sdf"], plan.pad_multiple, -plan.truncation)
        for key in ("contact", _CONTACT_WEIGHT):
            if key in seg:
                out[key] = _pad_example(seg[key], plan.pad_multiple)
    return out
