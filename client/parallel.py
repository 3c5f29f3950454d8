"""Spreading one load run over worker processes, so the generator is not capped by one core.

gRPC's Python stack costs a few hundred microseconds of CPU per message, so one process drives a few thousand
messages per second. With `processes > 1` the gateways are dealt out to worker processes (spawned, never forked:
gRPC does not survive a fork); all of them start on the same instant of the shared monotonic clock, and their counts
and raw latencies are merged into one report, exactly as if one process had sent everything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import queue
import time
from collections.abc import Callable

from .connection import ClientError, ConnectionOptions
from .loadtest import LoadRun, RunResult, Schedule, Snapshot, merge_results
from .workload import Workload

_START_DELAY_S = 0.3


def _apportion(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to `weights` that add up to `total` (largest remainders get the leftovers)."""
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split(workload: Workload, schedule: Schedule, processes: int) -> list[tuple[Workload, Schedule]]:
    """Gateways dealt out round-robin; rate, concurrency and message count shared in proportion to gateways."""
    processes = min(processes, len(workload.gateways))
    mine = [workload.gateways[p::processes] for p in range(processes)]
    weights = [len(m) for m in mine]
    concurrency = _apportion(schedule.concurrency, weights)
    messages = None if schedule.messages is None else _apportion(schedule.messages, weights)
    return [(dataclasses.replace(workload, gateways=mine[p]),
             dataclasses.replace(schedule, rate=schedule.rate * weights[p] / sum(weights),
                                 concurrency=max(1, concurrency[p]),
                                 messages=None if messages is None else max(1, messages[p]),
                                 seed=schedule.seed + 1000 * p))
            for p in range(processes)]


def _worker(index: int, options: ConnectionOptions, workload: Workload, schedule: Schedule,
            starts: multiprocessing.Queue, events: multiprocessing.Queue) -> None:
    events.put(("ready", index, None))
    start_at = starts.get()
    run = LoadRun(options, workload, schedule, on_progress=lambda s: events.put(("progress", index, s)),
                  start_at=start_at)
    events.put(("done", index, asyncio.run(run.run())))


def _combined(snapshots: dict[int, Snapshot]) -> Snapshot:
    """Sums of the workers' live figures; the percentiles shown are the worst worker's."""
    parts = list(snapshots.values())
    return Snapshot(
        elapsed_s=max(s.elapsed_s for s in parts), phase=parts[0].phase, sent=sum(s.sent for s in parts),
        answered=sum(s.answered for s in parts), errors=sum(s.errors for s in parts),
        item_errors=sum(s.item_errors for s in parts), refused=sum(s.refused for s in parts),
        in_flight=sum(s.in_flight for s in parts), msgs_per_s=sum(s.msgs_per_s for s in parts),
        items_per_s=sum(s.items_per_s for s in parts), p50_ms=max(s.p50_ms for s in parts),
        p99_ms=max(s.p99_ms for s in parts),
    )


def run_in_processes(options: ConnectionOptions, workload: Workload, schedule: Schedule, processes: int,
                     on_progress: Callable[[Snapshot], None] | None = None) -> RunResult:
    """Run `schedule` over `processes` worker processes and merge what they counted."""
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    parts = split(workload, schedule, processes)
    workers = []
    for index, (part, part_schedule) in enumerate(parts):
        starts = context.Queue()
        worker = context.Process(target=_worker, args=(index, options, part, part_schedule, starts, events),
                                 daemon=True)
        worker.start()
        workers.append((worker, starts))
    try:
        ready = 0
        limit = time.monotonic() + 120
        while ready < len(workers):
            kind, _, _ = _next_event(events, limit, workers)
            ready += kind == "ready"
        start_at = time.monotonic() + _START_DELAY_S
        for _, starts in workers:
            starts.put(start_at)
        results: dict[int, RunResult] = {}
        snapshots: dict[int, Snapshot] = {}
        limit = start_at + schedule.max_time_s + 60
        while len(results) < len(workers):
            kind, index, payload = _next_event(events, limit, workers)
            if kind == "done":
                results[index] = payload
            elif kind == "progress" and on_progress is not None:
                snapshots[index] = payload
                on_progress(_combined(snapshots))
    finally:
        for worker, _ in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    return merge_results([results[i] for i in sorted(results)])


def _next_event(events: multiprocessing.Queue, limit: float, workers: list) -> tuple:
    """The next message from a worker; fails clearly if one died or the run overstays its bound."""
    while True:
        try:
            return events.get(timeout=0.5)
        except queue.Empty:
            dead = [w for w, _ in workers if w.exitcode not in (None, 0)]
            if dead:
                raise ClientError(f"a load generator process failed (exit status {dead[0].exitcode})") from None
            if time.monotonic() > limit:
                raise ClientError("the load generator processes did not finish in time") from None
