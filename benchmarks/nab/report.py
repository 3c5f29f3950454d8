"""The served-alarms NAB report: served.md and served.png from served.json's dict.

    python -m benchmarks.nab.report benchmarks/results/nab/served.json     # re-render without rescoring
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from aelstm.core.policy import Policy
from aelstm.training.nab.scoring import PROFILES

PROFILE_TITLES = {"standard": "standard", "reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}
SUBSETS = (("held_out", "**held-out**"), ("development", "development (chose the policy)"), ("full", "full corpus"))
REFERENCES = [  # the published NAB v1.1 scoreboard (full corpus, scoreboard-optimised): standard / low FP / low FN
    ("ARTime", 74.9, 65.1, 80.4),
    ("Numenta HTM", 70.5, 62.6, 75.2),
    ("Numenta HTM without its likelihood", 52.5, None, None),
    ("Random Cut Forest", 51.7, None, None),
    ("Windowed Gaussian", 39.6, None, None),
    ("null", 0.0, 0.0, 0.0),
]
TARGETS = {"standard": 60.0, "reward_low_FP_rate": 50.0, "reward_low_FN_rate": 65.0}  # held-out half


def _scores(result: dict, subset: str, profile: str) -> list[float]:
    return [run[subset][profile]["score"] for run in result["runs"]]


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def markdown(result: dict) -> str:
    seeds = ",".join(str(s) for s in result["seeds"])
    lines = [
        "# NAB v1.1 on the alarms the server returns",
        "",
        f"Reproduce: `{result['command']}` ({result['wall_seconds'] / 60:.1f} min; `uptime` at start: "
        f"`{result['uptime']}`).",
        "",
        "One model per file, trained as `aelstm train` would on the file's probationary rows (model "
        f"{result['model']}); each file is one device of a fleet of its own, replayed through an in-process "
        "`aelstm serve` over gRPC as `readings` items in time order with their timestamps, from the row whose window "
        "ends at the end of the probation. **NAB scores the binary alarm the server returned for each row**; no "
        "threshold is optimised on any scored file, and no model learns online (that is the retraining loop's job). "
        f"The development half ({result['development_files']} files) chose the alarm policy from a grid declared "
        f"before any run; the held-out half ({result['held_out_files']} files) is reported. Each subset is "
        "normalised with its own null and perfect detector, as NAB normalises a corpus.",
        "",
        f"**Chosen on development:** `{result['chosen']}` (rule: best development standard score, seed "
        f"{result['seeds'][0]}; the first declared among ties). {result.get('grid_history', '')}",
        "",
        f"## Scores (mean ± sd over seeds {seeds})",
        "",
        "| subset | " + " | ".join(PROFILE_TITLES.values()) + " |",
        "|---|---|---|---|",
    ]
    for subset, title in SUBSETS:
        lines.append(f"| {title} | " + " | ".join(_cell(_scores(result, subset, p.name)) for p in PROFILES) + " |")
    met = {name: np.mean(_scores(result, "held_out", name)) >= target for name, target in TARGETS.items()}
    lines += ["", "Targets on the held-out half: " + ", ".join(
        f"{PROFILE_TITLES[name]} ≥ {target:g} ({'met' if met[name] else 'not met'})"
        for name, target in TARGETS.items()) + ".", ""]
    lines += ["Anchors, full corpus, scoreboard-style (thresholds optimised on the scored files, so optimistic): "
              + "; ".join(f"{name} {std:g}" for name, std, *_ in REFERENCES) + ".", ""]
    lines += ["## Checks", ""]
    for run in result["runs"]:
        differs = run["files_where_served_differs_from_offline"]
        lines.append(f"- seed {run['seed']}: {run['rows_judged']} rows judged by the server, "
                     f"{run['rows_warming_up']} rows warming up again after a gap in the timestamps; the served "
                     f"alarms equal the same policy run offline over the served scores on "
                     f"{result['development_files'] + result['held_out_files'] - len(differs)} of "
                     f"{result['development_files'] + result['held_out_files']} files"
                     + (f" (differs: {', '.join(differs)})" if differs else "")
                     + f"; median training time {run['median_train_seconds']:.1f} s per file.")
    lines += ["", "## The development grid (seed 0; held-out never looked at here)", "",
              "| policy | standard | low FP | low FN | alarms |", "|---|---|---|---|---|"]
    for row in result["development_grid"]:
        mark = " **← chosen**" if Policy.parse(row["policy"]).spec == result["chosen"] else ""
        cells = " | ".join(f"{row['profiles'][p.name]['score']:.1f}" for p in PROFILES)
        lines.append(f"| `{row['policy']}`{mark} | {cells} | {row['alarms']} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = [p.name for p in PROFILES]
    x = np.arange(len(names))
    for offset, (subset, title) in zip((-0.25, 0.0, 0.25), SUBSETS, strict=True):
        means = [np.mean(_scores(result, subset, n)) for n in names]
        errors = [np.std(_scores(result, subset, n), ddof=1) if len(result["runs"]) > 1 else 0 for n in names]
        ax.bar(x + offset, means, 0.25, yerr=errors, capsize=3, label=title.strip("*"))
    for name, target in TARGETS.items():
        i = names.index(name)
        ax.hlines(target, i - 0.4, i + 0.4, colors="black", linestyles="--", lw=1,
                  label="held-out target" if i == 0 else None)
    ax.set_xticks(x, [PROFILE_TITLES[n] for n in names])
    ax.set_ylabel("NAB score (served alarms)")
    ax.set_title(f"NAB on served alarms: {result['chosen']}", fontsize=9)
    ax.set_ylim(top=max(TARGETS.values()) + 30)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="served.json")
    args = parser.parse_args(argv)
    result = json.loads(args.summary.read_text())
    args.summary.with_suffix(".md").write_text(markdown(result))
    plot(result, args.summary.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
