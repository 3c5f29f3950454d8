"""How many items/s `aelstm-client loadtest` can generate, against a server that answers instantly.

The server is the test suite's fake scorer in `--instant` mode (its own process; it answers every item from a cached
result list without reading it), so the figures bound what the generator itself can drive. Each configuration runs
the real command (`aelstm-client loadtest ... --json`) several times; the table reports medians. In the same run, a
bare gRPC client (prebuilt bytes, no bookkeeping) gives the baseline of what the gRPC stack itself costs.

    python -m benchmarks.client.generator_throughput            # ~3 minutes
    python -m benchmarks.client.generator_throughput --quick    # one repeat, shorter runs

Writes benchmarks/results/client/generator_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import grpc
import numpy as np

from aelstm.client.payloads import request_body, window_item, with_request_id
from aelstm.v1 import scoring_pb2 as pb
from benchmarks.harness import REPO, loadtest

FAKE = REPO / "tests" / "client" / "fake_server.py"
RESULTS = REPO / "benchmarks" / "results" / "client"
BATCHES = (1, 16, 64)


def start_instant_server(window: int) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, str(FAKE), "--instant", "--window", str(window)],
                               stdout=subprocess.PIPE, text=True)
    port = process.stdout.readline().strip()
    if not port.isdigit():
        process.kill()
        raise SystemExit("the instant fake server did not start")
    return process, f"127.0.0.1:{port}"


def closed_loop(target: str, batch: int, concurrency: int, seconds: float, repeats: int, processes: int = 1) -> dict:
    """Closed loop, many in flight: the most the generator and the client's gRPC stack push through."""
    runs = []
    for _ in range(repeats):
        report, _ = loadtest(target, ["--mode", "closed", "--concurrency", str(concurrency), "-G", "4", "-b",
                                   str(batch), "--warmup", "1s", "--duration", f"{seconds}s", "--pool", "300",
                                   "--processes", str(processes)])
        m = report["measured"]
        assert m["lost"] == 0 and not m["errors"], m
        answered = m["answered"] + report["warmup"]["answered"]
        runs.append({"items_per_s": m["throughput"]["items_per_s"], "msgs_per_s": m["throughput"]["msgs_per_s"],
                     "p50_ms": m["latency_ms"]["p50"], "p99_ms": m["latency_ms"]["p99"],
                     "client_cpu_us_per_msg": report["client"]["cpu_s"] / answered * 1e6})
    return {"batch": batch, "concurrency": concurrency, "processes": processes, "runs": runs,
            "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]}}


async def _bare_streams(target: str, batch: int, messages: int, streams: int = 4, in_flight: int = 16) -> dict:
    """The same closed loop with nothing but gRPC: prebuilt bytes out, parsed answers in, no bookkeeping."""
    body = request_body("fleet-0", [window_item("dev", np.zeros((32, 1), np.float32)) for _ in range(batch)])

    async def stream(channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream("/aelstm.v1.AnomalyScorer/StreamScore", request_serializer=None,
                                     response_deserializer=pb.ScoreResponse.FromString)()
        slots = asyncio.Semaphore(in_flight)

        async def read() -> None:
            async for _ in call:
                slots.release()

        reader = asyncio.create_task(read())
        for k in range(messages // streams):
            await slots.acquire()
            await call.write(with_request_id(str(k), body))
        await call.done_writing()
        await reader

    async with grpc.aio.insecure_channel(target) as channel:
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(stream(channel) for _ in range(streams)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"msgs_per_s": messages / wall, "items_per_s": messages * batch / wall,
            "client_cpu_us_per_msg": cpu / messages * 1e6}


def bare_grpc_baseline(target: str, batch: int, repeats: int) -> dict:
    """Baseline for the generator's own cost: bare gRPC streams, run in a fresh process like the loadtest."""
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-m", "benchmarks.client.generator_throughput", "--bare", target,
                               str(batch)], capture_output=True, text=True, timeout=300, check=True, cwd=REPO)
        runs.append(json.loads(done.stdout))
    return {"batch": batch, "runs": runs, "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]}}


def open_loop_sweep(target: str, batch: int, rates: str, seconds: float) -> dict:
    """Open-loop sweep: the highest rate the generator keeps on schedule with p99 ≤ 50 ms (instant server)."""
    done_report, _ = loadtest(target, ["-G", "4", "-b", str(batch), "--rate", rates, "--slo-ms", "50", "--warmup",
                                       "1s", "--duration", f"{seconds}s", "--pool", "300"])
    steps = [{"rate": run["schedule"]["rate"], "items_per_s": run["measured"]["throughput"]["items_per_s"],
              "p99_ms": run["measured"]["latency_ms"]["p99"], "lost": run["measured"]["lost"]}
             for run in done_report["sweep"]]
    best = done_report["max_sustained"]
    return {"steps": steps, "max_sustained_msgs_per_s": best["rate"], "max_sustained_items_per_s": best["items_per_s"]}


def open_loop_sweeps(target: str, batch: int, rates: str, seconds: float, repeats: int) -> dict:
    sweeps = [open_loop_sweep(target, batch, rates, seconds) for _ in range(repeats)]
    sustained = [s["max_sustained_items_per_s"] or 0.0 for s in sweeps]
    return {"batch": batch, "rates": rates, "sweeps": sweeps, "median_max_sustained_items_per_s":
            statistics.median(sustained)}


def markdown(result: dict) -> str:
    lines = ["# Load generator throughput against an instant server", "",
             f"Machine: {result['machine']['cpus']} CPUs, load average {result['machine']['load_before']} before "
             f"and {result['machine']['load_after']} after (other work shares the CPUs). Server: the instant fake "
             "scorer in its own process. Medians of "
             f"{result['repeats']} runs of {result['seconds']} s (warm-up 1 s excluded).", "",
             "| batch | concurrency | processes | items/s | msgs/s | p50 ms | p99 ms | client CPU µs/msg |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["closed_loop"] + result["closed_loop_processes"]:
        m = row["median"]
        lines.append(f"| {row['batch']} | {row['concurrency']} | {row['processes']} | {m['items_per_s']:.0f} | "
                     f"{m['msgs_per_s']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                     f"{m['client_cpu_us_per_msg']:.0f} |")
    lines += ["", "Same closed loop (4 streams × 16 in flight) with bare gRPC streams and no bookkeeping, in the "
              "same run: the part of the client's cost that is gRPC's own.", "",
              "| batch | items/s | msgs/s | client CPU µs/msg | loadtest CPU / bare CPU |",
              "|---:|---:|---:|---:|---:|"]
    for bare, full in zip(result["bare_grpc"], result["closed_loop"], strict=True):
        m = bare["median"]
        ratio = full["median"]["client_cpu_us_per_msg"] / m["client_cpu_us_per_msg"]
        lines.append(f"| {bare['batch']} | {m['items_per_s']:.0f} | {m['msgs_per_s']:.0f} | "
                     f"{m['client_cpu_us_per_msg']:.0f} | {ratio:.2f} |")
    sweep = result["open_loop"]
    lines += ["", f"Open-loop sweeps (batch {sweep['batch']}, rates {sweep['rates']} msgs/s, stop at the first rate "
              f"whose p99 from intended send time exceeds 50 ms): median highest sustained "
              f"{sweep['median_max_sustained_items_per_s']:.0f} items/s.", "",
              "| sweep | target msgs/s | items/s | p99 ms | lost |", "|---:|---:|---:|---:|---:|"]
    for i, one in enumerate(sweep["sweeps"], start=1):
        lines += [f"| {i} | {s['rate']:.0f} | {s['items_per_s']:.0f} | {s['p99_ms']:.2f} | {s['lost']} |"
                  for s in one["steps"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of 2 s runs")
    parser.add_argument("--bare", nargs=2, metavar=("TARGET", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        print(json.dumps(asyncio.run(_bare_streams(args.bare[0], int(args.bare[1]), messages=4000))))
        return
    repeats, seconds = (1, 2.0) if args.quick else (3, 3.0)
    load_before = os.getloadavg()
    server, target = start_instant_server(window=32)
    try:
        closed = [closed_loop(target, batch, 64, seconds, repeats) for batch in BATCHES]
        parallel = [closed_loop(target, batch, 64, seconds, repeats, processes=2) for batch in (16, 64)]
        bare = [bare_grpc_baseline(target, batch, repeats) for batch in BATCHES]
        sweep = open_loop_sweeps(target, 16, "250:3000:250", seconds, repeats)
    finally:
        server.terminate()
        server.wait(10)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_before": [round(x, 2) for x in load_before],
                          "load_after": [round(x, 2) for x in os.getloadavg()]},
              "repeats": repeats, "seconds": seconds, "window": 32, "features": 1, "gateways": 4,
              "closed_loop": closed, "closed_loop_processes": parallel, "bare_grpc": bare, "open_loop": sweep}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generator_throughput.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "generator_throughput.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
