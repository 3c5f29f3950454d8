"""Performance in one run: how far each way of serving the model falls short of onnxruntime alone, and why.

One bounded command (about 20 minutes on a 2-core machine; `--quick`: under 5) that, on the small EC2 fixture model:

1. measures the ceiling: onnxruntime alone (`BundleScorer.score`, one thread, no gRPC) over batch sizes;
2. starts `aelstm serve --backend ray`, then `--backend inprocess`, then the peer (Ray Serve's own gRPC proxy serving
   the same model, `benchmarks/performance/peer.py`), one at a time, never two at once;
3. against each, finds the highest rate sustained with p99 ≤ 50 ms and nothing lost by `aelstm-client loadtest
   --rate A:B:STEP` sweeps (a calibration sweep, then `--repeats` sweeps; medians reported), at batch 16 and 1,
   streaming, and unary where the peer is compared;
4. runs each at fixed rates while sampling which of its processes uses the machine's CPU: a light rate (10 % of the
   Ray backend's batch-1 limit) for latency, its own batch-16 limit, and one batch-16 load common to all (5 % of the
   ceiling) to compare the CPU each hop costs per item.

    python -m benchmarks.performance.run              # writes benchmarks/results/performance/summary.{json,md,png}
    python -m benchmarks.performance.run --quick      # smoke test: one sweep each, shorter steps

Figures are comparable only within one run (the machine and its load change between runs).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.harness import (
    REPO,
    descendants,
    fixture_windows,
    free_port,
    loadtest,
    raw_scorer,
    start_process,
    start_server,
    stop,
    train,
)
from benchmarks.performance.cpu import CpuWatch, cool_down, roles
from benchmarks.performance.limits import SLO_MS, Grid, Phase, Workload, find_limit
from benchmarks.performance.report import summarise, write_outputs
from benchmarks.performance.stages import scrape, stage_means_ms

RESULTS = REPO / "benchmarks" / "results" / "performance"
CEILING_BATCHES = (1, 16, 64, 256, 1024)
LIGHT_FRACTION = 0.1  # of the Ray backend's batch-1 limit: the light-load latency runs
SAME_LOAD_FRACTION = 0.05  # of the ceiling: one batch-16 load every server is run at, to compare CPU per item
EXIT_MARGIN_S = 1.5  # CPU window ends this long before the client exits (its report and teardown)
STARTED = time.monotonic()


@dataclass(frozen=True)
class Plan:
    """How long everything runs: the full measurement or the quick smoke test."""

    repeats: int
    sweep: Phase
    calibration: Phase | None  # None: no calibration sweep, the first sweep starts from a guess
    fixed: Phase  # light-rate and CPU runs
    steps: int  # rates per sweep
    ceiling_s: float  # per batch size and repeat


FULL = Plan(repeats=3, sweep=Phase(1.0, 3.0, 3.0), calibration=Phase(0.5, 1.5, 2.0), fixed=Phase(2.0, 10.0, 3.0),
            steps=9, ceiling_s=1.5)
QUICK = Plan(repeats=1, sweep=Phase(0.5, 2.0, 2.0), calibration=None, fixed=Phase(1.0, 4.0, 2.0), steps=8,
             ceiling_s=0.4)


@dataclass(frozen=True)
class Config:
    """One thing to find the limit of: a server, a batch size and how messages travel."""

    server: str
    batch: int
    rpc: str = "stream"
    processes: int = 1  # load generator processes

    @property
    def key(self) -> str:
        return f"{self.server}_{self.rpc}_batch{self.batch}"

    @property
    def workload(self) -> Workload:
        return Workload(self.batch, self.rpc, processes=self.processes)


@dataclass
class Server:
    """A server under test: its name, the role of the process we start, and how to start it (given a log path)."""

    name: str
    main_role: str
    start: Callable[[Path, int], subprocess.Popen]
    port: int = field(default_factory=free_port)
    metrics_port: int | None = None  # where its per-stage timing can be read (our servers only)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def ours(backend: str, bundle: Path, registry: Path, device: str = "cpu", extra: tuple[str, ...] = (),
         name: str | None = None) -> Server:
    """`aelstm serve --backend <backend>` with its defaults, on `device`, its metrics on a port of their own."""
    metrics_port = free_port()
    return Server(name or backend, "ingress",
                  lambda log, port: start_server(bundle, registry, backend, port, log,
                                                 ["--device", device, "--metrics-port", str(metrics_port), *extra]),
                  metrics_port=metrics_port)


def peer(bundle: Path, device: str = "cpu", extra: tuple[str, ...] = ()) -> Server:
    """Ray Serve's own gRPC proxy in front of a replica scoring the same bundle (benchmarks/performance/peer.py)."""
    def start(log: Path, port: int) -> subprocess.Popen:
        command = [sys.executable, "-m", "benchmarks.performance.peer", "--bundle", str(bundle), "--port", str(port),
                   "--http-port", str(free_port()), "--device", device, *extra]
        return start_process(command, log, "serving on", "the Ray Serve gRPC peer")
    return Server("peer", "driver", start)


def say(message: str) -> None:
    """One progress line on stderr, with the seconds since the run started."""
    print(f"[{time.monotonic() - STARTED:6.0f}s] {message}", file=sys.stderr, flush=True)


def ceiling(bundle: Path, batches: tuple[int, ...], seconds: float, repeats: int, device: str = "cpu") -> dict:
    """onnxruntime alone on the bundle (one thread): windows/s per batch size (median of `repeats`), and the best."""
    windows = fixture_windows()
    table = {}
    for batch in batches:
        runs = [raw_scorer(bundle, windows, batch, seconds, device) for _ in range(repeats)]
        table[f"batch{batch}"] = {"batch": batch, "windows_per_s": statistics.median(r["items_per_s"] for r in runs),
                                  "ms_per_call": statistics.median(r["p50_ms"] for r in runs),
                                  "runs_windows_per_s": [round(r["items_per_s"], 1) for r in runs],
                                  "provider": runs[0]["provider"]}
        say(f"ceiling ({device}) batch {batch}: {table[f'batch{batch}']['windows_per_s']:.0f} windows/s")
    best = max(table.values(), key=lambda row: row["windows_per_s"])
    return {"windows_per_s": best["windows_per_s"], "best_batch": best["batch"], "device": device,
            "threads": 1, "batches": table}


@contextlib.contextmanager
def running(server: Server, logs: Path) -> Iterator[subprocess.Popen]:
    """The server, started and ready; stopped (with everything it spawned) however the block ends."""
    say(f"{server.name}: starting on {server.target}")
    process = server.start(logs / f"{server.name}.log", server.port)
    try:
        yield process
    finally:
        say(f"{server.name}: stopping")
        stop(process)


def limits(server: Server, process: subprocess.Popen, configs: list[Config], plan: Plan,
           guess: Callable[[Config], float], known: dict[str, float]) -> dict[str, dict]:
    """Highest rate within the SLO of each config against a running server: a calibration sweep each (unless the
    plan has none), then `plan.repeats` rounds of sweeps, the configs interleaved within a round. `known` collects
    each config's limit (msgs/s) so later configs can size their first sweep from it."""
    found: dict[str, dict] = {c.key: {**asdict(c), "sweeps": []} for c in configs}

    def sweep(config: Config, phase: Phase, grid: Grid) -> dict:
        def one(g: Grid) -> tuple[dict, str]:
            cool_down([process.pid, *descendants(process.pid)])  # the backlog of the last overloaded step
            return loadtest(server.target, [*config.workload.args(phase), "--rate", g.spec()])
        return find_limit(one, grid, config.batch)

    expected: dict[str, float] = {}
    for config in configs if plan.calibration else []:
        result = sweep(config, plan.calibration, Grid.from_zero(2 * guess(config), plan.steps))
        found[config.key]["calibration"] = result
        if result["rate"]:
            expected[config.key] = known[config.key] = result["rate"]
        say(f"{server.name}: calibrated {config.key}: {result['rate']} msgs/s")
    for repeat in range(plan.repeats):
        for config in configs:
            rate = expected.get(config.key)
            grid = Grid.around(rate, plan.steps) if rate else Grid.from_zero(2 * guess(config), plan.steps)
            result = sweep(config, plan.sweep, grid)
            found[config.key]["sweeps"].append(result)
            if result["rate"]:
                expected.setdefault(config.key, result["rate"])
                known.setdefault(config.key, result["rate"])
            bound = " (lower bound: no rate broke)" if result["lower_bound"] else ""
            say(f"{server.name}: {config.key} sweep {repeat + 1}/{plan.repeats}: {result['items_per_s'] or 0:.0f} "
                f"items/s at {result['rate']} msgs/s within the SLO{bound}; rates {result['steps'][0]['rate']:g}.."
                f"{result['steps'][-1]['rate']:g}")
    for entry in found.values():
        figures = [s["items_per_s"] or 0.0 for s in entry["sweeps"]]
        entry.update(items_per_s=statistics.median(figures), per_sweep_items_per_s=figures,
                     rate=statistics.median(s["rate"] or 0.0 for s in entry["sweeps"]),
                     lower_bound=any(s["lower_bound"] for s in entry["sweeps"]))
    return found


def fixed_run(server: Server, process: subprocess.Popen, workload: Workload, rate: float, phase: Phase) -> dict:
    """One fixed-rate loadtest; latency from its report, and the share of the machine's CPU each of the server's
    processes (and the load generator) used while it measured."""
    groups = roles(process.pid, server.main_role)
    watches: list[CpuWatch] = []

    def watch(client_pid: int) -> CpuWatch:
        watches.append(CpuWatch({**groups, "client": [client_pid]}))
        return watches[0]

    cool_down([process.pid, *descendants(process.pid)])
    before = scrape(server.metrics_port) if server.metrics_port else {}
    report, command = loadtest(server.target, [*workload.args(phase), "--rate", f"{rate:g}"], during=watch)
    stages = stage_means_ms(before, scrape(server.metrics_port)) if server.metrics_port else None
    end = watches[0].samples[-1].at  # sampled as the client exited
    measured = report["measured"]
    cpu = watches[0].shares(end - phase.duration_s, end - EXIT_MARGIN_S)
    items_per_s = measured["throughput"]["items_per_s"]
    # CPU per item answered, per process role: what each hop costs, whatever the rate.
    cpu["us_per_item"] = {role: round(share * cpu["cpus"] / items_per_s * 1e6, 1) if items_per_s else None
                          for role, share in cpu["shares_of_machine"].items() if role != "machine_busy"}
    return {"rate": rate, "batch": workload.batch, "rpc": workload.rpc, "command": command,
            "items_per_s": items_per_s, "p50_ms": measured["latency_ms"]["p50"],
            "p99_ms": measured["latency_ms"]["p99"], "max_ms": measured["latency_ms"]["max"],
            "passed": report["passed"], "cpu": cpu, "pids": groups, "stages_ms": stages}


def guesser(ceiling_result: dict, known: dict[str, float]) -> Callable[[Config], float]:
    """A first guess of a config's limit (msgs/s), to size its first sweep: the same server at batch 16 if known (a
    message of 1 window costs less than one of 16), else a quarter of the ceiling at the config's batch size. A wrong
    guess costs an extra sweep, never a wrong figure."""
    def guess(config: Config) -> float:
        for key, factor in ((f"{config.server}_stream_batch16", 2.0 if config.batch == 1 else 1.0),
                            (f"{config.server}_unary_batch16", 2.0 if config.batch == 1 else 1.0)):
            if key in known and key != config.key:
                return known[key] * factor
        row = ceiling_result["batches"].get(f"batch{config.batch}", {"windows_per_s": ceiling_result["windows_per_s"]})
        return row["windows_per_s"] / config.batch / 4
    return guess


def load_average() -> dict:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"getloadavg": [round(x, 2) for x in os.getloadavg()], "uptime": uptime}


def machine() -> dict:
    """What the figures were measured on."""
    def first(path: str, prefix: str) -> str:
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
        return "unknown"

    versions = {}
    for name in ("onnxruntime", "onnxruntime-gpu", "ray", "grpcio", "numpy", "protobuf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {"cpus": os.cpu_count(), "cpu_model": first("/proc/cpuinfo", "model name"),
            "memory": first("/proc/meminfo", "MemTotal"), "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions}


def git_commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def short_revision() -> str:
    """The commit, short, marked when the work tree has changes: for a results file's first line."""
    state = git_commit()
    return state["commit"][:12] + (" (dirty)" if state["dirty"] else "")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: one sweep per config, shorter steps")
    parser.add_argument("--repeats", type=int, help="sweeps per config, medians reported [default: 3; quick: 1]")
    parser.add_argument("--bundle", type=Path, help="serve this bundle instead of training the fixture's model")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where summary.{json,md,png} go")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = Plan(args.repeats, plan.sweep, plan.calibration, plan.fixed, plan.steps, plan.ceiling_s)
    meta = {"command": shlex.join(sys.orig_argv), "started": now(), "load_average": {"start": load_average()},
            **git_commit(), "machine": machine(), "quick": args.quick, "plan": asdict(plan), "slo_ms": SLO_MS}
    say(f"performance run ({'quick' if args.quick else 'full'}, {plan.repeats} sweep(s) per config)")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or train(Path(tmp) / "bundle")
        say("fixture model trained" if args.bundle is None else f"serving {bundle}")
        top = ceiling(bundle, CEILING_BATCHES, plan.ceiling_s, 1 if args.quick else 3)
        known: dict[str, float] = {}
        guess = guesser(top, known)
        same_load = round(SAME_LOAD_FRACTION * top["windows_per_s"] / 16)
        found: dict[str, dict] = {}
        fixed: dict[str, dict] = {}
        servers = [(ours("ray", bundle, Path(tmp) / "registry-ray"),
                    [Config("ray", 16), Config("ray", 1), Config("ray", 16, "unary")], "stream"),
                   (ours("inprocess", bundle, Path(tmp) / "registry-inprocess"),
                    [Config("inprocess", 16), Config("inprocess", 1)], "stream"),
                   (peer(bundle), [Config("peer", 16, "unary")], "unary")]
        for server, configs, rpc in servers:
            with running(server, Path(tmp)) as process:
                found.update(limits(server, process, configs, plan, guess, known))
                light_rate = max(1.0, round(LIGHT_FRACTION * found["ray_stream_batch1"]["rate"], 1))
                fixed[f"{server.name}_light"] = fixed_run(server, process, Workload(1, rpc), light_rate, plan.fixed)
                at_slo = found[f"{server.name}_{rpc}_batch16"]["rate"]
                if at_slo:
                    fixed[f"{server.name}_at_slo"] = fixed_run(server, process, Workload(16, rpc), at_slo, plan.fixed)
                fixed[f"{server.name}_same_load"] = fixed_run(server, process, Workload(16, rpc), same_load,
                                                              plan.fixed)
                for name in (f"{server.name}_light", f"{server.name}_at_slo", f"{server.name}_same_load"):
                    if name in fixed:
                        run = fixed[name]
                        say(f"{name}: {run['rate']:g} msgs/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} "
                            f"ms, CPU µs/item {run['cpu']['us_per_item']}, stages (mean ms) {run['stages_ms']}")
    meta["finished"] = now()
    meta["load_average"]["end"] = load_average()
    summary = summarise(meta, top, found, fixed)
    write_outputs(summary, args.out)
    say(f"wrote {args.out}/summary.json, summary.md, summary.png")
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
