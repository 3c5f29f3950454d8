"""What each simulated gateway sends: precomputed, serialised request bodies that it cycles through."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aelstm.core.errors import DataError
from aelstm.v1 import scoring_pb2 as pb

from .payloads import readings_item, request_body, window_item
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


def _item(kind: str, telemetry: Telemetry, fleet: str, device: int, t: int, window: int) -> tuple[pb.Item, int]:
    """The item for device `device` at reading `t`, and the event id its score is judged against.

    A `readings` item is answered with the score of the server-side window ending at it; while that window still
    holds readings from before the pool last wrapped around (or is warming up), its event id is -1 (not judged).
    """
    event = int(telemetry.events[device, t])
    if kind == "windows":
        return window_item(device_id(fleet, device), telemetry.values[device, t - window + 1 : t + 1]), event
    return readings_item(device_id(fleet, device), telemetry.values[device, t]), event if t >= window - 1 else -1


def build_workload(
    telemetry: Telemetry, *, fleets: list[str], gateways: int, batch: int, window: int, pool_messages: int,
    items: str = "windows",
) -> Workload:
    """Device d belongs to fleet d mod F and gateway d mod G; each message holds `batch` items of one fleet.

    Items are whole windows, or single readings for the server to append to the device's window (`items="readings"`).
    Per gateway and fleet, messages walk through time (every device's item at t, then t+1, ...); the pool holds at
    most `pool_messages` messages per gateway, cycled while sending.
    """
    if items not in ("windows", "readings"):
        raise DataError(f"items must be windows or readings, got {items!r}")
    if gateways < 1 or batch < 1 or not fleets:
        raise DataError("need at least one gateway, one fleet and a batch of at least one item")
    if telemetry.devices < gateways:
        raise DataError(f"{telemetry.devices} devices cannot feed {gateways} gateways: use --devices ≥ --gateways")
    if telemetry.length < window:
        raise DataError(f"series of {telemetry.length} readings are shorter than the window ({window})")
    first = window - 1 if items == "windows" else 0
    pools: list[list[Payload]] = []
    for gateway in range(gateways):
        per_fleet = []
        for f, fleet in enumerate(fleets):
            devices = [d for d in range(gateway, telemetry.devices, gateways) if d % len(fleets) == f]
            if devices:
                per_fleet.append((fleet, devices))
        budget = max(1, pool_messages // len(per_fleet)) * batch
        pool: list[list[Payload]] = []
        for fleet, devices in per_fleet:
            steps = min(telemetry.length - first, -(-budget // len(devices)))
            if items == "readings" and steps < 2 * window:
                raise DataError(f"a pool of {pool_messages} messages covers only {steps} readings per device, "
                                f"too few for windows of {window}: raise --pool or lower --devices")
            pairs = [(t, d) for t in range(first, first + steps) for d in devices][:budget]
            messages = []
            for start in range(0, len(pairs), batch):
                built = [_item(items, telemetry, fleet, d, t, window) for t, d in pairs[start : start + batch]]
                events = np.array([event for _, event in built], np.int32)
                messages.append(Payload(fleet, request_body(fleet, [item for item, _ in built]), len(built),
                                        events if events.any() else None))
            pool.append(messages)
        interleaved = [m for group in zip(*pool, strict=False) for m in group]
        pools.append(interleaved)
    return Workload(pools, telemetry.event_kinds, window, telemetry.values.shape[2], batch)
