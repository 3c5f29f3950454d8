"""Thresholds from normal data only: an empirical quantile, or peaks-over-threshold (extreme value theory)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from .errors import DataError

THRESHOLD_METHODS = ("pot", "quantile")


@dataclass(frozen=True)
class Threshold:
    """A calibrated threshold and how it was chosen (recorded in the manifest)."""

    value: float
    method: str
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"value": self.value, "method": self.method, "params": self.params}


def quantile_threshold(scores: np.ndarray, q: float = 0.995) -> Threshold:
    """The q-quantile of normal scores: about (1 − q) of normal windows are flagged."""
    scores = _finite(scores)
    if not 0.0 < q < 1.0:
        raise DataError(f"quantile must be in (0, 1), got {q}")
    return Threshold(float(np.quantile(scores, q)), "quantile", {"q": q, "n": int(scores.size)})


def pot_threshold(scores: np.ndarray, risk: float = 1e-3, initial_q: float = 0.98) -> Threshold:
    """Peaks over threshold (Siffer et al., KDD 2017): fit a generalised Pareto to the excesses over a high
    initial quantile t and return the score whose exceedance probability is `risk`:
    z = t + σ/ξ·((risk·n/N_t)^(−ξ) − 1)  (ξ ≠ 0),  z = t − σ·ln(risk·n/N_t)  (ξ = 0).
    Falls back to the empirical quantile when there are too few peaks to fit."""
    scores = _finite(scores)
    if not 0.0 < risk < 1.0 - initial_q:
        raise DataError(f"POT risk must be in (0, {1.0 - initial_q:g}), got {risk}")
    initial = float(np.quantile(scores, initial_q))
    excesses = scores[scores > initial] - initial
    params = {"risk": risk, "initial_q": initial_q, "initial_threshold": initial, "n": int(scores.size)}
    if excesses.size < 10:
        fallback = quantile_threshold(scores, 1.0 - risk)
        reason = f"too few peaks, {excesses.size} < 10"
        return Threshold(fallback.value, f"quantile (pot fallback: {reason})", {**params, "fallback": reason})
    shape, _, scale = stats.genpareto.fit(excesses, floc=0.0)
    ratio = risk * scores.size / excesses.size
    if abs(shape) < 1e-8:
        value = initial - scale * np.log(ratio)
    else:
        value = initial + scale / shape * (ratio ** (-shape) - 1.0)
    params.update({"peaks": int(excesses.size), "gpd_shape": float(shape), "gpd_scale": float(scale)})
    return Threshold(float(value), "pot", params)


def calibrate(scores: np.ndarray, method: str = "pot", *, quantile: float = 0.995, risk: float = 1e-3) -> Threshold:
    if method == "quantile":
        return quantile_threshold(scores, quantile)
    if method == "pot":
        return pot_threshold(scores, risk)
    raise DataError(f"unknown threshold method {method!r}; choose one of {THRESHOLD_METHODS}")


def _finite(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if scores.size < 2:
        raise DataError("need at least 2 finite normal scores to calibrate a threshold")
    return scores
