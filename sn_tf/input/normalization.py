"""Per-channel normalisation maths (numpy, TensorFlow-free): ``(scale, bias)`` <-> ``(mean, std)``.

The pipeline feeds ``raw * scale + bias``; the model's normalisation layer
(``sn_tf.input.pipeline.normalization_layer``) and the export (``sn_tf.serving.exporter``)
use the equivalent ``(mean, std)``, derived here so the raw padding normalises to exactly 0.
"""

from __future__ import annotations

import numpy as np


def coefficients_from_mean_std(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """float32 per-channel (scale, bias) = (1 / std, -mean / std), computed in float64;
    the inverse of :func:`normalization_mean_std` (std > 0)."""
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    return (1 / std).astype(np.float32), (-mean / std).astype(np.float32)


def normalization_mean_std(scale: np.ndarray, bias: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """float64 per-channel (mean, std) with ``(x - mean) / std == x * scale + bias``.

    scale, bias: float32 [C] (``normalization_coefficients``). ``normalization_layer``,
    the raw evaluation padding and ``sn_tf.export`` all derive the mean from here, so the
    padding is exactly the layer's float32 mean and normalises to exactly 0.
    """
    std = 1.0 / scale.astype(np.float64)
    return -bias.astype(np.float64) * std, std
