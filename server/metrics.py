"""Prometheus metrics of the ingress, in a registry of their own (several servers can live in one process)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from .coalescer import CallTiming

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1,
                   0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def _package_version() -> str:
    try:
        return version("aelstm")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # the process's RSS, CPU seconds, open and maximum fds and start time (process_*), read at each scrape
        ProcessCollector(registry=r)
        self.requests = Counter("aelstm_requests", "Score requests answered, by fleet and RPC.",
                                ["fleet", "rpc"], registry=r)
        self.items = Counter("aelstm_items", "Items answered, by fleet and status (ok, warming_up or an error "
                             "code name).", ["fleet", "status"], registry=r)
        self.anomalies = Counter("aelstm_anomalies", "Items flagged as anomalous, by fleet.", ["fleet"], registry=r)
        self.request_latency = Histogram("aelstm_request_latency_seconds", "Time from receiving a request to its "
                                         "response being ready.", ["rpc"], buckets=LATENCY_BUCKETS, registry=r)
        self.backend_latency = Histogram("aelstm_backend_call_seconds", "Duration of one coalesced backend call.",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.batch_windows = Histogram("aelstm_backend_batch_windows", "Windows per coalesced backend call.",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.stage_seconds = Histogram(
            "aelstm_stage_seconds", "Where a request's time goes: prepare (validation, decoding, device windows), "
            "queue (waiting to join a backend call), call (the backend call), compute (preprocessing + onnxruntime "
            "inside it), respond (building the response).", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.backend_replicas = Gauge("aelstm_backend_replicas", "Workers scoring for this ingress: running Ray "
                                      "Serve Scorer replicas (autoscaling shows here), or in-process threads.",
                                      registry=r)
        self.models_loaded = Gauge("aelstm_models_loaded", "Models currently served (fleets plus default).",
                                   registry=r)
        self.models_refused = Counter("aelstm_models_refused", "Model versions refused (invalid, unloadable, or not "
                                      "the content published under their number), counted as they are refused.",
                                      ["fleet"], registry=r)
        self.models_replaced = Counter("aelstm_models_replaced", "Version folders found replaced on disk (read "
                                       "again, and refused unless they hold what was published).", ["fleet"],
                                       registry=r)
        self.model_info = Gauge("aelstm_model_info", "1 for each model served: fleet, version and the sha256 of its "
                                "files.", ["fleet", "version", "digest"], registry=r)
        self.build_info = Gauge("aelstm_build_info", "1, labelled with the aelstm and Python versions.",
                                ["version", "python"], registry=r)
        self.build_info.labels(_package_version(), platform.python_version()).set(1)
        self.auth_denied = Counter("aelstm_auth_denied", "Calls refused for their token: UNAUTHENTICATED (missing or "
                                   "unknown) or PERMISSION_DENIED (the fleet is not granted).", ["code"], registry=r)
        self.devices = Gauge("aelstm_device_windows", "Devices whose sliding window the ingress holds.", registry=r)
        self.device_events = Counter(
            "aelstm_device_events", "What happened to devices' state: evicted (forgotten, least recent first), "
            "resend_answered (a resend got its first verdict), late_refused (readings older than the newest, not a "
            "resend), gap_filled / gap_restarted (a gap filled by interpolation / too long: window restarted), "
            "policy_carried_over / policy_restarted (a new model with the same calibrated policy kept / one with "
            "another started afresh the device's alarm-policy state).", ["event"], registry=r)
        self.watchers = Gauge("aelstm_anomaly_watchers", "Open WatchAnomalies streams.", registry=r)
        self.watcher_dropped = Counter("aelstm_anomaly_watcher_dropped", "Anomalies dropped because a watcher "
                                       "fell behind.", registry=r)
        self.refused_windows = Counter("aelstm_refused_windows", "Windows refused with RESOURCE_EXHAUSTED because "
                                       "the server is overloaded: predicted (they would not have been scored within "
                                       "the scoring budget, refused on arrival) or expired (they waited too long "
                                       "for their call to end within it).", ["reason"],
                                       registry=r)
        self.held_calls = Counter("aelstm_backend_held_calls", "Backend calls held and tried again because the "
                                  "backend could not take them (a deployment replacing replicas), by how the hold "
                                  "ended: answered, or gave_up past --backend-grace-s.", ["outcome"], registry=r)
        self.loop_lag = Gauge("aelstm_event_loop_lag_seconds", "How late the ingress's event loop runs what is due "
                              "(EWMA): admission counts it as queueing, so a busy ingress refuses early.", registry=r)
        self.recorded = Counter("aelstm_recorded_readings", "Readings judged normal recorded for retraining, by "
                                "fleet: kept (buffered for the next write) or dropped (buffer full, or the write "
                                "failed).", ["fleet", "outcome"], registry=r)
        self.drift = Gauge("aelstm_fleet_drift", "How far each served model's recent scores moved from its "
                           "calibration: the share of the last 10,000 windows above the calibration p99, over 1 % "
                           "(1: as calibrated). Set once 200 windows were scored.", ["fleet"], registry=r)
        self.retrained = Counter("aelstm_retrained_fleets", "Fleets the retraining loop went through, by outcome: "
                                 "published, kept aside (gated out), skipped (too few new readings), failed.",
                                 ["outcome"], registry=r)
        self.drift_retrains = Counter("aelstm_drift_retrains", "Retraining runs a fleet's drift started "
                                      "(--retrain-on-drift).", ["fleet"], registry=r)

    def backend_call(self, timing: CallTiming) -> None:
        self.batch_windows.observe(timing.windows)
        self.backend_latency.observe(timing.call_s)
        self.stage_seconds.labels("call").observe(timing.call_s)
        self.stage_seconds.labels("compute").observe(timing.compute_s)
        queue = self.stage_seconds.labels("queue")
        for wait in timing.waits_s:
            queue.observe(wait)

    def refused(self, reason: str, windows: int) -> None:
        self.refused_windows.labels(reason).inc(windows)

    def models_served(self, entries) -> None:
        """`aelstm_model_info` shows exactly the models in `entries` (ModelEntry)."""
        self.model_info.clear()
        for entry in entries:
            self.model_info.labels(entry.fleet, entry.version, entry.digest).set(1)
        self.models_loaded.set(len(entries))

    def serve_http(self, port: int, host: str = "127.0.0.1"):
        """Expose /metrics; returns the HTTP server (call `.shutdown()` to stop it)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
