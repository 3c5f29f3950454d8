"""The detector contract every evaluated model follows: fit on normal readings, score causally, and turn scores into
alarms with the alarm policy (`core.policy`) fitted on its own held-out normal scores."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from aelstm.core.policy import DEFAULT_POLICY, Policy


class Detector(ABC):
    """Fit on normal readings `[time, features]`; score a series so that `score[t]` uses rows ≤ t only.

    Fitted state ends in `_` (PyOD's convention). `fit` keeps `validation_terms_` (the error terms of held-out
    normal rows, in time order) and fits `policy_`, a copy of the unfitted `policy`, on them; `threshold_` is its
    initial threshold. A policy learns per series, so alarms come from `predict` / `flags`, never from
    `score > threshold_`. Rows that cannot be scored yet (the first window − 1 rows) score NaN and never alarm.
    """

    name: str = "detector"
    policy: Policy = Policy.parse(DEFAULT_POLICY)
    validation_terms_: np.ndarray
    policy_: Policy
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

    def score_terms(self, values: np.ndarray) -> np.ndarray:
        """Error terms per row `[time, k]` whose sum is the score; one term unless the model has several."""
        return self.score(values)[:, None]

    def calibrated(self, policy: Policy) -> Policy:
        """`policy` fitted on this fit's validation terms (no refit of the model)."""
        return policy.fit(self.validation_terms_)

    def calibrate(self, policy: Policy | None = None) -> Detector:
        """Fit `policy_` (and set `threshold_`, its initial value) on the validation terms, with `policy` when given
        (it then stays this detector's policy)."""
        self.policy = policy or self.policy
        self.policy_ = self.calibrated(self.policy)
        self.threshold_ = self.policy_.initial_threshold
        return self

    def flags(self, terms: np.ndarray) -> np.ndarray:
        """Alarms over one series' terms (or scores), judged in time order from its first row."""
        return self.policy_.flags(terms)

    def predict(self, values: np.ndarray) -> np.ndarray:
        """Alarms over one series: its terms through the fitted alarm policy."""
        return self.flags(self.score_terms(values))
