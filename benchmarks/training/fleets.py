"""Wall time of training many small fleets: one after another in one process (`--no-ray`) against `aelstm
train-fleets` on the embedded local Ray with this machine's CPUs, and against `aelstm train-fleets --ray-address`
joining a running two-node Ray cluster on this machine (head and worker node, one CPU each: the test cluster), each
as a user runs it (the CLI, start-up included), in turns in one run.

    python -m benchmarks.training.fleets                 # writes benchmarks/results/training/fleets.*
    python -m benchmarks.training.fleets --sizes 1,4 --repeats 1    # a quick look

Each fleet is a 3,000-reading stretch of one of the two NAB fixture series (the stretches rotate through both
files), trained with the same small model and a fixed epoch budget (no early stop), so every side does the same work;
a fresh registry per run makes every fleet a first version, and every fit is gated and published as in production.
The cluster is started before each of its runs and stopped after it, outside the timing (a cluster runs before jobs
are sent to it, and an idle one is kept from running beside the other sides' runs); each run records on how many
nodes its fits ran. Without a cluster, `train-fleets` fits a single fleet in the process (no two fits to run at
once), so the embedded side's one-fleet runs start no Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from aelstm.core.data import load_nab

from ..harness import AELSTM, FIXTURE, REPO, SERVER_ENV, uptime, write_report
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


SIDES = ("sequential", "ray", "cluster")
SIDE_NAMES = {"sequential": "one after another (`--no-ray`)",
              "ray": "`train-fleets` on the embedded Ray (one fleet: in the process)",
              "cluster": "`train-fleets --ray-address` on the two-node cluster"}


@contextlib.contextmanager
def two_node_cluster() -> Iterator[str]:
    """A head and a worker node on this machine, one CPU each (`ray.cluster_utils.Cluster`); yields its address."""
    from ray.cluster_utils import Cluster

    from aelstm.server.ray_backend import configure_ray_environment

    configure_ray_environment()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def side_options(side: str, cluster: str | None) -> list[str]:
    return {"sequential": ["--no-ray"], "ray": [], "cluster": ["--ray-address", str(cluster)]}[side]


def run_once(data: Path, work: Path, side: str, cluster: str | None = None) -> dict:
    """One `aelstm train-fleets` run on a fresh registry: wall seconds, fitting seconds, epochs, and the nodes
    the fits ran on."""
    summary = work / f"{side}.json"
    command = [*AELSTM, "train-fleets", str(data), "--registry", str(work / f"registry-{side}"),
               "--summary", str(summary), "--quiet", *MODEL, *side_options(side, cluster)]
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
            "epochs": sorted({o["epochs"] for o in outcomes}),
            "nodes": len({o["node"] for o in outcomes if o["node"]})}


def measure(sizes: list[int], repeats: int, sides: tuple[str, ...]) -> list[dict]:
    """Per fleet count: every side's runs, in an order that rotates from one repeat to the next, and each side's
    median wall time and speed-up over the sequential side."""
    rows = []
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="aelstm-fleets-bench-") as tmp:
            work = Path(tmp)
            data = write_fleets(work / "data", count)
            runs: dict[str, list[dict]] = {side: [] for side in sides}
            for r in range(repeats):
                for side in sides[r % len(sides):] + sides[: r % len(sides)]:
                    with two_node_cluster() if side == "cluster" else contextlib.nullcontext() as cluster:
                        run = run_once(data, work / f"run-{r}", side, cluster)
                    runs[side].append(run)
                    print(f"{count:>3} fleets, {side:<10} run {r + 1}: {run['wall_s']:.1f} s on {run['nodes']} "
                          "node(s)", flush=True)
        medians = {side: statistics.median(run["wall_s"] for run in runs[side]) for side in sides}
        row = {"fleets": count, "median_s": medians, "runs": runs}
        if "sequential" in sides:
            row["speed_up"] = {side: round(medians["sequential"] / medians[side], 2) for side in sides
                               if side != "sequential"}
        rows.append(row)
    return rows


def fit_per_fleet(row: dict, side: str) -> float:
    """Median over a side's runs of the seconds each fit itself took (training only, in its worker), per fleet:
    how fast the machine ran, which sets how much Ray's fixed cost weighs."""
    return statistics.median(run["fit_s"] for run in row["runs"][side]) / row["fleets"]


def markdown(result: dict) -> str:
    sides = result["sides"]
    header = ["fleets"]
    for side in sides:
        header.append(f"{SIDE_NAMES[side]}, s")
        if side != "sequential" and "sequential" in sides:
            header.append("speed-up")
    header += ["nodes used", "fitting s per fleet", f"runs ({' / '.join(sides)}), s"]
    lines = [f"# Training many fleets: {', against '.join(SIDE_NAMES[side] for side in sides)}", "",
             f"`{result['command']}` at {result['commit']}, {result['started']} to {result['ended']}; "
             f"{result['machine']}, {result['cpus']} CPUs.", "",
             f"**Machine load**: before `{result['uptime_before']}`; after `{result['uptime_after']}`.", "",
             f"Each fleet: {FLEET_ROWS:,} readings of a NAB fixture series, `{' '.join(MODEL)}`; wall time of the "
             "whole CLI run (start-up, Ray start or joining the cluster, fits, gates, publishing), median of "
             f"{result['repeats']} runs taken in turns. The two-node cluster (head and worker node on this machine, "
             "one CPU each) is started before each of its runs and stopped after it, outside the timing. Fitting "
             "seconds: each fit's training loop alone, per fleet (two fits at once on 2 cores each run slower than one "
             "alone).", "",
             "| " + " | ".join(header) + " |", "|" + "---:|" * (len(header) - 1) + "---|"]
    for row in result["rows"]:
        cells = [str(row["fleets"])]
        for side in sides:
            cells.append(f"{row['median_s'][side]:.1f}")
            if side in row.get("speed_up", {}):
                cells.append(f"**{row['speed_up'][side]:.2f}×**")
        cells.append(", ".join(f"{side} {max(run['nodes'] for run in row['runs'][side])}" for side in sides
                               if side != "sequential"))
        cells.append(", ".join(f"{side} {fit_per_fleet(row, side):.2f}" for side in sides))
        cells.append(" / ".join(", ".join(f"{run['wall_s']:.1f}" for run in row["runs"][side]) for side in sides))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16,64", help="fleet counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side per size (median reported)")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"of {', '.join(SIDES)}, comma-separated")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    sides = tuple(args.sides.split(","))
    if unknown := set(sides) - set(SIDES):
        parser.error(f"unknown side(s) {', '.join(sorted(unknown))}: choose from {', '.join(SIDES)}")
    result = {"command": f"python -m benchmarks.training.fleets --sizes {args.sizes} --repeats {args.repeats} "
                         f"--sides {args.sides}",
              "commit": short_revision(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "repeats": args.repeats, "sides": sides, "uptime_before": uptime(),
              "started": now()}
    result["rows"] = measure(sizes, args.repeats, sides)
    result["ended"] = now()
    result["uptime_after"] = uptime()
    text = markdown(result)
    write_report(args.out, "fleets", result, text)
    print(text)


if __name__ == "__main__":
    main()
