"""Ray Serve backend: stateless Scorer replicas running onnxruntime, one model per fleet version multiplexed
per replica (LRU), `@serve.batch` merging concurrent calls of the same model into one onnxruntime run.

Replicas keep no per-device state, so any replica can answer any call and replicas can come and go. The model id
is the bundle's registry path, so every node must see the registry at the same path (shared storage on a cluster).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

import numpy as np

from aelstm.training.errors import AelstmError
from aelstm.training.runtime import Scores

from .backend import probe_windows
from .registry import ModelEntry

log = logging.getLogger(__name__)

APP_NAME = "aelstm"


@dataclass(frozen=True)
class RaySettings:
    """How the Scorer deployment runs; `max_replicas` > `replicas` turns on autoscaling between the two."""

    address: str | None = None
    num_cpus: int = 2
    replicas: int = 1
    max_replicas: int | None = None
    max_batch: int = 256
    batch_wait_s: float = 0.0  # the ingress already coalesced; replicas merge only calls already queued
    threads_per_replica: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    models_per_replica: int = 4
    device: str = "auto"


def scorer_deployment(settings: RaySettings):
    """Build the Scorer deployment class with the batching and multiplexing sizes of `settings`."""
    from ray import serve

    @serve.deployment(
        name="Scorer",
        max_ongoing_requests=max(4 * settings.max_batch, 64),
        ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica},
    )
    class Scorer:
        """Scores windows of whichever model the caller names through `multiplexed_model_id`."""

        @serve.multiplexed(max_num_models_per_replica=settings.models_per_replica)
        async def model(self, model_id: str):
            from aelstm.training.bundle import load_bundle
            from aelstm.training.runtime import BundleScorer

            return await asyncio.to_thread(
                BundleScorer, load_bundle(model_id), settings.device, settings.threads_per_replica
            )

        @serve.batch(max_batch_size=settings.max_batch, batch_wait_timeout_s=settings.batch_wait_s,
                     batch_size_fn=lambda calls: sum(len(windows) for windows in calls))
        async def score_batch(self, calls: list[np.ndarray]) -> list[Scores]:
            scorer = await self.model(serve.get_multiplexed_model_id())
            windows = calls[0] if len(calls) == 1 else np.concatenate(calls)
            scores = await asyncio.to_thread(scorer.score, windows)
            out, start = [], 0
            for call in calls:
                end = start + len(call)
                out.append(Scores(scores.score[start:end], scores.rec_part[start:end], scores.pred_part[start:end],
                                  scores.threshold))
                start = end
            return out

        async def score(self, windows: np.ndarray) -> Scores:
            return await self.score_batch(windows)

        async def check(self, windows: np.ndarray) -> str:
            """Load the model, score `windows`, and report the provider onnxruntime really uses."""
            scorer = await self.model(serve.get_multiplexed_model_id())
            await asyncio.to_thread(scorer.score, windows)
            return scorer.provider

    return Scorer


class RayServeBackend:
    """Starts (or joins) Ray, deploys the Scorer and calls it through a deployment handle."""

    name = "ray"

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._handle = None
        self._started_ray = False

    async def start(self) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")  # about halves the handle call latency
        # ...but its direct HTTP ingress on replicas (unused here) holds every replica 30 s at shutdown.
        os.environ.setdefault("RAY_SERVE_ENABLE_DIRECT_INGRESS", "0")
        import ray
        from ray import serve
        from ray.serve.schema import LoggingConfig

        logging.getLogger("ray.serve").setLevel(logging.WARNING)

        s = self.settings
        if not ray.is_initialized():
            self._init_ray(ray, s)
            self._started_ray = not s.address
        serve.start(proxy_location="Disabled", logging_config=LoggingConfig(log_level="WARNING"))
        deployment = scorer_deployment(s)
        if s.max_replicas and s.max_replicas > s.replicas:
            deployment = deployment.options(num_replicas="auto", autoscaling_config={
                "min_replicas": s.replicas, "max_replicas": s.max_replicas,
                "target_ongoing_requests": max(2, s.max_batch // 8)})
        else:
            deployment = deployment.options(num_replicas=s.replicas)
        self._handle = await asyncio.to_thread(
            serve.run, deployment.bind(), name=APP_NAME, route_prefix=None, blocking=False)
        log.info("Ray Serve scorer deployed", extra={"fields": {
            "replicas": s.replicas, "max_replicas": s.max_replicas, "max_batch": s.max_batch,
            "gpus_per_replica": s.gpus_per_replica, "ray_address": s.address or "embedded"}})

    @staticmethod
    def _init_ray(ray, s: RaySettings, attempts: int = 2) -> None:
        """Start (or join) Ray. A start on a loaded machine occasionally times out waiting for its own GCS or raylet;
        one clean retry gets past that, and a second failure is a one-line error."""
        where = f"the Ray cluster at {s.address}" if s.address else "an embedded local Ray"
        for attempt in range(1, attempts + 1):
            try:
                if s.address:
                    ray.init(address=s.address, logging_level=logging.WARNING)
                else:
                    ray.init(num_cpus=s.num_cpus, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.WARNING)
                return
            except Exception as exc:  # Ray raises bare Exception, RuntimeError or ConnectionError here
                ray.shutdown()
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if attempt == attempts:
                    raise AelstmError(f"could not start {where}: {message}") from exc
                log.warning("starting %s failed (%s); retrying once", where, message)

    def _for(self, key: str):
        if self._handle is None:
            raise RuntimeError("backend not started")
        return self._handle.options(multiplexed_model_id=key)

    async def prepare(self, entry: ModelEntry) -> str:
        provider = await self._for(entry.key).check.remote(probe_windows(entry))
        log.info("model %s v%s ready on %s", entry.fleet, entry.version, provider,
                 extra={"fields": {"fleet": entry.fleet, "version": entry.version, "provider": provider}})
        return provider

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        return await self._for(key).score.remote(windows)

    async def retain(self, keys: set[str]) -> None:
        """Replicas evict unused models themselves (LRU of `models_per_replica`)."""

    async def close(self) -> None:
        import ray
        from ray import serve

        if self._handle is not None:
            if self._started_ray:
                await serve.shutdown_async()
            else:  # a shared cluster: remove only what this ingress deployed
                await asyncio.to_thread(serve.delete, APP_NAME)
            self._handle = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
            self._started_ray = False
