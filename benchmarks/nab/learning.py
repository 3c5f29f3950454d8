"""NAB on the alarms the server returns while its retraining loop keeps learning, against the same without learning.

    python -m benchmarks.nab.learning --seeds 0            # development chooses the cadence, held-out reported
    python -m benchmarks.nab.learning --seeds 0 --quick    # a smoke run on a few files

Models, policy and replay are `benchmarks.nab.served`'s: one model per file trained on its probationary rows, each
file one device of a fleet of its own, replayed through an in-process `aelstm serve`, NAB scoring the binary alarm
the server returned for each row. With learning, the server records every device's readings it judged normal and,
after every N readings of each device, runs its retraining loop's body (`RetrainLoop.retrain_once`: `aelstm
retrain` in its own process, the fleet's own configuration, the publishing gate), then serves what was published
before the next readings are sent; a model only ever sees readings already scored, and readings inside alarms are
never trained on.

The alarm policy is the one the development half chose without learning (`--policy`; by default the committed
`served.json`'s choice). The development half (first seed) chooses the cadence N from `CADENCES`, declared before
any run, by standard score; the held-out half is reported with that cadence and without learning, in one run.
Writes `<out>/learning.json` and `learning.md`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aelstm.core.errors import AelstmError
from aelstm.core.policy import Policy
from aelstm.training.nab.scoring import PROFILES

from ..harness import uptime, write_report
from .report import PROFILE_TITLES, TARGETS
from .served import (
    MODEL,
    Learning,
    Replayed,
    command_line,
    corpus_parser,
    halves,
    nab_scores,
    replay_together,
    train_all,
    with_policy,
)

# Readings per device between retraining runs: 3.5, 7 and 14 days of a sensor read every 5 minutes (most NAB files).
CADENCES = (1000, 2000, 4000)


def learning_at(every: int) -> Learning:
    """A cadence's loop: a fleet retrains once it has half a cadence of new normal readings (a file's tail)."""
    return Learning(every=every, min_rows=every // 2)


def retraining_summary(*replays: Replayed) -> dict:
    """How the loop's runs went: fleets published, kept aside by the gate, skipped, failed; fit time."""
    runs = [run for replayed in replays for run in replayed.retraining]
    outcomes = [o for run in runs for o in run["outcomes"]]
    counts = {status: sum(o["status"] == status for o in outcomes)
              for status in ("published", "kept aside", "skipped", "failed")}
    seconds = [o["seconds"] for o in outcomes if o.get("seconds") is not None]
    return {"runs": len(runs), **counts,
            "median_fit_seconds": float(np.median(seconds)) if seconds else None,
            "fit_seconds": round(float(np.sum(seconds)), 1)}


def alarms_of(replayed: Replayed) -> dict[str, np.ndarray]:
    return {key: served.alarms for key, served in replayed.served.items()}


def main(argv: list[str] | None = None) -> int:
    parser = corpus_parser(__doc__, "the first chooses the cadence")
    parser.add_argument("--policy", help="the alarm policy (default: the development choice in <out>/served.json)")
    parser.add_argument("--cadences", default=",".join(map(str, CADENCES)),
                        help="readings per device between retraining runs, comma-separated; the development half "
                             "chooses one (default: the declared grid)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        cadences = [int(c) for c in args.cadences.split(",")]
        if min(cadences) < 4 * MODEL["window"]:
            raise AelstmError(f"a cadence needs at least {4 * MODEL['window']} readings to retrain on")
        development, held_out = halves(args)
        spec = args.policy or json.loads((args.out / "served.json").read_text())["chosen"]
        policy = Policy.parse(spec)
    except (AelstmError, OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = development + held_out
    subsets = (("development", development), ("held_out", held_out), ("full", files))
    load, started = uptime(), time.perf_counter()
    result = {"command": command_line("benchmarks.nab.learning", argv),
              "uptime": load, "model": MODEL, "policy": policy.spec, "cadences": cadences, "seeds": seeds,
              "development_files": len(development), "held_out_files": len(held_out), "runs": []}
    chosen: int | None = None
    with tempfile.TemporaryDirectory(prefix="nab-learning-") as scratch:
        for seed in seeds:
            trained = train_all(files, seed, args.cache, args.jobs)
            bundles = {k: with_policy(t, policy, Path(scratch) / f"s{seed}" / k.replace("/", "__"))
                       for k, t in trained.items()}
            jobs = {"without learning": (bundles, files, None)}
            if chosen is None:
                jobs |= {f"every {every}": (bundles, development, learning_at(every)) for every in cadences}
            else:
                jobs |= {f"every {chosen}": (bundles, files, learning_at(chosen))}
            replayed = replay_together(jobs, f"seed {seed}")
            if chosen is None:
                result["development_grid"] = [
                    {"every": every, "profiles": nab_scores(development, alarms_of(replayed[f"every {every}"])),
                     "retraining": retraining_summary(replayed[f"every {every}"])} for every in cadences]
                best = max(result["development_grid"], key=lambda row: row["profiles"]["standard"]["score"])
                chosen = result["chosen_every"] = best["every"]
                more = replay_together({"held-out": (bundles, held_out, learning_at(chosen))},
                                       f"seed {seed} held-out, every {chosen}")["held-out"]
                learning_runs = [replayed[f"every {chosen}"], more]
            else:
                learning_runs = [replayed[f"every {chosen}"]]
            learned = {key: alarms for run in learning_runs for key, alarms in alarms_of(run).items()}
            static = alarms_of(replayed["without learning"])
            result["runs"].append({
                "seed": seed,
                "without_learning": {name: nab_scores(subset, static) for name, subset in subsets},
                "with_learning": {name: nab_scores(subset, learned) for name, subset in subsets},
                "retraining": retraining_summary(*learning_runs),
                "median_train_seconds": float(np.median([t.seconds for t in trained.values()])),
            })
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    report = write_report(args.out, "learning", result, markdown(result), indent=1)
    print(f"chosen on development: every {result['chosen_every']} readings; wrote {report}")
    return 0


def _cell(runs: list[dict], mode: str, subset: str, profile: str) -> str:
    values = [run[mode][subset][profile]["score"] for run in runs]
    return f"{values[0]:.1f}" if len(values) == 1 else f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"


def markdown(result: dict) -> str:
    runs, every = result["runs"], result["chosen_every"]
    lines = [
        "# NAB v1.1 on served alarms, with and without the retraining loop",
        "",
        f"Reproduce: `{result['command']}` ({result['wall_seconds'] / 60:.1f} min; `uptime` at start: "
        f"`{result['uptime']}`).",
        "",
        "The models, policy and replay of `served.md` (model "
        f"{result['model']}, policy `{result['policy']}`, chosen there on the development half without learning). "
        "With learning, the server records the readings it judged normal and, after every N readings of each "
        "device, runs its retraining loop (`aelstm retrain` in its own process with the fleet's own configuration "
        "and publishing gate) and serves what it published before the next readings, each device starting from "
        "the new version's calibration; a model only ever sees readings already scored. The development half "
        "chose N from "
        f"{', '.join(str(c) for c in result['cadences'])} (declared before any run) by standard score: "
        f"**every {every} readings**.",
        "",
        f"## Scores (seeds {', '.join(str(s) for s in result['seeds'])})",
        "",
        "| subset | learning | " + " | ".join(PROFILE_TITLES.values()) + " |",
        "|---|---|---|---|---|",
    ]
    for subset, title in (("held_out", "**held-out**"), ("development", "development"), ("full", "full corpus")):
        for mode, name in (("without_learning", "none"), ("with_learning", f"every {every} readings")):
            lines.append(f"| {title} | {name} | "
                         + " | ".join(_cell(runs, mode, subset, p.name) for p in PROFILES) + " |")
    held = np.mean([run["with_learning"]["held_out"]["standard"]["score"] for run in runs])
    lines += ["", f"Target on the held-out half with learning: standard ≥ {TARGETS['standard']:g} "
              f"({'met' if held >= TARGETS['standard'] else 'not met'}).", "", "## Retraining", ""]
    for run in runs:
        r = run["retraining"]
        lines.append(f"- seed {run['seed']}: {r['runs']} retraining runs; fleets published {r['published']}, kept "
                     f"aside by the gate {r['kept aside']}, skipped (too few new readings) {r['skipped']}, failed "
                     f"{r['failed']}; {r['fit_seconds']:.0f} s of fitting; initial models "
                     f"{run['median_train_seconds']:.1f} s median per file.")
    lines += ["", "## The development grid (first seed; held-out never looked at here)", "",
              "| every N readings | standard | low FP | low FN | runs | published | kept aside |",
              "|---|---|---|---|---|---|---|"]
    for row in result["development_grid"]:
        mark = " **← chosen**" if row["every"] == every else ""
        cells = " | ".join(f"{row['profiles'][p.name]['score']:.1f}" for p in PROFILES)
        r = row["retraining"]
        lines.append(f"| {row['every']}{mark} | {cells} | {r['runs']} | {r['published']} | {r['kept aside']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
