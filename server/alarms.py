"""Per-device streaming thresholds in the ingress: each device's SPOT/DSPOT state judges its scores in the order
its readings arrived, whatever order the scoring backend answers in.

Requests for one device may be scored concurrently (a stream answers many requests at once, replicas finish in
any order), yet a streaming threshold must see a device's scores in reading order, or served alarms would differ
from offline ones. So every full window takes a `Judgement` when its readings are appended — a place in its
device's queue — and judging waits for the judgement before it. A resent item (readings already held) is not
learnt from again: it gets the verdict its readings got the first time.
"""

from __future__ import annotations

import asyncio

from aelstm.core.spot import SpotState, StreamingThreshold


class DeviceAlarm:
    """One device's threshold state for one model (`key`): a new model starts a new state."""

    __slots__ = ("key", "last", "state", "tail")

    def __init__(self, key: str, threshold: StreamingThreshold) -> None:
        self.key = key
        self.state: SpotState = threshold.start()
        self.last: tuple[float, bool] | None = None  # the latest verdict, for a resend of the same readings
        self.tail: asyncio.Future | None = None  # released when the latest judgement so far is done

    @property
    def nbytes(self) -> int:
        return self.state.nbytes

    def reserve(self, fresh: bool) -> Judgement:
        """The next place in this device's order; `fresh`: the window has readings not judged before."""
        own = asyncio.get_running_loop().create_future()
        judgement = Judgement(self, fresh, self.tail, own)
        self.tail = own
        return judgement


class Judgement:
    """One score's place in its device's order: `judge` or `release` it exactly once (release is idempotent)."""

    __slots__ = ("alarm", "fresh", "own", "previous")

    def __init__(self, alarm: DeviceAlarm, fresh: bool, previous: asyncio.Future | None, own: asyncio.Future) -> None:
        self.alarm = alarm
        self.fresh = fresh
        self.previous = previous
        self.own = own

    async def judge(self, score: float) -> tuple[float, bool]:
        """(threshold in force, alarm) for `score`, after every earlier judgement of the device."""
        try:
            if self.previous is not None and not self.previous.done():
                await asyncio.shield(self.previous)
            alarm = self.alarm
            if self.fresh or alarm.last is None:
                alarm.last = alarm.state.step(score)
            return alarm.last
        finally:
            self.release()

    def release(self) -> None:
        """Let the next judgement go, once every earlier one has (also when this one was never judged)."""
        if self.own.done():
            return
        if self.previous is None or self.previous.done():
            self.own.set_result(None)
        else:
            self.previous.add_done_callback(lambda _: self.own.done() or self.own.set_result(None))
