"""The detectors an evaluation can run, built by name from one set of settings so every one sees the same window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..detectors import baselines
from ..detectors.aelstm import AELSTMDetector
from ..detectors.base import Detector
from ..errors import DataError
from ..train import TrainConfig


@dataclass(frozen=True)
class Settings:
    """What all detectors of one run share. `train_stride` thins the AE-LSTM's training windows on long series."""

    window: int = 16
    epochs: int = 50
    train_stride: int = 1
    seed: int = 0

    def train_config(self, **changes) -> TrainConfig:
        return replace(TrainConfig(window=self.window, epochs=self.epochs, stride=self.train_stride, seed=self.seed),
                       **changes)


FACTORIES: dict[str, Callable[[Settings], Detector]] = {
    "ae-lstm": lambda s: AELSTMDetector(s.train_config(mode="joint")),
    "ae-then-lstm": lambda s: AELSTMDetector(s.train_config(mode="separate")),
    "ae-only": lambda s: AELSTMDetector(s.train_config(mode="ae")),
    "lstm-only": lambda s: AELSTMDetector(s.train_config(mode="lstm")),
    "ae-lstm-untrained": lambda s: baselines.UntrainedAELSTMDetector(s.train_config()),
    "ocsvm": lambda s: baselines.OneClassSVMDetector(s.window),
    "svc": lambda s: baselines.SVCDetector(s.window),
    "random-forest": lambda s: baselines.RandomForestDetector(s.window, seed=s.seed),
    "isolation-forest": lambda s: baselines.IsolationForestDetector(s.window, seed=s.seed),
    "pca": lambda s: baselines.PCADetector(s.window),
    "zscore": lambda s: baselines.RollingZScoreDetector(s.window),
    "random": lambda s: baselines.RandomDetector(s.window, seed=s.seed),
}
DETECTORS = tuple(FACTORIES)
SUPERVISED = ("svc", "random-forest")


def build(name: str, settings: Settings) -> Detector:
    if name not in FACTORIES:
        raise DataError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    return FACTORIES[name](settings)
