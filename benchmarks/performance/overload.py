"""Capacity that holds, and overload that is refused: each capacity figure confirmed by a long fixed-rate run, then
twice that rate offered for a minute.

For each model (the default `aelstm train` model of the NAB machine-temperature fixture, and the benchmarks' small
EC2 model) and each backend (`aelstm serve` on an embedded Ray, `--backend inprocess`, and with `--backends
...,peer` Ray Serve's own gRPC proxy serving the same model, `peer.py`), one server at a time:

1. the ceiling: onnxruntime alone on the bundle, one thread, at batch 16 and 256;
2. capacity: a quick sweep (`aelstm-client loadtest --rate A:B:STEP`, 3-s steps) brackets the limit, a second
   sweep at a quarter of the step refines it, and `--confirm-s` (default 30 s) fixed-rate runs settle it: a run
   confirms its rate when its p99 is within 50 ms, nothing was lost or in error and at most 0.1 % of items were
   refused. From the sweep's candidate, a confirmed rate is raised by 10 % and run again, a failed one lowered by
   10 %, until the first run that goes the other way (or `CONFIRM_TRIES` runs in all); the capacity is the highest
   confirmed rate. Both ways, because a 3-s step's p99 rests on a few thousand messages: one stall fails a step
   well below capacity (the small model on Ray once swept to 800 items/s, then held twice that at 41 ms p99 in
   the overload run), and near capacity admission refuses a few tenths of a percent, so a candidate can also sit
   above what a long run holds;
3. light load: one window per message at 320 msgs/s;
4. overload: a base client offers the confirmed rate for `before + burst + after` seconds while a second client
   offers it again for `--burst-s` (default 60 s) in the middle: twice capacity during the burst. From the two
   clients' per-second timelines: goodput during the burst (items scored/s) against the confirmed capacity, p99 of
   admitted messages, refused, lost, and recovery: how long after the burst the base client first had a second
   with nothing refused and p99 within 50 ms, beside how many of its seconds missed that before the burst and
   after it (near capacity a few do even before the burst: the steady state's, not the burst's).
   When no rate was confirmed (a busy machine), the overload runs at twice the last rate tried, marked so: its
   goodput is then compared with what that rate delivered, not with a confirmed capacity.

    python -m benchmarks.performance.overload     # writes benchmarks/results/performance/overload.{json,md,png}
    python -m benchmarks.performance.overload --render   # the same tables and plot again from overload.json

The peer answers unary `Score` calls only, so it is driven with `--rpc unary`, our servers with the streams gateways
use. Figures compare only within one run; `uptime` is recorded before each server, since a busy machine moves them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aelstm.client.sweep import sustained
from benchmarks.harness import (
    AELSTM,
    REPO,
    fixture_windows,
    free_port,
    loadtest,
    raw_scorer,
    start_server,
    stop,
    train,
    uptime,
    write_report,
)
from benchmarks.performance.limits import SLO_MS, Grid, Phase, Workload, find_limit, step_row
from benchmarks.performance.run import git_commit, machine, now, peer, say

RESULTS = REPO / "benchmarks" / "results" / "performance"
MACHINE_TEMPERATURE = REPO / "tests" / "fixtures" / "nab" / "data" / "realKnownCause" / \
    "machine_temperature_system_failure.csv"
STEP = 0.1  # a confirmed rate is tried this much higher, a failed one this much lower
CONFIRM_TRIES = 5  # from 0.66 to 1.46 of the sweep's candidate
LIGHT_RATE = 320.0  # msgs/s of one window each: the light-load latency run


@dataclass(frozen=True)
class Plan:
    sweep: Phase
    confirm_s: float
    light_s: float
    before_s: float
    burst_s: float
    after_s: float


def train_default(out: Path) -> Path:
    """The model `aelstm train` makes by default (window 32, hidden 64, two LSTM layers) on the fixture's normal
    start, as the README's quick start trains it."""
    subprocess.run([*AELSTM, "train", str(MACHINE_TEMPERATURE), "--dataset", "nab", "--until-first-anomaly", "-o",
                    str(out), "--quiet"], check=True, capture_output=True, timeout=3600)
    return out


def window_of(bundle: Path) -> int:
    return json.loads((bundle / "manifest.json").read_text())["window"]


def ceiling(bundle: Path, seconds: float) -> dict:
    """onnxruntime alone, one thread: windows/s at batch 16 and 256 (windows of the model's own length)."""
    from aelstm.core.data import load_nab
    from aelstm.core.preprocess import sliding_windows

    window = window_of(bundle)
    windows = (fixture_windows() if window == 16 else
               sliding_windows(load_nab(MACHINE_TEMPERATURE).values.astype("float32"), window))
    return {f"batch{b}": raw_scorer(bundle, windows, b, seconds)["items_per_s"] for b in (16, 256)}


def sustained_at(report: dict) -> bool:
    return sustained(report, SLO_MS)


def brief(report: dict, command: str) -> dict:
    """One fixed-rate run, compactly."""
    m = report["measured"]
    return {"rate": report["schedule"]["rate"], "command": command, "items_per_s": m["throughput"]["items_per_s"],
            "p50_ms": m["latency_ms"]["p50"], "p99_ms": m["latency_ms"]["p99"], "max_ms": m["latency_ms"]["max"],
            "sent": m["sent"], "answered": m["answered"], "lost": m["lost"], "errors": m["errors"],
            "item_errors": m["item_errors"], "items_refused": m["items_refused"], "sustained": sustained_at(report)}


def capacity(target: str, workload: Workload, plan: Plan, guess: float) -> dict:
    """A sweep's candidate rate, settled by fixed-rate runs of `plan.confirm_s` (`confirm`)."""
    def one(grid: Grid) -> tuple[dict, str]:
        return loadtest(target, [*workload.args(plan.sweep), "--rate", grid.spec()])

    swept = find_limit(one, Grid.from_zero(2 * guess, 8), workload.batch)
    rate = swept["rate"] or guess / 4
    broke = [step["rate"] for step in swept["steps"] if step["rate"] > rate and not step["sustained"]]
    if swept["rate"] and broke:  # between the last rate that held and the first that broke, in quarters
        quarter = (min(broke) - rate) / 4
        report, command = one(Grid(rate + quarter, quarter, 3))
        swept["refined"] = {"command": command, "steps": [step_row(run, workload.batch) for run in report["sweep"]]}
        held = [step["rate"] for step in swept["refined"]["steps"] if step["sustained"]]
        rate = max([rate, *held])
    confirmations = confirm(target, workload, plan, rate)
    best = highest_held(confirmations)
    return {"sweep": swept, "confirmations": confirmations, "rate": best["rate"] if best else None,
            "items_per_s": best["items_per_s"] if best else None, "confirmed": best is not None}


def confirm(target: str, workload: Workload, plan: Plan, rate: float) -> list[dict]:
    """Fixed-rate runs of `plan.confirm_s` from `rate`: up by `STEP` while they hold, down by it while they fail,
    until the first run that goes the other way (at most `CONFIRM_TRIES`)."""
    runs: list[dict] = []
    while len(runs) < CONFIRM_TRIES:
        report, command = loadtest(target, [*workload.args(Phase(3.0, plan.confirm_s, 5.0)), "--rate", f"{rate:g}"])
        runs.append(brief(report, command))
        run = runs[-1]
        say(f"  confirm {rate:g} msgs/s for {plan.confirm_s:g} s: {run['items_per_s']:.0f} items/s, p99 "
            f"{run['p99_ms']:.1f} ms, refused {run['items_refused']}, lost {run['lost']}: "
            f"{'confirmed' if run['sustained'] else 'not sustained'}")
        if run["sustained"] != runs[0]["sustained"]:
            break
        rate = round(rate * (1 + STEP if run["sustained"] else 1 - STEP), 1)
    return runs


def highest_held(runs: list[dict]) -> dict | None:
    held = [run for run in runs if run["sustained"]]
    return max(held, key=lambda run: run["rate"]) if held else None


def reference(found: dict) -> dict:
    """The run the overload doubles: the highest confirmed, or where none held the last (lowest) rate tried."""
    return highest_held(found["confirmations"]) or found["confirmations"][-1]


def clean(second: dict) -> bool:
    """A second in which the base client had nothing refused and its p99 within the SLO."""
    return not second["items_refused"] and (second["p99_ms"] or 0) <= SLO_MS


def recovery(base: list[dict], start: int, end: int) -> dict:
    """Seconds from the burst's end to the base client's first clean second (None: none before the run ended), and
    how many of its whole seconds were not clean before the burst and after it: at a rate near capacity some are
    not even before the burst, so a later one is the steady state's, not the burst's."""
    first, last = min(second["t"] for second in base), max(second["t"] for second in base)  # partial seconds
    before = [second for second in base if first < second["t"] < start]
    after = [second for second in base if end < second["t"] < last]
    recovered_at = next((second["t"] for second in after if clean(second)), None)
    return {"recovery_s": None if recovered_at is None else recovered_at - end,
            "unclean_seconds": {"before": [sum(not clean(s) for s in before), len(before)],
                                "after": [sum(not clean(s) for s in after), len(after)]}}


def generator_cores(report: dict) -> float:
    """The CPU a load generator used over its run, in cores: on a shared 2-core machine, what it took from the
    server."""
    return report["client"]["cpu_s"] / report["client"]["wall_s"]


def overload(target: str, workload: Workload, rate: float, plan: Plan) -> dict:
    """A base client at `rate` throughout and a burst client at `rate` for `plan.burst_s` in the middle."""
    reports: dict[str, tuple[dict, str]] = {}
    total = plan.before_s + plan.burst_s + plan.after_s

    def client(name: str, delay_s: float, phase: Phase) -> None:
        time.sleep(delay_s)
        reports[name] = loadtest(target, [*workload.args(phase), "--rate", f"{rate:g}"])

    threads = [threading.Thread(target=client, args=("base", 0.0, Phase(2.0, total, 10.0))),
               threading.Thread(target=client, args=("burst", 2.0 + plan.before_s, Phase(0.0, plan.burst_s, 10.0)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if set(reports) != {"base", "burst"}:
        raise SystemExit("an overload client failed (see above)")
    base, burst = (reports[name][0]["measured"] for name in ("base", "burst"))
    seconds = {row["t"] for row in burst["timeline"]}
    start, end = min(seconds), max(seconds)  # the burst's first and last second of intended sends
    inside = range(start + 1, end)  # whole seconds of the burst
    by_second = {row["t"]: row for row in base["timeline"]}
    burst_rows = {row["t"]: row for row in burst["timeline"]}
    scored = [by_second.get(t, {}).get("items_scored", 0) + burst_rows.get(t, {}).get("items_scored", 0)
              for t in inside]
    during_p99 = [by_second[t]["p99_ms"] for t in inside if by_second.get(t, {}).get("p99_ms") is not None]
    return {
        "rate_each": rate, "offered_items_per_s_during_burst": 2 * rate * workload.batch,
        "commands": {name: command for name, (_, command) in reports.items()},
        "burst_seconds": [start, end],
        "goodput_items_per_s": statistics.mean(scored) if scored else None,
        "goodput_per_second": scored,
        "burst_admitted_latency_ms": burst["latency_ms"],
        "burst_admitted_server_ms": burst["server_latency_ms"],
        "base_admitted_p99_ms_per_burst_second": during_p99,
        "base_admitted_latency_ms": base["latency_ms"],
        "refused_latency_ms": burst["refused_latency_ms"],
        "items_refused": base["items_refused"] + burst["items_refused"],
        "items_sent": base["items_sent"] + burst["items_sent"],
        "lost": base["lost"] + burst["lost"],
        "errors": {name: reports[name][0]["measured"]["errors"] for name in reports},
        "item_errors": {name: reports[name][0]["measured"]["item_errors"] for name in reports},
        "generator_cores": {name: generator_cores(reports[name][0]) for name in reports},
        **recovery(base["timeline"], start, end),
        "timelines": {"base": base["timeline"], "burst": burst["timeline"]},
    }


def measure(name: str, backend: str, bundle: Path, plan: Plan, logs: Path) -> dict:
    """Everything about one model on one backend, against one server."""
    top = ceiling(bundle, 1.5)
    say(f"{name}: onnxruntime alone {top['batch16']:.0f} windows/s at batch 16, {top['batch256']:.0f} at 256")
    port = free_port()
    rpc = "unary" if backend == "peer" else "stream"
    result = {"model": name, "backend": backend, "rpc": rpc, "ceiling_windows_per_s": top, "uptime_before": uptime()}
    log = Path(logs) / f"{name}-{backend}.log"
    process = (peer(bundle).start(log, port) if backend == "peer" else
               start_server(bundle, Path(logs) / f"registry-{name}-{backend}", backend, port, log, ["--device", "cpu"]))
    target = f"127.0.0.1:{port}"
    try:
        workload = Workload(16, rpc)
        found = capacity(target, workload, plan, guess=top["batch256"] / 16 / 2)
        result["capacity"] = found
        say(f"{name} on {backend}: capacity {found['items_per_s'] or 0:.0f} items/s at {found['rate']} msgs/s")
        report, command = loadtest(target, [*Workload(1, rpc).args(Phase(2.0, plan.light_s, 5.0)),
                                            "--rate", f"{LIGHT_RATE:g}"])
        result["light"] = brief(report, command)
        say(f"{name} on {backend}: light load p50 {result['light']['p50_ms']:.2f} ms, p99 "
            f"{result['light']['p99_ms']:.2f} ms")
        base = reference(found)
        result["uptime_before_overload"] = uptime()
        result["overload"] = overload(target, workload, base["rate"], plan)
        o = result["overload"]
        o["reference_items_per_s"], o["capacity_confirmed"] = base["items_per_s"], found["confirmed"]
        say(f"{name} on {backend}: overload goodput {o['goodput_items_per_s'] or 0:.0f} items/s "
            f"({(o['goodput_items_per_s'] or 0) / base['items_per_s']:.2f} of the reference rate), admitted p99 "
            f"{o['burst_admitted_latency_ms']['p99']:.1f} ms, refused {o['items_refused']}, lost {o['lost']}, "
            f"recovery {o['recovery_s']} s")
    finally:
        stop(process)
    result["uptime_after"] = uptime()
    return result


def shown_backend(result: dict) -> str:
    return "Ray Serve gRPC proxy (unary)" if result["backend"] == "peer" else result["backend"]


def ratios(summary: dict) -> list[str]:
    """Confirmed capacity of our Ray backend against in-process and against the peer, per model, where both were
    confirmed in this run."""
    found = {(r["model"], r["backend"]): r["capacity"]["items_per_s"] for r in summary["results"]
             if r["capacity"]["confirmed"]}
    lines = []
    for model in dict.fromkeys(r["model"] for r in summary["results"]):
        ray = found.get((model, "ray"))
        for other, label in (("inprocess", "in-process"), ("peer", "Ray Serve's gRPC proxy")):
            if ray and found.get((model, other)):
                lines.append(f"- {model} model: Ray ÷ {label} = **{ray / found[(model, other)]:.2f}**")
    return lines


def rendered(summary: dict) -> list[str]:
    """Where the tables were derived again from the saved run (`--render`), a line saying by what."""
    again = summary.get("rendered")
    return [] if again is None else [
        "", f"Tables derived again from this run's `overload.json` by `{again['command']}` at "
            f"{again['commit'][:12]}{' (dirty)' if again['dirty'] else ''}, {again['at']}."]


def markdown(summary: dict) -> str:
    lines = ["# Capacity confirmed, and overload at twice capacity", "",
             f"`{summary['command']}` at {summary['commit'][:12]}{' (dirty)' if summary['dirty'] else ''}, "
             f"{summary['started']} to {summary['finished']}; {summary['machine']['cpus']} × "
             f"{summary['machine']['cpu_model']}.", *rendered(summary), "", f"**Machine load**: {summary['note']}", "",
             "| model | backend | onnxruntime alone, batch 256 (windows/s) | capacity: items/s at p99 ≤ 50 ms, "
             f"{summary['plan']['confirm_s']:g}-s run | ÷ ceiling | its p99 ms | light load p50 / p99 ms (1 window, "
             f"{LIGHT_RATE:g} msgs/s) | uptime before |", "|---|---|---:|---:|---:|---:|---|---|"]
    for r in summary["results"]:
        c, top = r["capacity"], r["ceiling_windows_per_s"]["batch256"]
        last = reference(c)
        figure = (f"{c['items_per_s']:,.0f} | {c['items_per_s'] / top:.2f} | {last['p99_ms']:.1f}" if c["confirmed"]
                  else f"not confirmed: the lowest rate tried, {last['items_per_s']:,.0f}, had p99 "
                       f"{last['p99_ms']:.1f} ms and {last['items_refused']} refused | – | –")
        lines.append(f"| {r['model']} | {shown_backend(r)} | {top:,.0f} | {figure} | "
                     f"{r['light']['p50_ms']:.2f} / {r['light']['p99_ms']:.2f} | "
                     f"{r['uptime_before'].split('load average:')[-1].strip()} |")
    lines += ["", "Confirmed capacities compared (only where both were confirmed):", "",
              *(ratios(summary) or ["- none"])]
    lines += ["", f"Overload: twice the reference rate for {summary['plan']['burst_s']:g} s (two clients). The "
              "reference is the confirmed capacity, or where none was confirmed (marked *not confirmed*) the last, "
              "lowest rate tried and what it delivered.", "",
              "| model | backend | reference items/s | goodput items/s in the burst | ÷ reference | admitted p99 ms "
              "(burst client) | of it in the server's scoring path, p99 ms | refused items | lost | errors | "
              "recovery s | seconds refusing or over 50 ms, before / after the burst | load generators' CPU, cores "
              "(base + burst) | uptime before |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|"]
    for r in summary["results"]:
        o = r["overload"]
        cap = o["reference_items_per_s"]
        errors = {k: v for k, v in o["errors"].items() if v} or 0
        marked = "" if o["capacity_confirmed"] else " (*not confirmed*)"
        recovered = "not within the run" if o["recovery_s"] is None else o["recovery_s"]
        server_ms = o.get("burst_admitted_server_ms", {})  # runs before the loadtest reported it have none
        server = f"{server_ms['p99']:.1f}" if server_ms.get("max") else "–"
        unclean = " / ".join("{} of {}".format(*o["unclean_seconds"][when]) for when in ("before", "after"))
        cores = o.get("generator_cores")  # runs before it was recorded have none
        generators = f"{cores['base']:.2f} + {cores['burst']:.2f}" if cores else "–"
        load = r["uptime_before_overload"].split("load average:")[-1].strip()
        lines.append(f"| {r['model']} | {shown_backend(r)} | {cap:,.0f}{marked} | {o['goodput_items_per_s']:,.0f} | "
                     f"{o['goodput_items_per_s'] / cap:.2f} | {o['burst_admitted_latency_ms']['p99']:.1f} | {server} | "
                     f"{o['items_refused']:,} of {o['items_sent']:,} | {o['lost']} | {errors} | "
                     f"{recovered} | {unclean} | {generators} | {load} |")
    lines += ["", "Every command, the sweeps, each confirmation run and the per-second timelines are in "
              "`overload.json`; `overload.png` plots the timelines.", ""]
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = summary["results"]
    figure, axes = plt.subplots(len(runs), 1, figsize=(10, 3 * len(runs)), squeeze=False)
    for axis, r in zip(axes[:, 0], runs, strict=True):
        o = r["overload"]
        rows: dict[int, dict] = {}
        for name in ("base", "burst"):
            for row in o["timelines"][name]:
                cell = rows.setdefault(row["t"], {"scored": 0, "refused": 0, "p99": None})
                cell["scored"] += row["items_scored"]
                cell["refused"] += row["items_refused"]
                if name == "base":
                    cell["p99"] = row["p99_ms"]
        t0 = min(rows)
        ts = sorted(rows)
        axis.plot([t - t0 for t in ts], [rows[t]["scored"] for t in ts], label="items scored/s")
        axis.plot([t - t0 for t in ts], [rows[t]["refused"] for t in ts], label="items refused/s")
        axis.axhline(o["reference_items_per_s"], color="grey", linestyle=":", label="reference rate (items/s)")
        axis.axvspan(o["burst_seconds"][0] - t0, o["burst_seconds"][1] - t0, color="orange", alpha=0.1)
        twin = axis.twinx()
        twin.plot([t - t0 for t in ts], [rows[t]["p99"] or float("nan") for t in ts], color="red", alpha=0.5,
                  label="p99 ms (base client, admitted)")
        twin.axhline(SLO_MS, color="red", linestyle=":")
        twin.set_ylabel("p99 ms")
        axis.set_title(f"{r['model']} model on {r['backend']}: twice the reference rate in the shaded burst")
        axis.set_xlabel("s")
        axis.legend(loc="upper left", fontsize=7)
        twin.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,small", help="default and/or small [default,small]")
    parser.add_argument("--backends", default="ray,inprocess,peer",
                        help="ray, inprocess and/or peer (Ray Serve's own gRPC proxy) [ray,inprocess,peer]")
    parser.add_argument("--confirm-s", type=float, default=30.0, help="fixed-rate confirmation run [30]")
    parser.add_argument("--burst-s", type=float, default=60.0, help="overload burst at twice capacity [60]")
    parser.add_argument("--default-bundle", type=Path, help="an already trained default model (else trained here)")
    parser.add_argument("--note", default="", help="what else ran on the machine (recorded in the results)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: derive the tables and plot again from --out's overload.json")
    args = parser.parse_args()
    if args.render:
        summary = json.loads((args.out / "overload.json").read_text())
        for result in summary["results"]:
            o = result["overload"]
            o.update(recovery(o["timelines"]["base"], *o["burst_seconds"]))
        summary["rendered"] = {"command": shlex.join(sys.orig_argv), "at": now(), **git_commit()}
        write(summary, args.out)
        return
    plan = Plan(sweep=Phase(1.0, 3.0, 3.0), confirm_s=args.confirm_s, light_s=10.0, before_s=10.0,
                burst_s=args.burst_s, after_s=15.0)
    summary = {"command": shlex.join(sys.orig_argv), "started": now(), **git_commit(), "machine": machine(),
               "uptime_start": uptime(), "note": args.note or "not given", "plan": asdict(plan), "slo_ms": SLO_MS,
               "results": []}
    with tempfile.TemporaryDirectory() as tmp:
        bundles = {}
        for name in args.models.split(","):
            if name == "default":
                bundles[name] = args.default_bundle or train_default(Path(tmp) / "default")
            elif name == "small":
                bundles[name] = train(Path(tmp) / "small")
            else:
                raise SystemExit(f"unknown model {name!r}: default or small")
            say(f"model {name}: window {window_of(bundles[name])}")
        for name, bundle in bundles.items():
            for backend in args.backends.split(","):
                summary["results"].append(measure(name, backend, bundle, plan, Path(tmp)))
    summary["finished"] = now()
    summary["uptime_end"] = uptime()
    write(summary, args.out)


def write(summary: dict, out: Path) -> None:
    write_report(out, "overload", summary, markdown(summary))
    with contextlib.suppress(ImportError):
        plot(summary, out / "overload.png")
    say(f"wrote {out}/overload.json, overload.md, overload.png")
    print((out / "overload.md").read_text())


if __name__ == "__main__":
    main()
