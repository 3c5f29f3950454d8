"""The detectors an evaluation can run, built by name from one set of settings so every one sees the same window
and the same alarm policy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from aelstm.core.errors import DataError
from aelstm.core.policy import DEFAULT_POLICY, Policy

from ..detectors import baselines
from ..detectors.aelstm import AELSTMDetector
from ..detectors.base import Detector
from ..train import TrainConfig


@dataclass(frozen=True)
class Settings:
    """What all detectors of one run share. `train_stride` thins the AE-LSTM's training windows on long series;
    with a reference run, AE-LSTMs pre-train on every `pretrain_stride`-th of its windows, then fine-tune
    `fine_tune_epochs` per case. `policy` (fitted on each detector's validation scores) turns its scores into alarms;
    `aelstm` holds further `TrainConfig` fields for the AE-LSTM family (e.g. a selected `patch`)."""

    window: int = 16
    epochs: int = 50
    train_stride: int = 1
    seed: int = 0
    pretrain_stride: int = 4
    fine_tune_epochs: int = 10
    policy: Policy = field(default_factory=lambda: Policy.parse(DEFAULT_POLICY))
    aelstm: dict = field(default_factory=dict)

    def train_config(self, **changes) -> TrainConfig:
        base = TrainConfig(window=self.window, epochs=self.epochs, stride=self.train_stride, seed=self.seed)
        return replace(base, **{**self.aelstm, **changes})

    def aelstm_detector(self, mode: str, **changes) -> AELSTMDetector:
        return AELSTMDetector(self.train_config(mode=mode, **changes), fine_tune_epochs=self.fine_tune_epochs,
                              pretrain_stride=self.pretrain_stride, policy=self.policy)


FACTORIES: dict[str, Callable[..., Detector]] = {
    "ae-lstm": lambda s, **c: s.aelstm_detector("joint", **c),
    "ae-then-lstm": lambda s, **c: s.aelstm_detector("separate", **c),
    "ae-only": lambda s, **c: s.aelstm_detector("ae", **c),
    "lstm-only": lambda s, **c: s.aelstm_detector("lstm", **c),
    "ae-lstm-untrained": lambda s: baselines.UntrainedAELSTMDetector(s.train_config(), policy=s.policy),
    "ocsvm": lambda s: baselines.OneClassSVMDetector(s.window, policy=s.policy),
    "svc": lambda s: baselines.SVCDetector(s.window),
    "random-forest": lambda s: baselines.RandomForestDetector(s.window, seed=s.seed),
    "isolation-forest": lambda s: baselines.IsolationForestDetector(s.window, seed=s.seed, policy=s.policy),
    "pca": lambda s: baselines.PCADetector(s.window, policy=s.policy),
    "zscore": lambda s: baselines.RollingZScoreDetector(s.window, policy=s.policy),
    "random": lambda s: baselines.RandomDetector(s.window, seed=s.seed, policy=s.policy),
}
DETECTORS = tuple(FACTORIES)
SUPERVISED = ("svc", "random-forest")
AELSTM_FAMILY = ("ae-lstm", "ae-then-lstm", "ae-only", "lstm-only")  # trained from random weights: run per seed


def build(name: str, settings: Settings, **changes) -> Detector:
    """A fresh detector; `changes` override AE-LSTM training settings (the sensitivity sweep)."""
    if name not in FACTORIES:
        raise DataError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    return FACTORIES[name](settings, **changes)
