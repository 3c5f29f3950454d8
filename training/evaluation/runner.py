"""Run detectors over a protocol's cases: fit, score, judge, and time scoring the same way for every detector."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from aelstm.core.policy import Policy
from aelstm.core.progress import ProgressBar

from ..detectors.base import Detector
from .lineup import AELSTM_FAMILY, SUPERVISED, Settings, build
from .metrics import all_metrics
from .protocols import Case, Protocol

TIMING_BATCH = 64


@dataclass
class CaseScores:
    """A detector's output on one case's test rows: scores, the initial (shipped) threshold and the alarms its
    alarm policy raised over the whole series (a streaming policy learns along it)."""

    case: str
    scores: np.ndarray
    threshold: float
    flags: np.ndarray
    labels: np.ndarray

    @property
    def margin(self) -> np.ndarray:
        """Score minus the case's own initial threshold: comparable across per-case models when pooling."""
        return self.scores - self.threshold


@dataclass
class DetectorResult:
    name: str
    policy: Policy
    seed: int = 0
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


def run_cases(protocol: Protocol, name: str, detector: Detector, policies: Sequence[Policy],
              bar: ProgressBar, seed: int = 0, timing_window: int | None = None) -> list[DetectorResult]:
    """Fit and score `detector` once per case, then judge those same terms with every alarm policy (one result
    each): policy-only variants never retrain. Alarms are `detector.flags` over the case's whole series from its
    first row — `predict` without scoring twice. With `timing_window`, scoring is timed on the first case."""
    results = [DetectorResult(name, policy, seed) for policy in policies]
    pretrain_seconds = 0.0
    if protocol.reference is not None:
        bar.set_note(f"{name} · pre-training")
        started = time.perf_counter()
        detector.pretrain(protocol.reference)
        pretrain_seconds = time.perf_counter() - started
    for index, case in enumerate(protocol.cases):
        bar.set_note(f"{name} seed {seed} · {case.name}")
        started = time.perf_counter()
        fit_detector(detector, name, case, protocol.reference)
        fit_seconds = time.perf_counter() - started
        terms = detector.score_terms(case.values)
        scores = terms.sum(axis=1)
        for result, policy in zip(results, policies, strict=True):
            detector.calibrate(policy)
            result.fit_seconds.append(fit_seconds)
            result.pretrain_seconds = pretrain_seconds
            result.cases.append(CaseScores(case.name, scores[case.test_from :], float(detector.threshold_),
                                           detector.flags(terms)[case.test_from :], case.test_labels))
        if index == 0 and timing_window is not None:
            timing = time_scoring(detector, case.values, timing_window)
            for result in results:
                result.timing = timing
        bar.advance()
    return results


def evaluate(protocol: Protocol, names: Sequence[str], settings: Settings, progress: bool = True, seeds: int = 1,
             ) -> tuple[dict[str, list[DetectorResult]], dict[str, str]]:
    """Fit and score every runnable detector on every case (a model per case, pre-trained once on the protocol's
    reference run where it has one), the AE-LSTM family once per seed (`settings.seed`, +1, …); returns each
    detector's results (one per seed) and the skips."""
    skipped = {n: reason for n in names if (reason := skip_reason(n, protocol))}
    runs = [(n, settings.seed + i) for n in names if n not in skipped
            for i in range(seeds if n in AELSTM_FAMILY else 1)]
    results: dict[str, list[DetectorResult]] = {n: [] for n, _ in runs}
    with ProgressBar(f"evaluate {protocol.dataset}", len(runs) * len(protocol.cases), "fits",
                     enabled=progress, transient=False) as bar:
        for name, seed in runs:
            seeded = replace(settings, seed=seed)
            (result,) = run_cases(protocol, name, build(name, seeded), [settings.policy], bar, seed,
                                  timing_window=settings.window)
            results[name].append(result)
    return results, skipped


def sensitivity(protocol: Protocol, settings: Settings, hidden: Sequence[int], rates: Sequence[float],
                progress: bool = True) -> dict:
    """The joint AE-LSTM's pooled F1 and ROC-AUC as hidden units, then the learning rate, vary one at a time."""
    grid = [("hidden", h, {"hidden": h}) for h in hidden] + [("learning_rate", r, {"learning_rate": r}) for r in rates]
    out: dict[str, list[dict]] = {"hidden": [], "learning_rate": []}
    with ProgressBar("sensitivity", len(grid) * len(protocol.cases), "fits", enabled=progress,
                     transient=False) as bar:
        for parameter, value, change in grid:
            detector = build("ae-lstm", settings, **change)
            (result,) = run_cases(protocol, "ae-lstm", detector, [settings.policy], bar, settings.seed)
            pooled = result.pooled()
            out[parameter].append({"value": value,
                                   **{k: pooled[k] for k in ("f1", "roc_auc", "precision", "recall")}})
    return out
