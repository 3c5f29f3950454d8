"""`aelstm-client replay`: stream a recorded series over StreamScore as one gateway would, in (scaled) real time.

Readings mode sends one new reading per message and lets the server keep the device's window (the first window-1
answers are WARMING_UP); windows mode sends the whole window ending at each reading. Answers are matched by request id
and every flagged one is reported as it arrives. Latency is measured per message, from its write to its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc
import numpy as np
import pandas as pd

from aelstm.training.data import Series
from aelstm.v1 import scoring_pb2 as pb

from .connection import ConnectionOptions, rpc_failure, stub
from .payloads import readings_item, window_item
from .results import results_table, timestamps_ms


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
                 on_result: Callable[[int, pb.ItemResult], None] | None = None) -> pd.DataFrame:
    """Send the series, return one table row per message (status 'lost' for a message never answered)."""
    stamps = timestamps_ms(series)
    rows = np.arange(len(series)) if mode == "readings" else np.arange(window - 1, len(series))
    offsets = send_offsets(series, speed, interval_s)
    results: dict[int, pb.ItemResult] = {}
    sent_at: dict[int, float] = {}
    latency_ms: dict[int, float] = {}
    slots = asyncio.Semaphore(max_in_flight)
    loop = asyncio.get_running_loop()
    async with options.channel() as channel:
        call = stub(channel).StreamScore(metadata=options.metadata)

        async def read() -> None:
            try:
                async for response in call:
                    row = int(response.request_id)
                    latency_ms[row] = (loop.time() - sent_at[row]) * 1e3
                    if response.results:
                        results[row] = response.results[0]
                        if on_result is not None:
                            on_result(row, response.results[0])
                    slots.release()
            finally:  # wake the sender if the stream ended early
                for _ in range(max_in_flight):
                    slots.release()

        reader = asyncio.create_task(read())
        start = loop.time()
        try:
            with contextlib.suppress(asyncio.InvalidStateError):
                for row in rows:
                    if offsets is not None:
                        delay = start + offsets[row] - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await slots.acquire()
                    if reader.done():
                        break
                    if mode == "readings":
                        item = readings_item(device_id, series.values[row], int(stamps[row]))
                    else:
                        item = window_item(device_id, series.values[row - window + 1 : row + 1], int(stamps[row]))
                    sent_at[int(row)] = loop.time()
                    await call.write(pb.ScoreRequest(request_id=str(row), fleet_id=fleet_id, items=[item]))
                await call.done_writing()
            await asyncio.wait_for(asyncio.shield(reader), options.deadline_s)
        except TimeoutError:
            pass  # rows still unanswered after the deadline are reported as lost
        except grpc.RpcError as exc:
            raise rpc_failure(exc, options, "StreamScore") from None
        finally:
            call.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.RpcError):
                await reader
    table = results_table(series, rows, [results.get(int(r)) for r in rows])
    table["latency_ms"] = [latency_ms.get(int(r), np.nan) for r in rows]
    return table
