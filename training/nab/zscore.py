"""The rolling z-score: NAB's self-check detector and a floor every model must clear."""

from __future__ import annotations

import numpy as np
from scipy.special import erf


def rolling_zscore(values: np.ndarray, history: int = 288, chunk: int = 4096) -> np.ndarray:
    """score_t = erf(|z_t|/√2), z_t against the mean and population std of the previous `history` values only.

    0 with fewer than two past values; with a constant past (std 0) 0 if x_t equals it, else 1. Constancy is
    tested exactly (max == min), so floating-point noise in a mean never invents a tiny non-zero std.
    """
    x = np.asarray(values, dtype=np.float64)
    mean = np.full(len(x), np.nan)
    std = np.full(len(x), np.nan)
    constant = np.zeros(len(x), dtype=bool)
    for t in range(2, min(history, len(x))):  # a growing past until `history` values exist
        past = x[:t]
        mean[t], std[t], constant[t] = past.mean(), past.std(), past.max() == past.min()
    if len(x) > history:
        view = np.lib.stride_tricks.sliding_window_view(x[:-1], history)  # view[k] = x[k : k + history], row k+history
        for start in range(0, len(view), chunk):
            block = view[start : start + chunk]
            rows = slice(history + start, history + start + len(block))
            mean[rows], std[rows] = block.mean(axis=1), block.std(axis=1)
            constant[rows] = block.max(axis=1) == block.min(axis=1)
    scores = np.zeros(len(x))
    varying = np.isfinite(std) & ~constant
    z = np.abs(x[varying] - mean[varying]) / std[varying]
    scores[varying] = erf(z / np.sqrt(2.0))
    flat = np.flatnonzero(constant)
    scores[flat] = (x[flat] != x[flat - 1]).astype(np.float64)  # x[t−1] is the constant past value
    return scores
