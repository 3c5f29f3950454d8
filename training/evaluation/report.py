"""Turn evaluation results into the committed JSON and the markdown report (paper's Table 5/6 layout first)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .protocols import Protocol
from .runner import DetectorResult

# The seed paper reports only its joint model's figures in a form we can quote; it states that the joint model beats
# the rows below without figures we could verify, so those cells stay empty rather than invented.
PAPER_JOINT = {"accuracy": 0.975, "precision": 0.958, "recall": 0.962, "f1": 0.960}
PAPER_MS = 75.0
PAPER_ROWS = (
    ("SVM (one-class, normal data)", "ocsvm"),
    ("SVM (supervised SVC)", "svc"),
    ("Random Forest (supervised)", "random-forest"),
    ("LSTM only", "lstm-only"),
    ("AE only", "ae-only"),
    ("AE → LSTM, trained separately", "ae-then-lstm"),
    ("Joint AE-LSTM (co-trained)", "ae-lstm"),
)
EXTRA_ROWS = ("isolation-forest", "pca", "zscore", "ae-lstm-untrained", "random")
ABLATIONS = ("ae-only", "lstm-only", "ae-then-lstm")
SKAB_LEADERBOARD = (("Conv-AE (leaderboard best)", 0.78, 13.55, 28.02), ("LSTM-AE", 0.74, 29.96, 25.92),
                    ("Isolation forest", 0.29, 2.56, 82.89))
SKAB_TARGET = {"f1": 0.78, "far_percent": 13.6}
F1_TIE = 0.005  # F1 gaps this small are within run-to-run noise: reported as a tie, not a win


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def build_json(protocol: Protocol, results: dict[str, DetectorResult], skipped: dict[str, str], settings: dict,
               sensitivity: dict | None, command: str, seconds: float) -> dict:
    detectors = {
        name: {
            "pooled": r.pooled(),
            "per_case": r.per_case(),
            "fit_seconds_total": r.pretrain_seconds + float(np.sum(r.fit_seconds)),
            "pretrain_seconds": r.pretrain_seconds,
            "timing": r.timing,
        }
        for name, r in results.items()
    }
    return {
        "dataset": protocol.dataset,
        "command": command,
        "protocol": protocol.description,
        "notes": protocol.notes,
        "cases": [c.name for c in protocol.cases],
        "settings": settings,
        "detectors": detectors,
        "skipped": skipped,
        "sensitivity": sensitivity,
        "paper": {"joint_ae_lstm": PAPER_JOINT, "processing_ms": PAPER_MS},
        "seconds": round(seconds, 1),
    }


def _targets(report: dict) -> list[str]:
    pooled = {name: d["pooled"] for name, d in report["detectors"].items()}
    lines = []
    if "ae-lstm" in pooled:
        joint = pooled["ae-lstm"]
        for name in ABLATIONS:
            if name in pooled:
                other = pooled[name]
                gap = joint["f1"] - other["f1"]
                verdict = "beats" if gap > F1_TIE else "ties with" if gap >= -F1_TIE else "does NOT beat"
                lines.append(f"- Joint AE-LSTM {verdict} {name} on F1 ({joint['f1']:.3f} vs {other['f1']:.3f}; "
                             f"ROC-AUC {_num(joint['roc_auc'])} vs {_num(other['roc_auc'])}).")
        if report["dataset"].startswith("skab"):
            ok = joint["f1"] > SKAB_TARGET["f1"] and 100 * joint["fpr"] <= SKAB_TARGET["far_percent"]
            lines.insert(0, f"- SKAB target (F1 > {SKAB_TARGET['f1']} with FAR ≤ {SKAB_TARGET['far_percent']}%): "
                            f"{'MET' if ok else 'NOT met'} — joint AE-LSTM F1 {joint['f1']:.3f}, "
                            f"FAR {_pct(joint['fpr'])}%, MAR {_pct(joint['fnr'])}%.")
    return lines


def markdown(report: dict) -> str:
    pooled = {name: d["pooled"] for name, d in report["detectors"].items()}
    out = [f"# Detection quality: {report['dataset']}", "", f"Reproduce: `{report['command']}` "
           f"(ran {report['seconds']:.0f} s)", "", report["protocol"], ""]
    out += [f"- {note}" for note in report["notes"]]
    out += ["", "Thresholds are each detector's own calibration on training/validation data (never test labels); "
            "ROC-AUC and PR-AUC sweep all thresholds over the scores (pooled as the margin over each model's own "
            "threshold).", ""]

    out += ["## Summary (the paper's Table 5/6 layout)", "",
            "| Method | Accuracy % | Precision % | Recall % | F1 % | paper: Accuracy / Precision / Recall / F1 % |",
            "|---|---|---|---|---|---|"]
    for label, name in PAPER_ROWS:
        claim = " / ".join(f"{100 * PAPER_JOINT[k]:.1f}" for k in ("accuracy", "precision", "recall", "f1"))
        paper = claim if name == "ae-lstm" else "claimed below the joint model"
        if name in pooled:
            m = pooled[name]
            out.append(f"| {label} | {_pct(m['accuracy'])} | {_pct(m['precision'])} | {_pct(m['recall'])} | "
                       f"{_pct(m['f1'])} | {paper} |")
        elif name in report["skipped"]:
            out.append(f"| {label} | n/a | n/a | n/a | n/a | {paper} |")
    out += ["", "n/a: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items()) if report["skipped"] else "", ""]

    targets = _targets(report)
    if targets:
        out += ["## Targets and the joint model against its ablations", "", *targets, ""]

    out += ["## All detectors, all metrics (test rows pooled)", "",
            "| Detector | F1 | FAR % | MAR % | Precision | Recall | Accuracy | FP | FN | ROC-AUC | PR-AUC | "
            "Event recall | Mean delay (rows) | Point-adjusted F1 (inflated, for reference only) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = [n for _, n in PAPER_ROWS] + list(EXTRA_ROWS)
    for name in [n for n in order if n in pooled]:
        m = pooled[name]
        out.append(f"| {name} | {m['f1']:.3f} | {_pct(m['fpr'])} | {_pct(m['fnr'])} | {m['precision']:.3f} | "
                   f"{m['recall']:.3f} | {m['accuracy']:.3f} | {m['fp']} | {m['fn']} | {_num(m['roc_auc'])} | "
                   f"{_num(m['pr_auc'])} | {m['events_detected']}/{m['events']} | {_num(m['mean_delay_rows'], 1)} | "
                   f"{m['point_adjusted_f1']:.3f} |")
    out.append("")

    if report["dataset"].startswith("skab"):
        out += ["## Against SKAB's published leaderboard (test rows: each run after its first 400)", "",
                "| Algorithm | F1 | FAR % | MAR % |", "|---|---|---|---|"]
        out += [f"| {name} (published) | {f1} | {far} | {mar} |" for name, f1, far, mar in SKAB_LEADERBOARD]
        out += [f"| {name} (measured here) | {pooled[name]['f1']:.2f} | {_pct(pooled[name]['fpr'])} | "
                f"{_pct(pooled[name]['fnr'])} |" for name in order if name in pooled]
        out += ["", "Published rows use SKAB's own detectors and settings; our rows score every test row causally.", ""]

    if len(report["cases"]) > 1 and not report["dataset"].startswith("skab"):
        names = [n for n in order if n in pooled]
        out += ["## F1 per case", "", "| Case | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for case in report["cases"]:
            out.append(f"| {case} | " + " | ".join(
                f"{report['detectors'][n]['per_case'][case]['f1']:.3f}" for n in names) + " |")
        out.append("")

    out += ["## Processing time (median of repeated runs, one batch of 64 windows through `score`)", "",
            "| Detector | ms per batch of 64 | ms per window | fit s (all cases, pre-training included) |",
            "|---|---|---|---|"]
    for name in [n for n in order if n in pooled]:
        d = report["detectors"][name]
        out.append(f"| {name} | {d['timing']['ms_per_batch']:.2f} | {d['timing']['ms_per_window']:.3f} | "
                   f"{d['fit_seconds_total']:.1f} |")
    out += ["", f"The paper claims {PAPER_MS:.0f} ms processing time; measured here on a shared 2-core CPU, "
            "one thread.", ""]

    if report["sensitivity"]:
        out += ["## Sensitivity of the joint AE-LSTM (one parameter at a time, others at defaults)", "",
                "| Parameter | Value | F1 | ROC-AUC |", "|---|---|---|---|"]
        for parameter, rows in report["sensitivity"]["results"].items():
            out += [f"| {parameter} | {r['value']:g} | {r['f1']:.3f} | {_num(r['roc_auc'])} |" for r in rows]
        out += ["", report["sensitivity"]["cases_note"], ""]

    figures = report.get("figures", [])
    if figures:
        out += ["## Figures", "", *[f"![{Path(f).stem}]({Path(f).name})" for f in figures], ""]
    return "\n".join(out)


def summary_lines(report: dict) -> list[str]:
    """A few console lines: each detector's headline figures, then where the targets stand."""
    lines = []
    for name, d in report["detectors"].items():
        m = d["pooled"]
        lines.append(f"{name:>18}: F1 {m['f1']:.3f}  FAR {_pct(m['fpr'])}%  MAR {_pct(m['fnr'])}%  "
                     f"ROC-AUC {_num(m['roc_auc'])}  {d['timing']['ms_per_batch']:.1f} ms/64 windows")
    return lines + _targets(report)


def write(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{report['dataset']}.json", out_dir / f"{report['dataset']}.md"
    json_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    md_path.write_text(markdown(report))
    return json_path, md_path
