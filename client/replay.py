"""`aelstm-client replay`: stream a recorded series over StreamScore as one gateway would, in (scaled) real time.

Readings mode sends one new reading per message and lets the server keep the device's window (the first window-1
answers are WARMING_UP); windows mode sends the whole window ending at each reading. Answers are matched by request id
and every flagged one is reported as it arrives. Latency is measured per message, from its write to its answer. A
message with its item answered UNAVAILABLE is sent again as `ItemRetry` allows (readings are idempotent: the server
gives a resent reading the verdict it got, or scores it now).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable

import grpc
import numpy as np
import pandas as pd

from aelstm.core.data import Series
from aelstm.v1 import scoring_pb2 as pb

from .connection import ConnectionOptions, rpc_failure, stub
from .payloads import readings_item, window_item
from .results import results_table, timestamps_ms
from .retry import DEFAULT_RETRY, ItemRetry, unavailable_items

SETTLE_POLL_S = 0.01  # how often a replay done sending looks whether its last answers are in


def send_offsets(series: Series, speed: float, interval_s: float) -> np.ndarray | None:
    """Seconds after the start at which each reading is sent; None for as fast as the server answers (speed 0)."""
    if speed == 0:
        return None
    if series.timestamps is not None:
        elapsed = (series.timestamps - series.timestamps[0]) / np.timedelta64(1, "s")
    else:
        elapsed = np.arange(len(series)) * interval_s
    return np.asarray(elapsed, np.float64) / speed


async def replay(options: ConnectionOptions, series: Series, *, fleet_id: str, device_id: str, mode: str,
                 window: int, speed: float, interval_s: float = 1.0, max_in_flight: int = 64,
                 on_result: Callable[[int, pb.ItemResult], None] | None = None,
                 on_reconnect: Callable[[int], None] | None = None, on_retry: Callable[[], None] | None = None,
                 retry: ItemRetry = DEFAULT_RETRY) -> pd.DataFrame:
    """Send the series, return one table row per message (status 'lost' for a message never answered).

    A stream that ends with UNAVAILABLE after it worked (the server drained or restarted) is reopened with backoff
    for up to the deadline, and the messages it left unanswered are sent again first, in order, by request id
    (`on_reconnect(resent)` is told how many). A server that restarted holds no window for the device yet: readings
    resent to it start the window again (WARMING_UP). A message answered UNAVAILABLE is sent again after a backoff
    (`on_retry()` is told each time); only its last answer counts."""
    stamps = timestamps_ms(series)
    rows = np.arange(len(series)) if mode == "readings" else np.arange(window - 1, len(series))
    offsets = send_offsets(series, speed, interval_s)
    results: dict[int, pb.ItemResult] = {}
    sent_at: dict[int, float] = {}
    latency_ms: dict[int, float] = {}
    unanswered: dict[int, pb.ScoreRequest] = {}  # sent (or due while no stream was open), no answer yet
    slots = asyncio.Semaphore(max_in_flight)
    loop = asyncio.get_running_loop()
    writing = asyncio.Lock()  # resending and sending never interleave: readings stay in order
    live: list = [None]
    stop_sending = [False]
    resends: dict[int, int] = {}  # row -> times sent again for an UNAVAILABLE item
    resending: set[asyncio.Task] = set()

    def resend_later(row: int) -> bool:
        """Send the row's message again after a backoff, if `retry` allows one before its deadline."""
        delay = retry.delay_s(resends.get(row, 0), sent_at[row] + options.deadline_s - loop.time())
        if delay is None:
            return False
        resends[row] = resends.get(row, 0) + 1
        if on_retry is not None:
            on_retry()

        async def again() -> None:
            await asyncio.sleep(delay)
            async with writing:
                if live[0] is not None and row in unanswered:
                    with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                        await live[0].write(unanswered[row])

        task = asyncio.create_task(again())
        resending.add(task)
        task.add_done_callback(resending.discard)
        return True

    async def settled(reader: asyncio.Task) -> None:
        """Until every message sent has its last answer or is past its deadline, or the call ended: a stream
        half-closed earlier could not carry a resend."""
        while unanswered and not reader.done():
            wait = max(sent_at.get(row, loop.time()) for row in unanswered) + options.deadline_s - loop.time()
            if wait <= 0:
                return
            await asyncio.wait({reader}, timeout=min(wait, SETTLE_POLL_S))

    async def read(call, answered: list[int]) -> grpc.RpcError | None:
        try:
            async for response in call:
                row = int(response.request_id)
                if row not in unanswered:
                    continue  # an answer to a message resent after all
                if unavailable_items(response) and resend_later(row):
                    continue  # its next answer counts
                del unanswered[row]
                answered[0] += 1
                latency_ms[row] = (loop.time() - sent_at[row]) * 1e3
                if response.results:
                    results[row] = response.results[0]
                    if on_result is not None:
                        on_result(row, response.results[0])
                slots.release()
            return None
        except grpc.RpcError as exc:
            return exc

    async def send() -> None:
        start = loop.time()
        for row in rows:
            if offsets is not None:
                delay = start + offsets[row] - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            if stop_sending[0]:
                return
            if mode == "readings":
                item = readings_item(device_id, series.values[row], int(stamps[row]))
            else:
                item = window_item(device_id, series.values[row - window + 1 : row + 1], int(stamps[row]))
            request = pb.ScoreRequest(request_id=str(row), fleet_id=fleet_id, items=[item])
            async with writing:
                unanswered[int(row)] = request
                sent_at[int(row)] = loop.time()
                if live[0] is not None:
                    with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                        await live[0].write(request)

    async with options.channel() as channel:
        sender = asyncio.create_task(send())
        reader = call = None
        broken_since: float | None = None
        backoff = 0.05
        failure: grpc.RpcError | None = None
        try:
            while True:
                call = stub(channel).StreamScore(metadata=options.metadata)
                answered = [0]
                reader = asyncio.create_task(read(call, answered))
                async with writing:
                    live[0] = call
                    if broken_since is not None:
                        if on_reconnect is not None:
                            on_reconnect(len(unanswered))
                        for request in list(unanswered.values()):
                            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                                await call.write(request)
                if not sender.done():
                    await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
                if not reader.done():
                    await settled(reader)
                    with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError):
                        await call.done_writing()
                    done, _ = await asyncio.wait({reader}, timeout=options.deadline_s)
                    if not done:
                        break  # rows still unanswered after the deadline are reported as lost
                failure = reader.result()
                live[0] = None
                if failure is None or failure.code() != grpc.StatusCode.UNAVAILABLE:
                    break
                if not (unanswered or not sender.done()) or not (answered[0] or broken_since is not None):
                    break  # nothing left to send, or a stream that never worked: no reconnecting
                now = loop.time()
                if answered[0]:
                    broken_since, backoff = now, 0.05
                if now + backoff > broken_since + options.deadline_s:
                    break
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 2.0)
        finally:
            live[0] = None
            stop_sending[0] = True
            for _ in range(max_in_flight):
                slots.release()
            for task in (reader, sender, *resending):
                if task is not None and not task.done():
                    task.cancel()
            if call is not None:
                call.cancel()
            await asyncio.gather(*(t for t in (reader, sender, *resending) if t is not None), return_exceptions=True)
        if failure is not None and failure.code() != grpc.StatusCode.OK:
            raise rpc_failure(failure, options, "StreamScore") from None
    table = results_table(series, rows, [results.get(int(r)) for r in rows])
    table["latency_ms"] = [latency_ms.get(int(r), np.nan) for r in rows]
    return table
