"""In-process backend: loads, scores, and keeps swapped-out models for a grace time, however many swaps follow."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from aelstm.server.backend import InProcessBackend
from aelstm.server.registry import publish


async def test_two_quick_swaps_keep_the_first_model_for_calls_that_resolved_it(tmp_path, ec2_bundle):
    old, new, newest = (publish(ec2_bundle.path, tmp_path, "f") for _ in range(3))
    backend = InProcessBackend()
    await backend.start()
    try:
        assert await backend.prepare(old) == "CPUExecutionProvider"
        windows = np.zeros((3, 16, 1), np.float32)
        assert len((await backend.score(old.key, windows)).score) == 3
        for entry in (new, newest):  # two swaps in quick succession
            await backend.prepare(entry)
            await backend.retain({entry.key})
        # A call that resolved `old` before the first swap and reaches the backend only now still scores.
        assert len((await backend.score(old.key, windows)).score) == 3
        assert len((await backend.score(new.key, windows)).score) == 3
    finally:
        await backend.close()


async def test_retired_models_are_unloaded_after_their_grace_time(tmp_path, ec2_bundle):
    old, new, newest = (publish(ec2_bundle.path, tmp_path, "f") for _ in range(3))
    backend = InProcessBackend(retired_grace_s=0.0)
    await backend.start()
    try:
        await backend.prepare(old)
        await backend.prepare(new)
        await backend.retain({new.key})
        await backend.prepare(newest)
        await backend.retain({newest.key})
        with pytest.raises(LookupError, match="not loaded"):
            await backend.score(old.key, np.zeros((1, 16, 1), np.float32))
    finally:
        await backend.close()


async def test_close_waits_for_running_calls_off_the_event_loop():
    backend = InProcessBackend()
    await backend.start()
    busy = asyncio.ensure_future(backend._run(time.sleep, 0.6))
    await asyncio.sleep(0.05)
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await backend.close()
    ticker.cancel()
    await busy
    assert ticks >= 10  # the loop kept running while the pool finished its 0.6 s call
