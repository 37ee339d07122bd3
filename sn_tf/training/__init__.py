"""Training: recipes -> a trained model in a model directory.

``recipes`` (recipe files, variants, ``--set`` overrides; the shipped recipes are in
``sn_tf.configs``), ``trainer`` (``train``: data, model, losses, callbacks, validation with the
polygon head), ``tuning`` (head parameters chosen on val after training), ``model_dir`` (the
model directory's contract: ``model_info.json``, checkpoints), ``checkpoints``
(``sn_tf.load_model``: any checkpoint sn_tf wrote, custom Keras classes registered first).
"""
