"""`aelstm-client score`: one-shot scoring of a whole file through the unary Score RPC, window by window."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import numpy as np
import pandas as pd

from aelstm.core.data import Series
from aelstm.core.preprocess import sliding_windows
from aelstm.v1 import scoring_pb2 as pb

from .connection import ClientError, ConnectionOptions, ExitCode, rpc_failure, stub
from .payloads import window_item
from .results import results_table, timestamps_ms
from .retry import DEFAULT_RETRY, ItemRetry, unavailable_items


async def score_file(options: ConnectionOptions, series: Series, *, fleet_id: str, device_id: str, window: int,
                     batch_size: int, on_batch: Callable[[int], None] | None = None,
                     on_retry: Callable[[], None] | None = None, retry: ItemRetry = DEFAULT_RETRY) -> pd.DataFrame:
    """Every full window of `series` (stride 1), `batch_size` windows per request; one table row per window end. A
    request with items answered UNAVAILABLE is sent again as `retry` allows (`on_retry()` is told each time)."""
    windows = sliding_windows(series.values, window, 1)
    ends = np.arange(window - 1, len(series))
    stamps = timestamps_ms(series)
    results: list[pb.ItemResult] = []
    async with options.channel() as channel:
        scorer = stub(channel)
        for start in range(0, len(windows), batch_size):
            stop = min(start + batch_size, len(windows))
            items = [window_item(device_id, windows[i], int(stamps[ends[i]])) for i in range(start, stop)]
            request = pb.ScoreRequest(request_id=str(start), fleet_id=fleet_id, items=items)
            sent, resends = asyncio.get_running_loop().time(), 0
            while True:
                try:
                    response = await scorer.Score(request, metadata=options.metadata, timeout=options.deadline_s)
                except grpc.RpcError as exc:
                    raise rpc_failure(exc, options, "Score") from None
                left_s = sent + options.deadline_s - asyncio.get_running_loop().time()
                delay = retry.delay_s(resends, left_s) if unavailable_items(response) else None
                if delay is None:
                    break
                resends += 1
                if on_retry is not None:
                    on_retry()
                await asyncio.sleep(delay)
            if len(response.results) != len(items):
                raise ClientError(f"Score answered {len(response.results)} results for {len(items)} items",
                                  ExitCode.CHECK_FAILED)
            results.extend(response.results)
            if on_batch is not None:
                on_batch(stop - start)
    return results_table(series, ends, results)
