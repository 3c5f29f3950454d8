"""Baselines and floors on the `Detector` contract: classic scikit-learn models over windowed features, a rolling
z-score, random scores and an untrained AE-LSTM.

Every windowed model sees the same information as the AE-LSTM: the last `window` readings, min–max scaled with the
training range and flattened. Unsupervised detectors fit on the first part of the normal data and calibrate on the
scores of the rest with the run's alarm policy (the same split and calibration the AE-LSTM uses); supervised ones
learn their decision boundary from labelled training rows and keep it (probability 0.5 / SVC margin 0).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.svm import SVC, OneClassSVM

from aelstm.core.errors import DataError
from aelstm.core.policy import Policy
from aelstm.core.preprocess import MinMaxScaler, evenly_spaced, interpolate_gaps, sliding_windows

from ..train import TrainConfig
from .aelstm import AELSTMDetector
from .base import Detector


def _causal(values: np.ndarray, window: int, row_scores) -> np.ndarray:
    """Scores per row: NaN for the first window − 1 rows, `row_scores(windows)` for every full window."""
    scores = np.full(len(values), np.nan)
    if len(values) >= window:
        scores[window - 1 :] = row_scores(sliding_windows(values, window, 1))
    return scores


class WindowedDetector(Detector):
    """Shared machinery: the last `window` readings, scaled with the training range and flattened."""

    def __init__(self, window: int = 32, validation_fraction: float = 0.2, policy: Policy | None = None,
                 max_train: int = 20_000) -> None:
        if window < 2:
            raise DataError(f"window must be ≥ 2, got {window}")
        self.window = window
        self.validation_fraction = validation_fraction
        self.policy = policy or self.policy
        self.max_train = max_train

    def features(self, windows: np.ndarray) -> np.ndarray:
        """`[n, window, F]` raw windows → `[n, window·F]` scaled features (gaps filled inside each window)."""
        filled = interpolate_gaps(np.asarray(windows, dtype=np.float64), axis=1)
        return self.scaler_.transform(filled).reshape(len(filled), -1)

    @abstractmethod
    def window_scores(self, features: np.ndarray) -> np.ndarray:
        """Higher = more anomalous, one per feature row."""

    def score(self, values: np.ndarray) -> np.ndarray:
        return _causal(np.asarray(values, dtype=np.float64), self.window,
                       lambda windows: self.window_scores(self.features(windows)))


class NormalWindowDetector(WindowedDetector):
    """Learns from normal windows only: fit on the first (1 − validation_fraction) of the normal rows, calibrate
    on the scores of the rest (as the AE-LSTM)."""

    def fit(self, normal: np.ndarray, reference: np.ndarray | None = None) -> NormalWindowDetector:
        parts = [np.asarray(p, dtype=np.float64) for p in (reference, normal) if p is not None]
        splits = [int(len(p) * (1.0 - self.validation_fraction)) for p in parts]
        for part, split in zip(parts, splits, strict=True):
            if split < self.window + 1 or len(part) - split < 2:
                raise DataError(f"{len(part)} normal readings are too few for window {self.window}")
        training = [part[:split] for part, split in zip(parts, splits, strict=True)]
        self.scaler_ = MinMaxScaler.fit(np.concatenate([interpolate_gaps(t) for t in training]))
        features = np.concatenate([self.features(sliding_windows(t, self.window, 1)) for t in training])
        self.learn(evenly_spaced(features, self.max_train))
        # windows ending in each held-out part (that part's earlier rows as context)
        held_out = [self.score(p)[s:] for p, s in zip(parts, splits, strict=True)]
        self.validation_terms_ = np.concatenate(held_out)[:, None]
        return self.calibrate()

    @abstractmethod
    def learn(self, features: np.ndarray) -> None:
        """Fit the model on normal feature rows."""


class OneClassSVMDetector(NormalWindowDetector):
    """One-class SVM (RBF) on normal windows; score = −decision function."""

    name = "ocsvm"

    def __init__(self, window: int = 32, nu: float = 0.01, max_train: int = 3_000, **kwargs) -> None:
        super().__init__(window, max_train=max_train, **kwargs)
        self.nu = nu

    def learn(self, features: np.ndarray) -> None:
        self.model_ = OneClassSVM(nu=self.nu, gamma="scale").fit(features)

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        return -self.model_.decision_function(features)


class IsolationForestDetector(NormalWindowDetector):
    name = "isolation-forest"

    def __init__(self, window: int = 32, seed: int = 0, **kwargs) -> None:
        super().__init__(window, **kwargs)
        self.seed = seed

    def learn(self, features: np.ndarray) -> None:
        self.model_ = IsolationForest(n_estimators=100, random_state=self.seed).fit(features)

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        return -self.model_.score_samples(features)


class PCADetector(NormalWindowDetector):
    """Squared reconstruction error from the principal components that keep `variance` of the normal variance."""

    name = "pca"

    def __init__(self, window: int = 32, variance: float = 0.95, **kwargs) -> None:
        super().__init__(window, **kwargs)
        self.variance = variance

    def learn(self, features: np.ndarray) -> None:
        self.model_ = PCA(n_components=self.variance, svd_solver="full").fit(features)

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        rebuilt = self.model_.inverse_transform(self.model_.transform(features))
        return ((features - rebuilt) ** 2).mean(axis=1)


class RollingZScoreDetector(NormalWindowDetector):
    """Largest |z| over features of the newest reading against the window's earlier readings."""

    name = "zscore"

    def learn(self, features: np.ndarray) -> None:
        """Nothing to learn: the statistics come from each window itself."""

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        windows = features.reshape(len(features), self.window, -1)
        history, newest = windows[:, :-1], windows[:, -1]
        spread = history.std(axis=1)
        z = np.abs(newest - history.mean(axis=1)) / np.where(spread > 1e-9, spread, 1e-9)
        return z.max(axis=1)


class RandomDetector(NormalWindowDetector):
    """Uniform random scores that ignore the data: the floor every detector must clear."""

    name = "random"

    def __init__(self, window: int = 32, seed: int = 0, **kwargs) -> None:
        super().__init__(window, **kwargs)
        self.seed = seed

    def learn(self, features: np.ndarray) -> None:
        self.rng_ = np.random.default_rng(self.seed)

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        return self.rng_.random(len(features))


class SupervisedDetector(WindowedDetector):
    """A classifier on windows; needs labelled segments `(values, labels)` besides the normal rows.

    A window's class is its last reading's label. The threshold is the classifier's own `boundary`, learnt from
    the labelled training rows with balanced class weights (no normal validation scores to calibrate on, so the
    run's alarm policy does not apply); no test data is involved.
    """

    boundary: float

    def fit(self, normal: np.ndarray, labelled: Sequence[tuple[np.ndarray, np.ndarray]] = (),
            reference: np.ndarray | None = None) -> SupervisedDetector:
        normals = [np.asarray(p, dtype=np.float64) for p in (reference, normal) if p is not None]
        segments = [*((p, np.zeros(len(p), dtype=np.int8)) for p in normals), *labelled]
        segments = [(v, np.asarray(y)) for v, y in segments if len(v) >= self.window]
        self.scaler_ = MinMaxScaler.fit(interpolate_gaps(np.concatenate([v for v, _ in segments])))
        features = np.concatenate([self.features(sliding_windows(v, self.window, 1)) for v, _ in segments])
        targets = np.concatenate([y[self.window - 1 :] for _, y in segments]).astype(int)
        if len(np.unique(targets)) < 2:
            raise DataError(f"{self.name} needs labelled training windows of both classes")
        keep = np.concatenate([evenly_spaced(np.flatnonzero(targets == c), self.max_train // 2) for c in (0, 1)])
        self.learn_labelled(features[keep], targets[keep])
        return self.calibrate()

    def calibrated(self, policy: Policy) -> Policy:
        return Policy.fixed(self.boundary, "decision boundary")

    @abstractmethod
    def learn_labelled(self, features: np.ndarray, targets: np.ndarray) -> None:
        """Fit the classifier on labelled feature rows."""


class SVCDetector(SupervisedDetector):
    """RBF SVC with balanced class weights; score = signed margin, threshold 0."""

    name = "svc"
    boundary = 0.0

    def __init__(self, window: int = 32, max_train: int = 4_000, **kwargs) -> None:
        super().__init__(window, max_train=max_train, **kwargs)

    def learn_labelled(self, features: np.ndarray, targets: np.ndarray) -> None:
        self.model_ = SVC(kernel="rbf", gamma="scale", class_weight="balanced").fit(features, targets)

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        return self.model_.decision_function(features)


class RandomForestDetector(SupervisedDetector):
    """Random forest with balanced class weights; score = P(anomaly), threshold 0.5."""

    name = "random-forest"
    boundary = 0.5

    def __init__(self, window: int = 32, seed: int = 0, max_train: int = 8_000, **kwargs) -> None:
        super().__init__(window, max_train=max_train, **kwargs)
        self.seed = seed

    def learn_labelled(self, features: np.ndarray, targets: np.ndarray) -> None:
        self.model_ = RandomForestClassifier(
            n_estimators=100, class_weight="balanced", min_samples_leaf=2, random_state=self.seed, n_jobs=1
        ).fit(features, targets)

    def window_scores(self, features: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(features)[:, 1]


class UntrainedAELSTMDetector(AELSTMDetector):
    """The joint AE-LSTM with its random initial weights (0 epochs), scored and calibrated exactly like the
    trained one: what the architecture and the scoring pipeline give without learning."""

    def __init__(self, config: TrainConfig | None = None, progress: bool = False,
                 policy: Policy | None = None) -> None:
        super().__init__(replace(config or TrainConfig(), mode="joint", epochs=0), progress,  # pretrain: a no-op
                         policy=policy)
        self.name = "ae-lstm-untrained"
