"""The Ray backend's calls and health check, without Ray: what replacing the application looks like to the coalescer."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import DeploymentUnavailableError

from aelstm.core.runtime import Scores
from aelstm.server.backend import BackendUnavailable
from aelstm.server.config import ScorerSettings
from aelstm.server.ray_backend import RayServeBackend, call_errors, running_replicas

WINDOWS = np.zeros((2, 16, 1), np.float32)
SCORES = Scores(np.zeros(2), np.zeros(2), np.zeros(2))


class Handle:
    """A Scorer deployment handle whose calls fail or answer in turn, as given."""

    def __init__(self, outcomes: list) -> None:
        self.outcomes = outcomes
        self.score = self

    def options(self, **_options) -> Handle:
        return self

    async def remote(self, _windows: np.ndarray) -> Scores:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def attached(outcomes: list) -> RayServeBackend:
    backend = RayServeBackend(ScorerSettings(), address="ray://nowhere:10001")
    backend._replica_lost, backend._replacing = call_errors()
    backend._scorer = Handle(outcomes)
    backend._digests["ec2@1"] = "digest"
    return backend


async def test_a_lost_replica_is_retried_once_at_once():
    assert await attached([ActorDiedError(), SCORES]).score("ec2@1", WINDOWS) is SCORES


@pytest.mark.parametrize("failures", [
    [ActorDiedError(), ActorUnavailableError("gone", None)],  # both replicas tried are being replaced
    [DeploymentUnavailableError(DeploymentID(name="Scorer", app_name="aelstm"))],
])
async def test_replacing_the_application_is_backend_unavailable(failures):
    with pytest.raises(BackendUnavailable, match="being replaced"):
        await attached([*failures, SCORES]).score("ec2@1", WINDOWS)


async def test_a_detached_application_is_backend_unavailable_and_other_failures_are_not():
    backend = attached([RuntimeError("model error")])
    with pytest.raises(RuntimeError, match="model error"):
        await backend.score("ec2@1", WINDOWS)
    backend._scorer = None  # what a health check that saw no running replica leaves
    with pytest.raises(BackendUnavailable, match="not running"):
        await backend.score("ec2@1", WINDOWS)


class Client:
    """Serve's controller client as the health check sees it: the plain details of the application."""

    def __init__(self, applications: dict) -> None:
        self.applications = applications

    def get_serve_details(self) -> dict:
        return {"applications": self.applications}


def replicas(*states: str) -> dict:
    return {"replicas": [{"replica_id": str(i), "state": state} for i, state in enumerate(states)]}


@pytest.mark.parametrize(("client", "running"), [
    (None, 0),  # no Serve on the cluster
    (Client({}), 0),  # Serve, but no scoring application
    (Client({"aelstm": {"deployments": {"ModelStore": replicas("RUNNING")}}}), 0),  # the store alone scores nothing
    (Client({"aelstm": {"deployments": {"Scorer": replicas("RUNNING", "STARTING", "RUNNING", "STOPPING"),
                                        "ModelStore": replicas("RUNNING")}},
             "other": {"deployments": {"Scorer": replicas("RUNNING")}}}), 2),
])
def test_the_health_check_counts_running_scorer_replicas_of_the_application(monkeypatch, client, running):
    monkeypatch.setattr("ray.is_initialized", lambda: True)
    monkeypatch.setattr("ray.serve.context._get_global_client", lambda **_: client)
    assert running_replicas() == running


def test_the_health_check_of_a_stopped_ray_looks_nothing_up(monkeypatch):
    """Ray's own lookup of the controller would start a new local Ray."""
    monkeypatch.setattr("ray.is_initialized", lambda: False)
    monkeypatch.setattr("ray.serve.context._get_global_client", pytest.fail)
    assert running_replicas() == 0


async def test_closing_waits_for_a_health_check_still_running_in_its_thread(monkeypatch):
    """Stopping cancels the health check's task, not its thread: Ray is stopped only once the thread is done."""
    started, release, order = threading.Event(), threading.Event(), []

    def slow_check() -> int:
        started.set()
        release.wait(5)
        order.append("health check ended")
        return 1

    monkeypatch.setattr("aelstm.server.ray_backend.running_replicas", slow_check)
    backend = RayServeBackend(ScorerSettings())
    check = asyncio.create_task(backend.healthy())
    assert await asyncio.to_thread(started.wait, 5)
    check.cancel()
    threading.Timer(0.2, release.set).start()
    await backend.close()
    order.append("closed")
    assert order == ["health check ended", "closed"]
