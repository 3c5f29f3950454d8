"""The per-dimension weights of the model's error score (`config.ERROR_SCORES`): 1 / each dimension's mean squared
error on normal windows, so every sensor's error is counted in its own normal units.

They are fitted on the held-out normal validation windows, after training: errors on windows the model trained on
are smaller than on new normal data, and would make every new window look a little anomalous.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import JointAELSTM

FLOOR = 1e-3  # a dimension's normal power is at least this fraction of the mean over dimensions


def error_weights(residuals: np.ndarray, error_score: str) -> np.ndarray:
    """Weights for normal error vectors `[n, D]`. A dimension that barely moves on normal data is held to a floor,
    so a constant sensor does not turn every later wobble into an enormous score."""
    if error_score == "pooled":
        return np.ones(residuals.shape[1])
    power = (residuals**2).mean(axis=0)
    return 1.0 / np.maximum(power, max(FLOOR * power.mean(), 1e-12))


def fit_error_weights(model: JointAELSTM, windows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each term's weights from the error vectors of the last `score_steps` steps of `windows` (prepared raw
    windows, as the model takes them)."""
    steps = model.config.score_steps
    rec, pred = model.step_residuals(windows)
    return tuple(error_weights(r[:, -steps:].reshape(-1, r.shape[-1]).double().numpy(), model.config.error_score)
                 for r in (rec, pred))
