"""The recipes shipped with sn_tf, loadable by name: ``--config=fcn``, ``--config=detectnet``
(``--config=fcn:demo``, ``--config=detectnet:smoke`` for a variant).

Each module defines ``get_config(variant="")`` (``sn_tf.training.recipes``). The repository's
experiment recipes (``models/*.py``) import these and change what an experiment changes.
"""
