"""The input stage of models fed raw band values (``make_dataset(..., image_dtype="raw")``).

A raw pipeline hands the model the stored values (uint16 training crops, float32
evaluation tiles padded with the band mean) and leaves two per-pixel float passes to the
model, where they run on the accelerator instead of the input CPUs:

* normalisation ``(x - mean) / std`` per band: ``sn_tf.input.pipeline.normalization_layer``
  (a stock ``keras.layers.Normalization`` computing in float32 whatever the
  mixed-precision policy: 11-bit values do not survive a bfloat16 cast);
* the radiometric augmentation of ``sn_tf.input.augment`` (per-band gain and offset, per-pixel
  noise on the normalised values): :class:`RadiometricJitter`, active only in training.

:func:`with_input_stage` puts both in front of a model; the result takes raw values
(any real dtype, cast to float32) and outputs what the model outputs. ``sn_tf.training.trainer``
builds models this way when the recipe's ``data.image_dtype`` is "raw", and records it in
``ModelInfo.normalizes_input`` so that ``sn_tf.export`` does not normalise twice.
"""

from __future__ import annotations

from sn_tf.utils.tfimport import tensorflow

tf = tensorflow()
import keras  # noqa: E402  (after the quiet TF import)


@keras.saving.register_keras_serializable(package="sn_tf")
class RadiometricJitter(keras.layers.Layer):
    """Training-only radiometric augmentation of a normalised image batch [B, H, W, C].

    Per example and band: gain ``g ~ U(1 - gain, 1 + gain)`` and offset
    ``o ~ N(0, offset_std)``; per pixel and band: noise ``n ~ N(0, noise_std)``;
    output ``x * g + o + n`` (the same distribution as ``sn_tf.input.augment``'s radiometric
    step). Identity at inference (``training`` false or None). Computes in float32.
    Draws come from a Keras ``SeedGenerator`` (reproducible for a seed and a step
    sequence, unlike the pipeline's per-tile stateless keys), folded with the replica id:
    the generator's state is mirrored, so without it every replica of a distributed step
    would draw the same values for its examples.
    """

    def __init__(self, gain: float = 0.0, offset_std: float = 0.0, noise_std: float = 0.0,
                 seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not 0 <= gain < 1 or offset_std < 0 or noise_std < 0:
            raise ValueError(f"RadiometricJitter needs 0 <= gain < 1, offset_std >= 0 and "
                             f"noise_std >= 0, got {gain}, {offset_std}, {noise_std}")
        self.gain, self.offset_std, self.noise_std = float(gain), float(offset_std), float(
            noise_std)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training:
            return x
        shape = tf.shape(x)
        bands = tf.stack([shape[0], 1, 1, shape[-1]])
        replica = tf.distribute.get_replica_context()
        replica_id = 0 if replica is None else replica.replica_id_in_sync_group
        seeds = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(
            self.seed_generator.next(), replica_id), 3)
        if self.gain > 0:
            x = x * tf.random.stateless_uniform(bands, seeds[0], 1 - self.gain, 1 + self.gain)
        if self.offset_std > 0:
            x = x + tf.random.stateless_normal(bands, seeds[1], stddev=self.offset_std)
        if self.noise_std > 0:
            x = x + tf.random.stateless_normal(shape, seeds[2], stddev=self.noise_std)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "gain": self.gain, "offset_std": self.offset_std,
                "noise_std": self.noise_std, "seed": self.seed}


def with_input_stage(model, normalization, radiometric: dict | None = None, seed=None):
    """``raw -> normalization -> [RadiometricJitter] -> model`` as one functional model.

    model: a Keras model taking the normalised float image [B, H, W, C];
    normalization: its first layer (``sn_tf.input.pipeline.normalization_layer``);
    radiometric: ``{"gain", "offset_std", "noise_std"}`` (None or all zero: no jitter).
    The result has the model's input shape with a float32 input (Keras casts uint16
    batches to it), the model's outputs and output names, and the model's name.
    """
    image = keras.Input(model.input_shape[1:], dtype="float32", name="raw_image")
    x = normalization(image)
    radiometric = {k: float(v) for k, v in (radiometric or {}).items()}
    if any(radiometric.values()):
        x = RadiometricJitter(**radiometric, seed=seed, name="radiometric_jitter")(x)
    outputs = model(x)
    if not isinstance(outputs, dict):
        outputs = dict(zip(model.output_names, keras.tree.flatten(outputs), strict=True))
    # named float32 pass-throughs: the outer model keeps the output names (losses, export)
    outputs = {k: keras.layers.Identity(name=k, dtype="float32")(v) for k, v in outputs.items()}
    return keras.Model(image, outputs, name=model.name)
