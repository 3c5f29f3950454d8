"""Rate sweep verdicts: which open-loop rates the server sustained within the latency bound."""

from __future__ import annotations

from rich.table import Table

REFUSED_TOLERANCE = 0.001  # of items sent: a rate may see this share refused (a burst's early answer) and hold


def sustained(run: dict, slo_ms: float) -> bool:
    """p99 from intended send time within the bound, every message and item answered without error, and at most
    0.1 % of the items refused."""
    m = run["measured"]
    refused_ok = m.get("items_refused", 0) <= REFUSED_TOLERANCE * m.get("items_sent", 0)
    return run["passed"] and m["answered"] > 0 and refused_ok and m["latency_ms"]["p99"] <= slo_ms


def sweep_verdict(runs: list[dict], slo_ms: float) -> dict:
    """The highest rate sustained before the first rate that was not (None when even the first failed)."""
    best = None
    for run in runs:
        if not sustained(run, slo_ms):
            break
        best = run
    return {"slo_ms": slo_ms, "best": best,
            "rate": best["schedule"]["rate"] if best else None,
            "items_per_s": best["measured"]["throughput"]["items_per_s"] if best else None}


def sweep_table(runs: list[dict], slo_ms: float, title: str | None) -> Table:
    table = Table(title=title)
    for column in ("target msgs/s", "msgs/s", "items/s", "p50 ms", "p99 ms", "max ms", "errors", "refused",
                   "item errors", "lost", "ok"):
        table.add_column(column, justify="right")
    for run in runs:
        m = run["measured"]
        table.add_row(f"{run['schedule']['rate']:.0f}", f"{m['throughput']['msgs_per_s']:.0f}",
                      f"{m['throughput']['items_per_s']:.0f}", f"{m['latency_ms']['p50']:.2f}",
                      f"{m['latency_ms']['p99']:.2f}", f"{m['latency_ms']['max']:.2f}",
                      str(sum(m["errors"].values())), str(m.get("items_refused", 0)),
                      str(sum(m["item_errors"].values())), str(m["lost"]),
                      "yes" if sustained(run, slo_ms) else "no")
    return table
