"""The detector contract every evaluated model follows: fit on normal readings, score causally."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Detector(ABC):
    """Fit on normal readings `[time, features]`; score a series so that `score[t]` uses rows ≤ t only.

    Fitted state ends in `_` (PyOD's convention): `threshold_` is calibrated on normal data inside `fit`, never on
    labels. Rows that cannot be scored yet (the first window − 1 rows) score NaN.
    """

    name: str = "detector"
    threshold_: float

    def pretrain(self, reference: np.ndarray) -> Detector:
        """Learn once from a long normal recording shared by many `fit` calls (which then start from it).
        Most detectors have nothing to carry over and ignore this."""
        return self

    @abstractmethod
    def fit(self, normal: np.ndarray, reference: np.ndarray | None = None) -> Detector:
        """Learn from normal readings only and calibrate `threshold_`; `reference`, when given, is a further normal
        recording (another run) to learn and calibrate from as well, never joined to `normal` inside a window."""

    @abstractmethod
    def score(self, values: np.ndarray) -> np.ndarray:
        """Anomaly score per row `[time]` (higher = more anomalous), NaN where no score exists yet."""

    def predict(self, values: np.ndarray) -> np.ndarray:
        """1 where the score exceeds the calibrated threshold (NaN scores are never flagged)."""
        scores = self.score(values)
        return np.nan_to_num(scores, nan=-np.inf) > self.threshold_
