"""Assembles the ingress: gRPC server (service, health, reflection, auth, TLS), backend, model watcher, metrics,
and the optional recorder of normal readings and retraining loop.

Start-up order keeps health honest: the gRPC port opens first with health NOT_SERVING, the backend starts and the
registry's models load, and only then does health say SERVING. Stopping drains: health goes NOT_SERVING, streams
stop reading and answer what they received, the server waits for in-flight calls, then the backend shuts down.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from aelstm.core.errors import AelstmError
from aelstm.v1 import scoring_pb2, scoring_pb2_grpc

from .anomalies import AnomalyHub
from .backend import BackendUnavailable, InProcessBackend, ScoringBackend
from .coalescer import Coalescer
from .config import ServeConfig
from .devices import DeviceStore
from .handoff import Handoff, RayHandoff
from .loop_lag import LoopLag
from .metrics import Metrics
from .models import ModelBook
from .ray_backend import RayServeBackend
from .recorder import Recorder, RecorderSettings
from .registry import RegistryScanner, RegistrySnapshot
from .retraining import RetrainLoop, check_retraining_available
from .scoring import RequestScorer
from .security import server_credentials, token_interceptors
from .service import AnomalyScorerService

log = logging.getLogger(__name__)

SERVICE_NAME = scoring_pb2.DESCRIPTOR.services_by_name["AnomalyScorer"].full_name
# The health service name a liveness probe asks: SERVING from the moment the port opens until the process stops,
# whatever the backend or the registry say (those are readiness: "" and SERVICE_NAME). A process that cannot answer
# it is stuck and should be restarted; one that is merely not ready should not.
LIVENESS = "aelstm.liveness"


def make_backend(config: ServeConfig) -> ScoringBackend:
    if config.backend == "inprocess":
        return InProcessBackend(threads=config.threads_per_replica, intra_op_threads=1, device=config.device)
    return RayServeBackend(config.scorer(), config.ray_address, config.ray_cpus, config.ray_temp_dir)


def recorder_for(config: ServeConfig, metrics: Metrics) -> Recorder | None:
    """The recorder of normal readings, when `record_dir` asks for one."""
    if not config.record_dir:
        return None
    settings = RecorderSettings(Path(config.record_dir), config.record_devices, config.record_flush_s,
                                config.record_keep_days * 86400.0)
    return Recorder(settings, on_recorded=lambda fleet, rows: metrics.recorded.labels(fleet, "kept").inc(rows),
                    on_dropped=lambda fleet, rows: metrics.recorded.labels(fleet, "dropped").inc(rows))


class ScoringServer:
    """One ingress process. `await start()`, then `await stop()`; `port` is the bound port (useful with port 0)."""

    def __init__(self, config: ServeConfig, backend: ScoringBackend | None = None,
                 handoff: Handoff | None = None) -> None:
        self.config = config
        self.backend = backend or make_backend(config)
        self.metrics = Metrics()
        scanner = RegistryScanner(config.registry, config.default_bundle, on_event=self._registry_event)
        self.models = ModelBook(scanner, self.backend, poll_s=config.poll_s, on_change=self._models_changed)
        self.loop_lag = LoopLag()
        self.metrics.loop_lag.set_function(lambda: self.loop_lag.seconds)
        self.coalescer = Coalescer.for_server(self.backend, config, self.metrics, lag=lambda: self.loop_lag.seconds)
        devices = DeviceStore(config.max_devices, config.max_device_bytes(),
                              count=lambda event: self.metrics.device_events.labels(event).inc())
        if handoff is None and config.backend == "ray":  # ingresses of one cluster hand devices to each other
            handoff = RayHandoff(config.max_devices)
        self.recorder = recorder_for(config, self.metrics)
        self.retraining = (RetrainLoop(config, self.recorder, self.metrics, drift=self._drift_by_fleet)
                           if config.retrain_every_s or config.retrain_on_drift else None)
        self.scorer = RequestScorer(self.models, self.coalescer, devices, AnomalyHub(config.watcher_queue),
                                    self.metrics, config.limits(), handoff, self.recorder)
        self.service = AnomalyScorerService(self.scorer)
        self.health = health_aio.HealthServicer()
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task | None = None
        self._monitor: asyncio.Task | None = None
        self._background: list[asyncio.Task] = []  # recorder writes, retraining
        self._metrics_http = None
        self._backend_ready = False

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def backend_ready(self) -> bool:
        return self._backend_ready

    @property
    def serving(self) -> bool:
        return self._backend_ready and bool(self.models.snapshot.entries())

    async def start(self) -> None:
        c = self.config
        if self.retraining is not None:
            check_retraining_available()
        limit = c.max_message_mb * 1024 * 1024
        interceptors = token_interceptors(c.tokens, c.tokens_file,
                                          on_denied=lambda code: self.metrics.auth_denied.labels(code).inc())
        self._server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0)])  # a second server on a busy port must fail, not share it
        scoring_pb2_grpc.add_AnomalyScorerServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        await self._set_health(False)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        try:
            if c.tls_cert:
                credentials = server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca)
                port = self._server.add_secure_port(c.address, credentials)
            else:
                port = self._server.add_insecure_port(c.address)
        except RuntimeError:
            port = 0
        if not port:
            raise AelstmError(f"cannot listen on {c.address} (port in use, or not a local address?)")
        await self._server.start()
        self.port = port  # only now: whoever waits for it may connect
        if c.metrics_port:
            try:
                self._metrics_http = self.metrics.serve_http(c.metrics_port, c.host)
            except OSError as exc:
                await self._server.stop(0)
                raise AelstmError(f"cannot serve metrics on {c.host}:{c.metrics_port}: {exc.strerror}") from exc
        log.info("listening on %s, starting the %s backend", self.address, self.backend.name,
                 extra={"fields": {"address": self.address, "backend": self.backend.name}})
        try:
            await self.backend.start()
            await self.check_backend()
        except BaseException:
            await self.stop(0)
            raise
        self._watch = asyncio.create_task(self.models.watch())
        self._monitor = asyncio.create_task(self._follow_backend())
        self._background = [asyncio.create_task(job.run()) for job in (self.recorder, self.retraining, self.loop_lag)
                            if job]
        # Everything loaded so far (Ray, gRPC, onnxruntime: over 100,000 objects) lives as long as the server: kept
        # out of garbage collection, a full collection takes milliseconds instead of stalling every stream ~70 ms.
        gc.collect()
        gc.freeze()

    async def check_backend(self) -> bool:
        """Health follows the backend's real ability to score. When it comes (back), every model is loaded into
        it again first: a redeployed scoring application starts with an empty model store."""
        was_ready = self._backend_ready
        ready = await self.backend.healthy()
        self.metrics.backend_replicas.set(self.backend.replicas)
        if ready and not was_ready:
            self._backend_ready = True  # so that the models loaded now count as served
            try:
                await self.models.reload()
            except BackendUnavailable:
                ready = False
        if ready != was_ready:
            log.log(logging.INFO if ready else logging.WARNING, "scoring backend %s",
                    "ready" if ready else "unavailable: health is NOT_SERVING until it returns")
        self._backend_ready = ready
        await self._set_health(self.serving)
        return ready

    async def _follow_backend(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                await self.check_backend()
            except Exception:
                log.exception("backend health check failed")

    def _drift_by_fleet(self) -> dict[str, float]:
        """Each fleet served by a model of its own, and its drift where known (fleets on the default model have
        nothing of their own to retrain)."""
        return {fleet: ratio for fleet, entry in self.models.snapshot.fleets.items()
                if (ratio := self.scorer.drift.ratio(entry.key)) is not None}

    def _registry_event(self, event: str, fleet: str) -> None:
        """Counts refusals and replaced folders as the scanner meets them (it runs in a worker thread)."""
        counter = self.metrics.models_refused if event == "refused" else self.metrics.models_replaced
        counter.labels(fleet).inc()

    async def _models_changed(self, snapshot: RegistrySnapshot) -> None:
        self.metrics.models_served(snapshot.entries())
        self.scorer.drift.retain({entry.key for entry in snapshot.entries()})  # a new version starts afresh
        self.metrics.drift.clear()
        if self._server is not None:
            await self._set_health(self.serving)

    async def _set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain and release everything; safe to call once the server started (or failed to)."""
        grace_s = self.config.drain_grace_s if grace_s is None else grace_s
        for task in (self._watch, self._monitor, *self._background):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._server is not None:
            await self._set_health(False)
            self.service.draining.set()
            await self._server.stop(grace_s)
        await self.coalescer.drain()
        await self.backend.close()
        if self._metrics_http is not None:
            http, self._metrics_http = self._metrics_http, None
            await asyncio.to_thread(http.shutdown)  # waits up to its 0.5 s poll: never on the loop
            http.server_close()
        log.info("stopped", extra={"fields": {"address": self.address}})
