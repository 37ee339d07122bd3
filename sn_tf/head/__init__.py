"""The polygon head: model outputs -> building polygons (TensorFlow-free).

``polygons`` (FCN rasters and DetectNet grids -> :class:`Building` records; the one path used
by training validation, predict, polygonize and the demo), ``render`` (PNG overlays of
buildings on an image).
"""
