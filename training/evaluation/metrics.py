"""Detection metrics on scored rows: point-wise, threshold-free (ROC / PR), event-wise and point-adjusted.

Point-wise figures use the detector's own calibrated flags (the shipped threshold). ROC-AUC and PR-AUC sweep every
threshold over the scores, so they say how well the scores rank rows, not how well the threshold was chosen; the
best F1 over that sweep, beside the shipped F1, says how much the threshold itself gives away. The point-adjusted F1
(a whole labelled event counts as found once any row of it is flagged) is known to inflate results; it is only
reported next to the unadjusted F1 and labelled as such.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from aelstm.core.scoring import labelled_events


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def pointwise(flags: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, precision, recall, F1 and the confusion counts with FPR (false alarm rate) and FNR (missed)."""
    labels, flags = np.asarray(labels, bool), np.asarray(flags, bool)
    tn, fp, fn, tp = (int(x) for x in confusion_matrix(labels, flags, labels=[False, True]).ravel())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, len(labels)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, fn + tp),
    }


def ranking(scores: np.ndarray, labels: np.ndarray) -> dict:
    """ROC-AUC, PR-AUC (average precision) and the best F1 over all thresholds; None when only one class is
    present."""
    labels, scores = np.asarray(labels, bool), _finite_scores(scores)
    if labels.all() or not labels.any():
        return {"roc_auc": None, "pr_auc": None, "best_f1": None}
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return {"roc_auc": float(roc_auc_score(labels, scores)), "pr_auc": float(average_precision_score(labels, scores)),
            "best_f1": float(f1.max())}


def all_flagged_f1(labels: np.ndarray) -> float:
    """F1 of flagging every row, 2p / (1 + p) for an anomalous share p: where anomalies are a large share of the
    rows, the best F1 over thresholds can be little more than this."""
    share = float(np.mean(np.asarray(labels, bool))) if len(labels) else 0.0
    return 2 * share / (1 + share)


def shipped_over_best(f1: float, best_f1: float | None) -> float | None:
    """The shipped threshold's F1 as a share of the best F1 any threshold on these scores reaches."""
    return f1 / best_f1 if best_f1 else None


def curves(scores: np.ndarray, labels: np.ndarray) -> dict:
    """ROC (fpr, tpr) and PR (recall, precision) curves for the figures."""
    labels, scores = np.asarray(labels, bool), _finite_scores(scores)
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    return {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall}


def _runs(labels: np.ndarray, starts: Sequence[int]) -> list[tuple[int, int]]:
    """Labelled runs, never joined across the start of a new segment (e.g. the next file of a pooled dataset)."""
    bounds = [*sorted({0, *starts}), len(labels)]
    return [(a + lo, b + lo) for lo, hi in itertools.pairwise(bounds) for a, b in labelled_events(labels[lo:hi])]


def events(flags: np.ndarray, labels: np.ndarray, starts: Sequence[int] = ()) -> dict:
    """Event-wise recall (labelled runs with ≥ 1 flag inside) and mean delay in rows from a run's start to its
    first flag, over the runs found. `starts` are the first rows of pooled segments."""
    flags = np.asarray(flags, bool)
    runs = _runs(np.asarray(labels), starts)
    delays = [int(np.argmax(flags[a : b + 1])) for a, b in runs if flags[a : b + 1].any()]
    return {
        "events": len(runs),
        "events_detected": len(delays),
        "event_recall": _ratio(len(delays), len(runs)),
        "mean_delay_rows": float(np.mean(delays)) if delays else None,
    }


def point_adjusted_f1(flags: np.ndarray, labels: np.ndarray, starts: Sequence[int] = ()) -> float:
    """F1 after the point-adjustment convention: every row of a labelled run counts as flagged once any is."""
    adjusted = np.asarray(flags, bool).copy()
    for a, b in _runs(np.asarray(labels), starts):
        if adjusted[a : b + 1].any():
            adjusted[a : b + 1] = True
    return pointwise(adjusted, labels)["f1"]


def all_metrics(scores: np.ndarray, flags: np.ndarray, labels: np.ndarray, starts: Sequence[int] = ()) -> dict:
    """Every figure the quality report lists for one detector on one set of (possibly pooled) scored rows."""
    shipped, ranked = pointwise(flags, labels), ranking(scores, labels)
    return {
        **shipped,
        **ranked,
        "shipped_over_best": shipped_over_best(shipped["f1"], ranked["best_f1"]),
        "all_flagged_f1": all_flagged_f1(labels),
        **events(flags, labels, starts),
        "point_adjusted_f1": point_adjusted_f1(flags, labels, starts),
    }


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    """NaN (not yet scorable) ranks below every real score; ±inf is clipped to the finite range."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    low = finite.min() - 1.0 if finite.size else 0.0
    high = finite.max() if finite.size else 0.0
    return np.nan_to_num(scores, nan=low, neginf=low, posinf=high)
