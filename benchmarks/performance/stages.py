"""Where a request's time goes, from the server's own timing: the `aelstm_stage_seconds` histogram that `aelstm
serve` exports on /metrics (prepare, queue, call, compute, respond), read before and after a run."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

STAGES = ("prepare", "queue", "call", "compute", "respond")


def scrape(port: int) -> dict[str, float]:
    """Every sample of the server's /metrics, keyed `name{label=value,...}`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def stage_means_ms(before: dict[str, float], after: dict[str, float]) -> dict:
    """Mean milliseconds per stage over the run between the two scrapes; `transport` is a call's time outside the
    scoring itself (serialisation, the handle, the network, the replica's own queue: Ray's share)."""
    def delta(name: str, stage: str) -> float:
        key = f"aelstm_stage_seconds_{name}{{stage={stage}}}"
        return after.get(key, 0.0) - before.get(key, 0.0)

    means = {}
    for stage in STAGES:
        count = delta("count", stage)
        means[stage] = round(delta("sum", stage) / count * 1e3, 3) if count else None
    if means["call"] is not None and means["compute"] is not None:
        means["transport"] = round(means["call"] - means["compute"], 3)
    calls = delta("count", "call")
    windows_key = "aelstm_backend_batch_windows_sum{}"
    means["windows_per_call"] = round((after.get(windows_key, 0) - before.get(windows_key, 0)) / calls, 1) \
        if calls else None
    return means
