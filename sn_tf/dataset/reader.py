"""``sn_tf.read_examples``: iterate converted tiles as numpy dicts.

    for tile in sn_tf.read_examples("/data/spacenet_tfrecords", split="val"):
        img = tile["images"]["MUL-PanSharpen"]["data"]    # uint16 [650, 650, 8]
        sdf = tile["labels"]["MUL-PanSharpen"]["sdf"]      # float16 [650, 650]

The dict layout is documented in ``sn_tf.dataset.schema``.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib

from sn_tf.dataset import schema

INFO_FILE = "dataset_info.json"


def load_info(data_dir) -> dict:
    """The dataset_info.json of a converted folder."""
    path = pathlib.Path(data_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {data_dir} the output of sn_tf.convert?")
    info = json.loads(path.read_text())
    if info.get("schema_version") not in schema.KNOWN_SCHEMA_VERSIONS:
        raise schema.SchemaError(f"{path}: schema version {info.get('schema_version')} is "
                                 f"not known to this sn_tf ({schema.KNOWN_SCHEMA_VERSIONS})")
    return info


def shard_files(path, split: str | None = None) -> list[str]:
    """Shard files of a converted folder (one split or all), a shard file, or a glob."""
    p = pathlib.Path(path)
    if p.is_dir():
        info = load_info(p)
        splits = [split] if split else list(info["splits"])
        missing = [s for s in splits if s not in info["splits"]]
        if missing:
            raise ValueError(f"{p}: no split {missing[0]!r}; splits: {list(info['splits'])}")
        return [str(p / sh["file"]) for s in splits for sh in info["splits"][s]["shards"]]
    files = sorted(glob.glob(str(path)))
    if split:
        files = [f for f in files if f"-{split}.tfrecord" in os.path.basename(f)]
    if not files:
        raise FileNotFoundError(f"{path}: no shard files")
    return files


def read_examples(path, split: str | None = None, decode_polygons: bool = True):
    """Yield one decoded tile dict per example, in file order.

    ``path``: a converted folder (uses dataset_info.json), one shard file, or a glob.
    Images come back in their source dtype and band order (HWC), with labels, boxes,
    tile id, AOI, ``transform_gdal`` and CRS.
    """
    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()

    for f in shard_files(path, split):
        for record in tf.data.TFRecordDataset(f).as_numpy_iterator():
            yield schema.decode_tile(record, decode_polygons=decode_polygons)


def read_truth(path, split: str, grid: str, max_tiles: int | None = None) -> dict:
    """{tile_id: [pixel Polygons on ``grid``]} of a split, parsing only ids and polygons.

    Tiles keep ``read_examples`` order; ``max_tiles`` stops after that many tiles.
    """
    import shapely

    from sn_tf.utils.tfimport import tensorflow

    tf = tensorflow()
    spec = {schema.KEY_TILE_ID: tf.io.FixedLenFeature([], tf.string),
            schema.label_key(grid, "polygons_wkb"): tf.io.VarLenFeature(tf.string)}

    def parse(record):
        f = tf.io.parse_single_example(record, spec)
        return f[schema.KEY_TILE_ID], f[schema.label_key(grid, "polygons_wkb")].values

    ds = tf.data.TFRecordDataset(shard_files(path, split)).map(parse)
    if max_tiles:
        ds = ds.take(max_tiles)
    truth = {}
    for tile_id, wkbs in ds.as_numpy_iterator():
        truth[tile_id.decode()] = list(shapely.from_wkb(list(wkbs))) if len(wkbs) else []
    return truth
