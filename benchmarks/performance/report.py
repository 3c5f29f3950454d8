"""The performance run's outputs: summary.json (every figure, with the sweeps behind it), summary.md (the short
table) and summary.png (p99 against offered rate per backend)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import write_report
from benchmarks.performance.limits import SLO_MS

ROLES = ("ingress", "driver", "proxy", "replica", "ray_other", "client", "machine_busy")


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def summarise(meta: dict, top: dict, found: dict[str, dict], fixed: dict[str, dict]) -> dict:
    """The headline fields of summary.json, computed from the measurements (which are kept beside them)."""
    def at_slo(server: str, rpc: str = "stream", batches: tuple[int, ...] = (16, 1)) -> dict:
        return {f"batch{b}": found[f"{server}_{rpc}_batch{b}"]["items_per_s"] for b in batches
                if f"{server}_{rpc}_batch{b}" in found}

    inprocess, ray = at_slo("inprocess"), at_slo("ray")
    ray_unary, peer = at_slo("ray", "unary", (16,)), at_slo("peer", "unary", (16,))
    ceiling = top["windows_per_s"]
    shares = {name.removesuffix("_at_slo"): run["cpu"]["shares_of_machine"] for name, run in fixed.items()
              if name.endswith("_at_slo")}
    ray_shares = shares.get("ray", {})
    summary = {
        **meta,
        "ceiling_windows_per_s": ceiling,
        "ceiling": top,
        "inprocess_items_per_s_at_slo": inprocess,
        "ray_items_per_s_at_slo": ray,
        "ray_unary_items_per_s_at_slo": ray_unary,
        "serve_grpc_peer_items_per_s_at_slo": peer,
        "lower_bounds": {key: entry["lower_bound"] for key, entry in found.items()},
        "ratio_ray_over_inprocess": {b: ratio(ray.get(b), inprocess.get(b)) for b in inprocess},
        "ratio_ours_over_peer": ratio(ray.get("batch16"), peer.get("batch16")),
        "ratio_ours_unary_over_peer": ratio(ray_unary.get("batch16"), peer.get("batch16")),
        "ratio_inprocess_over_peer": ratio(inprocess.get("batch16"), peer.get("batch16")),
        "ratio_at_slo_over_ceiling": {key: ratio(entry["items_per_s"], ceiling) for key, entry in found.items()},
        "ingress_cpu_share": ray_shares.get("ingress"),
        "ray_replica_cpu_share": ray_shares.get("replica"),
        "cpu_shares_at_slo": shares,
    }
    for name, run in fixed.items():
        if name.endswith("_light"):
            summary[f"{name}_p50_ms"], summary[f"{name}_p99_ms"] = run["p50_ms"], run["p99_ms"]
            summary["light_rate_msgs_per_s"] = run["rate"]
    summary["breakdown_ms"] = {name: run["stages_ms"] for name, run in fixed.items() if run.get("stages_ms")}
    return {**summary, "limits": found, "fixed_runs": fixed}


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def markdown(s: dict) -> str:
    start, end = (s["load_average"][when]["getloadavg"] for when in ("start", "end"))
    load = f"{start} at the start, {end} at the end"
    m = s["machine"]
    lines = [
        "# Performance: end-to-end serving against onnxruntime alone", "",
        f"`{s['command']}` at {s['commit'][:12]}{' (dirty)' if s['dirty'] else ''}, {s['started']} to "
        f"{s['finished']}; {m['cpus']} × {m['cpu_model']}, load average {load}. Figures compare only within this run.",
        "",
        f"Ceiling, onnxruntime alone (one thread, no gRPC): **{_n(s['ceiling_windows_per_s'])} windows/s** at batch "
        f"{s['ceiling']['best_batch']} (" + ", ".join(f"batch {row['batch']}: {_n(row['windows_per_s'])}"
                                                     for row in s["ceiling"]["batches"].values()) + ").", "",
        f"| config | items/s within p99 ≤ {SLO_MS:g} ms, none lost (median) | per sweep | msgs/s | ÷ ceiling |",
        "|---|---:|---|---:|---:|",
    ]
    for key, entry in s["limits"].items():
        bound = " (lower bound)" if entry["lower_bound"] else ""
        lines.append(f"| {key} | {_n(entry['items_per_s'])}{bound} | "
                     f"{', '.join(_n(x) for x in entry['per_sweep_items_per_s'])} | {_n(entry['rate'], 1)} | "
                     f"{_n(s['ratio_at_slo_over_ceiling'][key], 3)} |")
    ray_over = ", ".join(f"{b}: {_n(v, 3)}" for b, v in s["ratio_ray_over_inprocess"].items())
    lines += ["", f"Ray / in-process: {ray_over}. Ours (Ray, StreamScore) / Ray Serve's gRPC proxy (unary), batch 16: "
              f"{_n(s['ratio_ours_over_peer'], 3)}; ours with unary calls / the proxy: "
              f"{_n(s['ratio_ours_unary_over_peer'], 3)}; in-process / the proxy: "
              f"{_n(s['ratio_inprocess_over_peer'], 3)}.", "",
              "| fixed-rate run | msgs/s | batch | RPC | items/s | p50 ms | p99 ms | max ms |",
              "|---|---:|---:|---|---:|---:|---:|---:|"]
    for name, run in s["fixed_runs"].items():
        lines.append(f"| {name} | {run['rate']:g} | {run['batch']} | {run['rpc']} | {_n(run['items_per_s'])} | "
                     f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['max_ms']:.2f} |")
    for what, title, digits in (("shares_of_machine", "share of the machine's CPU", 3),
                                ("us_per_item", "CPU µs per item answered", 1)):
        lines += ["", f"| {title} | " + " | ".join(ROLES) + " |", "|---|" + "---:|" * len(ROLES)]
        for name, run in s["fixed_runs"].items():
            cpu = run["cpu"][what]
            lines.append(f"| {name} | " + " | ".join(_n(cpu.get(role), digits) for role in ROLES) + " |")
    stage_names = ("prepare", "queue", "call", "compute", "transport", "respond", "windows_per_call")
    lines += ["", "| where a request's time goes (server's own timing, mean ms) | " + " | ".join(stage_names) + " |",
              "|---|" + "---:|" * len(stage_names)]
    for name, stages in s["breakdown_ms"].items():
        lines.append(f"| {name} | " + " | ".join(_n(stages.get(k), 2) for k in stage_names) + " |")
    lines += ["", "Stages: prepare (validation, decoding, device windows), queue (waiting to join a backend call), "
              "call (the backend call), compute (preprocessing + onnxruntime inside it), transport (call − compute: "
              "Ray's share), respond (building the response); gRPC's own decoding and encoding come on top."]
    lines += ["", "CPU: what each process used while the run measured, as a share of the whole machine (all cores) "
              "and per item answered; ingress is `aelstm serve`, driver is the peer's launcher, proxy is Serve's proxy "
              "actor, ray_other is the rest of Ray (GCS, raylet, controller), client is the load generator."]
    return "\n".join(lines) + "\n"


def plot(s: dict, path: Path) -> None:
    """p99 against offered load (items/s) for every sweep step, one panel per batch size, the SLO drawn across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({entry["batch"] for entry in s["limits"].values()}, reverse=True)
    figure, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 4.5), squeeze=False)
    for axis, batch in zip(axes[0], batches, strict=True):
        for key, entry in s["limits"].items():
            if entry["batch"] != batch:
                continue
            steps = sorted((step for sweep in entry["sweeps"] for step in sweep["steps"]),
                           key=lambda step: step["offered_items_per_s"])
            axis.plot([x["offered_items_per_s"] for x in steps], [max(x["p99_ms"], 0.1) for x in steps],
                      marker="o", markersize=3, linewidth=1, label=key)
        axis.axhline(SLO_MS, color="grey", linestyle="--", linewidth=1, label=f"SLO {SLO_MS:g} ms")
        axis.set_yscale("log")
        axis.set_xlabel("offered load, items/s")
        axis.set_ylabel("p99 latency, ms (log)")
        axis.set_title(f"batch {batch}")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(summary: dict, out: Path) -> None:
    write_report(out, "summary", summary, markdown(summary))
    plot(summary, out / "summary.png")
