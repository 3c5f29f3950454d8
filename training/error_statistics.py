"""The normal statistics of the model's error vectors that its error score (`model.ERROR_SCORES`) divides by.

They are fitted on the held-out normal validation windows, after training: errors on windows the model trained on
are smaller than on new normal data, and would make every new window look a little anomalous.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from .model import JointAELSTM

Statistics = tuple[np.ndarray, np.ndarray]  # (center, precision) of one term's error vectors
FLOOR = 1e-3  # a dimension's normal power is at least this fraction of the mean over dimensions


def error_statistics(residuals: np.ndarray, error_score: str) -> Statistics:
    """(center, precision) of normal error vectors `[n, D]`. A dimension that barely moves on normal data is held
    to a floor, so a constant sensor does not turn every later wobble into an infinite score."""
    dims = residuals.shape[1]
    if error_score == "pooled":
        return np.zeros(dims), np.eye(dims)
    if error_score == "gaussian":
        if len(residuals) < 2:
            return np.zeros(dims), np.eye(dims)
        fitted = LedoitWolf().fit(residuals)
        return fitted.location_, fitted.precision_
    power = (residuals**2).mean(axis=0)
    return np.zeros(dims), np.diag(1.0 / np.maximum(power, max(FLOOR * power.mean(), 1e-12)))


def fit_error_statistics(model: JointAELSTM, windows: torch.Tensor) -> tuple[Statistics, Statistics]:
    """Each term's statistics from the error vectors of the last `score_steps` steps of `windows` (prepared raw
    windows, as the model takes them)."""
    steps = model.config.score_steps
    rec, pred = model.step_residuals(windows)
    return tuple(error_statistics(r[:, -steps:].reshape(-1, r.shape[-1]).double().numpy(), model.config.error_score)
                 for r in (rec, pred))
