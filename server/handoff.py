"""Device state that moves with a device between ingresses.

A gateway whose stream ends (it reconnects, the ingress drains for a restart, a load balancer moves it) takes up on
another ingress. So that the device's window, timestamps and alarm-policy state go with it, an ingress hands the
state of every device a stream touched to the handoff store when that stream ends, and an ingress that sees a
device it does not hold takes the device's state from the store before judging it. A device's state is in one
place at a time: `take` removes it.

What is not covered, and says so: an ingress that dies without ending its streams hands nothing over (the device
then starts from its model's fitted policy on the next ingress); readings of one device sent to two ingresses at
once are judged by two states (the timestamps still keep each window free of gaps and of late data). Verdicts
remembered for resends stay with the ingress that gave them.

`LocalHandoff` keeps states in this process (ingresses sharing one event loop); `RayHandoff` keeps them in a named
Ray actor on the cluster the ingresses share, bounded like the device store.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Protocol

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (fleet, device)
ACTOR_NAME = "aelstm-device-handoff"
NAMESPACE = "aelstm"
DEFAULT_CAPACITY = 100_000
CALL_TIMEOUT_S = 5.0  # scoring never waits longer than this on the handoff store


class Handoff(Protocol):
    async def put(self, states: dict[Key, dict]) -> None:
        """Leave the devices' states for whichever ingress sees them next."""

    async def take(self, keys: list[Key]) -> dict[Key, dict]:
        """The states left for these devices (removed from the store); absent keys have none."""


class _Bounded:
    """States by device, the least recently left dropped first beyond `capacity`."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.states: OrderedDict[Key, dict] = OrderedDict()

    def put(self, states: dict[Key, dict]) -> None:
        for key, state in states.items():
            self.states.pop(key, None)
            self.states[key] = state
        while len(self.states) > self.capacity:
            self.states.popitem(last=False)

    def take(self, keys: list[Key]) -> dict[Key, dict]:
        return {key: state for key in keys if (state := self.states.pop(key, None)) is not None}

    def __len__(self) -> int:
        return len(self.states)


class LocalHandoff:
    """Handoff between ingresses of one process."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._states = _Bounded(capacity)

    async def put(self, states: dict[Key, dict]) -> None:
        self._states.put(states)

    async def take(self, keys: list[Key]) -> dict[Key, dict]:
        return self._states.take(keys)


class RayHandoff:
    """Handoff through a named actor on the Ray cluster (created by the first ingress that needs it). While Ray or
    the actor cannot be reached, devices are neither handed over nor taken: they start afresh, and a warning says
    so once."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._actor = None
        self._warned = False

    def _store(self):
        if self._actor is None:
            import ray

            actor = ray.remote(num_cpus=0)(_Bounded).options(
                name=ACTOR_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached")
            self._actor = actor.remote(self.capacity)
        return self._actor

    async def put(self, states: dict[Key, dict]) -> None:
        if states:
            await self._call("put", states)

    async def take(self, keys: list[Key]) -> dict[Key, dict]:
        if not keys:
            return {}
        return await self._call("take", keys) or {}

    async def _call(self, method: str, argument):
        try:
            actor = await asyncio.wait_for(asyncio.to_thread(self._store), CALL_TIMEOUT_S)
            return await asyncio.wait_for(getattr(actor, method).remote(argument), CALL_TIMEOUT_S)
        except Exception as exc:  # Ray not up, the actor gone or stuck: score on without handing over
            self._actor = None
            if not self._warned:
                log.warning("device handoff store unreachable (%s): devices that move between ingresses start "
                            "afresh until it is back", exc)
                self._warned = True
            return None
