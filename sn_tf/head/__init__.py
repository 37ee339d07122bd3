"""The polygon head: model outputs -> building polygons (TensorFlow-free).

``polygons`` (``outputs_to_buildings``, ``postprocess_params``: the one path used by training
validation, predict, the tuning and the demo), ``rasters`` (FCN and any raster -> polygons),
``detections`` (DetectNet grids -> boxes / rotated rectangles -> polygons), ``render`` (PNG
overlays of buildings on an image). The records and their files: ``sn_tf.spacenet.buildings``.
"""
