"""Metrics on hand-made cases whose answers can be worked out on paper."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.training.evaluation.metrics import (
    all_metrics,
    events,
    point_adjusted_f1,
    pointwise,
    ranking,
    shipped_over_best,
)

LABELS = np.array([0, 0, 1, 1, 1, 0, 0, 1, 1, 0])


def test_pointwise_counts_and_rates():
    flags = np.array([0, 1, 0, 1, 1, 0, 0, 0, 1, 0])
    m = pointwise(flags, LABELS)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 4, 2)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert m["fpr"] == pytest.approx(0.2)
    assert m["fnr"] == pytest.approx(0.4)


def test_pointwise_without_flags_is_zero_not_nan():
    m = pointwise(np.zeros(10, bool), LABELS)
    assert (m["precision"], m["recall"], m["f1"]) == (0.0, 0.0, 0.0)


def test_ranking_perfect_inverted_and_single_class():
    scores = LABELS.astype(float)
    assert ranking(scores, LABELS) == {"roc_auc": 1.0, "pr_auc": 1.0, "best_f1": 1.0}
    assert ranking(-scores, LABELS)["roc_auc"] == 0.0
    assert ranking(scores, np.zeros(10)) == {"roc_auc": None, "pr_auc": None, "best_f1": None}


def test_best_f1_is_the_best_threshold_and_shipped_is_judged_against_it():
    """Scores rank 4 of the 5 anomalies on top, then a normal row, then the fifth anomaly: the best threshold keeps
    the top 6 (precision 5/6, recall 1, F1 10/11); a shipped threshold that flags only the top 2 reaches 4/7."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.35, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    flags = scores > 0.75
    m = all_metrics(scores, flags, labels)
    assert m["best_f1"] == pytest.approx(10 / 11)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["shipped_over_best"] == pytest.approx((4 / 7) / (10 / 11))
    assert m["all_flagged_f1"] == pytest.approx(2 * 0.5 / 1.5)
    assert shipped_over_best(0.5, None) is None and shipped_over_best(0.0, 0.0) is None


def test_nan_scores_rank_lowest():
    scores = np.array([np.nan, np.nan, 5, 6, 7, 1, 2, 8, 9, 0.5])
    assert ranking(scores, LABELS)["roc_auc"] == 1.0


def test_events_recall_and_delay():
    flags = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    m = events(flags, LABELS)
    assert (m["events"], m["events_detected"], m["event_recall"], m["mean_delay_rows"]) == (2, 1, 0.5, 2.0)


def test_events_do_not_join_across_segments():
    labels = np.array([0, 1, 1, 1, 0])
    flags = np.array([0, 0, 0, 1, 0])
    assert events(flags, labels)["events"] == 1
    m = events(flags, labels, starts=[0, 3])
    assert (m["events"], m["events_detected"]) == (2, 1)


def test_point_adjusted_f1_fills_found_events_only():
    flags = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    assert pointwise(flags, LABELS)["f1"] == pytest.approx(2 / 6)
    assert point_adjusted_f1(flags, LABELS) == pytest.approx(6 / 8)  # tp 3, fn 2, fp 0


def test_all_metrics_has_every_reported_key():
    m = all_metrics(LABELS.astype(float), LABELS > 0, LABELS)
    for key in ("accuracy", "precision", "recall", "f1", "fp", "fn", "fpr", "fnr", "roc_auc", "pr_auc",
                "event_recall", "mean_delay_rows", "point_adjusted_f1"):
        assert key in m
    assert m["f1"] == 1.0 and m["mean_delay_rows"] == 0.0
