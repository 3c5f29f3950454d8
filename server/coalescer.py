"""Coalesce windows from every stream into large backend calls, fairly between fleets, within a time budget.

One window per backend call tops out near a thousand windows/s (the per-call overhead dominates), while calls of
64–256 windows go an order of magnitude faster. Requests for the same model therefore share a queue. At most
`max_calls` calls of a model are under way at once: past that the backend would only queue them where nobody can
see or bound the wait, so here is the one queue. While a call may go, the queue is sent at once when no call of
the model is under way (so a lone request never waits), else once the last call went out at least `min_gap_s` ago,
once `max_batch` windows wait, or once its oldest window waited `max_wait_s`; under load calls fill up by
themselves, when idle nothing waits.

`min_gap_s` is for backends whose calls cost far more than their windows (a Ray Serve call costs about a
millisecond of CPU on each side): spacing the calls of a busy model a few milliseconds apart turns many small calls
into few full ones, for a bounded wait well inside any latency objective. It spaces only calls that would overlap:
a request finding the model idle goes at once (on Ray, 2 cores, one window per message at 320 messages/s: p50
about 6 ms when every call kept the gap, 4 ms so).

Fairness: inside a model's queue each fleet has its own line, and a call takes whole requests from the fleets in
turn, the fleet with the fewest windows in the call so far first, so a fleet's burst fills calls only with what the
others leave. Admission (`admission.py`): a request that would not be scored within `budget_s` (its wait, counting
how far behind the ingress's own event loop runs (`lag`), and its call) is refused at once (`Overloaded`), and one
that waited too long for its call to end within it is refused rather than sent late. Until a model
has been seen scoring full calls its pace is unknown, and a slow first call (a cold replica) cannot be told from
overload: nothing of it is refused then.

A call the backend cannot take right now (`BackendUnavailable`: its Ray application is being replaced, a replica
went away) is held and tried again with backoff for up to `grace_s`, instead of failing its items at once: a rolling
update then costs a pause. A request is held no longer than its caller waits (`current_deadline`, from the gRPC
call's deadline): past it, its items get UNAVAILABLE while the rest of the call is still held, and a call whose
every caller has gone stops being tried. Held time is not service time: only the attempt that answered is measured.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from aelstm.core.runtime import Scores

from .admission import DEFAULT_SCORING_BUDGET_MS, ServiceTime, expired, refusal, wait_allowed_s, windows_ahead
from .backend import BackendUnavailable, ScoringBackend

if TYPE_CHECKING:
    from .config import ServeConfig
    from .metrics import Metrics

HOLD_BACKOFF_S = 0.05  # first wait before a held call is tried again (doubling)
HOLD_BACKOFF_MAX_S = 0.5

# The fleet whose request is being scored: set by the gRPC service for each request it answers, so that queues
# stay fair between fleets without every caller passing it along.
current_fleet: contextvars.ContextVar[str] = contextvars.ContextVar("aelstm_fleet", default="")
# When the caller of the request being scored stops waiting (the event loop's clock; inf: no deadline), set with
# `current_fleet`: a held call never keeps a request past it.
current_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("aelstm_deadline", default=math.inf)


@dataclass(frozen=True)
class CallTiming:
    """Where one coalesced call's time went: each part's wait in the queue, the call, the scoring inside it."""

    windows: int
    waits_s: tuple[float, ...]
    call_s: float
    compute_s: float


@dataclass
class _Part:
    """One request's windows, waiting for a call."""

    windows: np.ndarray
    future: asyncio.Future
    since: float
    deadline: float = math.inf  # when its caller stops waiting (loop time)


@dataclass
class _Queue:
    """One model's waiting requests, a line per fleet, and its calls under way."""

    lines: dict[str, deque[_Part]] = field(default_factory=dict)  # fleet -> its requests, oldest first
    fleet_windows: dict[str, int] = field(default_factory=dict)
    windows: int = 0  # waiting, all fleets
    calls: dict[int, tuple[float, int]] = field(default_factory=dict)  # calls under way: id -> (sent at, windows)
    last_call: float = -math.inf
    timer: asyncio.TimerHandle | None = None
    turn: int = 0  # rotates which fleet a call starts with, so ties do not always favour the same one

    def oldest(self) -> float:
        return min(line[0].since for line in self.lines.values())

    def add(self, fleet: str, part: _Part) -> None:
        self.lines.setdefault(fleet, deque()).append(part)
        self.fleet_windows[fleet] = self.fleet_windows.get(fleet, 0) + len(part.windows)
        self.windows += len(part.windows)

    def take(self, max_batch: int) -> list[_Part]:
        """Whole requests for one call, fleets served in turn (fewest windows taken first), up to `max_batch`
        windows (one request at least)."""
        taken: list[_Part] = []
        size = 0
        fleets = list(self.lines)
        self.turn = (self.turn + 1) % len(fleets)
        order = fleets[self.turn:] + fleets[: self.turn]
        share = dict.fromkeys(order, 0)
        while share:
            fleet = min(share, key=share.__getitem__)
            line = self.lines[fleet]
            n = len(line[0].windows)
            if taken and size + n > max_batch:
                del share[fleet]
                continue
            part = line.popleft()
            taken.append(part)
            size += n
            share[fleet] += n
            self.fleet_windows[fleet] -= n
            self.windows -= n
            if not line:
                del self.lines[fleet], self.fleet_windows[fleet], share[fleet]
        return taken


class Coalescer:
    """`await score(key, windows)` returns exactly the scores of `windows`, computed in a shared call, or raises
    `Overloaded` when they could not be scored within `budget_s`."""

    def __init__(self, backend: ScoringBackend, max_batch: int = 256, max_wait_s: float = 0.002, max_calls: int = 2,
                 min_gap_s: float = 0.0, on_call: Callable[[CallTiming], None] | None = None,
                 budget_s: float = DEFAULT_SCORING_BUDGET_MS / 1000,
                 on_refuse: Callable[[str, int], None] | None = None, grace_s: float = 0.0,
                 lag: Callable[[], float] | None = None, on_held: Callable[[str], None] | None = None) -> None:
        if max_batch < 1 or max_calls < 1:
            raise ValueError(f"max batch and max calls must be ≥ 1, got {max_batch} and {max_calls}")
        if budget_s <= 0:
            raise ValueError(f"the scoring budget must be > 0 s, got {budget_s}")
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_calls = max_calls
        self.min_gap_s = min_gap_s
        self.budget_s = budget_s
        self.grace_s = grace_s
        self._on_call = on_call
        self._on_refuse = on_refuse  # (reason, windows): "predicted" at arrival, "expired" after waiting
        self._lag = lag  # seconds the event loop runs behind: a wait before the queue
        self._on_held = on_held  # (outcome): a call held through BackendUnavailable was "answered" or "gave_up"
        self._queues: dict[str, _Queue] = {}
        self._service: dict[str, ServiceTime] = {}
        self._calls: set[asyncio.Task] = set()

    @classmethod
    def for_server(cls, backend: ScoringBackend, config: ServeConfig, metrics: Metrics,
                   lag: Callable[[], float] | None = None) -> Coalescer:
        """The coalescer an ingress runs with `config`, reporting to `metrics`."""
        return cls(backend, config.max_batch, config.batch_wait_s(), config.backend_calls(), config.call_gap_s(),
                   on_call=metrics.backend_call, budget_s=config.scoring_budget_ms / 1000,
                   on_refuse=metrics.refused, grace_s=config.backend_grace_s, lag=lag,
                   on_held=lambda outcome: metrics.held_calls.labels(outcome).inc())

    def expected_s(self, key: str, windows: int, fleet: str = "") -> tuple[float, float] | None:
        """How long `windows` more of `fleet` would wait for their call, the event loop's lag included, and how
        long that call would take (None while the model's scoring time is unknown)."""
        queue = self._queues.get(key)
        service = self._service.get(key)
        if queue is None or service is None or not service.known:
            return None
        others = [n for f, n in queue.fleet_windows.items() if f != fleet]
        last = windows_ahead(queue.fleet_windows.get(fleet, 0), others, windows)  # its last window's place
        calls_before = math.ceil(last / self.max_batch) - 1  # full calls before its own
        wait = calls_before * service.call_s(self.max_batch)
        if len(queue.calls) >= self.max_calls:  # every call slot is taken: the calls under way finish first
            now = asyncio.get_running_loop().time()
            wait += sum(max(0.0, service.call_s(size) - (now - sent)) for sent, size in queue.calls.values())
        # its own call: full behind full ones, else its windows and those ahead, or as large as calls have been
        own = self.max_batch if calls_before else min(self.max_batch, max(last, round(service.typical_windows)))
        return wait / self.max_calls + (self._lag() if self._lag is not None else 0.0), service.call_s(own)

    def admit(self, key: str, windows: int) -> None:
        """Raise `Overloaded` when `windows` more of the current fleet would not be scored within the budget:
        called on a request's arrival, before any work is spent on it, and again as its windows join the queue."""
        expected = self.expected_s(key, windows, current_fleet.get())
        if expected is not None and expected[0] > wait_allowed_s(self.budget_s, expected[1]):
            self._refused("predicted", windows)
            raise refusal(*expected, self.budget_s, self._service[key].call_s(self.max_batch))

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        fleet = current_fleet.get()
        self.admit(key, len(windows))
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
            self._service[key] = ServiceTime(min_windows=self.max_batch // 4)
        queue.add(fleet, _Part(windows, future, loop.time(), current_deadline.get()))
        self._schedule(key)
        return await future

    def _refused(self, reason: str, windows: int) -> None:
        if self._on_refuse is not None:
            self._on_refuse(reason, windows)

    def _schedule(self, key: str) -> None:
        """Send the model's queue now if it may go, else (re)arm its timer for the moment it may. With every call
        slot taken nothing is armed: the end of a call schedules again."""
        queue = self._queues[key]
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        if not queue.windows or len(queue.calls) >= self.max_calls:
            return
        loop = asyncio.get_running_loop()
        gap_ends = queue.last_call + self.min_gap_s if queue.calls else -math.inf  # idle: a call may go now
        due = min(queue.oldest() + self.max_wait_s, gap_ends)
        if queue.windows >= self.max_batch or due <= loop.time():
            self._send(key)
        else:
            queue.timer = loop.call_at(due, self._schedule, key)

    def _send(self, key: str, force: bool = False) -> None:
        """One call of the queue's next requests; those that waited too long for the call to end within the
        budget are refused, not sent."""
        queue = self._queues[key]
        loop = asyncio.get_running_loop()
        now = loop.time()
        service = self._service[key]
        taken = queue.take(self.max_batch)
        call_s = service.call_s(sum(len(part.windows) for part in taken))
        parts = []
        for part in taken:
            waited = now - part.since
            if waited > wait_allowed_s(self.budget_s, call_s) and service.known and not force:
                self._refused("expired", len(part.windows))
                if not part.future.done():
                    part.future.set_exception(expired(waited, call_s, self.budget_s,
                                                      service.call_s(self.max_batch)))
            else:
                parts.append(part)
        if not parts:
            self._schedule(key)
            return
        size = sum(len(part.windows) for part in parts)
        queue.last_call = now
        task = loop.create_task(self._call(key, parts, size))
        queue.calls[id(task)] = (now, size)
        self._calls.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))
        if queue.windows:
            self._schedule(key)

    def _finished(self, key: str, task: asyncio.Task) -> None:
        """A call ended: what queued up meanwhile may go now."""
        self._calls.discard(task)
        queue = self._queues[key]
        del queue.calls[id(task)]
        self._schedule(key)

    async def _call(self, key: str, parts: list[_Part], size: int) -> None:
        windows = parts[0].windows if len(parts) == 1 else np.concatenate([part.windows for part in parts])
        loop = asyncio.get_running_loop()
        try:
            chunks, started = await self._score_held(key, windows, parts)
            call_s = loop.time() - started
            self._service[key].observe(size, call_s)
            if self._on_call is not None:
                self._on_call(CallTiming(size, tuple(started - part.since for part in parts), call_s,
                                         sum(c.compute_s for c in chunks)))
        except Exception as exc:  # every waiting request must hear about it
            for part in parts:
                if not part.future.done():
                    part.future.set_exception(exc)
            return
        score, rec, pred = (np.concatenate([getattr(c, name) for c in chunks]) for name in
                            ("score", "rec_part", "pred_part"))
        start = 0
        for part in parts:
            end = start + len(part.windows)
            if not part.future.done():
                part.future.set_result(Scores(score[start:end], rec[start:end], pred[start:end]))
            start = end

    async def _score_held(self, key: str, windows: np.ndarray, parts: list[_Part]) -> tuple[list[Scores], float]:
        """Scores of `windows` (those of `parts`) in calls of at most `max_batch`, held through
        `BackendUnavailable` for up to `grace_s`, each part no longer than its deadline; and when the attempt that
        answered started."""
        loop = asyncio.get_running_loop()
        grace_ends = loop.time() + self.grace_s
        backoff = HOLD_BACKOFF_S
        held = False
        while True:
            started = loop.time()
            try:
                chunks = [await self.backend.score(key, windows[i : i + self.max_batch])
                          for i in range(0, len(windows), self.max_batch)]
            except BackendUnavailable as exc:
                retry_at = loop.time() + backoff
                waiting = [part for part in parts if not part.future.done()]
                for part in waiting:
                    if part.deadline < retry_at:  # its caller is gone by the next try: tell it now
                        part.future.set_exception(exc)
                if retry_at > min(grace_ends, max((part.deadline for part in waiting), default=-math.inf)):
                    if held:
                        self._held("gave_up")
                    raise
                held = True
            else:
                if held:
                    self._held("answered")
                return chunks, started
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, HOLD_BACKOFF_MAX_S)

    def _held(self, outcome: str) -> None:
        if self._on_held is not None:
            self._on_held(outcome)

    async def drain(self) -> None:
        """Send everything queued now, whatever the call limit, and wait for the calls in flight."""
        for key, queue in self._queues.items():
            if queue.timer is not None:
                queue.timer.cancel()
                queue.timer = None
            while queue.windows:
                self._send(key, force=True)
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)

