"""Wall time of training many small fleets: one after another in one process (`--no-ray`) against `aelstm
train-fleets` on the embedded local Ray with this machine's CPUs, both as a user runs them (the CLI, start-up
included), alternating in one run.

    python -m benchmarks.training.fleets                 # writes benchmarks/results/training/fleets.*
    python -m benchmarks.training.fleets --sizes 1,4 --repeats 1    # a quick look

Each fleet is a 3,000-reading stretch of one of the two NAB fixture series (the stretches rotate through both
files), trained with the same small model and a fixed epoch budget (no early stop), so both sides do the same work;
a fresh registry per run makes every fleet a first version, and every fit is gated and published as in production.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from aelstm.core.data import load_nab

from ..harness import AELSTM, FIXTURE, REPO, SERVER_ENV, uptime
from ..performance.run import now, short_revision

OUT = REPO / "benchmarks" / "results" / "training"
SERIES = [FIXTURE, FIXTURE.with_name("machine_temperature_system_failure.csv")]
FLEET_ROWS = 3_000
MODEL = ["--window", "16", "--hidden", "32", "--latent", "8", "--epochs", "10", "--patience", "100"]


def write_fleets(folder: Path, count: int) -> Path:
    """`count` fleets, one CSV each: stretch i of series i mod 2."""
    folder.mkdir(parents=True)
    series = [load_nab(path).values for path in SERIES]
    for i in range(count):
        values = series[i % len(series)].ravel()
        stretches = len(values) // FLEET_ROWS
        start = (i // len(series)) % stretches * FLEET_ROWS
        rows = "\n".join(f"{v:.6g}" for v in values[start:start + FLEET_ROWS])
        (folder / f"fleet-{i:03d}.csv").write_text("value\n" + rows + "\n")
    return folder


def run_once(data: Path, work: Path, side: str) -> dict:
    """One `aelstm train-fleets` run on a fresh registry: wall seconds and each fleet's outcome."""
    summary = work / f"{side}.json"
    command = [*AELSTM, "train-fleets", str(data), "--registry", str(work / f"registry-{side}"),
               "--summary", str(summary), "--quiet", *MODEL, *(["--no-ray"] if side == "sequential" else [])]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=SERVER_ENV, cwd=REPO, timeout=3600)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{side} run failed:\n{done.stderr[-3000:]}")
    outcomes = json.loads(summary.read_text())
    published = sum(o["status"] == "published" for o in outcomes)
    if published != len(outcomes):
        raise SystemExit(f"{side}: only {published} of {len(outcomes)} fleets published: {outcomes}")
    return {"wall_s": round(wall, 2), "fit_s": round(sum(o["seconds"] for o in outcomes), 2),
            "epochs": sorted({o["epochs"] for o in outcomes})}


def measure(sizes: list[int], repeats: int) -> list[dict]:
    rows = []
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="aelstm-fleets-bench-") as tmp:
            work = Path(tmp)
            data = write_fleets(work / "data", count)
            runs: dict[str, list[dict]] = {"sequential": [], "ray": []}
            for r in range(repeats):
                order = ("sequential", "ray") if r % 2 == 0 else ("ray", "sequential")
                for side in order:
                    run = run_once(data, work / f"run-{r}", side)
                    runs[side].append(run)
                    print(f"{count:>3} fleets, {side:<10} run {r + 1}: {run['wall_s']:.1f} s", flush=True)
        seq = statistics.median(run["wall_s"] for run in runs["sequential"])
        ray = statistics.median(run["wall_s"] for run in runs["ray"])
        rows.append({"fleets": count, "sequential_s": seq, "ray_s": ray, "speed_up": round(seq / ray, 2),
                     "runs": runs})
    return rows


def markdown(result: dict) -> str:
    lines = ["# Training many fleets: one after another against `aelstm train-fleets` on the embedded Ray", "",
             f"`{result['command']}` at {result['commit']}, {result['started']} to {result['ended']}; "
             f"{result['machine']}, {result['cpus']} CPUs.", "",
             f"**Machine load**: before `{result['uptime_before']}`; after `{result['uptime_after']}`.", "",
             f"Each fleet: {FLEET_ROWS:,} readings of a NAB fixture series, `{' '.join(MODEL)}`; wall time of the "
             "whole CLI run (start-up, Ray start, fits, gates, publishing), median of "
             f"{result['repeats']} alternating runs.", "",
             "| fleets | one after another (`--no-ray`), s | `train-fleets` on the embedded Ray, s | speed-up | "
             "runs (sequential / Ray), s |", "|---:|---:|---:|---:|---|"]
    for row in result["rows"]:
        seq = ", ".join(f"{run['wall_s']:.1f}" for run in row["runs"]["sequential"])
        ray = ", ".join(f"{run['wall_s']:.1f}" for run in row["runs"]["ray"])
        lines.append(f"| {row['fleets']} | {row['sequential_s']:.1f} | {row['ray_s']:.1f} | "
                     f"**{row['speed_up']:.2f}×** | {seq} / {ray} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16,64", help="fleet counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per size (median reported)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    result = {"command": f"python -m benchmarks.training.fleets --sizes {args.sizes} --repeats {args.repeats}",
              "commit": short_revision(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "repeats": args.repeats, "uptime_before": uptime(),
              "started": now()}
    result["rows"] = measure(sizes, args.repeats)
    result["ended"] = now()
    result["uptime_after"] = uptime()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fleets.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "fleets.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
