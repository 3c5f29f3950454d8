"""Coalesce windows from every stream into large backend calls.

One window per backend call tops out near a thousand windows/s (the per-call overhead dominates), while calls of
64–256 windows go an order of magnitude faster. Requests for the same model therefore share a queue. The queue is
sent at once while fewer than `max_calls` calls of that model are under way and the last call went out at least
`min_gap_s` ago (so a lone request never waits); otherwise it fills up until `max_batch` windows are waiting, both
conditions hold again, or `max_wait_s` has passed since its first window arrived, whichever comes first. Under load
calls fill up by themselves; when idle nothing waits.

`min_gap_s` is for backends whose calls cost far more than their windows (a Ray Serve call costs about a
millisecond of CPU on each side): spacing calls a few milliseconds apart under load turns many small calls into
few full ones, for a bounded wait well inside any latency objective.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from aelstm.core.runtime import Scores

from .backend import ScoringBackend


@dataclass(frozen=True)
class CallTiming:
    """Where one coalesced call's time went: each part's wait in the queue, the call, the scoring inside it."""

    windows: int
    waits_s: tuple[float, ...]
    call_s: float
    compute_s: float


@dataclass
class _Queue:
    opened: float
    parts: list[tuple[np.ndarray, asyncio.Future, float]] = field(default_factory=list)  # windows, answer, since
    windows: int = 0
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    """`await score(key, windows)` returns exactly the scores of `windows`, computed in a shared call."""

    def __init__(self, backend: ScoringBackend, max_batch: int = 256, max_wait_s: float = 0.002, max_calls: int = 2,
                 min_gap_s: float = 0.0, on_call: Callable[[CallTiming], None] | None = None) -> None:
        if max_batch < 1 or max_calls < 1:
            raise ValueError(f"max batch and max calls must be ≥ 1, got {max_batch} and {max_calls}")
        self.backend = backend
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_calls = max_calls
        self.min_gap_s = min_gap_s
        self._last_call: dict[str, float] = {}  # when each model's last call went out
        self._on_call = on_call
        self._queues: dict[str, _Queue] = {}
        self._calls: set[asyncio.Task] = set()
        self._busy: dict[str, int] = {}  # calls under way per model

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        queue = self._queues.get(key)
        if queue is not None and queue.windows + len(windows) > self.max_batch:
            self._flush(key)
            queue = None
        if queue is None:
            queue = self._queues[key] = _Queue(opened=loop.time())
        queue.parts.append((windows, future, loop.time()))
        queue.windows += len(windows)
        self._schedule(key)
        return await future

    def _schedule(self, key: str) -> None:
        """Send the model's queue now if it may go, else (re)arm its timer for the moment it may."""
        queue = self._queues.get(key)
        if queue is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = queue.opened + self.max_wait_s
        if self._busy.get(key, 0) < self.max_calls:
            due = min(due, self._last_call.get(key, -math.inf) + self.min_gap_s)
        if queue.windows >= self.max_batch or due <= now:
            self._flush(key)
            return
        if queue.timer is not None:
            if queue.timer.when() <= due:
                return
            queue.timer.cancel()
        queue.timer = loop.call_at(due, self._flush, key)

    def _flush(self, key: str) -> None:
        queue = self._queues.pop(key, None)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
        loop = asyncio.get_running_loop()
        self._last_call[key] = loop.time()
        self._busy[key] = self._busy.get(key, 0) + 1
        task = loop.create_task(self._call(key, queue.parts))
        self._calls.add(task)
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: str, task: asyncio.Task) -> None:
        """A call ended: what queued up meanwhile goes out now."""
        self._calls.discard(task)
        self._busy[key] -= 1
        if not self._busy[key]:
            del self._busy[key]
        self._schedule(key)

    async def _call(self, key: str, parts: list[tuple[np.ndarray, asyncio.Future, float]]) -> None:
        windows = parts[0][0] if len(parts) == 1 else np.concatenate([w for w, _, _ in parts])
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            chunks = [await self.backend.score(key, windows[i : i + self.max_batch])
                      for i in range(0, len(windows), self.max_batch)]
            if self._on_call is not None:
                self._on_call(CallTiming(len(windows), tuple(started - since for _, _, since in parts),
                                         loop.time() - started, sum(c.compute_s for c in chunks)))
        except Exception as exc:  # every waiting request must hear about it
            for _, future, _ in parts:
                if not future.done():
                    future.set_exception(exc)
            return
        score, rec, pred = (np.concatenate([getattr(c, name) for c in chunks]) for name in
                            ("score", "rec_part", "pred_part"))
        start = 0
        for part, future, _ in parts:
            end = start + len(part)
            if not future.done():
                future.set_result(Scores(score[start:end], rec[start:end], pred[start:end], chunks[0].threshold))
            start = end

    async def drain(self) -> None:
        """Send everything queued now and wait for the calls in flight."""
        for key in list(self._queues):
            self._flush(key)
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
