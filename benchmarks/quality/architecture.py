"""Architecture settings of the joint AE-LSTM, tried on SKAB's development runs only (valve1):

    python -m benchmarks.quality.architecture      # writes benchmarks/results/quality/architecture-skab.{json,md}

Each variant changes the shipped AE-LSTM variant of `selection-skab.json` in the fields it names (latent size,
hidden size, LSTM depth, patch length, early-stopping patience); every one is judged with that file's chosen alarm
policy, over several seeds, beside windowed PCA and isolation forest in the same run. The held-out runs (valve2,
other) are never loaded here.

The rule, declared before the first run: a variant joins the selection grid (`training.evaluation.selection`, which
chooses the shipped settings) only when its mean ROC-AUC and its mean PR-AUC are both ahead of the shipped variant's
by more than two standard errors of the difference. Ranking comes first because thresholds are the selection's job.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from aelstm.training.evaluation.cli import DEFAULT_DATA, DEFAULT_OUT, run_settings
from aelstm.training.evaluation.protocols import load_protocol
from aelstm.training.evaluation.report import load_average, mean_sd, pm
from aelstm.training.evaluation.selection import grid
from benchmarks.harness import write_report
from benchmarks.quality.select import reproduce

WINDOW = 16  # as `aelstm evaluate`'s default
SELECTION = DEFAULT_OUT / "selection-skab.json"
VARIANTS = ({}, {"latent": 2}, {"latent": 4}, {"latent": 8}, {"hidden": 32, "latent": 4}, {"lstm_layers": 1},
            {"lstm_layers": 3}, {"patch": 4, "latent": 8}, {"patch": 8}, {"patch": 15}, {"patience": 50},
            {"patch": 8, "patience": 50})
FIGURES = ("f1", "fpr", "roc_auc", "pr_auc", "median_fit_seconds")
RULE = ("a variant joins the selection grid only when its mean ROC-AUC and mean PR-AUC over seeds are both ahead "
        "of the shipped variant's by more than two standard errors of the difference")


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and sd over seeds of each (detector, variant)'s figures, in the order first seen."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row["detector"], row["aelstm"]]), []).append(row)
    summary = []
    for same in groups.values():
        entry = {"detector": same[0]["detector"], "aelstm": same[0]["aelstm"], "seeds": len(same)}
        for key in FIGURES:
            entry[key] = mean_sd([r[key] for r in same])
        summary.append(entry)
    return summary


def ahead(variant: dict, shipped: dict, key: str) -> bool:
    """Whether `variant`'s mean `key` beats `shipped`'s by more than two standard errors of the difference."""
    a, b = variant[key], shipped[key]
    se = math.sqrt((a["sd"] or 0.0) ** 2 / variant["seeds"] + (b["sd"] or 0.0) ** 2 / shipped["seeds"])
    return variant["seeds"] > 1 and a["mean"] - b["mean"] > 2 * se


def judge(summary: list[dict]) -> list[dict]:
    """Each AE-LSTM variant with whether the rule lets it into the selection grid."""
    family = [s for s in summary if s["detector"] == "ae-lstm"]
    shipped = next(s for s in family if not s["aelstm"])
    for entry in family:
        entry["joins_grid"] = bool(entry["aelstm"]) and all(ahead(entry, shipped, k) for k in ("roc_auc", "pr_auc"))
    return summary


def markdown(data: dict) -> str:
    joined = [s["aelstm"] for s in data["summary"] if s.get("joins_grid")]
    out = [f"# AE-LSTM architecture on {data['dataset']} (development runs only)", "", reproduce(data), "",
           f"Development runs ({len(data['cases'])}): {', '.join(data['cases'])}; seeds {data['seeds']}; every "
           f"variant changes the shipped one ({data['shipped']}) in the fields named and is judged with the chosen "
           f"policy `{data['policy']}`.", "", f"Rule (declared before the run): {data['rule']}.", "",
           f"**Joins the selection grid:** {', '.join(map(str, joined)) if joined else 'none'}.", "",
           "| detector | variant | F1 | FAR % | ROC-AUC | PR-AUC | median fit s | joins the grid |",
           "|---|---|---|---|---|---|---|---|"]
    for s in data["summary"]:
        verdict = "–" if "joins_grid" not in s else "shipped" if not s["aelstm"] else \
            "yes" if s["joins_grid"] else "no"
        out.append(f"| {s['detector']} | {s['aelstm'] or '–'} | {pm(s['f1'])} | {pm(s['fpr'], 1, 100)} | "
                   f"{pm(s['roc_auc'])} | {pm(s['pr_auc'])} | {s['median_fit_seconds']['mean']:.2f} | "
                   f"{verdict} |")
    return "\n".join([*out, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 [3]")
    parser.add_argument("--quick", action="store_true", help="two development runs, 3 epochs, one seed (a smoke run)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    started, load = time.perf_counter(), load_average()
    torch.set_num_threads(1)
    protocol = load_protocol("skab", args.data_root, quick=args.quick, split="development")
    settings = run_settings("skab", args.quick, None, WINDOW, 0, SELECTION)
    seeds = list(range(1 if args.quick else args.seeds))
    rows = []
    with threadpool_limits(1):
        for seed in seeds:
            rows += grid(protocol, replace(settings, seed=seed), [settings.policy], VARIANTS, progress=not args.quiet)
    data = {"dataset": "skab", "command": "python -m benchmarks.quality.architecture"
            + (" --quick" if args.quick else f" --seeds {args.seeds}"), "split": protocol.split,
            "cases": [c.name for c in protocol.cases], "seeds": seeds, "shipped": settings.aelstm,
            "policy": settings.policy.spec, "rule": RULE, "summary": judge(summarise(rows)), "rows": rows,
            "seconds": round(time.perf_counter() - started, 1), "load_at_start": load}
    text = markdown(data)
    write_report(args.output, "architecture-skab", data, text, indent=1)
    print(text)


if __name__ == "__main__":
    main()
