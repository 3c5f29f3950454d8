"""The joint AE-LSTM and its ablations (AE only, LSTM only, AE→LSTM trained separately) as detectors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from aelstm.core.calibrate import Threshold
from aelstm.core.preprocess import sliding_windows

from ..train import FittedModel, TrainConfig, fit
from .base import Calibrator, Detector


def with_calibrator(config: TrainConfig, calibrator: Calibrator) -> TrainConfig:
    """`config` whose own threshold settings are `calibrator`'s, so training calibrates exactly what is judged."""
    return replace(config, threshold_method=calibrator.method, pot_risk=calibrator.risk, drift_depth=calibrator.depth)


class AELSTMDetector(Detector):
    """Wraps `training.train.fit`; `config.mode` picks joint / separate / ae / lstm.

    After `pretrain(reference)` every `fit` fine-tunes a copy of the pre-trained model for `fine_tune_epochs` on
    its own normal rows instead of training from random weights; `pretrain_stride` thins the (long) reference's
    training windows. The calibration is the fitted model's own threshold (training ran with `calibrator`'s
    settings); another calibrator is applied to the same validation windows' scores, without retraining."""

    def __init__(self, config: TrainConfig | None = None, progress: bool = False, fine_tune_epochs: int = 10,
                 pretrain_stride: int = 1, calibrator: Calibrator | None = None) -> None:
        self.calibrator = calibrator or Calibrator()
        self.config = config = with_calibrator(config or TrainConfig(), self.calibrator)
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
        self.validation_scores_ = self.fitted_.validation_scores  # what `fit` calibrated on, in time order
        return self.calibrate()

    def calibrated(self, calibrator: Calibrator) -> Threshold:
        if with_calibrator(self.fitted_.config, calibrator) == self.fitted_.config:
            return self.fitted_.threshold
        return calibrator(self.validation_scores_)

    def score(self, values: np.ndarray) -> np.ndarray:
        window = self.config.window
        scores = np.full(len(values), np.nan)
        if len(values) >= window:
            windows = sliding_windows(values, window, 1)  # gaps are filled per window, never from the future
            scores[window - 1 :] = self.fitted_.score(windows)
        return scores
