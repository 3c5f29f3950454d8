"""Thresholds from normal data only: an empirical quantile, a static peaks-over-threshold level, or a streaming
SPOT/DSPOT threshold that keeps learning per stream (`core.spot`). The alarm policy's threshold rules
(`core.rules`) fit these; nothing else judges scores."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import DataError
from .spot import MIN_MARGIN, MIN_PEAKS, SpotConfig, StreamingThreshold


@dataclass(frozen=True)
class Threshold:
    """A calibrated threshold and how it was chosen (recorded in the manifest). `value` is the level before any
    streamed score; a `streaming` threshold then moves per stream."""

    value: float
    method: str
    params: dict = field(default_factory=dict)
    streaming: StreamingThreshold | None = None

    def to_dict(self) -> dict:
        out = {"value": self.value, "method": self.method, "params": self.params}
        if self.streaming is not None:
            out["streaming"] = self.streaming.to_dict()
        return out


def quantile_threshold(scores: np.ndarray, q: float = 0.995) -> Threshold:
    """The q-quantile of normal scores: about (1 − q) of normal windows are flagged; at least `MIN_MARGIN` of the
    normal level above the median (near-constant normal scores leave no room otherwise)."""
    scores = _finite(scores)
    if not 0.0 < q < 1.0:
        raise DataError(f"quantile must be in (0, 1), got {q}")
    median = float(np.median(scores))
    value = max(float(np.quantile(scores, q)), median + MIN_MARGIN * abs(median))
    return Threshold(value, "quantile", {"q": q, "n": int(scores.size)})


def fitted_config(scores: np.ndarray, config: SpotConfig) -> SpotConfig:
    """`config` with its initial quantile lowered where the scores are too few to leave MIN_PEAKS peaks above it
    (a short validation split); never below the median."""
    initial_q = max(min(config.initial_q, 1.0 - MIN_PEAKS / scores.size), 0.5)
    return replace(config, initial_q=initial_q, risk=min(config.risk, (1.0 - initial_q) / 2))


def _too_few(scores: np.ndarray, method: str, risk: float) -> Threshold | None:
    """The empirical (1 − risk) quantile, named as a fallback, when the scores are too few for any tail fit."""
    if scores.size >= 2 * MIN_PEAKS:
        return None
    reason = f"too few scores for a tail fit, {scores.size} < {2 * MIN_PEAKS}"
    fallback = quantile_threshold(scores, 1.0 - risk)
    return Threshold(fallback.value, f"quantile ({method} fallback: {reason})", {**fallback.params, "fallback": reason})


def _tail_threshold(scores: np.ndarray, config: SpotConfig, streaming: bool) -> Threshold:
    """The GPD tail level of normal `scores` (SPOT's initial state) — kept as a streaming threshold, or as POT's
    fixed level — or the named quantile fallback when the scores are too few for a tail fit."""
    scores = _finite(scores)
    if (fallback := _too_few(scores, "spot" if streaming else "pot", config.risk)) is not None:
        return fallback
    config = fitted_config(scores, config)
    state = StreamingThreshold.calibrate(scores, config)
    params = {**config.to_dict(), "n": int(scores.size), "peaks": state.exceeded}
    if streaming:
        return Threshold(state.value, "spot" if config.depth == 0 else "dspot", params, state)
    del params["depth"], params["max_peaks"]
    return Threshold(state.value, "pot", params)


def spot_threshold(scores: np.ndarray, config: SpotConfig | None = None) -> Threshold:
    """SPOT (depth 0) or DSPOT (depth > 0): a streaming threshold that starts at the POT level of `scores`."""
    return _tail_threshold(scores, config or SpotConfig(), streaming=True)


def pot_threshold(scores: np.ndarray, risk: float = 1e-3, initial_q: float = 0.98) -> Threshold:
    """Peaks over threshold (Siffer et al., KDD 2017), static: the initial level of SPOT, never updated. A GPD
    fitted to the excesses over a high initial quantile t gives the score whose exceedance probability is `risk`."""
    return _tail_threshold(scores, SpotConfig(risk=risk, initial_q=initial_q), streaming=False)


def _finite(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if scores.size < 2:
        raise DataError("need at least 2 finite normal scores to calibrate a threshold")
    return scores
