"""Anomaly likelihood: how surprising the current raw score is against the distribution of the scores before it.

Raw model errors differ in scale from file to file and over time; a fixed threshold on them cannot serve 58 files.
Following the idea of Numenta's anomaly likelihood (Ahmad et al. 2017), the raw score (optionally averaged over a
short window) gets its Gaussian tail probability against the mean and spread of the past scores. Everything is
causal: row t uses scores of rows ≤ t only, and the reference statistics use rows < t.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import log_ndtr

LOG10 = np.log(10.0)


@dataclass(frozen=True)
class LikelihoodConfig:
    """`short`: rows averaged into the current value; `long`: most past rows in the reference distribution
    (None: all of them); `min_history`: rows of reference needed before any row is judged; `min_std`: floor on
    the reference spread, in units of the raw score (model errors are normalised to ≈ 1 on normal training data);
    `refractory`: a row keeps its score only if it beats every score of this many rows before it, so one
    episode raises one alarm instead of a burst (0 turns this off)."""

    short: int = 1
    long: int | None = None
    min_history: int = 20
    min_std: float = 0.01
    refractory: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


def _rolling_mean(values: np.ndarray, length: int) -> np.ndarray:
    """Mean of the last `length` values up to and including each row (fewer at the start)."""
    sums = np.cumsum(np.r_[0.0, values])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - length, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def surprise(raw: np.ndarray, start: int, config: LikelihoodConfig = LikelihoodConfig()) -> np.ndarray:
    """−log10 of the upper Gaussian tail probability per row (0 where too little history exists).

    Only rows ≥ `start` enter the reference distribution (for example, rows the model was not trained on: its
    in-sample errors are optimistically small).
    """
    raw = np.asarray(raw, dtype=np.float64)
    out = np.zeros(len(raw))
    if len(raw) - start <= config.min_history:
        return out
    smoothed = _rolling_mean(raw[start:], config.short)
    centred = smoothed - np.median(smoothed[: config.min_history])  # keeps the running sums well conditioned
    sums = np.cumsum(np.r_[0.0, centred])
    squares = np.cumsum(np.r_[0.0, centred**2])
    rows = np.arange(config.min_history, len(smoothed))
    first = np.maximum(rows - config.long, 0) if config.long else np.zeros_like(rows)
    count = rows - first
    mean = (sums[rows] - sums[first]) / count
    variance = np.maximum((squares[rows] - squares[first]) / count - mean**2, 0.0)
    z = (centred[rows] - mean) / np.maximum(np.sqrt(variance), config.min_std)
    out[start + rows] = -log_ndtr(-z) / LOG10  # log_ndtr stays exact far into the tail
    return out


def to_unit_score(surprise_values: np.ndarray, scale: float = 5.0) -> np.ndarray:
    """Map −log10(tail) ∈ [0, ∞) monotonically onto [0, 1): s / (s + scale); 0.5 ⇔ tail probability 10^−scale."""
    return surprise_values / (surprise_values + scale)


def keep_new_highs(scores: np.ndarray, refractory: int) -> np.ndarray:
    """Zero every score that does not exceed all of the previous `refractory` scores (causal)."""
    if refractory < 1:
        return scores
    padded = np.r_[np.full(refractory, -np.inf), scores]
    previous = np.lib.stride_tricks.sliding_window_view(padded[:-1], refractory).max(axis=1)
    return np.where(scores > previous, scores, 0.0)
