"""The joint AE-LSTM and its ablations (AE only, LSTM only, AE→LSTM trained separately) as detectors."""

from __future__ import annotations

import numpy as np

from ..preprocess import sliding_windows
from ..train import FittedModel, TrainConfig, fit
from .base import Detector


class AELSTMDetector(Detector):
    """Wraps `training.train.fit`; `config.mode` picks joint / separate / ae / lstm."""

    def __init__(self, config: TrainConfig | None = None, progress: bool = False) -> None:
        self.config = config = config or TrainConfig()
        self.progress = progress
        self.name = {"joint": "ae-lstm", "separate": "ae-then-lstm", "ae": "ae-only", "lstm": "lstm-only"}[config.mode]

    def fit(self, normal: np.ndarray) -> AELSTMDetector:
        self.fitted_: FittedModel = fit(normal, self.config, progress=self.progress)
        self.threshold_ = self.fitted_.threshold.value
        return self

    def score(self, values: np.ndarray) -> np.ndarray:
        window = self.config.window
        scores = np.full(len(values), np.nan)
        if len(values) >= window:
            windows = sliding_windows(values, window, 1)  # gaps are filled per window, never from the future
            scores[window - 1 :] = self.fitted_.score(windows)
        return scores
