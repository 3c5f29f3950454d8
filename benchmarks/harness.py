"""Pieces the benchmarks share, so each script composes them instead of re-implementing them: the small EC2
fixture model, `aelstm serve` subprocesses (started, waited for, stopped with everything they spawned), runs of
`aelstm-client loadtest`, and onnxruntime alone on the same bundle as the ceiling.

Run the scripts as modules from the repository root (`python -m benchmarks.client.serve_sweep`), so they can import
this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "nab" / "data" / "realKnownCause" / "ec2_request_latency_system_failure.csv"
AELSTM = [sys.executable, "-m", "aelstm.cli"]
CLIENT = [sys.executable, "-c", "from aelstm.client.cli import main; main()"]
WINDOW = 16
# Ray must not phone home, and a benchmark's servers must never join a Ray someone else started on this machine
# (a bare ray.init() joins the cluster named in /tmp/ray/ray_current_cluster; RAY_ADDRESS=local starts a new one).
SERVER_ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": "local"}



def uptime() -> str:
    """`uptime` at the moment (the load averages say whether the machine was otherwise idle)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())

def train(bundle: Path) -> Path:
    """The small model every serving benchmark uses: 5 epochs on the first 15 % of the EC2 latency fixture, window 16
    (seconds)."""
    subprocess.run([*AELSTM, "train", str(FIXTURE), "--dataset", "nab", "--train-fraction", "0.15",
                    "--window", str(WINDOW), "--epochs", "5", "-o", str(bundle), "--quiet"],
                   check=True, capture_output=True, timeout=600)
    return bundle


def fixture_windows() -> np.ndarray:
    """Every window of the fixture series, as the model sees them: `[n, 16, 1]` raw float32."""
    from aelstm.core.data import load_nab
    from aelstm.core.preprocess import sliding_windows

    return sliding_windows(load_nab(FIXTURE).values.astype(np.float32), WINDOW)


def write_report(folder: Path, name: str, data: dict, text: str, indent: int = 2) -> Path:
    """A benchmark's results in `folder`: `<name>.json` (everything measured) and `<name>.md` (`text`, its report);
    returns the report's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data, indent=indent, default=float) + "\n")
    report = folder / f"{name}.md"
    report.write_text(text)
    return report


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces or ')'): field 3 (state) comes first."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children, ...), from /proc: Ray's raylet, GCS and workers."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start_process(command: Sequence[str], log: Path, ready: str, what: str, timeout_s: float = 300,
                  env: dict | None = None, own_session: bool = True) -> subprocess.Popen:
    """Start `command` with its output in `log` (a file, so a chatty server never blocks on a full pipe) and wait
    until `ready` appears there; a process that exits or overstays `timeout_s` first is stopped and reported.
    `own_session`: in a session of its own, out of reach of the benchmark's terminal signals."""
    with log.open("w") as sink:
        process = subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT, env=env or SERVER_ENV,
                                   cwd=REPO, start_new_session=own_session)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if ready in log.read_text(errors="replace"):
            return process
        time.sleep(0.3)
    stop(process)
    raise SystemExit(f"{what} did not start; its output:\n{log.read_text(errors='replace')[-2000:]}")


def start_server(bundle: Path, registry: Path, backend: str, port: int, log: Path,
                 extra: Sequence[str] = (), own_session: bool = True) -> subprocess.Popen:
    """`aelstm serve` on 127.0.0.1:`port` with `bundle` as the default model, metrics off."""
    command = [*AELSTM, "serve", "--backend", backend, "--host", "127.0.0.1", "--port", str(port),
               "--default-bundle", str(bundle), "--registry", str(registry), "--metrics-port", "0",
               "--log-format", "text", *extra]
    return start_process(command, log, "serving on", f"aelstm serve --backend {backend}", own_session=own_session)


def _started(pid: int) -> str | None:
    """A process's start time (field 22): tells it apart from a later process that got the same pid."""
    try:
        return stat_fields(pid)[19]
    except (OSError, IndexError):
        return None


def stop(process: subprocess.Popen, timeout_s: float = 90) -> None:
    """SIGTERM (the server drains and shuts its Ray down); whatever it spawned and left behind, or the server itself
    if it hangs, gets SIGKILL. Only these processes: never a broad `ray stop`, which would end other people's Ray."""
    spawned = [(pid, _started(pid)) for pid in descendants(process.pid)]
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(born is not None and _started(pid) == born for pid, born in spawned):
        time.sleep(0.2)
    for pid, born in spawned:
        if born is not None and _started(pid) == born:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def loadtest_command(target: str, args: Sequence[str]) -> list[str]:
    return [*CLIENT, "--target", target, "loadtest", *args, "--no-progress"]


def shown(target: str, args: Sequence[str]) -> str:
    """The loadtest command line as a person would type it."""
    return shlex.join(["aelstm-client", "--target", target, "loadtest", *args])


def loadtest(target: str, args: Sequence[str], timeout_s: float = 1800,
             during: Callable[[int], contextlib.AbstractContextManager] | None = None) -> tuple[dict, str]:
    """Run `aelstm-client loadtest` once; returns its JSON report and the command line. A run that fails its check
    (exit 7: a rate missed the SLO, something was lost) still reports; any other failure stops the benchmark.
    `during(pid)`, if given, is a context entered while the client (that pid) runs: to watch it, say."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        client = subprocess.Popen([*loadtest_command(target, args), "--json", str(path)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        with client, during(client.pid) if during else contextlib.nullcontext():
            try:
                _, errors = client.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                client.kill()
                raise SystemExit(f"loadtest ran past {timeout_s:.0f} s: {shown(target, args)}") from None
        if client.returncode not in (0, 7) or not path.exists():
            raise SystemExit(f"loadtest failed ({client.returncode}): {errors.strip()[-2000:]}")
        return json.loads(path.read_text()), shown(target, args)


def raw_scorer(bundle: Path, windows: np.ndarray, batch: int, seconds: float = 2.0, device: str = "cpu") -> dict:
    """Ceiling: onnxruntime alone (one thread, no gRPC) on calls of `batch` windows, for `seconds`."""
    from aelstm.core.bundle import load_bundle
    from aelstm.core.runtime import BundleScorer

    scorer = BundleScorer(load_bundle(bundle), device=device)
    pool = np.concatenate([windows] * (1 + 2 * batch // len(windows)))  # room for batches larger than the series
    scorer.score(pool[:batch])  # first call: allocations (and CUDA kernels) outside the timing
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        start = calls * batch % (len(pool) - batch)
        scorer.score(pool[start:start + batch])
        calls += 1
    elapsed = time.perf_counter() - started
    return {"items_per_s": calls * batch / elapsed, "requests_per_s": calls / elapsed,
            "p50_ms": elapsed / calls * 1e3, "p99_ms": None, "provider": scorer.provider}
