"""Admission control: overload is refused, not queued.

Past capacity a queue only grows: every request waits longer, all of them miss their deadline together and
throughput collapses. So each model has a time budget (`budget_s`) from a request's arrival to its scores: the wait
for a call plus the call itself. A request whose windows would not be scored within it is refused at once with
RESOURCE_EXHAUSTED and a retry hint, and one that waited so long that its call can no longer end within it (the
estimate was wrong) is refused instead of being sent late. What is admitted is served within its budget; the rest
hears so immediately and can go elsewhere or come back.

The call is part of the budget because its time moves with the load: on Ray (2 cores, default model) a call took
about 8 ms at 16,000 items/s offered (calls of ~100 windows) and 22 ms at 23,000 (every call full, the cores shared
with the refusals). Under a budget for the wait alone, admitted work waited its whole budget and then sat through
the longest calls, exactly when the service was overloaded.

The time is estimated in calls, as the coalescer sends them: a request goes with the next call when its windows
fit in it (behind the windows queued ahead of it), else after as many full calls as it takes to reach them, each
timed by a line fitted to recent calls' sizes and times (`ServiceTime`: a fixed cost per call plus one per window),
and then its own call: as large as the windows up to its own, or as recent calls when they were larger (a call
fills while it waits for a slot), full behind a full call. Windows that leave in the same call as a request's own
cost it no wait. Under per-fleet fair queuing (see the coalescer) the windows ahead of a fleet's request are its own
queued windows plus, of every other fleet, no more than that: a fleet's burst makes its own requests wait, not its
neighbours'. A request may always wait a quarter of the budget (`MIN_WAIT_SHARE`), however long its call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from aelstm.core.errors import AelstmError
from aelstm.v1 import scoring_pb2 as pb

from .items import RESOURCE_EXHAUSTED, error_result
from .registry import ModelEntry

DEFAULT_SCORING_BUDGET_MS = 40.0  # of the 50 ms latency objective: the rest is the network and the caller
MIN_WAIT_SHARE = 0.25  # of the budget: a request may always wait this long, however long its call
MIN_RETRY_S = 0.005
MAX_RETRY_S = 5.0


class Overloaded(AelstmError):
    """A request refused because its windows could not be scored within the budget."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_ms(self) -> int:
        return max(1, math.ceil(self.retry_after_s * 1000))


class ServiceTime:
    """Seconds of a backend call of n windows: a fixed cost per call plus a cost per window, fitted to recent calls.

    A call's time is far from proportional to its windows: on Ray, calls of about 65 windows took 6.5 ms of which
    the replica's scoring was 3.0 ms, so a pace per window taken from them predicted a full call of 256 windows at
    about 26 ms where the fixed 3.5 ms plus 256 windows at their scoring pace come to about 15, and admission
    refused bursts that would have been served in time.
    So the fit is an exponentially weighted least-squares line through recent (windows, seconds) pairs, small calls
    included (they tell the fixed cost). When recent calls were all about one size the line is not determined and
    the pace per window of those calls is used instead, which is exact at that size (under overload every call is
    full). The pace is unknown (`known` False, nothing refused) until a call of at least `min_windows` was seen: a
    cold first call cannot be told from overload, and small calls alone would extrapolate their fixed cost.
    """

    def __init__(self, min_windows: int, weight: float = 0.2) -> None:
        self.min_windows = max(1, min_windows)
        self.weight = weight
        self.known = False
        self._means: tuple[float, float, float, float] | None = None  # weighted means of n, t, n², n·t
        self._fixed_s = 0.0  # the line, refitted once per call observed (requests ask far more often)
        self._per_window_s = 0.0

    def observe(self, windows: int, seconds: float) -> None:
        sample = (windows, seconds, windows * windows, windows * seconds)
        self._means = sample if self._means is None else tuple(
            mean + self.weight * (value - mean) for mean, value in zip(self._means, sample, strict=True))
        self.known = self.known or windows >= self.min_windows
        mean_n, mean_t, mean_nn, mean_nt = self._means
        pace = mean_t / mean_n
        spread = mean_nn - mean_n * mean_n
        if spread <= (0.05 * mean_n) ** 2:  # calls of about one size: no line to fit
            self._fixed_s, self._per_window_s = 0.0, pace
        else:  # the slope held to [0, pace] keeps the fixed cost in [0, mean t]
            self._per_window_s = min(max((mean_nt - mean_n * mean_t) / spread, 0.0), pace)
            self._fixed_s = mean_t - self._per_window_s * mean_n

    @property
    def typical_windows(self) -> float:
        """The recent calls' (weighted) mean size: what a call that leaves after a wait is likely to hold."""
        return self._means[0] if self._means is not None else 0.0

    def call_s(self, windows: int) -> float:
        """The expected time of a call of `windows` (0 while nothing was observed)."""
        return self._fixed_s + self._per_window_s * windows


def windows_ahead(own: int, others: Iterable[int], new: int) -> int:
    """Windows sent before the last of `new` windows a fleet adds behind its `own` queued ones, when fleets share
    calls fairly: all of its own, and of each other fleet at most as many as it has."""
    mine = own + new
    return mine + sum(min(other, mine) for other in others)


def _retry_s(*at_least_s: float) -> float:
    """A retry hint: the longest of `at_least_s`, within [MIN_RETRY_S, MAX_RETRY_S]."""
    return min(MAX_RETRY_S, max(MIN_RETRY_S, *at_least_s))


def wait_allowed_s(budget_s: float, call_s: float) -> float:
    """How long a request may wait for a call of `call_s` and still be scored within `budget_s`; never less than
    `MIN_WAIT_SHARE` of the budget, so that a model whose calls alone take nearly all of it is served at its own
    pace rather than refused whenever it is busy."""
    return max(budget_s - call_s, MIN_WAIT_SHARE * budget_s)


def refusal(wait_s: float, call_s: float, budget_s: float, full_call_s: float) -> Overloaded:
    """The refusal of a request that would wait `wait_s` for its call of `call_s`: retry once the backlog ahead
    fits the budget again, and not sooner than one full call."""
    retry = _retry_s(wait_s - wait_allowed_s(budget_s, call_s), full_call_s)
    return Overloaded(f"overloaded: this request would wait about {wait_s * 1000:.0f} ms for a scoring call of "
                      f"about {call_s * 1000:.0f} ms, over the {budget_s * 1000:.0f} ms scoring budget; retry after "
                      f"{retry * 1000:.0f} ms", retry)


def expired(waited_s: float, call_s: float, budget_s: float, full_call_s: float) -> Overloaded:
    """The refusal of a request that waited `waited_s`, too long for its call of about `call_s` to end within the
    budget (the estimate admitted it too optimistically)."""
    retry = _retry_s(full_call_s)
    return Overloaded(f"overloaded: this request waited {waited_s * 1000:.0f} ms for a scoring call of about "
                      f"{call_s * 1000:.0f} ms, over the {budget_s * 1000:.0f} ms scoring budget; retry after "
                      f"{retry * 1000:.0f} ms", retry)


def refuse_items(items, positions: list[int], results: list[pb.ItemResult | None], entry: ModelEntry,
                 exc: Overloaded) -> None:
    """RESOURCE_EXHAUSTED item errors, with the retry hint, for the items at `positions`."""
    for i in positions:
        result = error_result(items[i], RESOURCE_EXHAUSTED, str(exc), entry)
        result.error.retry_after_ms = exc.retry_after_ms
        results[i] = result
