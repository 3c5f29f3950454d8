"""What retraining costs scoring: the p99 of a fixed-rate load alone and while a retraining run trains beside the
server, alternating in one run.

    python -m benchmarks.performance.retraining_impact [--default-bundle DIR]
    # writes benchmarks/results/performance/retraining_impact.{json,md}

One `aelstm serve` (embedded Ray, default settings) serves the default `aelstm train` model as fleet `machines` and
records the normal readings of every device (`--record-devices 1`, the most a retraining run can get). Simulated
gateways send one new reading per item (`--items readings`, as gateways do) at a fixed rate. Each repeat runs that
load twice for `--phase-s`: once alone, once while the run the server's retraining loop starts (the loop's own
command, `server.retraining.retrain_command`, in the loop's scheduling class, fitting on this host as an embedded
ingress does) trains on what was recorded. The retraining run is then waited for, its outcome and duration
recorded, before the next repeat. The target: p99 while retraining at most 10 % above p99 alone (medians over
the repeats).

A control runs in each repeat too (`--control`, on by default): the same pair of phases with, instead of the
retraining run, a bare Python busy loop in the loop's scheduling class (no memory traffic, no I/O). It tells what any
work beside scoring on these cores costs, whatever it does: what retraining costs beyond it is its own.

The server runs in this benchmark's session, so the retraining run it starts shares a session with the server and
its Ray workers, as when the server's loop starts it: Linux's autogroup scheduling shares the CPUs between sessions
first, whatever the priorities inside them, so a retraining run in another session could take a whole session's
share. `--classes idle,apart` also runs, in each repeat, the retraining in a session of its own, each after a phase
alone, so that the two compare within one run (on 2 cores they did not differ beyond the repeats' spread).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aelstm.core.priority import below_scoring
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.server.retraining import retrain_command
from aelstm.training.retrain import plan_retraining
from benchmarks.harness import REPO, SERVER_ENV, free_port, loadtest, start_server, stop, uptime, write_report
from benchmarks.performance.limits import SLO_MS
from benchmarks.performance.overload import RESULTS, train_default, window_of
from benchmarks.performance.run import git_commit, machine, now, say

FLEET = "machines"
TARGET_RATIO = 1.10  # p99 while retraining / p99 alone
FLUSH_S = 2.0  # the recorder's write interval here: recordings reach the disk soon after the load


def apart() -> None:
    """The loop's scheduling, but in a session (so a scheduling group) of its own: for comparison."""
    os.setsid()
    below_scoring()


# How the retraining process is put below scoring: the loop's way, and the same apart from the server's session.
CLASSES = {"idle": below_scoring, "apart": apart}
CONTROL = "busy loop"  # the control's label: a bare loop, scheduled as the loop schedules retraining


def load_args(rate: float, phase_s: float, warmup_s: float) -> list[str]:
    return ["-G", "4", "--fleet", FLEET, "-D", "256", "-b", "16", "--items", "readings", "--rate", f"{rate:g}",
            "--warmup", f"{warmup_s:g}s", "--duration", f"{phase_s:g}s", "--drain", "5s", "--slo-ms", f"{SLO_MS:g}"]


def phase(report: dict, command: str) -> dict:
    m = report["measured"]
    return {"command": command, "items_per_s": m["throughput"]["items_per_s"], "p50_ms": m["latency_ms"]["p50"],
            "p99_ms": m["latency_ms"]["p99"], "max_ms": m["latency_ms"]["max"], "sent": m["sent"],
            "answered": m["answered"], "lost": m["lost"], "errors": m["errors"], "item_errors": m["item_errors"],
            "items_refused": m["items_refused"]}


def wait_for_recordings(config: ServeConfig, timeout_s: float = 60.0) -> None:
    """Until the server's recordings give the fleet enough rows to retrain on (as the loop's planner counts them)."""
    deadline = time.monotonic() + timeout_s
    while True:
        plan = plan_retraining(Path(config.record_dir), Path(config.registry), [FLEET], config.retrain_min_rows)
        if plan.fleets:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing to retrain on after {timeout_s:.0f} s: {plan.skipped[0].reason}")
        time.sleep(0.5)


def start_retraining(config: ServeConfig, folder: Path, scheduling: str) -> subprocess.Popen:
    """The run the server's retraining loop starts, started as it starts it (`scheduling` "idle"), or `apart`."""
    log = (folder / "retrain.log").open("w")
    return subprocess.Popen(retrain_command(config, folder / "summary.json"), stdout=log, stderr=subprocess.STDOUT,
                            env=SERVER_ENV, cwd=REPO, preexec_fn=CLASSES[scheduling])


def start_busy_loop() -> subprocess.Popen:
    """The control: a Python loop that only spins, in the loop's scheduling class and the server's session."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=below_scoring)


def measure(bundle: Path, work: Path, args: argparse.Namespace) -> dict:
    registry, recorded = work / "registry", work / "recorded"
    publish(bundle, registry, FLEET)
    config = ServeConfig(registry=str(registry), record_dir=str(recorded))
    port = free_port()
    server = start_server(bundle, registry, "ray", port, work / "server.log",
                          ["--record-dir", str(recorded), "--record-devices", "1", "--record-flush-s", f"{FLUSH_S:g}",
                           "--poll-s", "1"], own_session=False)
    target = f"127.0.0.1:{port}"
    rows = []
    try:
        for repeat in range(args.repeats):
            for scheduling in args.classes.split(","):
                # the very first phase also fills every device's window (one reading per item)
                warmup_s = 3.0 if rows else 3.0 + window_of(bundle) * 256 / (16 * args.rate)
                alone = phase(*loadtest(target, load_args(args.rate, args.phase_s, warmup_s)))
                wait_for_recordings(config)  # recorded since the version the last retraining published
                run_dir = work / f"retrain-{repeat}-{scheduling}"
                run_dir.mkdir()
                started = time.monotonic()
                retraining = start_retraining(config, run_dir, scheduling)
                beside = phase(*loadtest(target, load_args(args.rate, args.phase_s, 3.0)))
                overlapped = retraining.poll() is None  # still training when the load ended
                retraining.wait()
                took = time.monotonic() - started
                summary = run_dir / "summary.json"
                outcomes = json.loads(summary.read_text()) if summary.is_file() else []
                rows.append({"repeat": repeat + 1, "scheduling": scheduling, "alone": alone, "retraining": beside,
                             "retrain_s": round(took, 1), "retrain_overlapped_whole_phase": overlapped,
                             "retrain_exit": retraining.returncode, "retrain_outcomes": outcomes})
                say(f"repeat {repeat + 1}, {scheduling}: p99 {alone['p99_ms']:.1f} ms alone, "
                    f"{beside['p99_ms']:.1f} ms while retraining (retraining took {took:.0f} s: "
                    f"{[o['status'] for o in outcomes]})")
            if args.control:
                alone = phase(*loadtest(target, load_args(args.rate, args.phase_s, 3.0)))
                busy = start_busy_loop()
                try:
                    beside = phase(*loadtest(target, load_args(args.rate, args.phase_s, 3.0)))
                finally:
                    busy.kill()
                    busy.wait()
                rows.append({"repeat": repeat + 1, "scheduling": CONTROL, "alone": alone, "retraining": beside})
                say(f"repeat {repeat + 1}, {CONTROL}: p99 {alone['p99_ms']:.1f} ms alone, {beside['p99_ms']:.1f} ms "
                    "beside it")
    finally:
        stop(server)
    medians = {}
    for scheduling in args.classes.split(",") + ([CONTROL] if args.control else []):
        mine = [row for row in rows if row["scheduling"] == scheduling]
        alone = statistics.median(row["alone"]["p99_ms"] for row in mine)
        beside = statistics.median(row["retraining"]["p99_ms"] for row in mine)
        pairs = statistics.median(row["retraining"]["p99_ms"] / row["alone"]["p99_ms"] for row in mine)
        medians[scheduling] = {"p99_alone_ms": alone, "p99_retraining_ms": beside, "p99_ratio": beside / alone,
                               "p99_ratio_median_of_pairs": pairs, "met": beside / alone <= TARGET_RATIO}
        if scheduling != CONTROL:
            medians[scheduling]["retrain_s"] = statistics.median(row["retrain_s"] for row in mine)
    return {"rows": rows, "medians": medians, "target_ratio": TARGET_RATIO}


def markdown(summary: dict) -> str:
    r = summary["result"]
    lines = [
        "# Scoring while retraining runs",
        "",
        f"Reproduce: `{summary['command']}` (commit {summary['commit'][:7]}; `uptime` at start: "
        f"`{summary['uptime_start']}`; at end: `{summary['uptime_end']}`). {summary['machine']['cpus']} CPUs "
        f"({summary['machine']['cpu_model']}).",
        "",
        f"`aelstm serve` (embedded Ray, defaults) serving the default `aelstm train` model as fleet `{FLEET}`, "
        f"recording every device; load: {summary['rate']:g} msgs/s of 16 readings items ({16 * summary['rate']:g} "
        f"readings/s) from 4 gateways over 256 devices, {summary['phase_s']:g} s per phase. 'While retraining': the "
        "run the server's retraining loop starts trains on the recordings, fitting on this host: `idle` as the loop "
        "starts it (Linux's idle scheduling class, nice 19, in the server's session), `apart` the same in a session "
        f"of its own; `{CONTROL}` the control: a bare Python loop in the same class and session as the loop's run, "
        "instead of retraining.",
        "",
        "| repeat | retraining as | p50 / p99 ms alone | p50 / p99 ms while retraining | p99 ratio | retraining took "
        "| outcome | lost |",
        "|---|---|---|---|---:|---|---|---|",
    ]
    for row in r["rows"]:
        a, b = row["alone"], row["retraining"]
        if row["scheduling"] == CONTROL:
            took, outcome = "-", "-"
        else:
            outcome = ", ".join(o["status"] for o in row["retrain_outcomes"]) or f"exit {row['retrain_exit']}"
            took = (f"{row['retrain_s']:.0f} s"
                    f"{'' if row['retrain_overlapped_whole_phase'] else ' (ended inside the phase)'}")
        lines.append(f"| {row['repeat']} | {row['scheduling']} | {a['p50_ms']:.1f} / {a['p99_ms']:.1f} | "
                     f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f} | {b['p99_ms'] / a['p99_ms']:.2f} | {took} | {outcome} | "
                     f"{a['lost'] + b['lost']} |")
    lines += ["", "| retraining as | median p99 alone | median p99 while retraining | ratio (target ≤ "
              f"{TARGET_RATIO:.2f}) | median of the repeats' ratios | median retraining time |",
              "|---|---|---|---|---|---|"]
    for scheduling, m in r["medians"].items():
        took = f"{m['retrain_s']:.0f} s" if "retrain_s" in m else "-"
        verdict = "the control" if scheduling == CONTROL else "met" if m["met"] else "not met"
        lines.append(f"| {scheduling} | {m['p99_alone_ms']:.1f} ms | {m['p99_retraining_ms']:.1f} ms | "
                     f"{m['p99_ratio']:.2f} ({verdict}) | "
                     f"{m['p99_ratio_median_of_pairs']:.2f} | {took} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="messages/s of 16 readings [50]")
    parser.add_argument("--phase-s", type=float, default=30.0, help="seconds of load per phase [30]")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of phases; medians reported [3]")
    parser.add_argument("--classes", default="idle", help="retraining as the loop starts it (idle) and/or in a "
                                                          "session of its own (apart), comma-separated [idle]")
    parser.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                        help=f"also run the control ({CONTROL}) in each repeat [on]")
    parser.add_argument("--default-bundle", type=Path, help="an already trained default model (else trained here)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    summary = {"command": shlex.join(sys.orig_argv), "started": now(), **git_commit(), "machine": machine(),
               "uptime_start": uptime(), "rate": args.rate, "phase_s": args.phase_s}
    with tempfile.TemporaryDirectory(prefix="aelstm-retrain-impact-") as tmp:
        bundle = args.default_bundle or train_default(Path(tmp) / "default")
        summary["result"] = measure(bundle, Path(tmp), args)
    summary["finished"], summary["uptime_end"] = now(), uptime()
    text = markdown(summary)
    write_report(args.out, "retraining_impact", summary, text)
    print(text)


if __name__ == "__main__":
    main()
