"""The input pipeline: converted records -> tf.data batches of (inputs, targets).

``pipeline`` (``sn_tf.make_dataset``, ``make_examples``, normalisation), ``augment`` (crops,
flips, rotations, focus), ``targets`` (the models' targets: segmentation, DetectNet grids,
oriented rectangles), ``rects`` (rotated rectangles as gliding vertices, numpy; shared with
the polygon head, which decodes what ``targets`` encodes).
"""
