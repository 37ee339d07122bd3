"""Serving: a trained model exported, and run over images of any size.

``exporter`` (model dir -> SavedModel with a raw-bands signature, ``python -m sn_tf.export``),
``sources`` (images to predict and truth to score against), ``windows`` (sliding windows and
stitching), ``predictor`` (the exported model through the polygon head), ``writers``
(SpaceNet CSV / GeoJSON, the score); CLI: ``python -m sn_tf.predict``.
"""
