"""Admission control: overload is refused, not queued.

Past capacity a queue only grows: every request waits longer, all of them miss their deadline together and
throughput collapses. So each model's queue has a time budget (`max_queue_s`): a request whose windows would not
be sent to the backend within it is refused at once with RESOURCE_EXHAUSTED and a retry hint, and one that waited
past it anyway (the estimate was wrong) is refused instead of being sent late. What is admitted is served within its
budget; the rest hears so immediately and can go elsewhere or come back.

The wait is estimated in calls, as the coalescer sends them: a request goes with the next call when its windows
fit in it (behind the windows queued ahead of it), else after as many full calls as it takes to reach them, each
timed at the measured pace per window (an EWMA over calls large enough that their fixed cost does not dominate).
Windows that leave in the same call as a request's own cost it no wait, so they are not charged to it. Under
per-fleet fair queuing (see the coalescer) the windows ahead of a fleet's request are its own queued windows plus,
of every other fleet, no more than that: a fleet's burst makes its own requests wait, not its neighbours'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from aelstm.core.errors import AelstmError
from aelstm.v1 import scoring_pb2 as pb

from .items import RESOURCE_EXHAUSTED, error_result
from .registry import ModelEntry

DEFAULT_MAX_QUEUE_MS = 20.0  # of the 50 ms latency objective: the rest is the call itself and the network
MIN_RETRY_S = 0.005
MAX_RETRY_S = 5.0


class Overloaded(AelstmError):
    """A request refused because its windows could not start scoring within the queue budget."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_ms(self) -> int:
        return max(1, math.ceil(self.retry_after_s * 1000))


class ServiceTime:
    """Seconds of backend call per window, as an EWMA over calls of at least `min_windows` windows.

    Small calls are left out: their time is mostly per-call overhead, and counting it per window would make a
    lightly loaded server refuse its first burst; a full call's time is then estimated from the pace of calls
    large enough that their fixed cost does not dominate. Until a large call was seen the pace is unknown (`known`
    False) and nothing is refused: a cold first call cannot be told from overload.
    """

    def __init__(self, min_windows: int, weight: float = 0.2) -> None:
        self.min_windows = max(1, min_windows)
        self.weight = weight
        self.per_window_s: float | None = None

    @property
    def known(self) -> bool:
        return self.per_window_s is not None

    def observe(self, windows: int, seconds: float) -> None:
        if windows < self.min_windows:
            return
        sample = seconds / windows
        previous = self.per_window_s
        self.per_window_s = sample if previous is None else previous + self.weight * (sample - previous)

    def call_s(self, windows: int) -> float:
        """The time of a call of `windows` at the measured pace."""
        return (self.per_window_s or 0.0) * windows


def windows_ahead(own: int, others: Iterable[int], new: int) -> int:
    """Windows sent before the last of `new` windows a fleet adds behind its `own` queued ones, when fleets share
    calls fairly: all of its own, and of each other fleet at most as many as it has."""
    mine = own + new
    return mine + sum(min(other, mine) for other in others)


def _retry_s(*at_least_s: float) -> float:
    """A retry hint: the longest of `at_least_s`, within [MIN_RETRY_S, MAX_RETRY_S]."""
    return min(MAX_RETRY_S, max(MIN_RETRY_S, *at_least_s))


def refusal(wait_s: float, budget_s: float, full_call_s: float) -> Overloaded:
    """The refusal of a request that would wait `wait_s`: retry once the backlog ahead fits the budget again,
    and not sooner than one full call."""
    retry = _retry_s(wait_s - budget_s, full_call_s)
    return Overloaded(f"overloaded: this request would wait about {wait_s * 1000:.0f} ms to be scored, over the "
                      f"{budget_s * 1000:.0f} ms queue budget; retry after {retry * 1000:.0f} ms", retry)


def expired(waited_s: float, budget_s: float, full_call_s: float) -> Overloaded:
    """The refusal of a request that already waited past the budget (the estimate admitted it too optimistically)."""
    retry = _retry_s(full_call_s)
    return Overloaded(f"overloaded: this request waited {waited_s * 1000:.0f} ms without being scored, over the "
                      f"{budget_s * 1000:.0f} ms queue budget; retry after {retry * 1000:.0f} ms", retry)


def refuse_items(items, positions: list[int], results: list[pb.ItemResult | None], entry: ModelEntry,
                 exc: Overloaded) -> None:
    """RESOURCE_EXHAUSTED item errors, with the retry hint, for the items at `positions`."""
    for i in positions:
        result = error_result(items[i], RESOURCE_EXHAUSTED, str(exc), entry)
        result.error.retry_after_ms = exc.retry_after_ms
        results[i] = result
