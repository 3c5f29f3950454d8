"""Choose the shared evaluation settings on SKAB's development runs only (valve1), then write them for the reported
run to use:

    python -m benchmarks.quality.select --dataset skab          # writes benchmarks/results/quality/selection-skab.*
    aelstm evaluate --dataset skab --settings benchmarks/results/quality/selection-skab.json --seeds 3

The grid: threshold method (static POT, streaming SPOT), drift depth, risk and — where `TrainConfig` has it — the
AE-LSTM `patch`. Each detector variant is trained and scored once per development run; every threshold variant
judges those same scores. The held-out runs (valve2, other) are never loaded here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

from aelstm.training.evaluation.cli import DEFAULT_DATA, DEFAULT_OUT, run_settings
from aelstm.training.evaluation.protocols import load_protocol, skab_groups
from aelstm.training.evaluation.report import load_average
from aelstm.training.evaluation.selection import RULE, RULE_HISTORY, aelstm_variants, choose, grid, policies

WINDOW = 16  # as `aelstm evaluate`'s default


def _label(row: dict) -> str:
    return row["policy"] + ("" if row.get("alarms_teach", True) else " (alarms do not teach)")


def reproduce(data: dict) -> str:
    """How a development-run result was made: its command, how long it ran and the machine's load at its start."""
    return (f"Reproduce: `{data['command']}` (ran {data['seconds']:.0f} s; load average at start "
            f"{data['load_at_start']})")


def markdown(data: dict) -> str:
    chosen = data["chosen"]
    out = [f"# Settings selection: {data['dataset']} (development runs only)", "", reproduce(data), "",
           f"Chose on: {', '.join(data['development_groups'])} runs ({len(data['cases'])}: "
           f"{', '.join(data['cases'])}). Never loaded here, reported elsewhere: "
           f"{', '.join(data['held_out_groups'])} runs.", "", f"Rule: {data['rule']}. {data['rule_history']}", "",
           f"**Chosen:** alarm policy {_label(chosen)}, AE-LSTM variant {chosen['aelstm'] or 'defaults'} "
           f"(mean F1 {chosen['mean_f1']:.3f}, mean FAR {100 * chosen['mean_fpr']:.1f} % on the development runs).",
           "", f"For scale: flagging every test row of these runs gives F1 {data['grid'][0]['all_flagged_f1']:.3f}; "
           "best F1 is the highest F1 any threshold reaches (chosen with labels: an upper bound).",
           "", "| Detector | AE-LSTM variant | Policy | F1 | FAR % | best F1 | shipped / best | ROC-AUC | PR-AUC |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in data["grid"]:
        ratio = "–" if r["shipped_over_best"] is None else f"{100 * r['shipped_over_best']:.0f} %"
        out.append(f"| {r['detector']} | {r['aelstm'] or '–'} | {_label(r)} | {r['f1']:.3f} | {100 * r['fpr']:.1f} | "
                   f"{r['best_f1']:.3f} | {ratio} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} |")
    return "\n".join([*out, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["skab"], default="skab")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="two development runs, 3 epochs (a smoke run)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    started, load = time.perf_counter(), load_average()
    torch.set_num_threads(1)
    protocol = load_protocol(args.dataset, args.data_root, quick=args.quick, split="development")
    settings = run_settings(args.dataset, args.quick, args.epochs, WINDOW, args.seed)
    with threadpool_limits(1):
        rows = grid(protocol, settings, policies(), aelstm_variants(), progress=not args.quiet)
    command = " ".join(["python -m benchmarks.quality.select --dataset", args.dataset,
                        *(["--quick"] if args.quick else []), *(["--epochs", str(args.epochs)] if args.epochs else [])])
    data = {"dataset": args.dataset, "command": command, "split": protocol.split,
            "development_groups": list(skab_groups("development")), "held_out_groups": list(skab_groups("held-out")),
            "cases": [c.name for c in protocol.cases], "rule": RULE, "rule_history": RULE_HISTORY, "window": WINDOW,
            "epochs": settings.epochs, "seed": args.seed, "chosen": choose(rows), "grid": rows,
            "seconds": round(time.perf_counter() - started, 1), "load_at_start": load}
    args.output.mkdir(parents=True, exist_ok=True)
    json_path = args.output / f"selection-{args.dataset}.json"
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    (args.output / f"selection-{args.dataset}.md").write_text(markdown(data))
    print(f"wrote {json_path} in {data['seconds']:.0f}s; chosen: {data['chosen']}")


if __name__ == "__main__":
    main()
