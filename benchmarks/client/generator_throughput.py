"""How many items/s `aelstm-client loadtest` can generate, against a server that answers instantly.

The server is the test suite's fake scorer in `--instant` mode (its own process; it answers every item from a cached
result list without reading it), so the figures bound what the generator itself can drive. Each configuration runs
the real command (`aelstm-client loadtest ... --json`) several times; the table reports medians.

    python benchmarks/client/generator_throughput.py            # ~3 minutes
    python benchmarks/client/generator_throughput.py --quick    # one repeat, shorter runs

Writes benchmarks/results/client/generator_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "client" / "fake_server.py"
RESULTS = REPO / "benchmarks" / "results" / "client"
CLIENT = [sys.executable, "-c", "from aelstm.client.cli import main; main()"]


def start_instant_server(window: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(FAKE), "--instant", "--window", str(window)],
                               stdout=subprocess.PIPE, text=True)
    port = process.stdout.readline().strip()
    if not port.isdigit():
        process.kill()
        raise SystemExit("the instant fake server did not start")
    return process, f"127.0.0.1:{port}"


def loadtest(target: str, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        command = [*CLIENT, "--target", target, "loadtest", *args, "--no-progress", "--json", str(path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"loadtest failed ({done.returncode}): {done.stderr.strip() or done.stdout[-500:]}")
        return json.loads(path.read_text())


def closed_loop(target: str, batch: int, concurrency: int, seconds: float, repeats: int) -> dict:
    """Closed loop, many in flight: the most the generator and the client's gRPC stack push through."""
    runs = []
    for _ in range(repeats):
        report = loadtest(target, ["--mode", "closed", "--concurrency", str(concurrency), "-G", "4", "-b",
                                   str(batch), "--warmup", "1s", "--duration", f"{seconds}s", "--pool", "300"])
        m = report["measured"]
        assert m["lost"] == 0 and not m["errors"], m
        answered = m["answered"] + report["warmup"]["answered"]
        runs.append({"items_per_s": m["throughput"]["items_per_s"], "msgs_per_s": m["throughput"]["msgs_per_s"],
                     "p50_ms": m["latency_ms"]["p50"], "p99_ms": m["latency_ms"]["p99"],
                     "client_cpu_us_per_msg": report["client"]["cpu_s"] / answered * 1e6})
    return {"batch": batch, "concurrency": concurrency, "runs": runs,
            "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]}}


def open_loop_sweep(target: str, batch: int, rates: str, seconds: float) -> dict:
    """Open-loop sweep: the highest rate the generator keeps on schedule with p99 ≤ 50 ms (instant server)."""
    report = loadtest(target, ["-G", "4", "-b", str(batch), "--rate", rates, "--slo-ms", "50", "--warmup", "1s",
                               "--duration", f"{seconds}s", "--pool", "300"])
    steps = [{"rate": run["schedule"]["rate"], "items_per_s": run["measured"]["throughput"]["items_per_s"],
              "p99_ms": run["measured"]["latency_ms"]["p99"], "lost": run["measured"]["lost"]}
             for run in report["sweep"]] if "sweep" in report else []
    best = report.get("max_sustained", {})
    return {"batch": batch, "rates": rates, "steps": steps, "max_sustained_msgs_per_s": best.get("rate"),
            "max_sustained_items_per_s": best.get("items_per_s")}


def markdown(result: dict) -> str:
    lines = ["# Load generator throughput against an instant server", "",
             f"Machine: {result['machine']['cpus']} CPUs, load average {result['machine']['load_before']} before "
             f"and {result['machine']['load_after']} after (other work shares the CPUs). Server: the instant fake "
             "scorer in its own process. Medians of "
             f"{result['repeats']} runs of {result['seconds']} s (warm-up 1 s excluded).", "",
             "| batch | concurrency | items/s | msgs/s | p50 ms | p99 ms | client CPU µs/msg |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["closed_loop"]:
        m = row["median"]
        lines.append(f"| {row['batch']} | {row['concurrency']} | {m['items_per_s']:.0f} | {m['msgs_per_s']:.0f} | "
                     f"{m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['client_cpu_us_per_msg']:.0f} |")
    sweep = result["open_loop"]
    lines += ["", f"Open-loop sweep (batch {sweep['batch']}, rates {sweep['rates']} msgs/s, p99 ≤ 50 ms): highest "
              f"sustained {sweep['max_sustained_msgs_per_s']} msgs/s = {sweep['max_sustained_items_per_s'] or 0:.0f} "
              "items/s.", "", "| target msgs/s | items/s | p99 ms | lost |", "|---:|---:|---:|---:|"]
    lines += [f"| {s['rate']:.0f} | {s['items_per_s']:.0f} | {s['p99_ms']:.2f} | {s['lost']} |" for s in sweep["steps"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of 2 s runs")
    args = parser.parse_args()
    repeats, seconds = (1, 2.0) if args.quick else (3, 3.0)
    load_before = os.getloadavg()
    server, target = start_instant_server(window=32)
    try:
        closed = [closed_loop(target, batch, 64, seconds, repeats) for batch in (1, 16, 64)]
        sweep = open_loop_sweep(target, 16, "250:3000:250", seconds)
    finally:
        server.terminate()
        server.wait(10)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_before": [round(x, 2) for x in load_before],
                          "load_after": [round(x, 2) for x in os.getloadavg()]},
              "repeats": repeats, "seconds": seconds, "window": 32, "features": 1, "gateways": 4,
              "closed_loop": closed, "open_loop": sweep}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generator_throughput.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "generator_throughput.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
