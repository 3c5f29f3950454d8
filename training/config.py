"""What decides a model: the training configuration and which rows of a file are normal enough to train on.

Torch-free, so a process that only plans, submits or inspects training (the `train-fleets` driver, the retraining
planner, a Ray cluster's head) never imports torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from aelstm.core.data import Series
from aelstm.core.errors import DataError
from aelstm.core.policy import Policy, default_policy
from aelstm.core.preprocess import OUT_OF_RANGE_POLICIES, DenoiseConfig

TRAINING_MODES = ("joint", "separate", "ae", "lstm")
# How a step's error vector (one entry per scaled feature, p·F of them for a patch) becomes one number:
# - pooled: the mean of the squared errors, every feature in min–max units (a noisy sensor dominates);
# - standardised: each squared error over its mean on normal validation windows, then the mean;
# - feature-max: the same standardised squared errors, their maximum (one sensor off is enough).
ERROR_SCORES = ("pooled", "standardised", "feature-max")
# Early stopping judges each epoch on at most this many validation windows, evenly spaced over the validation part:
# windows one reading apart nearly repeat each other, and a pass over thousands of them cost as much as half an epoch
# of training (`benchmarks.training.multivariate_cost`). Calibration and the alarm policy use every validation window.
EARLY_STOPPING_WINDOWS = 1024


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the model; recorded in the manifest so a bundle can be rebuilt."""

    window: int = 32
    stride: int = 1
    hidden: int = 64
    latent: int = 16
    lstm_layers: int = 2
    patch: int = 1
    score_steps: int = 1
    error_score: str = "pooled"  # how a step's error vector becomes one number (`config.ERROR_SCORES`)
    epochs: int = 100
    # An epoch trains on at most this many windows (None: all), drawn afresh each epoch: a day of per-second
    # readings costs the same per epoch as a few hours' (`benchmarks/results/training/multivariate_cost.md`).
    epoch_windows: int | None = 4096
    patience: int = 5
    min_delta: float = 0.01  # an improvement lowers the validation loss by this fraction of its last improved value
    batch_size: int = 64
    learning_rate: float = 1e-3
    validation_fraction: float = 0.2
    alpha: float = 0.5
    beta: float = 0.5
    mode: str = "joint"  # joint = co-trained; separate = AE first, then LSTM on frozen codes; ae / lstm = one part
    policy: str | None = None  # the alarm policy's rules (`core.policy`), fitted on the validation terms; None:
    # the shipped one for the data's shape (`core.policy.default_policy`), filled in when the model is fitted
    alarms_teach: bool = True  # whether a stream's alarms teach its policy state
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    out_of_range: str = "extrapolate"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.mode in TRAINING_MODES, f"mode must be one of {TRAINING_MODES}"),
            (self.out_of_range in OUT_OF_RANGE_POLICIES, f"out-of-range policy must be one of {OUT_OF_RANGE_POLICIES}"),
            (self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta > 0, "alpha, beta must be ≥ 0, not both 0"),
            (0.0 < self.validation_fraction < 0.9, "validation fraction must be in (0, 0.9)"),
            (min(self.hidden, self.latent, self.lstm_layers, self.batch_size) >= 1, "sizes must be ≥ 1"),
            (self.patch >= 1, f"patch must be ≥ 1, got {self.patch}"),
            (self.window >= self.patch + 1, f"window {self.window} is too short for patch {self.patch} "
                                            f"(need window ≥ patch + 1 = {self.patch + 1})"),
            (1 <= self.score_steps <= self.window - self.patch,
             f"score steps must be in [1, window − patch = {self.window - self.patch}], got {self.score_steps}"),
            (self.error_score in ERROR_SCORES, f"error score must be one of {ERROR_SCORES}, got {self.error_score!r}"),
            (self.epochs >= 0, "epochs must be ≥ 0 (0 keeps the random initial weights: the untrained floor)"),
            (self.epoch_windows is None or self.epoch_windows >= 1, "epoch windows must be ≥ 1 (or unset: all)"),
            (0.0 <= self.min_delta < 1.0, "min delta must be in [0, 1) (a fraction of the best validation loss)"),
            (self.learning_rate > 0, "learning rate must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataError(message)
        if self.policy is not None:
            self.alarm_policy  # noqa: B018 - validates the policy's rules

    @property
    def alarm_policy(self) -> Policy:
        """The policy's rules, not fitted yet."""
        if self.policy is None:
            raise DataError("no alarm policy chosen yet: it follows the data's shape (`for_features`)")
        return Policy.parse(self.policy, self.alarms_teach)

    def for_features(self, n_features: int) -> TrainConfig:
        """This configuration with its alarm policy settled: the shipped one for `n_features` if none was given."""
        return self if self.policy is not None else replace(self, policy=default_policy(n_features))

    @property
    def score_weights(self) -> tuple[float, float]:
        """(α, β) of the score; the single-part ablations score with their own part only."""
        return {"ae": (1.0, 0.0), "lstm": (0.0, 1.0)}.get(self.mode, (self.alpha, self.beta))

    def to_dict(self) -> dict:
        return {**asdict(self), "denoise": self.denoise.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The configuration a bundle was trained with (its manifest's `training.config`), to train it again;
        settings this version no longer has are left out."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if isinstance(values.get("denoise"), dict):
            values["denoise"] = DenoiseConfig(**values["denoise"])
        return cls(**values)



def training_rows(series: Series, fraction: float | None, until_first_anomaly: bool) -> tuple[int, str]:
    """How many leading rows to train on, and why (a phrase for the user).

    By default a file without labelled anomalies is all normal, and one with them is normal until the first one;
    `fraction` takes a leading fraction instead, and `until_first_anomaly` insists on labels."""
    labelled = series.labels is not None and bool(series.labels.any())
    if until_first_anomaly and not labelled:
        raise DataError(f"{series.name}: --until-first-anomaly needs labels with at least one anomaly")
    if fraction is not None and not until_first_anomaly:
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"training fraction must be in (0, 1], got {fraction}")
        return int(len(series) * fraction), f"the first {fraction:.0%} of the file"
    if labelled:
        return int(np.argmax(series.labels > 0)), "every row before the first labelled anomaly"
    return len(series), "the whole file (it has no labelled anomalies)"
