"""The raw-input stage's RadiometricJitter: distribution, inference identity, replicas."""

import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_jitter_draws_follow_the_config_and_vanish_at_inference():
    from sn_tf.modeling.model_input import RadiometricJitter

    layer = RadiometricJitter(gain=0.2, offset_std=0.5, seed=4)
    x = np.ones((64, 4, 4, 3), np.float32)
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    # no noise: each (example, band) is one gain * 1 + offset, constant over the pixels
    assert np.allclose(y, y[:, :1, :1, :])
    values = y[:, 0, 0, :]
    assert 0.3 < values.std() < 0.8 and abs(values.mean() - 1.0) < 0.2
    assert not np.allclose(np.asarray(layer(x, training=True)), y)  # new draws per call


def test_replicas_draw_different_jitter():
    # the SeedGenerator's state is mirrored: without the replica id folded into the seed,
    # both replicas jittered their examples identically
    code = f"""
import sys; sys.path.insert(0, {str(REPO)!r})
from sn_tf.utils.tfimport import tensorflow
tf = tensorflow()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from sn_tf.modeling.model_input import RadiometricJitter
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    layer = RadiometricJitter(gain=0.2, offset_std=0.5, noise_std=0.1, seed=1)
x = tf.ones((2, 4, 4, 3))
out = strategy.run(tf.function(lambda: layer(x, training=True)))
a, b = [t.numpy() for t in strategy.experimental_local_results(out)]
print("DIFFERENT" if abs(a - b).max() > 1e-3 else "SAME")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("DIFFERENT"), out.stdout + out.stderr[-1500:]
