"""What each simulated gateway sends: precomputed, serialised request bodies that it cycles through."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aelstm.training.errors import DataError

from .payloads import request_body, window_item
from .synthetic import Telemetry


@dataclass(frozen=True)
class Payload:
    """One prebuilt request body (everything but the request id) and the event id of each of its items."""

    fleet_id: str
    body: bytes
    items: int
    events: np.ndarray | None  # [items] int32 event ids; None when no item is anomalous


@dataclass(frozen=True)
class Workload:
    gateways: list[list[Payload]]
    event_kinds: dict[int, str]
    window: int
    features: int
    batch: int

    @property
    def fleets(self) -> list[str]:
        return sorted({p.fleet_id for payloads in self.gateways for p in payloads})


def fleet_names(count: int) -> list[str]:
    return [f"fleet-{i}" for i in range(count)]


def device_id(fleet: str, device: int) -> str:
    return f"{fleet}/dev-{device:05d}"


def build_workload(
    telemetry: Telemetry, *, fleets: list[str], gateways: int, batch: int, window: int, pool_messages: int
) -> Workload:
    """Device d belongs to fleet d mod F and gateway d mod G; each message holds `batch` windows of one fleet.

    Per gateway and fleet, messages walk through time (every device's window ending at t, then t+1, ...) and the
    pool holds at most `pool_messages` messages per gateway, cycled while sending.
    """
    if gateways < 1 or batch < 1 or not fleets:
        raise DataError("need at least one gateway, one fleet and a batch of at least one item")
    if telemetry.devices < gateways:
        raise DataError(f"{telemetry.devices} devices cannot feed {gateways} gateways: use --devices ≥ --gateways")
    if telemetry.length < window:
        raise DataError(f"series of {telemetry.length} readings are shorter than the window ({window})")
    ends = np.arange(window - 1, telemetry.length)
    pools: list[list[Payload]] = []
    for gateway in range(gateways):
        per_fleet = []
        for f, fleet in enumerate(fleets):
            devices = [d for d in range(gateway, telemetry.devices, gateways) if d % len(fleets) == f]
            if devices:
                per_fleet.append((fleet, devices))
        budget = max(1, pool_messages // len(per_fleet))
        pool: list[list[Payload]] = []
        for fleet, devices in per_fleet:
            pairs = [(t, d) for t in range(len(ends)) for d in devices][: budget * batch]
            messages = []
            for start in range(0, len(pairs), batch):
                chunk = pairs[start : start + batch]
                items = [window_item(device_id(fleet, d), telemetry.values[d, ends[t] - window + 1 : ends[t] + 1])
                         for t, d in chunk]
                events = np.array([telemetry.events[d, ends[t]] for t, d in chunk], np.int32)
                messages.append(Payload(fleet, request_body(fleet, items), len(items),
                                        events if events.any() else None))
            pool.append(messages)
        interleaved = [m for group in zip(*pool, strict=False) for m in group]
        pools.append(interleaved)
    return Workload(pools, telemetry.event_kinds, window, telemetry.values.shape[2], batch)
