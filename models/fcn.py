"""The repository's FCN experiments, built on the shipped FCN recipe (``sn_tf/configs/fcn.py``).

    python -m sn_tf.train --config=models/fcn.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/fcn.py:demo ...    # CPU, the demo
    python -m sn_tf.train --config=models/fcn.py:smoke ...   # CPU, tests

As it stands this is the shipped recipe (``--config=fcn``; its design, runs and scores are in
its docstring). An experiment changes sections of the shipped config here, e.g.
``config["train"]["epochs"] = 80``, and leaves the shipped recipe as it is.
"""

from sn_tf.configs import fcn as shipped


def get_config(variant: str = "") -> dict:
    config = shipped.get_config(variant)
    # experiment changes go here
    return config
