"""Per-device state of the ingress: each device's sliding window, its alarm-policy state and the verdicts it got.
Replicas stay stateless; the request path asks this store and never reaches into a device.

`admit` takes one `readings` item and says what to do with it:
- `Warming(held)`: the window is not full yet;
- `Ready(windows, ticket)`: score the windows ending at each of the item's readings, then `ticket.judge(…)`
  them. Every reading's window is scored and judged, so the policy state does not depend on how a gateway batches
  readings, and tickets of one device are judged in reading order whatever order the backend answers in: served
  alarms equal `aelstm score`'s;
- `Remembered(outcome)`: a resend (the same `timestamp_ms` as an earlier item): it gets the verdict its readings
  got the first time, never another window's, and teaches nothing. The last `remember` items are remembered;
- `ItemProblem(OUT_OF_RANGE)`: readings older than the device's newest that are not remembered (late data):
  never spliced into the window, never scored as the newest.

Gaps. A device's sampling period is the fleet model's (`sampling_period_ms` in the manifest) or, failing that, the
smallest time per reading the device has shown. Up to `max_gap_readings` missing readings enter the window as NaN
and are filled by the model's own interpolation, exactly as gaps in training data were; a longer gap restarts the
window (WARMING_UP) and keeps the policy state. `timestamp_ms` 0 means "no timestamp": such readings are appended
as they come, and can be neither deduplicated nor checked for gaps.

A new model version for a device keeps its policy state where the policies match (`Policy.compatible`: same rules
and settings) and starts afresh otherwise. Bounded by count and bytes (readings, ids, policy state, verdicts); the
least recently updated device is forgotten first. Every such event is counted by `count(event)`.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from aelstm.core.policy import Policy, StreamState, Verdict

from .items import ItemProblem

OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE.value[0]
ENTRY_OVERHEAD_BYTES = 256  # per device: the key tuple, the dict slot, the array header
OUTCOME_BYTES = 160  # per remembered verdict: the future and its outcome
DEFAULT_REMEMBER = 16  # a reconnecting gateway resends what got no answer: a few items per device
DEFAULT_MAX_GAP_READINGS = 4
GAP_SLACK = 0.5  # a gap is at least half a sampling period more than the readings account for


@dataclass(frozen=True)
class Outcome:
    """What a `readings` item got: the verdict on its most anomalous window (the largest margin of alarm score over
    threshold; the latest among ties) with that window's score and terms, and how many of its windows alarmed; or
    WARMING_UP (`held` readings)."""

    held: int
    score: float = math.nan
    rec: float = math.nan
    pred: float = math.nan
    verdict: Verdict | None = None
    alarmed: int = 0


@dataclass(frozen=True)
class Warming:
    held: int


@dataclass(frozen=True)
class Remembered:
    outcome: asyncio.Future  # -> Outcome, or a `Retry` when scoring it failed


@dataclass(frozen=True)
class Retry:
    """A remembered item whose scoring failed: its windows, to score again (judged, never learnt from)."""

    windows: np.ndarray


@dataclass(frozen=True)
class Ready:
    windows: np.ndarray  # [k, window, features]: the full windows ending at the item's readings, in order
    ticket: Ticket


class _Device:
    __slots__ = ("key", "outcomes", "period_ms", "readings", "size", "state", "state_bytes", "tail", "timestamp_ms")

    def __init__(self, readings: np.ndarray) -> None:
        self.readings = readings
        self.timestamp_ms = 0
        self.period_ms: float | None = None  # learnt: the smallest time per reading seen
        self.key: str | None = None  # the model whose policy `state` follows
        self.state: StreamState | None = None
        self.state_bytes = 0  # the policy state's size, taken once per state (its rings are preallocated)
        self.tail: asyncio.Future | None = None  # done when every judgement so far is
        self.outcomes: OrderedDict[int, asyncio.Future] = OrderedDict()
        self.size = 0

    def nbytes(self, fleet: str, device: str) -> int:
        return (self.readings.nbytes + len(fleet.encode()) + len(device.encode()) + ENTRY_OVERHEAD_BYTES
                + self.state_bytes + OUTCOME_BYTES * len(self.outcomes))

    def follow(self, key: str, state: StreamState) -> None:
        self.key, self.state, self.state_bytes = key, state, state.nbytes


class Ticket:
    """One full window's place in its device's judging order: `judge` or `fail` it exactly once."""

    __slots__ = ("device", "learn", "outcome", "own", "previous")

    def __init__(self, device: _Device, learn: bool, outcome: asyncio.Future | None) -> None:
        self.device = device
        self.learn = learn
        self.outcome = outcome
        self.previous = device.tail
        self.own = asyncio.get_running_loop().create_future()
        device.tail = self.own

    async def judge(self, scores: np.ndarray, rec: np.ndarray, pred: np.ndarray) -> Outcome:
        """The verdicts on the item's windows (their scores and terms, in reading order), after every earlier
        window of the device; remembered for resends."""
        try:
            if self.previous is not None and not self.previous.done():
                await asyncio.shield(self.previous)
            state = self.device.state
            judge = state.step if self.learn else state.judge
            best, alarmed = None, 0
            for k, terms in enumerate(zip(rec.tolist(), pred.tolist(), strict=True)):
                verdict = judge(terms)
                alarmed += verdict.alarm
                margin = verdict.alarm_score - verdict.threshold
                if best is None or margin >= best[0]:
                    best = (margin, k, verdict)
            _, k, verdict = best
            outcome = Outcome(0, float(scores[k]), rec[k].item(), pred[k].item(), verdict, alarmed)
            if self.outcome is not None and not self.outcome.done():
                self.outcome.set_result(outcome)
            return outcome
        finally:
            self._release()

    def fail(self, windows: np.ndarray) -> None:
        """Scoring failed (or was never done): a resend scores `windows` again; the device's next window goes on."""
        if self.outcome is not None and not self.outcome.done():
            self.outcome.set_result(Retry(windows))
        self._release()

    def _release(self) -> None:
        if self.own.done():
            return
        if self.previous is None or self.previous.done():
            self.own.set_result(None)
        else:
            self.previous.add_done_callback(lambda _: self.own.done() or self.own.set_result(None))


class DeviceStore:
    """Windows, policy state and remembered verdicts of at most `max_devices` devices in `max_bytes`, in memory."""

    def __init__(self, max_devices: int = 100_000, max_bytes: int = 256 * 1024 * 1024, *,
                 remember: int = DEFAULT_REMEMBER, max_gap_readings: int = DEFAULT_MAX_GAP_READINGS,
                 count: Callable[[str], None] = lambda event: None) -> None:
        if max_devices < 1:
            raise ValueError(f"max devices must be ≥ 1, got {max_devices}")
        if max_bytes < 1:
            raise ValueError(f"max bytes must be ≥ 1, got {max_bytes}")
        if remember < 1 or max_gap_readings < 0:
            raise ValueError("remember must be ≥ 1 and max gap readings ≥ 0")
        self.max_devices = max_devices
        self.max_bytes = max_bytes
        self.remember = remember
        self.max_gap_readings = max_gap_readings
        self.count = count
        self.bytes = 0
        self._devices: OrderedDict[tuple[str, str], _Device] = OrderedDict()

    def __len__(self) -> int:
        return len(self._devices)

    def admit(self, fleet: str, device: str, readings: np.ndarray, timestamp_ms: int, *, model_key: str,
              window: int, policy: Policy, period_ms: float | None = None) -> Warming | Ready | Remembered:
        """What to do with one `readings` item (`timestamp_ms`: its last reading's time, 0 for none); raises
        `ItemProblem` for late data."""
        key = (fleet, device)
        held = self._devices.get(key)
        if held is not None and timestamp_ms and held.timestamp_ms and timestamp_ms <= held.timestamp_ms:
            return self._earlier(held, timestamp_ms)
        if held is None or held.readings.shape[1] != readings.shape[1]:
            held = self._new(key, held, readings.shape[1])
        self._devices.move_to_end(key)
        joined = self._join(held, readings, timestamp_ms, period_ms)
        held.readings = joined[-window:].copy()  # a copy: never a view of the request's bytes
        if timestamp_ms:
            held.timestamp_ms = timestamp_ms
        outcome = self._remember(held, timestamp_ms)
        full = min(len(readings), len(joined) - window + 1)  # the new readings that end a full window
        if full < 1:
            if outcome is not None:
                outcome.set_result(Outcome(len(held.readings)))
            self._resize(held, fleet, device)
            return Warming(len(held.readings))
        self._follow(held, model_key, policy)
        self._resize(held, fleet, device)
        if full == 1:  # the usual case: one more reading, one more window (the held readings, already a copy)
            return Ready(held.readings[None], Ticket(held, True, outcome))
        ends = joined[len(joined) - window - full + 1 :]
        windows = ends[np.arange(full)[:, None] + np.arange(window)]  # [full, window, features], a copy
        return Ready(windows, Ticket(held, True, outcome))

    def retry(self, fleet: str, device: str, model_key: str, policy: Policy) -> Ticket:
        """A ticket that judges a remembered, failed item's windows again without learning from them."""
        held = self._devices.get((fleet, device))
        if held is None:  # forgotten since: judged by a fresh state, kept nowhere
            held = _Device(np.zeros((0, 1), np.float32))
        self._follow(held, model_key, policy)
        return Ticket(held, False, None)

    def knows(self, fleet: str, device: str) -> bool:
        return (fleet, device) in self._devices

    def forget(self, fleet: str, device: str) -> None:
        """Drop a device handed over to another ingress (if it comes back, it is taken back from the handoff)."""
        held = self._devices.pop((fleet, device), None)
        if held is not None:
            self.bytes -= held.size

    def export(self, fleet: str, device: str) -> dict | None:
        """A device's state as plain data, for another ingress (`adopt`): its window, newest timestamp, sampling
        period and policy state (its remembered verdicts stay here)."""
        held = self._devices.get((fleet, device))
        if held is None:
            return None
        return {"readings": held.readings.tolist(), "features": held.readings.shape[1],
                "timestamp_ms": held.timestamp_ms, "period_ms": held.period_ms, "model_key": held.key,
                "policy": None if held.state is None else held.state.to_dict()}

    def adopt(self, fleet: str, device: str, data: dict, model_key: str, policy: Policy) -> None:
        """Take over a device exported by another ingress; its policy state only when it was learnt under the same
        calibrated policy."""
        held = _Device(np.asarray(data["readings"], np.float32).reshape(-1, int(data["features"])))
        held.timestamp_ms, held.period_ms = int(data["timestamp_ms"]), data["period_ms"]
        held.follow(model_key, policy.start())
        if data["policy"] is not None and not held.state.restore(data["policy"]):
            self.count("policy_restarted")
        self._devices.pop((fleet, device), None)
        self._devices[(fleet, device)] = held
        self.count("adopted")
        self._resize(held, fleet, device)

    def _earlier(self, held: _Device, timestamp_ms: int) -> Remembered:
        outcome = held.outcomes.get(timestamp_ms)
        if outcome is None:
            self.count("late_refused")
            oldest = next(iter(held.outcomes), None)
            remembered = f"the verdicts remembered start at {oldest}" if oldest else "no verdicts are remembered"
            raise ItemProblem(OUT_OF_RANGE, f"readings at timestamp_ms {timestamp_ms} are not after the device's "
                                            f"newest ({held.timestamp_ms}) and are no resend ({remembered}): late "
                                            "data is never spliced into the window; send readings in time order")
        self.count("resend_answered")
        return Remembered(outcome)

    def _new(self, key: tuple[str, str], old: _Device | None, features: int) -> _Device:
        """A device seen for the first time, or whose feature count changed (its fleet's model changed): a new
        window; the policy state and timestamps carry over where the model allows."""
        fresh = _Device(np.zeros((0, features), np.float32))
        if old is not None:
            self.bytes -= old.size
            fresh.timestamp_ms, fresh.period_ms = old.timestamp_ms, old.period_ms
            fresh.key, fresh.state, fresh.tail = old.key, old.state, old.tail
            fresh.state_bytes = old.state_bytes
        self._devices[key] = fresh
        return fresh

    def _join(self, held: _Device, readings: np.ndarray, timestamp_ms: int, period_ms: float | None) -> np.ndarray:
        """The held readings and the new ones, with a gap filled by NaN readings, or only the new ones after a gap
        too long to fill."""
        if not (timestamp_ms and held.timestamp_ms):
            return np.concatenate([held.readings, readings])
        elapsed = timestamp_ms - held.timestamp_ms
        per_reading = elapsed / len(readings)
        if period_ms is None:
            held.period_ms = per_reading if held.period_ms is None else min(held.period_ms, per_reading)
        period = period_ms or held.period_ms
        missing = elapsed / period - len(readings)
        if missing < GAP_SLACK or not len(held.readings):
            return np.concatenate([held.readings, readings])
        fill = round(missing)
        if fill > self.max_gap_readings:
            self.count("gap_restarted")
            return readings
        self.count("gap_filled")
        gap = np.full((fill, readings.shape[1]), np.nan, np.float32)
        return np.concatenate([held.readings, gap, readings])

    def _remember(self, held: _Device, timestamp_ms: int) -> asyncio.Future | None:
        if not timestamp_ms:
            return None
        outcome = asyncio.get_running_loop().create_future()
        held.outcomes[timestamp_ms] = outcome
        while len(held.outcomes) > self.remember:
            held.outcomes.popitem(last=False)
        return outcome

    def _follow(self, held: _Device, model_key: str, policy: Policy) -> None:
        """Make the device's policy state the model's: carried over from the previous model where its calibrated
        policy is the same."""
        if held.key == model_key and held.state is not None:
            return
        state = policy.start()
        if held.state is not None:
            carried = state.restore(held.state.to_dict())
            self.count("policy_carried_over" if carried else "policy_restarted")
        held.follow(model_key, state)

    def _resize(self, held: _Device, fleet: str, device: str) -> None:
        """Count `held`'s bytes, then forget the least recently updated devices while over the bounds."""
        self.bytes -= held.size
        held.size = held.nbytes(fleet, device)
        self.bytes += held.size
        while len(self._devices) > 1 and (len(self._devices) > self.max_devices or self.bytes > self.max_bytes):
            _, evicted = self._devices.popitem(last=False)
            self.bytes -= evicted.size
            self.count("evicted")
        if self.bytes > self.max_bytes:  # one device alone is over the budget: keep nothing
            self._devices.clear()
            self.bytes = 0
            self.count("evicted")
