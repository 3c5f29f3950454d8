"""PNG figures of an evaluation: ROC and PR curves, F1 at the shipped threshold beside the best F1, a detection
example (paper's Figure 4) and the sensitivity analysis (paper's Figure 5)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from aelstm.core.scoring import labelled_events

from .metrics import curves
from .protocols import Case
from .runner import CaseScores, DetectorResult


def roc_pr(results: dict[str, DetectorResult], path: Path, title: str) -> Path:
    """All detectors' pooled ROC and PR curves (threshold sweep over the margin scores) on one figure."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(12, 5))
    for name, result in results.items():
        labels = np.concatenate([c.labels for c in result.cases])
        if labels.all() or not labels.any():
            continue
        curve = curves(np.concatenate([c.margin for c in result.cases]), labels)
        pooled = result.pooled()
        style = {"lw": 2.2} if name == "ae-lstm" else {"lw": 1.1}
        roc_ax.plot(curve["fpr"], curve["tpr"], label=f"{name} (AUC {pooled['roc_auc']:.3f})", **style)
        pr_ax.plot(curve["recall"], curve["precision"], label=f"{name} (AP {pooled['pr_auc']:.3f})", **style)
    roc_ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {title}")
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"Precision–recall — {title}", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7, loc="lower right" if ax is roc_ax else "lower left")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def shipped_vs_best(report: dict, path: Path) -> Path:
    """Per detector: F1 at its shipped (calibrated) threshold beside the best F1 over all thresholds, means over
    seeds with their sd as error bars."""
    names = list(report["detectors"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 2), 4.5))
    x = np.arange(len(names))
    for offset, key, label in ((-0.2, "f1", "shipped threshold"), (0.2, "best_f1", "best threshold (upper bound)")):
        cells = [report["detectors"][n]["summary"][key] for n in names]
        means = [c["mean"] or 0.0 for c in cells]
        ax.bar(x + offset, means, 0.4, yerr=[c["sd"] or 0.0 for c in cells], capsize=3, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="F1 (test rows pooled)", ylim=(0, 1),
           title=f"{report['dataset']} ({report['split']}): F1 at the shipped vs the best threshold")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def detection_example(case: Case, scores: CaseScores, path: Path, detector: str) -> Path:
    """The case's test rows: min–max scaled sensors, the score with its threshold, labelled windows, flagged rows."""
    values = case.values[case.test_from :]
    span = np.ptp(values, axis=0)
    scaled = (values - values.min(axis=0)) / np.where(span > 0, span, 1.0)
    rows = np.arange(len(values))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, height_ratios=(3, 2))
    for column, name in enumerate(case.feature_names):
        top.plot(rows, scaled[:, column], lw=0.7, label=name)
    for ax in (top, bottom):
        for first, last in labelled_events(scores.labels):
            ax.axvspan(first, last, color="tab:red", alpha=0.12, lw=0)
    bottom.plot(rows, scores.scores, color="black", lw=0.8, label=f"{detector} score")
    bottom.axhline(scores.threshold, color="tab:orange", ls="--", lw=1.2, label="initial threshold (normal data)")
    flagged = np.flatnonzero(scores.flags)
    bottom.scatter(flagged, scores.scores[flagged], s=6, color="tab:red", zorder=3, label="flagged")
    if np.nanmin(scores.scores) > 0:
        bottom.set_yscale("log")
    top.set(ylabel="sensor (scaled)", title=f"{case.name}: labelled anomalies shaded")
    bottom.set(xlabel="test row", ylabel="anomaly score")
    top.legend(fontsize=6, ncol=4, loc="upper left")
    bottom.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def sensitivity(results: dict[str, list[dict]], path: Path, title: str) -> Path:
    """F1 and ROC-AUC of the joint model against hidden units and against the learning rate."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (parameter, label) in zip(axes, (("hidden", "hidden units"), ("learning_rate", "learning rate")),
                                      strict=True):
        rows = results[parameter]
        x = [r["value"] for r in rows]
        ax.plot(x, [r["f1"] for r in rows], marker="o", label="F1")
        ax.plot(x, [r["roc_auc"] for r in rows], marker="s", label="ROC-AUC")
        ax.set_xscale("log", base=2 if parameter == "hidden" else 10)
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set(xlabel=label, ylim=(0, 1), title=f"{title}: {label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
