"""The ingress side of Ray Serve scoring: start or join Ray, attach to the scoring application, call it.

An embedded-Ray ingress starts Ray, deploys the scoring application and shuts both down when it stops: it owns
them. An ingress given a cluster address only attaches: the application there belongs to `aelstm deploy` (or
`serve deploy`), so any number of ingresses can come and go without touching what the others use. An ingress whose
application is missing or has no running replica reports itself unhealthy, and becomes healthy again once the
application is back (models are put into its store again then).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from aelstm.core.errors import AelstmError
from aelstm.core.runtime import Scores

from .backend import BackendUnavailable, probe_windows
from .config import ScorerSettings
from .logs import Throttled
from .registry import ModelEntry
from .scoring_app import APP_NAME, REPLICA_ENV, SCORER, STORE, MissingBundle, app_config, bundle_files, files_digest

log = logging.getLogger(__name__)
replica_warnings = Throttled(log)  # replicas lost mid-call: one line per 10 s, however many calls they held

HEALTH_TIMEOUT_S = 10.0
T = TypeVar("T")
RETIRED_GRACE_S = 300.0
GCS_PORT_WAIT_S = 90
DEPLOY_TIMEOUT_S = 300.0


def configure_ray_environment(address: str | None = None) -> None:
    """Environment Ray reads at import (so: before importing it), the replicas' own (`REPLICA_ENV`): no usage
    reporting; Serve's throughput-optimised call path (direct gRPC between handle and replica, about half the
    latency), without its per-replica HTTP ingress, which we do not use and which holds every replica 30 s at
    shutdown. Joining a cluster with a token on this machine sends it: `ray start` clusters require one, and a
    driver must opt in. When Ray is already imported, its cached config is refreshed as Ray itself does when it
    turns token mode on: otherwise this process's Ray client stays in 'disabled' mode while every Ray process it
    starts later inherits RAY_AUTH_MODE=token, and an embedded Ray started afterwards in the same process never
    comes up (its GCS logs "Missing authorization header in request!", the start times out)."""
    for name, value in REPLICA_ENV.items():
        os.environ.setdefault(name, value)
    if address and "RAY_AUTH_MODE" not in os.environ and _auth_token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:
            from ray._raylet import Config

            Config.initialize("")


def init_ray(address: str | None, num_cpus: int, attempts: int = 2, temp_root: str | None = None) -> str | None:
    """Start an embedded Ray (or join `address`). A start on a loaded machine occasionally times out waiting for
    its own GCS or raylet; one clean retry gets past that, and a second failure is a one-line error.

    An embedded Ray gets a temp dir of its own (`aelstm-ray-*` in `temp_root`, else the system temp dir): Ray's
    shared /tmp/ray holds every Ray started on the machine (session_latest, port files, logs), and two starting at
    once there can trip over each other; a private one also makes its logs easy to find. A failed start names it and
    keeps it when Ray wrote logs there, and removes it when Ray never got that far. The GCS port-file
    wait is raised from Ray's 30 s to `GCS_PORT_WAIT_S` (Ray's RAY_gcs_server_port_wait_time_s, unless set).
    Returns that temp dir, for whoever shuts Ray down to remove (None when joining a cluster)."""
    import ray

    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(GCS_PORT_WAIT_S))
    where = f"the Ray cluster at {address}" if address else "an embedded local Ray"
    for attempt in range(1, attempts + 1):
        temp_dir = None
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                # address="local": a new Ray of its own, even where `ray start` left a cluster to join on this
                # machine; a private temp dir, so no other Ray starting meanwhile shares its session and port files
                temp_dir = tempfile.mkdtemp(prefix="aelstm-ray-", dir=temp_root and os.path.abspath(temp_root))
                ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, _temp_dir=temp_dir)
            return temp_dir
        except Exception as exc:  # Ray raises bare Exception, RuntimeError or ConnectionError here
            ray.shutdown()
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if temp_dir is not None:
                message += f" ({start_failure_hint(temp_dir)})"
                if not any(Path(temp_dir).iterdir()):  # nothing of Ray's to read there
                    os.rmdir(temp_dir)
            if attempt == attempts:
                raise AelstmError(f"could not start {where}: {message}") from exc
            log.warning("starting %s failed (%s); retrying once", where, message)


def start_failure_hint(temp_dir: str) -> str:
    """What the failed embedded Ray's own logs say, in a few words, and where they are."""
    logs = sorted(Path(temp_dir).glob("session_*/logs"))
    if not logs:
        return f"no Ray session was created under {temp_dir}"
    gcs = logs[-1] / "gcs_server.out"
    text = gcs.read_text(errors="replace") if gcs.is_file() else ""
    if "Missing authorization header" in text:
        return (f"its GCS requires a Ray token that this process did not send: RAY_AUTH_MODE or the token "
                f"changed in this process since Ray was first used; logs in {logs[-1]}")
    if not (logs[-1] / "raylet.out").is_file():
        return f"its raylet never started; logs in {logs[-1]}"
    return f"logs in {logs[-1]}"


def _auth_token_available() -> bool:
    """Whether this machine holds a Ray cluster token where Ray looks for one."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def deploy(settings: ScorerSettings, timeout_s: float = DEPLOY_TIMEOUT_S) -> None:
    """Deploy (or update in place) the scoring application on the connected Ray cluster; returns once running.

    Deployed as a config, exactly as `serve deploy` would (`app_config`), not as code: Serve gives code deployed
    with `serve.run` a new version every time, and so replaces every replica and the model store even when nothing
    changed. A config keeps its version while its import path and `args` do, and then only what changed is applied
    to the running replicas."""
    from ray.serve._private.api import serve_start  # what `serve run CONFIG` uses: public `serve.start` returns none
    from ray.serve.schema import LoggingConfig, ServeDeploySchema

    client = serve_start(proxy_location="Disabled", global_logging_config=LoggingConfig(log_level="WARNING"))
    client.deploy_apps(ServeDeploySchema(proxy_location="Disabled", applications=[app_config(settings)]))
    wait_running(timeout_s)
    log.info("scoring application deployed", extra={"fields": {
        "replicas": settings.replicas, "max_replicas": settings.max_replicas, "max_batch": settings.max_batch,
        "gpus_per_replica": settings.gpus_per_replica}})


def wait_running(timeout_s: float) -> None:
    """Until the scoring application runs; a failed deploy raises with Serve's reason."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    give_up = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(APP_NAME)
        if app is not None and app.status == ApplicationStatus.RUNNING:
            return
        if app is not None and app.status == ApplicationStatus.DEPLOY_FAILED:
            raise AelstmError(f"deploying the scoring application failed: {app.message.strip()[-2000:]}")
        if time.monotonic() > give_up:
            state = app.status if app is not None else "missing"
            raise AelstmError(f"the scoring application is not running after {timeout_s:g} s (it is {state})")
        time.sleep(0.2)


def running_replicas() -> int:
    """Running Scorer replicas of the scoring application (0 when it is missing). Models already loaded keep
    scoring while a replaced model store starts, so the store is not counted.

    Read from the controller's plain details rather than `serve.status()`, which rebuilds every deployment's config
    and so pickles Serve's request router class by value: tens of milliseconds holding the GIL, a stall of the
    ingress's event loop at every health check."""
    import ray
    from ray.serve.context import _get_global_client

    if not ray.is_initialized():  # stopped: Ray's own lookup would start a new local Ray
        return 0
    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return 0
    app = client.get_serve_details().get("applications", {}).get(APP_NAME, {})
    replicas = app.get("deployments", {}).get(SCORER, {}).get("replicas", [])
    return sum(1 for replica in replicas if replica.get("state") == "RUNNING")


async def replica_placement() -> dict[int, str]:
    """Running Scorer replicas, each asked where it runs: process id -> node id."""
    from ray import serve

    answers = await serve.get_deployment_handle(SCORER, APP_NAME).broadcast("where").results_async(timeout_s=60)
    return {answer["pid"]: answer["node_id"] for answer in answers}


def call_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Ray's errors for a Scorer replica gone mid-call (another replica answers at once), and for any part of the
    application going away while it is replaced (held by the coalescer until it is back)."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return (ActorDiedError, ActorUnavailableError), (RayActorError, DeploymentUnavailableError, ReplicaUnavailableError)


class RayServeBackend:
    """Calls the scoring application through deployment handles; models are named by their bundle digest."""

    name = "ray"

    def __init__(self, settings: ScorerSettings, address: str | None = None, num_cpus: int = 2,
                 temp_root: str | None = None) -> None:
        self.settings = settings
        self.address = address
        self.num_cpus = num_cpus
        self.temp_root = temp_root  # where an embedded Ray makes its temp dir (None: the system's)
        self.owner = address is None  # an embedded Ray and its application belong to this ingress
        self.replicas = 0  # running Scorer replicas at the last health check
        self._replica_lost: tuple[type[BaseException], ...] = ()  # Ray's errors for a replica gone mid-call
        self._replacing: tuple[type[BaseException], ...] = ()  # and for any part of the application going away
        self._connected_ray = False  # this backend started (or joined) Ray, so it also disconnects
        self._temp_dir: str | None = None  # the embedded Ray's, removed once it has stopped
        self._scorer = None
        self._store = None
        self._digests: dict[str, str] = {}  # registry key -> bundle digest
        self._files: dict[str, dict[str, bytes]] = {}  # digest -> files, to put again into a new store
        self._handles: dict[str, object] = {}  # digest -> handle bound to that model
        self._retired: dict[str, float] = {}  # registry key -> when it stopped being served
        self._threads: set[asyncio.Future] = set()  # Ray calls under way in worker threads (see _off_loop)

    async def start(self) -> None:
        """Runs off the event loop: starting Ray takes seconds, and health must answer meanwhile."""
        configure_ray_environment(self.address)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        await asyncio.to_thread(self._connect)

    def _connect(self) -> None:
        import ray
        self._replica_lost, self._replacing = call_errors()  # once, not on every call

        if not ray.is_initialized():
            self._temp_dir = init_ray(self.address, self.num_cpus, temp_root=self.temp_root)
            self._connected_ray = True
        if self.owner:
            deploy(self.settings)
            self._attach()
        elif not self._try_attach():
            log.warning("no running scoring application %r on the Ray cluster at %s yet: deploy it with "
                        "`aelstm deploy --ray-address %s`; health stays NOT_SERVING until it runs",
                        APP_NAME, self.address, self.address)

    def _attach(self) -> None:
        from ray import serve

        self._scorer = serve.get_app_handle(APP_NAME)
        self._store = serve.get_deployment_handle(STORE, APP_NAME)
        self._handles.clear()

    def _try_attach(self) -> bool:
        try:
            if not running_replicas():
                return False
            self._attach()
            return True
        except Exception as exc:  # no Serve instance on the cluster, or it is going away
            log.debug("scoring application not reachable: %s", exc)
            return False

    async def healthy(self) -> bool:
        """True while the scoring application runs; re-attaches after it was gone (then models must be
        prepared again: the caller does that when this turns True)."""
        was_attached = self._scorer is not None
        try:
            self.replicas = await asyncio.wait_for(self._off_loop(running_replicas), HEALTH_TIMEOUT_S)
        except Exception as exc:
            log.debug("scoring application status unknown: %s", exc)
            self.replicas = 0
        if not self.replicas:
            self._scorer = self._store = None
            return False
        if not was_attached:
            return await self._off_loop(self._try_attach)
        return True

    async def _off_loop(self, call: Callable[[], T]) -> T:
        """`call` in a worker thread that close() waits for before it stops Serve and Ray. Cancelling the caller
        (a health check timed out, the server stopping) does not stop the thread: left running, its Ray call would
        meet a Ray shutting down under it and could block the thread, and with it the event loop's close, for ever."""
        future = asyncio.ensure_future(asyncio.to_thread(call))
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        return await asyncio.shield(future)

    def _for(self, digest: str):
        """The handle scoring with `digest`'s model, made once per model: Ray builds a handle's options anew on every
        attribute access (`handle.score`), pickling its request router class each time, a few percent of the
        ingress's CPU under load."""
        if self._scorer is None:
            raise BackendUnavailable("the scoring application is not running")
        handle = self._handles.get(digest)
        if handle is None:
            handle = self._handles[digest] = self._scorer.options(multiplexed_model_id=digest, method_name="score")
        return handle

    async def _put(self, digest: str, files: dict[str, bytes]) -> None:
        store = self._store
        if store is None:
            raise BackendUnavailable("the scoring application is not running")
        await store.put.remote(digest, files)

    async def prepare(self, entry: ModelEntry) -> str:
        files = await asyncio.to_thread(bundle_files, entry.bundle.path)  # reads and hashes: off the loop
        digest = files_digest(files)
        await self._put(digest, files)
        provider = await self._for(digest).options(method_name="check").remote(probe_windows(entry))
        self._digests[entry.key] = digest
        self._files[digest] = files
        log.info("model %s v%s ready on %s", entry.fleet, entry.version, provider,
                 extra={"fields": {"fleet": entry.fleet, "version": entry.version, "provider": provider,
                                   "sha256": digest}})
        return provider

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        """Scores from any replica; a failure that replacing the application causes (a replica or the store gone, the
        application not running) is `BackendUnavailable`, which the coalescer holds through its grace."""
        digest = self._digests.get(key)
        if digest is None:
            raise LookupError(f"model {key} is not loaded")
        try:
            try:
                return await self._for(digest).remote(windows)
            except MissingBundle:  # the store restarted: put the bundle back, then once more
                await self._put(digest, self._files[digest])
            except self._replica_lost as exc:  # scoring is idempotent: another replica answers
                replica_warnings.warning("a Scorer replica failed mid-call (%s); retrying once", type(exc).__name__)
            return await self._for(digest).remote(windows)
        except (MissingBundle, *self._replacing) as exc:
            raise BackendUnavailable(f"the scoring application is being replaced ({type(exc).__name__})") from exc

    async def retain(self, keys: set[str]) -> None:
        """Forget models retired more than `RETIRED_GRACE_S` ago (calls queued before a swap still find theirs);
        replicas evict unused models themselves (LRU of `models_per_replica`)."""
        now = time.monotonic()
        for key in set(self._digests) - keys:
            self._retired.setdefault(key, now)
        for key in keys:
            self._retired.pop(key, None)
        for key, since in list(self._retired.items()):
            if now - since > RETIRED_GRACE_S:
                del self._retired[key]
                digest = self._digests.pop(key)
                if digest not in self._digests.values():
                    self._files.pop(digest, None)
                    self._handles.pop(digest, None)

    async def close(self) -> None:
        import ray

        self._scorer = self._store = None
        self._handles.clear()
        if self._threads:
            await asyncio.wait(set(self._threads), timeout=HEALTH_TIMEOUT_S)
        if self.owner and ray.is_initialized():
            from ray import serve

            await serve.shutdown_async()
        if self._connected_ray and ray.is_initialized():
            await asyncio.to_thread(ray.shutdown)  # embedded: stops Ray; attached: only disconnects
        self._connected_ray = False
        if self._temp_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._temp_dir, True)
            self._temp_dir = None
