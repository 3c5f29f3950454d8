"""Soak: `aelstm serve` on an embedded Ray with two Scorer replicas under steady load for a long time, while a
Scorer replica is killed every `--kill-every` (SIGKILL of its worker process: a crash, not a polite stop),
gateways keep reconnecting (short streams opened and closed) and bad inputs are mixed in.

    python -m benchmarks.reliability.soak                      # 10 minutes at half the measured rate
    python -m benchmarks.reliability.soak --duration 60s       # smoke test
    python -m benchmarks.reliability.soak --rate 400           # half of 400 messages/s, no measuring

The steady load is one `aelstm-client loadtest` run (open loop, long-lived streams that reconnect and resend on
UNAVAILABLE); the churn gateways run in this process. Writes benchmarks/results/reliability/soak.json (sent,
answered, lost, item errors by code, replica kills, the ingress RSS at start and end, duration, command, uptime)
and soak.md beside it. Bounded: every phase has a time limit, and everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from benchmarks import harness

RESULTS = harness.REPO / "benchmarks" / "results" / "reliability"


def seconds(text: str) -> float:
    """`90`, `90s`, `2m`, `1h` -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 10m)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def scorer_pids(server_pid: int) -> list[int]:
    """Worker processes of the server's Ray that host a Scorer replica (their title names the deployment)."""
    found = []
    for pid in harness.descendants(server_pid):
        with contextlib.suppress(OSError):
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "Scorer" in title and "ServeReplica" in title:
                found.append(pid)
    return found


class Killer(threading.Thread):
    """SIGKILLs one Scorer replica every `every_s` until stopped."""

    def __init__(self, server_pid: int, every_s: float) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.every_s = server_pid, every_s
        self.kills: list[dict] = []
        self.halt = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not self.halt.wait(self.every_s):
            victims = scorer_pids(self.server_pid)
            if not victims:
                self.kills.append({"at_s": round(time.monotonic() - started, 1), "pid": None,
                                   "note": "no running Scorer replica found"})
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(victims[0], signal.SIGKILL)
            self.kills.append({"at_s": round(time.monotonic() - started, 1), "pid": victims[0],
                               "replicas_before": len(victims)})


async def churn(target: str, until: float, windows: np.ndarray, every_s: float = 1.0) -> dict:
    """Gateways that reconnect: each round opens a stream, sends a few requests (some with bad items: wrong shape,
    no device, NaN-only window, Inf), reads every answer and closes. Counts requests and item outcomes."""
    from aelstm.v1 import scoring_pb2 as pb
    from aelstm.v1 import scoring_pb2_grpc as pb_grpc

    def tensor(values: np.ndarray) -> pb.Tensor:
        values = np.asarray(values, "<f4")
        return pb.Tensor(shape=list(values.shape), packed=values.tobytes())

    good = windows[0]
    bad_items = [pb.Item(device_id="bad-shape", window=tensor(good[:8])),
                 pb.Item(window=tensor(good)),
                 pb.Item(device_id="nan-only", window=tensor(np.full_like(good, np.nan))),
                 pb.Item(device_id="inf", window=tensor(np.where(np.arange(len(good))[:, None] == 3, np.inf, good)))]
    counts = {"streams": 0, "sent": 0, "answered": 0, "lost": 0, "stream_errors": Counter(), "item_errors": Counter(),
              "items_ok": 0}
    k = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.AnomalyScorerStub(channel)
        while time.monotonic() < until:
            requests = []
            for n in range(5):
                items = [pb.Item(device_id=f"churn-{k % 50}", window=tensor(windows[(k + j) % len(windows)]))
                         for j in range(4)]
                if n % 2 == 0:
                    items.append(bad_items[(k + n) % len(bad_items)])
                requests.append(pb.ScoreRequest(request_id=f"c{k}-{n}", fleet_id="default", items=items))
            k += 1
            pending = {r.request_id for r in requests}
            counts["streams"] += 1
            counts["sent"] += len(requests)
            try:
                async for response in stub.StreamScore(iter(requests), timeout=10):
                    pending.discard(response.request_id)
                    counts["answered"] += 1
                    for result in response.results:
                        if result.status == pb.ITEM_STATUS_ERROR:
                            counts["item_errors"][grpc.StatusCode(_code(result.error.code)).name] += 1
                        else:
                            counts["items_ok"] += 1
            except grpc.aio.AioRpcError as exc:
                counts["stream_errors"][exc.code().name] += len(pending)
                pending.clear()  # counted as errors (the stream said why), not lost
            counts["lost"] += len(pending)
            await asyncio.sleep(every_s)
    counts["stream_errors"], counts["item_errors"] = dict(counts["stream_errors"]), dict(counts["item_errors"])
    return counts


def _code(value: int):
    return next(code for code in grpc.StatusCode if code.value[0] == value)


def measure_rate(target: str) -> float:
    """Messages/s the server answers with 32 in flight for 5 s (the load's shape: 4 gateways, batch 8)."""
    report, _ = harness.loadtest(target, ["-G", "4", "-D", "64", "-b", "8", "--mode", "closed", "--concurrency",
                                          "32", "--warmup", "2s", "--duration", "5s"], timeout_s=120)
    measured = report["runs"][0]["measured"] if "runs" in report else report["measured"]
    return measured["answered"] / max(measured["duration_s"], 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=seconds, default=600.0, help="soak time (default 10m)")
    parser.add_argument("--rate", type=float, help="full rate in messages/s; the soak runs at half of it "
                                                   "(default: measured for 5 s first)")
    parser.add_argument("--kill-every", type=seconds, default=120.0, help="replica kill interval (default 2m)")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aelstm-soak-"))
    bundle = harness.train(work / "bundle")
    windows = harness.fixture_windows()
    port = harness.free_port()
    target = f"127.0.0.1:{port}"
    started = time.time()
    server = harness.start_server(bundle, work / "registry", "ray", port, work / "server.log",
                                  extra=["--replicas", str(args.replicas), "--cpus-per-replica", "0.5",
                                         "--ray-cpus", "2"])
    killer = Killer(server.pid, args.kill_every)
    try:
        full_rate = args.rate if args.rate else measure_rate(target)
        rate = full_rate / 2
        rss_start = rss_mb(server.pid)
        load_args = ["-G", "4", "-D", "64", "-b", "8", "--rate", f"{rate:.1f}", "--warmup", "2s", "--duration",
                     f"{args.duration:.0f}s", "--drain", "30s", "--max-time", f"{args.duration + 120:.0f}s"]
        load_result: dict = {}

        def run_load() -> None:
            load_result["report"], load_result["command"] = harness.loadtest(target, load_args,
                                                                             timeout_s=args.duration + 300)

        loader = threading.Thread(target=run_load, daemon=True)
        loader.start()
        killer.start()
        churned = asyncio.run(churn(target, time.monotonic() + args.duration, windows))
        killer.halt.set()
        loader.join(args.duration + 320)
        rss_end = rss_mb(server.pid)
        alive = server.poll() is None
    finally:
        killer.halt.set()
        harness.stop(server)
        shutil.rmtree(work, ignore_errors=True)
    if "report" not in load_result:
        raise SystemExit("the loadtest did not finish")
    report = load_result["report"]
    measured = report["runs"][0]["measured"] if "runs" in report else report["measured"]
    warmup = report["runs"][0]["warmup"] if "runs" in report else report["warmup"]
    item_errors = Counter(measured["item_errors"]) + Counter(warmup["item_errors"]) + Counter(churned["item_errors"])
    summary = {
        "command": " ".join(sys.orig_argv),
        "loadtest_command": load_result["command"],
        "uptime": harness.uptime(),
        "duration_s": round(time.time() - started, 1),
        "soak_s": args.duration,
        "full_rate_msgs_per_s": round(full_rate, 1),
        "rate_msgs_per_s": round(rate, 1),
        "sent": measured["sent"] + warmup["sent"] + churned["sent"],
        "answered": measured["answered"] + warmup["answered"] + churned["answered"],
        "lost": measured["lost"] + warmup["lost"] + churned["lost"],
        "errors_by_code": dict(Counter(measured["errors"]) + Counter(warmup["errors"])
                               + Counter(churned["stream_errors"])),
        "item_errors_by_code": dict(item_errors),
        "resent": measured.get("resent", 0) + warmup.get("resent", 0),
        "reconnects": measured.get("reconnects", 0) + warmup.get("reconnects", 0),
        "kill_every_s": args.kill_every,
        "replica_kills": len([k for k in killer.kills if k["pid"]]),
        "kills": killer.kills,
        "churn": churned,
        "latency_ms": measured.get("latency_ms"),
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "ingress_alive_at_end": alive,
    }
    text = markdown(summary)
    harness.write_report(args.out, "soak", summary, text)
    print(text)


def markdown(s: dict) -> str:
    expected = {"INVALID_ARGUMENT"}  # the churn's bad items; anything else under item errors is a fault
    unexpected = {k: v for k, v in s["item_errors_by_code"].items() if k not in expected}
    rss = (f"{s['rss_start_mb']:.0f} → {s['rss_end_mb']:.0f} MB" if s["rss_start_mb"] and s["rss_end_mb"]
           else "unknown")
    return "\n".join([
        "# Soak", "",
        f"`{s['command']}` — {s['soak_s']:.0f} s at {s['rate_msgs_per_s']} messages/s (half of "
        f"{s['full_rate_msgs_per_s']}), a Scorer replica SIGKILLed every {s['kill_every_s']:.0f} s "
        f"({s['replica_kills']} kills), "
        f"gateways reconnecting ({s['churn']['streams']} short streams) and bad items mixed in.", "",
        "| sent | answered | lost | errors | item errors by code | resent | reconnects | ingress RSS |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s['sent']} | {s['answered']} | {s['lost']} | {s['errors_by_code'] or 0} | {s['item_errors_by_code']} | "
        f"{s['resent']} | {s['reconnects']} | {rss} |", "",
        f"Item errors other than the bad items' INVALID_ARGUMENT: {unexpected or 'none'}. "
        f"Ingress alive at the end: {s['ingress_alive_at_end']}. Machine: `{s['uptime']}`.", "",
    ])


if __name__ == "__main__":
    main()
