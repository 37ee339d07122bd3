"""The source dataset: SpaceNet as it lies on disk, and its metric.

``layout`` (AOI folders, image types, tile files), ``geo`` (rasters, CRS, pixel <-> map
coordinates, polygon repair), ``buildings`` (the Building record, tile ids, cities, the
SpaceNet CSV / GeoJSON readers and writers), ``scoring`` (the SpaceNet metric), ``synthetic``
with ``synthetic_aois`` and ``synthetic_scenes`` (a SpaceNet-shaped synthetic dataset,
``python -m sn_tf.sample``). TensorFlow-free.
"""
