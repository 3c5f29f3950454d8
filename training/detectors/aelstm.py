"""The joint AE-LSTM and its ablations (AE only, LSTM only, AE→LSTM trained separately) as detectors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from aelstm.core.preprocess import sliding_windows

from ..train import FittedModel, TrainConfig, fit
from .base import Detector


class AELSTMDetector(Detector):
    """Wraps `training.train.fit`; `config.mode` picks joint / separate / ae / lstm.

    After `pretrain(reference)` every `fit` fine-tunes a copy of the pre-trained model for `fine_tune_epochs` on
    its own normal rows instead of training from random weights; `pretrain_stride` thins the (long) reference's
    training windows."""

    def __init__(self, config: TrainConfig | None = None, progress: bool = False, fine_tune_epochs: int = 10,
                 pretrain_stride: int = 1) -> None:
        self.config = config = config or TrainConfig()
        self.progress = progress
        self.fine_tune_epochs = fine_tune_epochs
        self.pretrain_stride = pretrain_stride
        self.pretrained_: FittedModel | None = None
        self.name = {"joint": "ae-lstm", "separate": "ae-then-lstm", "ae": "ae-only", "lstm": "lstm-only"}[config.mode]

    def pretrain(self, reference: np.ndarray) -> AELSTMDetector:
        if self.config.epochs > 0:
            config = replace(self.config, stride=self.pretrain_stride)
            self.pretrained_ = fit(reference, config, progress=self.progress)
        return self

    def fit(self, normal: np.ndarray, reference: np.ndarray | None = None) -> AELSTMDetector:
        config = self.config if self.pretrained_ is None else replace(self.config, epochs=self.fine_tune_epochs)
        self.fitted_: FittedModel = fit(normal, config, progress=self.progress, init=self.pretrained_,
                                        reference=reference)
        self.threshold_ = self.fitted_.threshold.value
        return self

    def score(self, values: np.ndarray) -> np.ndarray:
        window = self.config.window
        scores = np.full(len(values), np.nan)
        if len(values) >= window:
            windows = sliding_windows(values, window, 1)  # gaps are filled per window, never from the future
            scores[window - 1 :] = self.fitted_.score(windows)
        return scores
