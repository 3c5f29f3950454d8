"""Run detectors over a protocol's cases: fit, score, judge, and time scoring the same way for every detector."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aelstm.core.progress import ProgressBar

from ..detectors.base import Detector
from .lineup import SUPERVISED, Settings, build
from .metrics import all_metrics
from .protocols import Case, Protocol

TIMING_BATCH = 64


@dataclass
class CaseScores:
    """A detector's output on one case's test rows, kept for figures."""

    case: str
    scores: np.ndarray
    threshold: float
    labels: np.ndarray

    @property
    def flags(self) -> np.ndarray:
        return np.nan_to_num(self.scores, nan=-np.inf) > self.threshold

    @property
    def margin(self) -> np.ndarray:
        """Score minus the case's own threshold: comparable across per-case models when pooling."""
        return self.scores - self.threshold


@dataclass
class DetectorResult:
    name: str
    cases: list[CaseScores] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    pretrain_seconds: float = 0.0
    timing: dict | None = None

    def pooled(self) -> dict:
        """Metrics over all test rows pooled (runs and devices stay separate events)."""
        starts = np.cumsum([0] + [len(c.labels) for c in self.cases[:-1]])
        margin = np.concatenate([c.margin for c in self.cases])
        flags = np.concatenate([c.flags for c in self.cases])
        labels = np.concatenate([c.labels for c in self.cases])
        return all_metrics(margin, flags, labels, starts.tolist())

    def per_case(self) -> dict[str, dict]:
        return {c.case: all_metrics(c.scores, c.flags, c.labels) for c in self.cases}


def fit_detector(detector: Detector, name: str, case: Case, reference: np.ndarray | None) -> Detector:
    """Supervised detectors also get the case's labelled training segments."""
    if name in SUPERVISED:
        return detector.fit(case.normal, case.labelled, reference=reference)
    return detector.fit(case.normal, reference=reference)


def time_scoring(detector: Detector, values: np.ndarray, window: int, repeats: int = 15) -> dict:
    """Median wall time of `score` on one batch of 64 windows (64 + window − 1 rows), after two warm-up calls."""
    rows = values[: TIMING_BATCH + window - 1]
    for _ in range(2):
        detector.score(rows)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        detector.score(rows)
        seconds.append(time.perf_counter() - started)
    batch_ms = float(np.median(seconds) * 1e3)
    return {"batch_windows": TIMING_BATCH, "repeats": repeats, "ms_per_batch": batch_ms,
            "ms_per_window": batch_ms / TIMING_BATCH}


def skip_reason(name: str, protocol: Protocol) -> str | None:
    if name in SUPERVISED and not all(case.labelled for case in protocol.cases):
        return "needs a labelled, time-ordered training split, which this protocol does not have"
    return None


def evaluate(protocol: Protocol, names: Sequence[str], settings: Settings, progress: bool = True,
             ) -> tuple[dict[str, DetectorResult], dict[str, str]]:
    """Fit and score every runnable detector on every case (a model per case, pre-trained once on the protocol's
    reference run where it has one); returns results and skips."""
    skipped = {n: reason for n in names if (reason := skip_reason(n, protocol))}
    runnable = [n for n in names if n not in skipped]
    results = {n: DetectorResult(n) for n in runnable}
    with ProgressBar(f"evaluate {protocol.dataset}", len(runnable) * len(protocol.cases), "fits",
                     enabled=progress, transient=False) as bar:
        for name in runnable:
            detector = build(name, settings)
            if protocol.reference is not None:
                bar.set_note(f"{name} · pre-training")
                started = time.perf_counter()
                detector.pretrain(protocol.reference)
                results[name].pretrain_seconds = time.perf_counter() - started
            for index, case in enumerate(protocol.cases):
                bar.set_note(f"{name} · {case.name}")
                started = time.perf_counter()
                fit_detector(detector, name, case, protocol.reference)
                results[name].fit_seconds.append(time.perf_counter() - started)
                scores = detector.score(case.values)[case.test_from :]
                results[name].cases.append(CaseScores(case.name, scores, float(detector.threshold_),
                                                      case.test_labels))
                if index == 0:
                    results[name].timing = time_scoring(detector, case.values, settings.window)
                bar.advance()
    return results, skipped


def sensitivity(protocol: Protocol, settings: Settings, hidden: Sequence[int], rates: Sequence[float],
                progress: bool = True) -> dict:
    """The joint AE-LSTM's pooled F1 and ROC-AUC as hidden units, then the learning rate, vary one at a time."""
    grid = [("hidden", h, {"hidden": h}) for h in hidden] + [("learning_rate", r, {"learning_rate": r}) for r in rates]
    out: dict[str, list[dict]] = {"hidden": [], "learning_rate": []}
    with ProgressBar("sensitivity", len(grid) * len(protocol.cases), "fits", enabled=progress,
                     transient=False) as bar:
        for parameter, value, change in grid:
            result = DetectorResult("ae-lstm")
            detector = build("ae-lstm", settings, **change)
            if protocol.reference is not None:
                detector.pretrain(protocol.reference)
            for case in protocol.cases:
                detector.fit(case.normal, reference=protocol.reference)
                scores = detector.score(case.values)[case.test_from :]
                result.cases.append(CaseScores(case.name, scores, float(detector.threshold_), case.test_labels))
                bar.advance()
            pooled = result.pooled()
            out[parameter].append({"value": value,
                                   **{k: pooled[k] for k in ("f1", "roc_auc", "precision", "recall")}})
    return out
