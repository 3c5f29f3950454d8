"""Autoscaling in action: Scorer replicas added under load and removed after it, with the latency seen meanwhile.

Starts `aelstm serve` on an embedded Ray with `--replicas 1 --max-replicas 2` and drives it in three phases — light,
heavy, light — as back-to-back short `aelstm-client loadtest` segments, while reading the server's own
`aelstm_backend_replicas` gauge (running Scorer replicas, from Ray Serve) once a second. Ray Serve scales on the calls
queued per replica (`--target-ongoing-requests`); the ingress keeps a busy model's calls a few milliseconds apart, so
about one call is under way per replica at a time, and the target is set below that to make the heavy phase ask for
a second replica on this 2-core machine.

    python -m benchmarks.performance.autoscale      # writes benchmarks/results/performance/autoscale.{json,md,png}
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness import REPO, free_port, loadtest, start_server, stop, train, write_report
from benchmarks.performance.limits import SLO_MS
from benchmarks.performance.run import load_average, machine, say
from benchmarks.performance.stages import scrape

RESULTS = REPO / "benchmarks" / "results" / "performance"
REPLICAS = "aelstm_backend_replicas{}"


class ReplicaWatch:
    """Samples the server's replica gauge every second in a thread, until stopped."""

    def __init__(self, metrics_port: int, started: float) -> None:
        self.samples: list[tuple[float, float]] = []
        self._port, self._started = metrics_port, started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                value = scrape(self._port).get(REPLICAS)
            except OSError:
                continue
            if value is not None:
                self.samples.append((round(time.monotonic() - self._started, 1), value))

    def __enter__(self) -> ReplicaWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def segment(target: str, rate: float, seconds: float, batch: int, started: float) -> dict:
    """One open-loop loadtest segment at `rate` msgs/s; its latency and when it ran."""
    begin = time.monotonic() - started
    report, _ = loadtest(target, ["-G", "4", "-D", "256", "-b", str(batch), "--rate", f"{rate:g}",
                                  "--warmup", "0s", "--duration", f"{seconds:g}s", "--drain", "5s",
                                  "--slo-ms", f"{SLO_MS:g}"])
    measured = report["measured"]
    return {"start_s": round(begin, 1), "end_s": round(time.monotonic() - started, 1), "rate": rate,
            "items_per_s": round(measured["throughput"]["items_per_s"], 1),
            "p50_ms": measured["latency_ms"]["p50"], "p99_ms": measured["latency_ms"]["p99"],
            "lost": measured["lost"], "item_errors": sum(measured.get("item_errors", {}).values())}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    times, values = zip(*result["replicas"], strict=True) if result["replicas"] else ((), ())
    top.step(times, values, where="post", color="tab:blue")
    top.set_ylabel("running Scorer replicas")
    top.set_ylim(0, result["settings"]["max_replicas"] + 0.5)
    for seg in result["segments"]:
        mid = (seg["start_s"] + seg["end_s"]) / 2
        bottom.plot([seg["start_s"], seg["end_s"]], [seg["p99_ms"]] * 2, color="tab:red")
        bottom.plot([seg["start_s"], seg["end_s"]], [seg["p50_ms"]] * 2, color="tab:green")
        top.text(mid, 0.2, f"{seg['rate']:g}", ha="center", fontsize=7, color="grey")
    bottom.axhline(SLO_MS, color="grey", linestyle=":", label=f"SLO p99 {SLO_MS:g} ms")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency per segment (ms)\np50 green, p99 red")
    bottom.set_xlabel("seconds since the load started (grey: offered msgs/s)")
    bottom.legend(loc="upper right")
    fig.suptitle("Autoscaling: replicas added under load, removed after")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# Autoscaling under a load step", "",
             f"`{result['command']}`, {result['started']}; load average {result['load_average']['start']['uptime']}.",
             f"`aelstm serve` with `--replicas {s['replicas']} --max-replicas {s['max_replicas']} "
             f"--target-ongoing-requests {s['target_ongoing_requests']}`, {s['batch']} windows per message.", "",
             "| phase | from (s) | to (s) | msgs/s offered | items/s | p50 ms | p99 ms | lost | replicas seen |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for seg in result["segments"]:
        seen = sorted({int(v) for t, v in result["replicas"] if seg["start_s"] <= t <= seg["end_s"]})
        lines.append(f"| {seg['phase']} | {seg['start_s']} | {seg['end_s']} | {seg['rate']:g} | "
                     f"{seg['items_per_s']:,.0f} | {seg['p50_ms']:.2f} | {seg['p99_ms']:.2f} | {seg['lost']} | "
                     f"{seen} |")
    lines += ["", f"Scale-up seen {result['scaled_up_after_s']} s after the heavy phase began; back to "
              f"{s['replicas']} replica(s) {result['scaled_down_after_s']} s after it ended.", "",
              "![replicas and latency](autoscale.png)", ""]
    return "\n".join(lines)


def first_time(samples: list[tuple[float, float]], after: float, predicate) -> float | None:
    for t, value in samples:
        if t >= after and predicate(value):
            return round(t - after, 1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--light", type=float, default=20.0, help="msgs/s in the light phases [20]")
    parser.add_argument("--heavy", type=float, default=400.0, help="msgs/s in the heavy phase [400]")
    parser.add_argument("--batch", type=int, default=16, help="windows per message [16]")
    parser.add_argument("--before-s", type=float, default=40.0,
                        help="length of the light phase before it (start-up scaling settles) [40]")
    parser.add_argument("--heavy-s", type=float, default=40.0, help="length of the heavy phase [40]")
    parser.add_argument("--after-s", type=float, default=60.0, help="length of the light phase after it [60]")
    parser.add_argument("--segment-s", type=float, default=5.0, help="loadtest segment length [5]")
    parser.add_argument("--target-ongoing", type=float, default=0.5, help="--target-ongoing-requests [0.5]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    settings = {"replicas": 1, "max_replicas": 2, "target_ongoing_requests": args.target_ongoing,
                "batch": args.batch}
    result = {"command": shlex.join(sys.orig_argv), "started": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "load_average": {"start": load_average()}, "machine": machine(), "settings": settings}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = train(Path(tmp) / "bundle")
        port, metrics_port = free_port(), free_port()
        server = start_server(bundle, Path(tmp) / "registry", "ray", port, Path(tmp) / "serve.log",
                              ["--replicas", "1", "--max-replicas", "2", "--target-ongoing-requests",
                               f"{args.target_ongoing:g}", "--metrics-port", str(metrics_port), "--poll-s", "0.5"])
        try:
            target, started, segments = f"127.0.0.1:{port}", time.monotonic(), []
            with ReplicaWatch(metrics_port, started) as watch:
                for phase, rate, length in (("light", args.light, args.before_s), ("heavy", args.heavy, args.heavy_s),
                                            ("light after", args.light, args.after_s)):
                    phase_start = time.monotonic() - started
                    result[f"{phase.replace(' ', '_')}_start_s"] = round(phase_start, 1)
                    while time.monotonic() - started - phase_start < length:
                        seg = {"phase": phase, **segment(target, rate, args.segment_s, args.batch, started)}
                        segments.append(seg)
                        say(f"{phase} {rate:g} msgs/s: p50 {seg['p50_ms']:.2f} ms, p99 {seg['p99_ms']:.2f} ms, "
                            f"replicas {watch.samples[-1][1] if watch.samples else '?'}")
                result["replicas"] = watch.samples
        finally:
            stop(server)
    result["segments"] = segments
    result["scaled_up_after_s"] = first_time(result["replicas"], result["heavy_start_s"], lambda v: v >= 2)
    result["scaled_down_after_s"] = first_time(result["replicas"], result["light_after_start_s"], lambda v: v <= 1)
    result["load_average"]["end"] = load_average()
    text = markdown(result)
    write_report(args.out, "autoscale", result, text)
    plot(result, args.out / "autoscale.png")
    print(text)


if __name__ == "__main__":
    main()
