"""The joint AE-LSTM and its ablations (AE only, LSTM only, AE→LSTM trained separately) as detectors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from aelstm.core.policy import Policy
from aelstm.core.preprocess import sliding_windows

from ..train import FittedModel, TrainConfig, fit
from .base import Detector


def with_policy(config: TrainConfig, policy: Policy) -> TrainConfig:
    """`config` whose own alarm policy is `policy`, so training fits exactly what is judged."""
    return replace(config, policy=policy.spec, alarms_teach=policy.alarms_teach)


class AELSTMDetector(Detector):
    """Wraps `training.train.fit`; `config.mode` picks joint / separate / ae / lstm.

    After `pretrain(reference)` every `fit` fine-tunes a copy of the pre-trained model for `fine_tune_epochs` on
    its own normal rows instead of training from random weights; `pretrain_stride` thins the (long) reference's
    training windows. The fitted policy is the model's own (training ran with `policy`); another policy is fitted on
    the same validation windows' terms, without retraining."""

    def __init__(self, config: TrainConfig | None = None, progress: bool = False, fine_tune_epochs: int = 10,
                 pretrain_stride: int = 1, policy: Policy | None = None) -> None:
        self.config = config = config or TrainConfig()
        if policy is None and config.policy is None:
            policy = Detector.policy  # the policy every detector is judged by unless told otherwise
        if policy is not None:
            self.config = config = with_policy(config, policy)
        self.policy = config.alarm_policy
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
        self.validation_terms_ = self.fitted_.validation_terms  # what `fit` fitted its policy on, in time order
        return self.calibrate()

    def calibrated(self, policy: Policy) -> Policy:
        if with_policy(self.fitted_.config, policy) == self.fitted_.config:
            return self.fitted_.policy
        return policy.fit(self.validation_terms_)

    def score_terms(self, values: np.ndarray) -> np.ndarray:
        window = self.config.window
        terms = np.full((len(values), 2), np.nan)
        if len(values) >= window:
            windows = sliding_windows(values, window, 1)  # gaps are filled per window, never from the future
            terms[window - 1 :] = self.fitted_.score_terms(windows)
        return terms

    def score(self, values: np.ndarray) -> np.ndarray:
        return self.score_terms(values).sum(axis=1)
