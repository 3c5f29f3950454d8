"""Score a whole series with a bundle (what `aelstm score` prints) and summarise it against labels.

The series is one stream of the bundle's alarm policy, as a device sending these readings one at a time would be in
the server: row t is judged by the policy state learnt from rows < t.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bundle import Bundle
from .data import Series
from .errors import DataError
from .preprocess import sliding_windows
from .runtime import BundleScorer


def score_series(bundle: Bundle, series: Series, *, device: str = "auto", batch_size: int = 4096) -> pd.DataFrame:
    """One row per full window, keyed by the row index of the window's last reading."""
    if tuple(series.feature_names) != bundle.features:
        raise DataError(
            f"{series.name} has features {list(series.feature_names)}, the model expects {list(bundle.features)}"
        )
    scorer = BundleScorer(bundle, device=device)
    windows = sliding_windows(series.values, bundle.window, 1)
    parts = [scorer.score(windows[start : start + batch_size]) for start in range(0, len(windows), batch_size)]
    ends = np.arange(bundle.window - 1, len(series))
    table = pd.DataFrame({"row": ends})
    if series.timestamps is not None:
        table["timestamp"] = series.timestamps[ends]
    table["score"] = np.concatenate([p.score for p in parts])
    table["rec_part"] = np.concatenate([p.rec_part for p in parts])
    table["pred_part"] = np.concatenate([p.pred_part for p in parts])
    alarms, alarm_scores, limits = bundle.policy.run(table[["rec_part", "pred_part"]].to_numpy())
    table["alarm_score"] = alarm_scores
    table["threshold"] = limits
    table["is_anomaly"] = alarms
    if series.labels is not None:
        table["label"] = series.labels[ends]
    return table


def pointwise_counts(flags: np.ndarray, labels: np.ndarray) -> dict:
    """Confusion counts and point-wise precision / recall / F1 (0 where undefined)."""
    flags, labels = np.asarray(flags, bool), np.asarray(labels, bool)
    tp, fp = int((flags & labels).sum()), int((flags & ~labels).sum())
    fn = int((~flags & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def labelled_events(labels: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of consecutive 1 labels."""
    edges = np.diff(np.concatenate([[0], np.asarray(labels, np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True))


def pointwise_report(table: pd.DataFrame, after_row: int = 0) -> str:
    """One line: point-wise figures and how many labelled events got at least one flag (rows ≥ after_row)."""
    part = table[table["row"] >= after_row]
    counts = pointwise_counts(part["is_anomaly"].to_numpy(), part["label"].to_numpy())
    events = labelled_events(part["label"].to_numpy())
    flags = part["is_anomaly"].to_numpy()
    hit = sum(bool(flags[a : b + 1].any()) for a, b in events)
    return (
        f"point-wise precision {counts['precision']:.3f} recall {counts['recall']:.3f} F1 {counts['f1']:.3f} "
        f"(tp {counts['tp']}, fp {counts['fp']}, fn {counts['fn']}); labelled events flagged: {hit}/{len(events)}"
    )
