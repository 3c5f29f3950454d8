"""Streaming NAB detectors: learn from a file's probationary period only, then score every row causally in [0, 1].

One object, one set of hyper-parameters, is used for every file of the corpus.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .likelihood import LikelihoodConfig, keep_new_highs, surprise, to_unit_score
from .online import OnlineConfig
from .zscore import THREE_SIGMA, rolling_zscore

LIKELIHOOD_THRESHOLD = 0.5  # to_unit_score(5): tail probability 1e-5, Numenta's 0.99999 likelihood


@functools.cache
def _code_fingerprint() -> str:
    """Digest of the code that turns a config into raw errors: a cache entry made by other model code never matches."""
    from .. import model, train
    from . import online

    digest = hashlib.sha256()
    for module in (model, train, online):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


class StreamingDetector(ABC):
    """`score_file(values, probation)` → per-row anomaly score in [0, 1]; row t depends on rows ≤ t only."""

    name: str
    threshold: float  # the detector's own production threshold, fixed before seeing any file

    @abstractmethod
    def score_file(self, values: np.ndarray, probation: int) -> np.ndarray: ...

    def is_cached(self, values: np.ndarray, probation: int) -> bool:
        """True when scoring this file is cheap now (nothing to train): no process pool is worth starting."""
        return False

    def fit_seconds(self, values: np.ndarray, probation: int) -> float | None:
        """Seconds an earlier run spent fitting for this file, where it was recorded (None: not recorded)."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "threshold": self.threshold}


@dataclass
class ZScoreDetector(StreamingDetector):
    """Rolling z-score over the previous `history` rows (NAB's self-check detector); 3σ in production."""

    history: int = 288
    name: str = "zscore"
    threshold: float = THREE_SIGMA

    def score_file(self, values: np.ndarray, probation: int) -> np.ndarray:
        return rolling_zscore(values, self.history)

    def describe(self) -> dict:
        return {**super().describe(), "history": self.history}


@dataclass
class AELSTMStreamDetector(StreamingDetector):
    """A joint AE-LSTM (or one of its ablations) trained on the probationary period, scored through likelihoods.

    Each error term the mode uses (reconstruction, prediction, or both) gets its own anomaly likelihood against
    its own past, so the two terms are weighed adaptively per file and over time rather than by fixed
    α and β; the row's tail probability is the smaller one, Bonferroni-corrected for the number of terms.
    The reference history starts at the model's validation split: rows the model never trained on.
    """

    config: object  # aelstm.training.train.TrainConfig (imported lazily: torch loads only in workers that fit)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    threshold: float = LIKELIHOOD_THRESHOLD
    cache: Path | None = None  # keeps each file's raw error terms, keyed by config, model code and data

    @property
    def name(self) -> str:
        return {"joint": "ae-lstm", "separate": "ae-then-lstm", "ae": "ae-only", "lstm": "lstm-only"}[self.config.mode]

    def cache_path(self, values: np.ndarray, probation: int) -> Path | None:
        """Where this file's raw error terms are kept: keyed by training and online config and by the data."""
        if self.cache is None:
            return None
        setup = {"train": self.config.to_dict(), "online": self.online.to_dict(), "code": _code_fingerprint()}
        digest = hashlib.sha256(json.dumps(setup, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes() + str(probation).encode())
        return Path(self.cache) / f"{self.name}-{digest.hexdigest()[:24]}.npy"

    def raw_parts(self, values: np.ndarray, probation: int) -> list[np.ndarray]:
        """Per-row normalised error terms the mode uses (NaN before the first full window), cached if asked.

        Next to each cached array, `<name>.json` keeps the seconds the fit and online scoring took, so that a
        rescoring run can still report what the model cost."""
        path = self.cache_path(values, probation)
        if path is not None and path.is_file():
            return list(np.load(path))
        started = time.perf_counter()
        parts = self._fit_and_score(values, probation)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.array(parts))
            path.with_suffix(".json").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 2)}))
        return parts

    def is_cached(self, values: np.ndarray, probation: int) -> bool:
        path = self.cache_path(values, probation)
        return path is not None and path.is_file()

    def fit_seconds(self, values: np.ndarray, probation: int) -> float | None:
        path = self.cache_path(values, probation)
        timing = path.with_suffix(".json") if path is not None else None
        return json.loads(timing.read_text())["seconds"] if timing is not None and timing.is_file() else None

    def _fit_and_score(self, values: np.ndarray, probation: int) -> list[np.ndarray]:
        import torch

        from ..train import fit
        from .online import score_online

        torch.set_num_threads(1)
        columns = np.asarray(values, dtype=np.float64)[:, None]
        fitted = fit(columns[:probation], self.config, progress=False)
        rec, pred = score_online(fitted, columns, probation, self.online)
        alpha, beta = self.config.score_weights
        parts = [part / weight for part, weight in ((rec, alpha), (pred, beta)) if weight > 0]
        return [np.r_[np.full(self.config.window - 1, np.nan), part] for part in parts]

    def score_file(self, values: np.ndarray, probation: int) -> np.ndarray:
        parts = self.raw_parts(values, probation)
        start = max(int(probation * (1.0 - self.config.validation_fraction)), self.config.window - 1)
        surprises = np.max([surprise(np.nan_to_num(part), start, self.likelihood) for part in parts], axis=0)
        combined = np.maximum(surprises - np.log10(len(parts)), 0.0)
        scores = to_unit_score(combined)
        scores[:probation] = 0.0  # never scored by NAB; the model was fitted on these rows
        return keep_new_highs(scores, self.likelihood.refractory)

    def describe(self) -> dict:
        return {
            **super().describe(),
            "train_config": self.config.to_dict(),
            "likelihood": self.likelihood.to_dict(),
            "online": self.online.to_dict(),
        }
