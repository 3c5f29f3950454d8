"""The detector contract every evaluated model follows: fit on normal readings, score causally, and turn scores into
alarms with a threshold calibrated on its own held-out normal scores."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass

import numpy as np

from aelstm.core.calibrate import DEFAULT_DEPTH, DEFAULT_METHOD, DEFAULT_RISK, THRESHOLD_METHODS, Threshold, calibrate
from aelstm.core.errors import DataError


@dataclass(frozen=True)
class Calibrator:
    """How normal validation scores become a threshold: one value shared by every detector of a run, so baselines
    and AE-LSTMs are judged the same way. `depth` > 0 (spot only) judges each score against the mean of the last
    `depth` scores of its stream."""

    method: str = DEFAULT_METHOD
    risk: float = DEFAULT_RISK
    depth: int = DEFAULT_DEPTH

    def __post_init__(self) -> None:
        if self.method not in THRESHOLD_METHODS:
            raise DataError(f"threshold method must be one of {THRESHOLD_METHODS}, got {self.method!r}")
        if self.depth and self.method != "spot":
            raise DataError("a drift depth needs the streaming (spot) threshold")

    def __call__(self, scores: np.ndarray) -> Threshold:
        return calibrate(scores, self.method, risk=self.risk, depth=self.depth)

    @property
    def label(self) -> str:
        depth = f" depth {self.depth}" if self.method == "spot" else ""
        return f"{self.method}{depth} risk {self.risk:g}"

    def to_dict(self) -> dict:
        return asdict(self)


class Detector(ABC):
    """Fit on normal readings `[time, features]`; score a series so that `score[t]` uses rows ≤ t only.

    Fitted state ends in `_` (PyOD's convention). `fit` keeps `validation_scores_` (scores of held-out normal rows,
    in time order) and calibrates `calibration_` on them with `calibrator`; `threshold_` is its initial value. A
    streaming calibration moves per series, so alarms come from `predict`, never from `score > threshold_`. Rows
    that cannot be scored yet (the first window − 1 rows) score NaN and never alarm.
    """

    name: str = "detector"
    calibrator: Calibrator = Calibrator()
    validation_scores_: np.ndarray
    calibration_: Threshold
    threshold_: float

    def pretrain(self, reference: np.ndarray) -> Detector:
        """Learn once from a long normal recording shared by many `fit` calls (which then start from it).
        Most detectors have nothing to carry over and ignore this."""
        return self

    @abstractmethod
    def fit(self, normal: np.ndarray, reference: np.ndarray | None = None) -> Detector:
        """Learn from normal readings only, then `calibrate`; `reference`, when given, is a further normal recording
        (another run) to learn and calibrate from as well, never joined to `normal` inside a window."""

    @abstractmethod
    def score(self, values: np.ndarray) -> np.ndarray:
        """Anomaly score per row `[time]` (higher = more anomalous), NaN where no score exists yet."""

    def calibrated(self, calibrator: Calibrator) -> Threshold:
        """The threshold `calibrator` gives on this fit's validation scores (no refit)."""
        return calibrator(self.validation_scores_)

    def calibrate(self, calibrator: Calibrator | None = None) -> Detector:
        """Set `calibration_` (and `threshold_`, its initial value) from the validation scores, with `calibrator`
        when given (it then stays this detector's calibrator)."""
        self.calibrator = calibrator or self.calibrator
        self.calibration_ = self.calibrated(self.calibrator)
        self.threshold_ = self.calibration_.value
        return self

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """Alarms over one series' scores, judged in time order from its first row."""
        return self.calibration_.flags(scores)

    def predict(self, values: np.ndarray) -> np.ndarray:
        """Alarms over one series: its scores through the calibrated (possibly streaming) threshold."""
        return self.flags(self.score(values))
