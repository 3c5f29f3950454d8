"""The load generator: G gateways, each one long-lived StreamScore stream (or one unary Score call per message),
open- or closed-loop.

Open loop: every message has an intended send time from a fixed schedule (constant or Poisson arrivals) that does not
wait for answers; latency is measured from that intended time, so a server that falls behind shows its queueing in
the figures instead of slowing the generator down (no coordinated omission). Closed loop: a fixed number of messages
in flight; latency is measured from the actual send, and a message the overloaded server refused (with a retry
hint) frees its slot only once the hint has passed, as a well-behaved gateway backs off. A message with items
answered UNAVAILABLE (the server could not reach its backend) is sent again, a bounded number of times with backoff
(`ItemRetry`), and only its last answer counts; the retries are counted. Runs are always bounded in time. With
`rpc="unary"` the same messages go out at the same times, each as its own Score call: servers that cannot stream
(Ray Serve's own gRPC proxy, say) are measured the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import grpc
import numpy as np

from aelstm.core.errors import DataError
from aelstm.v1 import scoring_pb2 as pb

from .connection import SCORE, STREAM_SCORE, ConnectionOptions
from .payloads import with_request_id
from .report import Detection, Tally, passed, retry_hint_s
from .retry import DEFAULT_RETRY, ItemRetry, unavailable_items
from .workload import Workload

RECONNECT_BACKOFF_S = 0.05  # first wait before reopening a stream that ended UNAVAILABLE (jittered, doubling)
RECONNECT_BACKOFF_MAX_S = 2.0
SETTLE_POLL_S = 0.01  # how often a gateway done sending looks whether its last answers are in


@dataclass(frozen=True)
class Schedule:
    """When messages are sent and for how long."""

    mode: str = "open"  # open: fixed arrival schedule; closed: fixed number in flight
    rate: float = 1000.0  # open: messages per second over all gateways
    arrival: str = "constant"  # open: constant or poisson inter-arrival times
    concurrency: int = 16  # closed: messages in flight over all gateways
    warmup_s: float = 1.0  # sent but left out of the figures
    duration_s: float | None = 10.0  # measured sending time (or None with `messages`)
    messages: int | None = None  # measured messages to send (instead of a duration)
    drain_s: float = 10.0  # after sending, how long to wait for outstanding answers (then: lost)
    max_time_s: float = 600.0  # hard bound on the whole run
    seed: int = 0
    rpc: str = "stream"  # stream: one StreamScore stream per gateway; unary: one Score call per message

    def __post_init__(self) -> None:
        if self.mode not in ("open", "closed"):
            raise DataError(f"mode must be open or closed, got {self.mode!r}")
        if self.rpc not in ("stream", "unary"):
            raise DataError(f"rpc must be stream or unary, got {self.rpc!r}")
        if self.arrival not in ("constant", "poisson"):
            raise DataError(f"arrival must be constant or poisson, got {self.arrival!r}")
        if self.mode == "open" and self.rate <= 0:
            raise DataError("rate must be > 0")
        if self.mode == "closed" and self.concurrency < 1:
            raise DataError("concurrency must be ≥ 1")
        if (self.duration_s is None) == (self.messages is None):
            raise DataError("give exactly one of a duration and a message count")
        limits = [x for x in (self.duration_s, self.messages) if x is not None]
        if min(limits) <= 0 or self.warmup_s < 0:
            raise DataError("duration and message count must be > 0, warm-up ≥ 0")


@dataclass(frozen=True)
class Snapshot:
    """Live figures for the progress display."""

    elapsed_s: float
    phase: str
    sent: int
    answered: int
    errors: int
    item_errors: int
    refused: int  # items refused by an overloaded server
    in_flight: int
    msgs_per_s: float
    items_per_s: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class StreamFailure:
    """How a stream or call failed (picklable, unlike grpc's exception); quacks like grpc.RpcError for rpc_failure."""

    status: grpc.StatusCode
    message: str

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.message


@dataclass
class RunResult:
    """What one run (or one process's part of it) counted."""

    warmup: Tally
    measured: Tally
    cpu_s: float
    wall_s: float
    failure: StreamFailure | None


class LoadRun:
    """One run of a workload under a schedule; `await run()` returns what it counted (see `run_report`)."""

    def __init__(self, options: ConnectionOptions, workload: Workload, schedule: Schedule,
                 on_progress: Callable[[Snapshot], None] | None = None, progress_every_s: float = 0.5,
                 start_at: float | None = None, retry: ItemRetry = DEFAULT_RETRY):
        """`start_at`: the run's start on the monotonic clock (shared by worker processes); default now."""
        self.options, self.workload, self.schedule, self.retry = options, workload, schedule, retry
        self.start_at = start_at
        self.on_progress, self.progress_every_s = on_progress, progress_every_s
        self.warmup = Tally(Detection(workload.event_kinds))
        self.measured = Tally(Detection(workload.event_kinds))
        self.failure: StreamFailure | None = None
        self._last_error: StreamFailure | None = None
        self._measured_sent = 0
        self._in_flight = 0
        self._recent_latencies: list[float] = []
        self._recent_items = 0
        self._item_resends: dict[str, int] = {}  # request id -> times sent again for UNAVAILABLE items
        self._resending: set[asyncio.Task] = set()

    # -- timing -------------------------------------------------------------------------------------------------
    def _start_clock(self) -> None:
        s = self.schedule
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time() if self.start_at is None else self.start_at
        self.measure_start = self.t0 + s.warmup_s
        self.hard_end = self.t0 + s.max_time_s
        send_end = self.measure_start + s.duration_s if s.duration_s is not None else self.hard_end
        self.send_end = min(send_end, self.hard_end - s.drain_s)

    def _sending_done(self, intended: float) -> bool:
        if intended >= self.send_end:
            return True
        return self.schedule.messages is not None and self._measured_sent >= self.schedule.messages

    # -- one gateway --------------------------------------------------------------------------------------------
    async def _send(self, gateway: int, write: Callable[[str, bytes], Awaitable[None]], outstanding: dict,
                    slots: asyncio.Semaphore | None, stopped: Callable[[], bool]) -> None:
        """Send the gateway's messages on schedule through `write(request_id, message)` until done or `stopped()`."""
        s, payloads = self.schedule, self.workload.gateways[gateway]
        gateways = len(self.workload.gateways)
        rng = np.random.default_rng(s.seed + gateway)
        interval = gateways / s.rate if s.mode == "open" else 0.0
        next_time = self.t0 + gateway / s.rate if s.mode == "open" else self.t0
        k = 0
        while not stopped():
            if slots is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(slots.acquire(), max(0.0, self.send_end - self.loop.time()))
                intended = self.loop.time()
                if stopped():
                    break
            else:
                intended = next_time
                next_time += rng.exponential(interval) if s.arrival == "poisson" else interval
                delay = intended - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if self._sending_done(intended):
                break
            payload = payloads[k % len(payloads)]
            request_id = f"{gateway}:{k}"
            k += 1
            tally = self.measured if intended >= self.measure_start else self.warmup
            if tally is self.measured:
                self._measured_sent += 1
            outstanding[request_id] = (intended, payload, tally)
            tally.sent(payload.fleet_id, payload.items, intended)
            self._in_flight += 1
            await write(request_id, with_request_id(request_id, payload.body))

    def _answered(self, response: pb.ScoreResponse, outstanding: dict, slots: asyncio.Semaphore | None,
                  resend: Callable[[str, bytes], Awaitable[None]]) -> None:
        now = self.loop.time()
        entry = outstanding.get(response.request_id)
        if entry is None:
            self.measured.unmatched += 1
            return
        intended, payload, tally = entry
        if unavailable_items(response) and self._resend_later(response.request_id, payload, tally, intended, resend):
            return  # still outstanding, holding its slot: its next answer counts
        del outstanding[response.request_id]
        self._item_resends.pop(response.request_id, None)
        latency = now - intended
        tally.answered(payload.fleet_id, response, latency * 1e6, latency > self.options.deadline_s, payload.events,
                       now)
        self._in_flight -= 1
        self._recent_latencies.append(latency)
        self._recent_items += payload.items
        if slots is not None:
            hint = retry_hint_s(response)
            if hint:
                self.loop.call_later(hint, slots.release)
            else:
                slots.release()

    def _resend_later(self, request_id: str, payload, tally: Tally, intended: float,
                      resend: Callable[[str, bytes], Awaitable[None]]) -> bool:
        """Send a message with UNAVAILABLE items again after a backoff, if `retry` allows one before its deadline."""
        resends = self._item_resends.get(request_id, 0)
        left_s = min(intended + self.options.deadline_s, self.hard_end - self.schedule.drain_s) - self.loop.time()
        delay = self.retry.delay_s(resends, left_s)
        if delay is None:
            return False
        self._item_resends[request_id] = resends + 1
        tally.item_retries += 1

        async def again() -> None:
            await asyncio.sleep(delay)
            await resend(request_id, with_request_id(request_id, payload.body))

        task = asyncio.create_task(again())
        self._resending.add(task)
        task.add_done_callback(self._resending.discard)
        return True

    def _unanswered(self, outstanding: dict, status: grpc.StatusCode | None) -> None:
        """Count what never got an answer: lost if the stream ended well (or the drain ran out), else its error."""
        for _intended, payload, tally in outstanding.values():
            fleet = tally.fleet(payload.fleet_id)
            if status in (None, grpc.StatusCode.OK):
                fleet.lost += 1
            else:
                fleet.errors[status.name] += 1
            self._in_flight -= 1
        outstanding.clear()

    def _slots(self, gateway: int) -> asyncio.Semaphore | None:
        """Closed loop: this gateway's share of the messages in flight."""
        s, gateways = self.schedule, len(self.workload.gateways)
        per_gateway = s.concurrency // gateways + (gateway < s.concurrency % gateways)
        return asyncio.Semaphore(per_gateway) if s.mode == "closed" and per_gateway else None

    def _sends(self, slots: asyncio.Semaphore | None) -> bool:
        """Whether this gateway sends at all (closed loop with more gateways than messages in flight: not all do)."""
        return self.schedule.mode == "open" or slots is not None

    async def _read(self, call, outstanding: dict, slots: asyncio.Semaphore | None,
                    resend: Callable[[str, bytes], Awaitable[None]], answers: list[int]) -> grpc.StatusCode:
        """Answers of one call into the tally until it ends; its status. `answers[0]` counts what it answered."""
        try:
            async for response in call:
                self._answered(response, outstanding, slots, resend)
                answers[0] += 1
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            self._last_error = StreamFailure(exc.code(), exc.details() or "")
            return exc.code()

    def _drain_s(self) -> float:
        return max(0.0, min(self.schedule.drain_s, self.hard_end - self.loop.time()))

    async def _until_settled(self, outstanding: dict, reader: asyncio.Task) -> None:
        """Until every message sent has its last answer or is past its deadline, or the call ended: a stream
        half-closed earlier could not carry a resend for items answered UNAVAILABLE."""
        while outstanding and not reader.done():
            due = max(intended for intended, _, _ in outstanding.values()) + self.options.deadline_s
            wait = min(due, self.hard_end) - self.loop.time()
            if wait <= 0:
                return
            await asyncio.wait({reader}, timeout=min(wait, SETTLE_POLL_S))

    async def _stream_gateway(self, gateway: int, channel: grpc.aio.Channel) -> None:
        """One long-lived stream. A stream that ends with UNAVAILABLE (a draining or restarted server, a broken
        connection) is reopened with backoff for up to the deadline, and every message it left unanswered is sent
        again by request id (counted as resent): nothing is silently gone. Messages due while no stream is open
        wait in `outstanding` and go out on the next one."""
        method = channel.stream_stream(STREAM_SCORE, request_serializer=None,
                                       response_deserializer=pb.ScoreResponse.FromString)
        outstanding: dict = {}
        slots = self._slots(gateway)
        live: list = [None]  # the open call, None while reconnecting
        giving_up = [False]
        writing = asyncio.Lock()  # one write at a time on a call: grpc.aio does not allow concurrent writes
        resent: set[str] = set()  # request ids already resent on the open call

        async def write(request_id: str, message: bytes) -> None:
            async with writing:
                call = live[0]
                if call is not None and request_id not in resent:
                    # a write on a failed stream: the reader sees its status, and the message is resent
                    with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                        await call.write(message)

        async def resend(request_id: str, message: bytes) -> None:
            resent.discard(request_id)  # an answered message: sent again on purpose, even if resent on reconnect
            await write(request_id, message)

        sender = (asyncio.create_task(self._send(gateway, write, outstanding, slots, lambda: giving_up[0]))
                  if self._sends(slots) else None)
        status: grpc.StatusCode | None = None
        broken_since: float | None = None
        backoff = RECONNECT_BACKOFF_S
        try:
            while True:
                call = method(metadata=self.options.metadata, timeout=max(1.0, self.hard_end - self.loop.time()))
                answers = [0]
                reader = asyncio.create_task(self._read(call, outstanding, slots, resend, answers))
                async with writing:
                    live[0] = call
                    resent.clear()
                    if broken_since is not None:
                        tally = self.measured if self.loop.time() >= self.measure_start else self.warmup
                        tally.reconnects += 1
                        for request_id, (_intended, payload, owner) in list(outstanding.items()):
                            owner.resent += 1
                            resent.add(request_id)
                            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                                await call.write(with_request_id(request_id, payload.body))
                if sender is not None and not sender.done():
                    await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():  # everything was sent: half-close, then wait for the answers
                    await self._until_settled(outstanding, reader)
                    with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                        await call.done_writing()
                    done, _ = await asyncio.wait({reader}, timeout=self._drain_s())
                    if not done:
                        status = None
                        break
                status = reader.result()
                live[0] = None
                sending = sender is not None and not sender.done()
                if status != grpc.StatusCode.UNAVAILABLE or not (outstanding or sending):
                    break
                now = self.loop.time()
                if answers[0] or broken_since is None:
                    broken_since, backoff = now, RECONNECT_BACKOFF_S
                if now + backoff > min(broken_since + self.options.deadline_s, self.hard_end - 0.1):
                    break  # no stream within the deadline: what is outstanding counts as UNAVAILABLE
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)
        finally:
            live[0] = None
            giving_up[0] = True
            if not reader.done():
                reader.cancel()
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if sender is not None:
                if slots is not None:  # wake a closed-loop sender waiting for a slot
                    for _ in range(self.schedule.concurrency):
                        slots.release()
                with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                    await sender
        if status not in (None, grpc.StatusCode.OK) and self.failure is None:
            self.failure = self._last_error
        self._unanswered(outstanding, status)

    async def _unary_gateway(self, gateway: int, channel: grpc.aio.Channel) -> None:
        """One Score call per message, on the stream's schedule; a failed call is an error of its message alone, and
        a call still unanswered when the drain ends is lost."""
        method = channel.unary_unary(SCORE, request_serializer=None, response_deserializer=pb.ScoreResponse.FromString)
        outstanding: dict = {}
        slots = self._slots(gateway)
        calls: set[asyncio.Task] = set()

        async def call(request_id: str, message: bytes) -> None:
            timeout = max(0.001, min(self.options.deadline_s, self.hard_end - self.loop.time()))
            try:
                response = await method(message, metadata=self.options.metadata, timeout=timeout)
            except grpc.RpcError as exc:
                self.failure = self.failure or StreamFailure(exc.code(), exc.details() or "")
                entry = outstanding.pop(request_id, None)
                if entry is not None:
                    self._unanswered({request_id: entry}, exc.code())
                    if slots is not None:
                        slots.release()
            else:
                self._answered(response, outstanding, slots, write)

        async def write(request_id: str, message: bytes) -> None:
            task = asyncio.create_task(call(request_id, message))
            calls.add(task)
            task.add_done_callback(calls.discard)

        if self._sends(slots):
            await self._send(gateway, write, outstanding, slots, lambda: False)
        if calls:
            _, late = await asyncio.wait(set(calls), timeout=self._drain_s())
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._unanswered(outstanding, None)

    # -- the whole run ------------------------------------------------------------------------------------------
    def _snapshot(self, last: float, now: float) -> Snapshot:
        latencies, self._recent_latencies = self._recent_latencies, []
        items, self._recent_items = self._recent_items, 0
        span = max(now - last, 1e-9)
        p50, p99 = (np.percentile(latencies, [50, 99]) * 1000) if latencies else (0.0, 0.0)
        totals = [t.totals() for t in (self.warmup, self.measured)]
        return Snapshot(
            elapsed_s=now - self.t0, phase="warm-up" if now < self.measure_start else "measuring",
            sent=sum(t["sent"] for t in totals), answered=sum(t["answered"] for t in totals),
            errors=sum(sum(t["errors"].values()) for t in totals),
            item_errors=sum(sum(t["item_errors"].values()) for t in totals),
            refused=sum(t["items_refused"] for t in totals), in_flight=self._in_flight,
            msgs_per_s=len(latencies) / span, items_per_s=items / span, p50_ms=float(p50), p99_ms=float(p99),
        )

    async def _report_progress(self) -> None:
        last = self.loop.time()
        while True:
            await asyncio.sleep(self.progress_every_s)
            now = self.loop.time()
            self.on_progress(self._snapshot(last, now))
            last = now

    async def run(self) -> RunResult:
        self._start_clock()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        channel = self.options.channel()
        progress = asyncio.create_task(self._report_progress()) if self.on_progress else None
        try:
            gateway = self._unary_gateway if self.schedule.rpc == "unary" else self._stream_gateway
            await asyncio.gather(*(gateway(g, channel) for g in range(len(self.workload.gateways))))
        finally:
            for task in list(self._resending):  # resends due after their gateway ended: nothing waits for them
                task.cancel()
            await asyncio.gather(*self._resending, return_exceptions=True)
            if progress is not None:
                progress.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await progress
            await channel.close()
        return RunResult(self.warmup, self.measured, time.process_time() - cpu0, time.perf_counter() - wall0,
                         self.failure)


def merge_results(results: list[RunResult]) -> RunResult:
    """One result from the parts of a run split over processes (CPU time adds up; wall time is the longest)."""
    first = results[0]
    for other in results[1:]:
        first.warmup.merge(other.warmup)
        first.measured.merge(other.measured)
    failure = next((r.failure for r in results if r.failure is not None), None)
    return RunResult(first.warmup, first.measured, sum(r.cpu_s for r in results), max(r.wall_s for r in results),
                     failure)


def run_report(result: RunResult, schedule: Schedule) -> dict:
    """The figures of one run (warm-up excluded) as plain data, for the screen report and --json."""
    measured = result.measured.summary()
    warmup = result.warmup.totals()
    warmup["unmatched_answers"] = result.warmup.unmatched
    items = measured["items_answered"] + warmup["items_answered"]
    return {
        "schedule": asdict(schedule),
        "measured": measured,
        "warmup": warmup,
        "client": {"cpu_s": result.cpu_s, "wall_s": result.wall_s,
                   "cpu_us_per_item": result.cpu_s / items * 1e6 if items else None},
        "passed": passed(measured) and passed(warmup),
    }
