"""The repository's DetectNet experiments, built on the shipped DetectNet recipe
(``sn_tf/configs/detectnet.py``).

    python -m sn_tf.train --config=models/detectnet.py --data_dir=<tfrecords> --model_dir=<dir>
    python -m sn_tf.train --config=models/detectnet.py:demo ...    # CPU, the demo
    python -m sn_tf.train --config=models/detectnet.py:smoke ...   # CPU, tests

As it stands this is the shipped recipe (``--config=detectnet``; its design, runs and scores
are in its docstring). An experiment changes sections of the shipped config here, e.g.
``config["train"]["epochs"] = 80``, and leaves the shipped recipe as it is.
"""

from sn_tf.configs import detectnet as shipped


def get_config(variant: str = "") -> dict:
    config = shipped.get_config(variant)
    # experiment changes go here
    return config
