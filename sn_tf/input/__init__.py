"""The input pipeline: converted records -> tf.data batches of (inputs, targets).

``pipeline`` (``sn_tf.make_dataset``, ``make_examples``, ``normalization_layer``: reading,
batching, the public API), ``plan`` (arguments checked against the dataset description),
``decode`` (one record -> one example: window decoding, crops, targets), ``normalization``
(per-channel scale/bias <-> mean/std, TF-free), ``augment`` (crops, flips, rotations, focus),
``targets`` (the models' targets: segmentation, DetectNet grids, oriented rectangles),
``rects`` (rotated rectangles as gliding vertices, numpy; shared with the polygon head,
which decodes what ``targets`` encodes), ``cells`` (DetectNet's output cell sizes, 16 or 8 px).
"""
