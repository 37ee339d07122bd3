"""The source dataset: SpaceNet as it lies on disk, and its metric.

``layout`` (AOI folders, image types, tile files), ``geo`` (rasters, CRS, pixel <-> map
coordinates, polygon repair), ``buildings`` (the Building record, tile ids, CSV / GeoJSON
writers), ``scoring`` (the SpaceNet metric and its readers), ``synthetic`` (a SpaceNet-shaped
synthetic dataset, ``python -m sn_tf.sample``). TensorFlow-free.
"""
