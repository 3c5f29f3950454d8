"""Serving latency and throughput: one stream vs several, in-process backend vs Ray Serve, in one run.

Each backend runs as a real `aelstm serve` subprocess on 127.0.0.1; this script is the gateway, streaming real
windows of the NAB EC2 latency fixture over StreamScore. Every scenario is repeated and the medians are reported.

    python -m benchmarks.serving.bench_serving            # writes benchmarks/results/serving/serving.{json,md}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc
from benchmarks.harness import REPO, fixture_windows, free_port, raw_scorer, start_server, stop, train

RESULTS = REPO / "benchmarks" / "results" / "serving"


@dataclass(frozen=True)
class Scenario:
    name: str
    streams: int
    items_per_request: int
    in_flight: int  # requests outstanding per stream (1 = closed loop: send, wait, send)
    requests_per_stream: int


SCENARIOS = (
    Scenario("1 stream, 1 window/request, closed loop", 1, 1, 1, 300),
    Scenario("1 stream, 64 windows/request, 8 in flight", 1, 64, 8, 150),
    Scenario("4 streams, 64 windows/request, 8 in flight each", 4, 64, 8, 80),
    Scenario("16 streams, 1 window/request, 4 in flight each", 16, 1, 4, 150),
)


async def run_stream(stub, windows: np.ndarray, scenario: Scenario, stream: int) -> list[float]:
    """Latencies (s) of every request of one stream; checks each request is answered once, items all OK."""
    slots = asyncio.Semaphore(scenario.in_flight)
    sent: dict[str, float] = {}
    rng = np.random.default_rng(stream)

    async def requests():
        for i in range(scenario.requests_per_stream):
            await slots.acquire()
            rows = rng.integers(0, len(windows), scenario.items_per_request)
            request = pb.ScoreRequest(request_id=f"{stream}-{i}", fleet_id="bench", items=[
                pb.Item(device_id=f"d{r}", window=pb.Tensor(shape=[16, 1], packed=windows[r].tobytes()))
                for r in rows])
            sent[request.request_id] = time.perf_counter()
            yield request

    latencies = []
    async for response in stub.StreamScore(requests()):
        latencies.append(time.perf_counter() - sent.pop(response.request_id))
        if any(r.status != pb.ITEM_STATUS_OK for r in response.results):
            raise SystemExit(f"item error: {response.results[0].error.message}")
        slots.release()
    if sent:
        raise SystemExit(f"{len(sent)} requests got no answer")
    return latencies


async def run_scenario(address: str, windows: np.ndarray, scenario: Scenario) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.AnomalyScorerStub(channel)
        await run_stream(stub, windows, Scenario("warm-up", 1, 8, 2, 20), 99)
        started = time.perf_counter()
        per_stream = await asyncio.gather(*(run_stream(stub, windows, scenario, s) for s in range(scenario.streams)))
        elapsed = time.perf_counter() - started
    latencies = np.concatenate(per_stream)
    items = len(latencies) * scenario.items_per_request
    return {"items_per_s": items / elapsed, "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50) * 1e3), "p99_ms": float(np.percentile(latencies, 99) * 1e3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each scenario (medians are reported)")
    parser.add_argument("--backends", default="inprocess,ray", help="comma-separated: inprocess, ray")
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--bundle", type=Path, help="bundle to serve [default: train a small one on the fixture]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    windows = fixture_windows()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or train(Path(tmp) / "bundle")
        for batch in (1, args.max_batch):
            runs = [raw_scorer(bundle, windows, batch) for _ in range(args.repeats)]
            rows.append({"backend": "onnxruntime alone", "scenario": f"{batch} windows/call, no gRPC, one thread",
                         "runs": runs, **{k: statistics.median(r[k] for r in runs)
                                          for k in ("items_per_s", "requests_per_s", "p50_ms")}, "p99_ms": None})
            print(f"baseline  {batch} windows/call: {rows[-1]['items_per_s']:.0f} windows/s", flush=True)
        for backend in args.backends.split(","):
            port = free_port()
            address = f"127.0.0.1:{port}"
            process = start_server(bundle, Path(tmp) / f"registry-{backend}", backend, port, Path(tmp) / "serve.log",
                                   ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms)])
            try:
                for scenario in SCENARIOS:
                    runs = [asyncio.run(run_scenario(address, windows, scenario)) for _ in range(args.repeats)]
                    row = {"backend": backend, "scenario": scenario.name, "streams": scenario.streams,
                           "items_per_request": scenario.items_per_request, "in_flight": scenario.in_flight,
                           "runs": runs, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
                    rows.append(row)
                    print(f"{backend:9s} {scenario.name:50s} {row['items_per_s']:9.0f} items/s  "
                          f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms", flush=True)
            finally:
                stop(process)
    write_results(args, rows)


def write_results(args, rows: list[dict]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "repeats": args.repeats, "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
            "command": "python -m benchmarks.serving.bench_serving " + " ".join(sys.argv[1:])}
    (args.out / "serving.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    lines = ["# Serving latency and throughput", "",
             f"`{meta['command'].strip()}` — medians of {args.repeats} runs; client and server on one machine "
             f"({meta['machine']}, load average {meta['load_average_at_end']} at the end); max batch "
             f"{args.max_batch}, batch wait {args.batch_wait_ms} ms. Latency is per request, sent to answered; "
             "for the onnxruntime baseline, p50 is the time of one call.", "",
             "| backend | scenario | items/s | requests/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['backend']} | {r['scenario']} | {r['items_per_s']:.0f} | {r['requests_per_s']:.0f} | "
              f"{r['p50_ms']:.2f} | {'–' if r['p99_ms'] is None else format(r['p99_ms'], '.2f')} |" for r in rows]
    (args.out / "serving.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / "serving.png")


def plot(rows: list[dict], path: Path) -> None:
    """Items/s and p50 latency per scenario, the backends side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = [r for r in rows if r["backend"] in ("inprocess", "ray")]
    scenarios = list(dict.fromkeys(r["scenario"] for r in served))
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    backends = list(dict.fromkeys(r["backend"] for r in served))
    for index, backend in enumerate(backends):
        offset = (index - (len(backends) - 1) / 2) * 0.4
        mine = {r["scenario"]: r for r in served if r["backend"] == backend}
        x = [i + offset for i in range(len(scenarios))]
        axes[0].bar(x, [mine[s]["items_per_s"] for s in scenarios], width=0.4, label=backend)
        axes[1].bar(x, [mine[s]["p50_ms"] for s in scenarios], width=0.4, label=backend)
    for axis, title in zip(axes, ("items/s (higher is better)", "p50 latency, ms (log scale)"), strict=True):
        axis.set_xticks(range(len(scenarios)), [s.replace(", ", "\n") for s in scenarios], fontsize=7)
        axis.set_title(title)
        axis.legend()
    axes[1].set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
