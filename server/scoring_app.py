"""The Ray Serve scoring application: a model store and stateless Scorer replicas.

It has one owner: `aelstm deploy` (or `serve deploy deploy/serve_config.yaml`, or KubeRay's RayService) on a
cluster, or the embedded-Ray `aelstm serve` that started Ray itself. Ingresses only attach to it through deployment
handles, so any number of them can share it and none deletes what the others use.

Models travel by content, not by path: an ingress reads a bundle from its registry, puts its files into the
`ModelStore` under their sha256 digest, and names that digest as the multiplexed model id. A Scorer replica on any
node fetches the files from the store (through Ray's object store), checks the digest, and loads them from a local
cache directory. No node needs a shared filesystem.

    serve run aelstm.server.scoring_app:app replicas=2      # what `serve deploy` / RayService run

Deploying again never replaces more than the change needs (`app_config`): unchanged settings restart nothing; live
settings (batching, onnxruntime threads) reach running replicas through `reconfigure`; only resources, the models a
replica keeps and the device need new replicas, which Serve rolls over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aelstm.core.bundle import MANIFEST_FILE, load_bundle
from aelstm.core.errors import BundleError
from aelstm.core.runtime import BundleScorer, Scores

from .config import RESTART, ScorerSettings

log = logging.getLogger(__name__)

APP_NAME = "aelstm"
SCORER = "Scorer"
STORE = "ModelStore"
STORE_BYTES = 2 << 30  # bundles are kilobytes to megabytes: this holds thousands
# Serve's throughput-optimised call path (direct gRPC from handle to replica) must be on in the replicas too, whatever
# environment the cluster's nodes were started with; its per-replica HTTP ingress is unused.
REPLICA_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
               "RAY_USAGE_STATS_ENABLED": "0"}


class MissingBundle(LookupError):
    """The store no longer holds a bundle (it restarted or evicted it): the ingress puts it again."""


@dataclass
class Loaded:
    """A model on a replica: its files, and the session opened with `threads` onnxruntime threads (reopened when
    that live setting changes)."""

    files: dict[str, bytes]
    threads: int
    scorer: BundleScorer


def bundle_files(path: str | Path) -> dict[str, bytes]:
    """The files of a validated bundle directory, by name (the manifest and the ONNX file it names)."""
    bundle = load_bundle(path)
    return {MANIFEST_FILE: (bundle.path / MANIFEST_FILE).read_bytes(),
            bundle.model_path.name: bundle.model_path.read_bytes()}


def files_digest(files: dict[str, bytes]) -> str:
    """sha256 over names, lengths and contents, in name order: identifies a bundle wherever it is stored."""
    digest = hashlib.sha256()
    for name in sorted(files):
        content = files[name]
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def materialise(files: dict[str, bytes], digest: str, root: Path) -> Path:
    """Write verified bundle files under `root/<digest>` (once; atomically) and return that directory."""
    if files_digest(files) != digest:
        raise BundleError(f"bundle {digest[:12]}…: the files received do not match their sha256")
    target = root / digest
    if not target.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=root))
        for name, content in files.items():
            if Path(name).name != name:
                raise BundleError(f"bundle {digest[:12]}…: unsafe file name {name!r}")
            (staging / name).write_bytes(content)
        try:
            staging.rename(target)
        except OSError:  # another replica on this node got there first
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _deployments(settings: ScorerSettings):
    """The two deployment classes, with what only new replicas can take from `settings` (resources, the models a
    replica keeps, the device); the live settings come through `reconfigure` (imported lazily: the ingress may run
    without Ray)."""
    from ray import serve

    # On the head node, whose loss ends the cluster anyway: losing a worker node never empties the store.
    @serve.deployment(name=STORE, num_replicas=1,
                      ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001},
                                         "runtime_env": {"env_vars": REPLICA_ENV}})
    class ModelStore:
        """Bundle files by digest, least recently used evicted beyond `STORE_BYTES`."""

        def __init__(self) -> None:
            self._files: OrderedDict[str, dict[str, bytes]] = OrderedDict()
            self._bytes = 0

        def put(self, digest: str, files: dict[str, bytes]) -> None:
            if files_digest(files) != digest:
                raise BundleError(f"bundle {digest[:12]}…: the files do not match their sha256")
            if digest not in self._files:
                self._files[digest] = files
                self._bytes += sum(map(len, files.values()))
            self._files.move_to_end(digest)
            while self._bytes > STORE_BYTES and len(self._files) > 1:
                _, evicted = self._files.popitem(last=False)
                self._bytes -= sum(map(len, evicted.values()))

        def get(self, digest: str) -> dict[str, bytes] | None:
            files = self._files.get(digest)
            if files is not None:
                self._files.move_to_end(digest)
            return files

    @serve.deployment(
        name=SCORER,
        ray_actor_options={"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica,
                           "runtime_env": {"env_vars": REPLICA_ENV}},
    )
    class Scorer:
        """Scores windows with whichever model the caller names (its digest) as `multiplexed_model_id`."""

        def __init__(self, store) -> None:
            self._store = store
            self._tuning = settings  # until Serve calls `reconfigure` with the deployed user_config

        def reconfigure(self, tuning: dict) -> None:
            """The live settings (`ScorerSettings.tuning`, Ray Serve's user_config): Serve calls this on start and
            on every change, in place, so that changing them replaces no replica. Models opened with other
            onnxruntime threads are reopened on their next call."""
            self._tuning = ScorerSettings.from_mapping(tuning, base=settings)
            self.score_batch.set_max_batch_size(self._tuning.max_batch)
            self.score_batch.set_batch_wait_timeout_s(self._tuning.replica_batch_wait_ms / 1000)

        @serve.multiplexed(max_num_models_per_replica=settings.models_per_replica)
        async def model(self, digest: str) -> Loaded:
            files = await self._store.get.remote(digest)
            if files is None:
                raise MissingBundle(f"bundle {digest[:12]}… is not in the model store")
            threads = self._tuning.threads_per_replica
            return Loaded(files, threads, await asyncio.to_thread(self._load, files, digest, threads))

        async def scorer(self) -> BundleScorer:
            """The caller's model, opened with the current onnxruntime threads."""
            digest = serve.get_multiplexed_model_id()
            loaded = await self.model(digest)
            threads = self._tuning.threads_per_replica
            if loaded.threads != threads:
                loaded.scorer = await asyncio.to_thread(self._load, loaded.files, digest, threads)
                loaded.threads = threads
            return loaded.scorer

        def _load(self, files: dict[str, bytes], digest: str, threads: int) -> BundleScorer:
            """Write, hash-check and open a bundle: file and hashing work, kept off the replica's event loop. The
            files live only while onnxruntime reads them: nothing accumulates on the node."""
            with tempfile.TemporaryDirectory(prefix="aelstm-bundle-") as root:
                path = materialise(files, digest, Path(root))
                return BundleScorer(load_bundle(path), settings.device, threads)

        @serve.batch(max_batch_size=settings.max_batch, batch_wait_timeout_s=settings.replica_batch_wait_ms / 1000,
                     batch_size_fn=lambda calls: sum(len(windows) for windows in calls))
        async def score_batch(self, calls: list[np.ndarray]) -> list[Scores]:
            """Calls of the same model queued together (from several ingresses) share one onnxruntime run."""
            scorer = await self.scorer()
            windows = calls[0] if len(calls) == 1 else np.concatenate(calls)
            scores = scorer.score(windows)  # a few ms at most: cheaper inline than a thread hop
            if len(calls) == 1:
                return [scores]
            bounds = np.cumsum([len(call) for call in calls])[:-1]
            return [Scores(score, rec, pred, scores.compute_s) for score, rec, pred in
                    zip(*(np.split(part, bounds) for part in (scores.score, scores.rec_part, scores.pred_part)),
                        strict=True)]

        async def score(self, windows: np.ndarray) -> Scores:
            """Each ingress already sends few, full calls; merging them again here costs ~0.2 ms of CPU per call,
            so calls go through @serve.batch only when asked to wait for others (`replica_batch_wait_ms` > 0)."""
            if self._tuning.replica_batch_wait_ms > 0:
                return await self.score_batch(windows)
            return (await self.scorer()).score(windows)

        async def check(self, windows: np.ndarray) -> str:
            """Load the model, score `windows`, and report the provider onnxruntime really uses."""
            scorer = await self.scorer()
            await asyncio.to_thread(scorer.score, windows)
            return scorer.provider

        def where(self) -> dict:
            """Which node and process answer, and the live settings it runs with: shows replica placement."""
            import ray

            return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                    "tuning": self._tuning.tuning()}

    return ModelStore, Scorer


def scorer_options(settings: ScorerSettings) -> dict:
    """The Scorer's deployment options that Ray Serve changes on running replicas: how many (or autoscaling
    bounds), calls each takes, and the live settings (`user_config`). The same in code (`build`) and in a config
    file (`aelstm deploy`, `serve deploy`)."""
    # no access log: a log line per call was a few percent of a busy replica's CPU
    options: dict = {"max_ongoing_requests": max(4 * settings.max_batch, 64), "user_config": settings.tuning(),
                     "logging_config": {"enable_access_log": False}}
    if settings.max_replicas and settings.max_replicas > settings.replicas:
        options.update(num_replicas="auto", autoscaling_config={
            "min_replicas": settings.replicas, "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing_requests,
            "upscale_delay_s": 2.0, "downscale_delay_s": 20.0, "look_back_period_s": 15.0})
    else:
        options.update(num_replicas=settings.replicas)
    return options


def build(settings: ScorerSettings):
    """The scoring application, shaped by `settings`."""
    store_cls, scorer_cls = _deployments(settings)
    return scorer_cls.options(**scorer_options(settings)).bind(store_cls.bind())


def app_config(settings: ScorerSettings) -> dict:
    """The application as an entry of a Ray Serve config (`aelstm deploy`, `serve deploy`, a RayService). Only
    what new replicas alone can take is the builder's `args`: Serve treats a change of them as new code and rolls
    every replica over. The rest are the Scorer's deployment options, which Serve applies to running replicas. So a
    config deployed again unchanged restarts nothing, and a live or scale change restarts nothing either."""
    args = {name.replace("_", "-"): getattr(settings, name) for name in ScorerSettings.applying(RESTART)}
    return {"name": APP_NAME, "route_prefix": None, "import_path": "aelstm.server.scoring_app:app", "args": args,
            "deployments": [{"name": SCORER, **scorer_options(settings)}]}


def app(args: dict):
    """Application builder for `serve run` / `serve deploy`: `args` are ScorerSettings names (dashes allowed)."""
    settings = ScorerSettings.from_mapping(args)
    log.info("building the aelstm scoring application: %s", asdict(settings))
    return build(settings)
