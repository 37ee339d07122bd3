"""The converted dataset: sharded TFRecords of SpaceNet tiles and their description.

``schema`` (the record contract: features, encodings, versions), ``labels`` (polygons ->
mask, signed distance, contact and rectangle layers), ``tiles`` (one tile's pixels and
labels), ``stats`` (band statistics), ``tfrecord`` (TFRecord framing without TensorFlow),
``converter`` (SpaceNet -> shards + their description, ``python -m sn_tf.convert``),
``info`` (the description, typed: ``sn_tf_info.json`` and TFDS's metadata),
``reader`` (records back as numpy dicts, ``sn_tf.read_examples``).
"""
