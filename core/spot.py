"""Streaming, drift-aware alarm thresholds: SPOT and DSPOT (Siffer et al., "Anomaly detection in streams with
extreme value theory", KDD 2017).

A threshold calibrated once on validation scores does not transfer: a device whose errors sit a little higher than
the validation data's alarms forever, one whose errors sit lower never alarms. SPOT keeps fitting a generalised
Pareto distribution (GPD) to the peaks of the scores over a high initial threshold t and moves the alarm level z to
the score whose exceedance probability is `risk`. DSPOT first subtracts a running baseline — the mean of the
device's last `depth` scores — so the tail is fitted to how far a score stands out from the device's own recent
level, not to the level itself.

Drift tolerance. Scores enter the baseline winsorised at the alarm level in force when they arrive: a one-off spike
moves the baseline by at most z/depth, while a device that settles at a new level of error lifts its baseline by
about z every `depth` scores, so its alarms stop after at most ⌈Δ/z⌉·depth scores for a shift Δ. A true anomaly,
short against `depth`, still stands out.

Alarms enter the tail fit censored at the alarm level. Left out (as in the paper's SPOT) they truncate the fitted
tail, which lowers the level, which truncates more: on stationary exponential scores the alarm rate crept to 3–4×
`risk`. Counted at the level, with the GPD shape held ≥ 0 (no bounded tail is assumed), the rate stays at 1–2×
`risk` on exponential, normal, χ² and Pareto scores. The price: an alarm that lasts raises the level as it goes,
and with depth > 0 also the baseline, so a long anomaly is flagged at its start more than over its whole length.

Bounded state. A state holds `depth` baseline scores and the latest `max_peaks` peaks (the GPD is fitted by the
method of moments from running sums, O(1) per score), plus two counters. The alarm policy's `spot` rule
(`core.rules`) runs the same `SpotState` offline and in the server's per-device state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import DataError

MIN_PEAKS = 10  # fewer peaks than this: the tail is taken as exponential with the peaks' mean
# The alarm level stands at least this share of the normal score level above t. Where the normal scores are (near)
# constant there is no tail to fit and z = t: a device scoring like its validation data, give or take the
# difference between two runtimes' float32 arithmetic (torch at training, onnxruntime serving), then alarmed on
# every reading and, with z − t = 0, its drift baseline could never rise past it (NAB's art_flatline: 3,428 alarms
# in 3,428 rows). A tail fitted on real spread is far above this floor, so it binds only in that degenerate case.
MIN_MARGIN = 0.01


@dataclass(frozen=True)
class SpotConfig:
    """`risk`: exceedance probability of the alarm level; `initial_q`: quantile of the calibration scores that
    sets t; `depth`: scores in the drift baseline (0 = plain SPOT: scores are judged as they are);
    `max_peaks`: peaks kept for the tail fit."""

    risk: float = 1e-3
    initial_q: float = 0.98
    depth: int = 0
    max_peaks: int = 256

    def __post_init__(self) -> None:
        if not 0.0 < self.initial_q < 1.0:
            raise DataError(f"initial quantile must be in (0, 1), got {self.initial_q}")
        if not 0.0 < self.risk < 1.0 - self.initial_q:
            raise DataError(f"risk must be in (0, {1.0 - self.initial_q:g}), got {self.risk}")
        if self.depth < 0:
            raise DataError(f"drift depth must be ≥ 0, got {self.depth}")
        if self.max_peaks < MIN_PEAKS:
            raise DataError(f"max peaks must be ≥ {MIN_PEAKS}, got {self.max_peaks}")

    def to_dict(self) -> dict:
        return asdict(self)


def gpd_moments(count: int, total: float, squares: float) -> tuple[float, float]:
    """(shape ξ, scale σ) of a GPD by the method of moments from the excesses' count, sum and sum of squares:
    ξ = ½(1 − μ²/s²), σ = μ(1 − ξ). ξ is held to [0, ½): no bounded tail, and the moments exist; with fewer
    than MIN_PEAKS excesses the tail is exponential (ξ = 0, σ = μ)."""
    if count == 0:
        return 0.0, 0.0
    mean = total / count
    variance = squares / count - mean * mean
    if count < MIN_PEAKS or variance <= 1e-12 * max(mean * mean, 1e-300):
        return 0.0, mean
    shape = min(max(0.5 * (1.0 - mean * mean / variance), 0.0), 0.49)
    return shape, mean * (1.0 - shape)


def tail_level(initial: float, shape: float, scale: float, risk: float, seen: int, peaks: int) -> float:
    """The score exceeded with probability `risk` when `peaks` of `seen` scores exceeded `initial`:
    z = t + σ/ξ·((risk·n/N_t)^(−ξ) − 1), or t − σ·ln(risk·n/N_t) for ξ = 0; never below t."""
    if peaks == 0 or scale <= 0.0:
        return initial
    ratio = risk * seen / peaks
    if ratio >= 1.0:
        return initial
    if abs(shape) < 1e-8:
        return initial - scale * math.log(ratio)
    return initial + scale / shape * (ratio ** (-shape) - 1.0)


class _Ring:
    """A fixed-size buffer of the latest values with their running sum and sum of squares."""

    __slots__ = ("count", "position", "squares", "total", "values")

    def __init__(self, size: int, initial: np.ndarray | None = None) -> None:
        self.values = np.zeros(size)
        self.count = self.position = 0
        self.total = self.squares = 0.0
        for value in ([] if initial is None else np.asarray(initial, dtype=np.float64)[-size:].tolist()):
            self.add(value)

    def add(self, value: float) -> None:
        if self.count == len(self.values):
            dropped = self.values[self.position]
            self.total -= dropped
            self.squares -= dropped * dropped
        else:
            self.count += 1
        self.values[self.position] = value
        self.total += value
        self.squares += value * value
        self.position = (self.position + 1) % len(self.values)

    def latest(self) -> np.ndarray:
        """The values held, oldest first."""
        if self.count < len(self.values):
            return self.values[: self.count].copy()
        return np.roll(self.values, -self.position)


class SpotState:
    """One stream's threshold state; `step(score)` judges a score, then learns from it."""

    __slots__ = ("alarm_level", "baseline", "config", "exceeded", "initial", "level_prior", "peaks", "seen")

    def __init__(self, config: SpotConfig, initial: float, level_prior: float, peaks: np.ndarray, seen: int,
                 exceeded: int) -> None:
        self.config = config
        self.initial = initial  # t, over the baseline
        self.level_prior = level_prior  # the calibration scores' mean: the baseline before any score is seen
        self.baseline = _Ring(config.depth) if config.depth else None
        self.peaks = _Ring(config.max_peaks, peaks)
        self.seen, self.exceeded = seen, exceeded  # n and N_t of the tail estimate
        self.alarm_level = self._fit()  # z, over the baseline

    @property
    def nbytes(self) -> int:
        """Memory the state holds (for the server's per-device budget)."""
        return self.peaks.values.nbytes + (self.baseline.values.nbytes if self.baseline else 0) + 200

    def level(self) -> float:
        """The drift baseline: the mean of the last `depth` scores, the calibration mean filling in for scores
        not seen yet."""
        if self.baseline is None:
            return self.level_prior
        depth = self.config.depth
        return (self.baseline.total + (depth - self.baseline.count) * self.level_prior) / depth

    def threshold(self) -> float:
        """The score above which the next score alarms."""
        return self.level() + self.alarm_level

    def judge(self, score: float) -> tuple[float, bool]:
        """(threshold in force, alarm) for `score`; changes nothing. NaN (no full window yet) never alarms."""
        limit = self.level() + self.alarm_level
        return limit, (not math.isnan(score)) and score > limit

    def learn(self, score: float) -> None:
        """Learn from `score` (NaN is ignored): an alarm counts as a peak censored at the alarm level, and enters
        the drift baseline winsorised at it."""
        if math.isnan(score):
            return
        level = self.level()
        limit = level + self.alarm_level
        self.seen += 1
        excess = min(score, limit) - level - self.initial
        if excess > 0.0:
            self.peaks.add(excess)
            self.exceeded += 1
            self.alarm_level = self._fit()
        if self.baseline is not None:
            self.baseline.add(min(score, limit))

    def step(self, score: float) -> tuple[float, bool]:
        """`judge`, then `learn`: what a stream does with each score in time order."""
        verdict = self.judge(score)
        self.learn(score)
        return verdict

    def to_dict(self) -> dict:
        """Everything the state has learnt, to move it to another process (`restore`)."""
        return {"alarm_level": self.alarm_level, "seen": self.seen, "exceeded": self.exceeded,
                "peaks": self.peaks.latest().tolist(),
                "baseline": None if self.baseline is None else self.baseline.latest().tolist()}

    def restore(self, data: dict) -> None:
        """Take over a state exported by `to_dict` from a state of the same calibration."""
        self.peaks = _Ring(self.config.max_peaks, np.asarray(data["peaks"], dtype=np.float64))
        if self.baseline is not None and data.get("baseline") is not None:
            self.baseline = _Ring(self.config.depth, np.asarray(data["baseline"], dtype=np.float64))
        self.seen, self.exceeded = int(data["seen"]), int(data["exceeded"])
        self.alarm_level = float(data["alarm_level"])

    def _fit(self) -> float:
        shape, scale = gpd_moments(self.peaks.count, self.peaks.total, self.peaks.squares)
        level = tail_level(self.initial, shape, scale, self.config.risk, self.seen, self.exceeded)
        return max(level, self.initial + MIN_MARGIN * abs(self.level_prior))


@dataclass(frozen=True)
class StreamingThreshold:
    """A SPOT/DSPOT calibrator: its initial state comes from normal validation scores (in time order); every
    stream — a series offline, a device in the server — starts from a copy of it."""

    config: SpotConfig
    initial: float
    level_prior: float
    peaks: tuple[float, ...]
    seen: int
    exceeded: int

    @classmethod
    def calibrate(cls, scores: np.ndarray, config: SpotConfig) -> StreamingThreshold:
        """t is the `initial_q` quantile of the calibration scores over their own running baseline."""
        scores = np.asarray(scores, dtype=np.float64).ravel()
        scores = scores[np.isfinite(scores)]
        if scores.size * (1.0 - config.initial_q) < MIN_PEAKS - 1e-6:
            raise DataError(f"{scores.size} normal scores are too few to calibrate a streaming threshold with "
                            f"initial quantile {config.initial_q} (need ≥ {MIN_PEAKS / (1.0 - config.initial_q):.0f})")
        prior = float(scores.mean())
        relative = scores - _running_levels(scores, config.depth, prior)
        initial = float(np.quantile(relative, config.initial_q))
        peaks = relative[relative > initial] - initial
        return cls(config, initial, prior, tuple(float(p) for p in peaks[-config.max_peaks :]), int(scores.size),
                   int(peaks.size))

    def start(self) -> SpotState:
        return SpotState(self.config, self.initial, self.level_prior, np.asarray(self.peaks), self.seen,
                         self.exceeded)

    @property
    def value(self) -> float:
        """The threshold before any streamed score: the level a static calibration would ship."""
        return self.start().threshold()

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "initial": self.initial, "level_prior": self.level_prior,
                "peaks": list(self.peaks), "seen": self.seen, "exceeded": self.exceeded}

    @classmethod
    def from_dict(cls, data: dict) -> StreamingThreshold:
        try:
            return cls(SpotConfig(**data["config"]), float(data["initial"]), float(data["level_prior"]),
                       tuple(float(p) for p in data["peaks"]), int(data["seen"]), int(data["exceeded"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed streaming threshold state: {exc}") from exc


def _running_levels(scores: np.ndarray, depth: int, prior: float) -> np.ndarray:
    """The baseline in force before each calibration score (the mean of the previous `depth`, prior-filled)."""
    if depth == 0:
        return np.full(len(scores), prior)
    padded = np.concatenate([np.full(depth, prior), scores])
    sums = np.cumsum(np.r_[0.0, padded])
    return (sums[depth : depth + len(scores)] - sums[: len(scores)]) / depth
