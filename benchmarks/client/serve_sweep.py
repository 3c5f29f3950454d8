"""Headline figure: the highest rate `aelstm serve` sustains with p99 ≤ 50 ms and nothing lost, by rate sweep.

Trains the small EC2-latency model from the test fixture (seconds), starts `aelstm serve` with it as the default model,
and runs `aelstm-client loadtest --rate START:STOP:STEP` against it several times (medians reported). Latency is
measured from each message's intended send time (open loop).

    python -m benchmarks.client.serve_sweep                       # in-process backend
    python -m benchmarks.client.serve_sweep --backend ray         # Ray Serve backend

Writes benchmarks/results/client/serve_sweep_<backend>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.harness import REPO, free_port, loadtest, start_server, stop, train

RESULTS = REPO / "benchmarks" / "results" / "client"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["inprocess", "ray"], default="inprocess")
    parser.add_argument("--rate", default="25:400:25", help="msgs/s sweep start:stop:step")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, help="server port [default: a free one]")
    parser.add_argument("--bundle", type=Path, help="serve this bundle instead of training the fixture's model")
    args = parser.parse_args()
    loadtest_args = ["-G", "4", "-F", "2", "-D", "256", "-b", str(args.batch), "--rate", args.rate, "--slo-ms", "50",
                     "--warmup", "2s", "--duration", "5s"]
    with tempfile.TemporaryDirectory() as tmp:
        bundle, registry = args.bundle or Path(tmp) / "bundle", Path(tmp) / "registry"
        if args.bundle is None:
            train(bundle)
        port = args.port or free_port()
        server = start_server(bundle, registry, args.backend, port, Path(tmp) / "serve.log")
        try:
            runs = [loadtest(f"127.0.0.1:{port}", loadtest_args) for _ in range(args.repeats)]
        finally:
            stop(server)
    command = runs[0][1]
    sweeps = [{"steps": [{"rate": r["schedule"]["rate"], "items_per_s": r["measured"]["throughput"]["items_per_s"],
                          "p50_ms": r["measured"]["latency_ms"]["p50"], "p99_ms": r["measured"]["latency_ms"]["p99"],
                          "errors": sum(r["measured"]["errors"].values()), "lost": r["measured"]["lost"]}
                         for r in report["sweep"]],
               "max_sustained_rate": report["max_sustained"]["rate"],
               "max_sustained_items_per_s": report["max_sustained"]["items_per_s"]} for report, _ in runs]
    best = [s["max_sustained_items_per_s"] or 0.0 for s in sweeps]
    result = {"backend": args.backend, "command": command, "batch": args.batch, "cpus": os.cpu_count(),
              "load_average": [round(x, 2) for x in os.getloadavg()], "sweeps": sweeps,
              "median_max_sustained_items_per_s": statistics.median(best)}
    lines = [f"# `aelstm serve --backend {args.backend}`: highest rate within p99 ≤ 50 ms, nothing lost", "",
             f"Command (run {args.repeats} times): `{command}`", "",
             f"Median highest sustained: **{result['median_max_sustained_items_per_s']:.0f} items/s** "
             f"(batch {args.batch}; per sweep: {', '.join(f'{b:.0f}' for b in best)}). "
             f"{result['cpus']} CPUs shared with other work (load average {result['load_average']}).", "",
             "| sweep | target msgs/s | items/s | p50 ms | p99 ms | errors | lost |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for i, one in enumerate(sweeps, start=1):
        lines += [f"| {i} | {s['rate']:.0f} | {s['items_per_s']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                  f"{s['errors']} | {s['lost']} |" for s in one["steps"]]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"serve_sweep_{args.backend}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
