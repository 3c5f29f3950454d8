"""Coalescer: items of concurrent requests share backend calls; a lone request still goes out promptly."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from aelstm.server.coalescer import Coalescer
from aelstm.training.runtime import Scores


class RecordingBackend:
    """Scores a window as the sum of its values; records the size of every call."""

    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        self.calls.append((key, len(windows)))
        await asyncio.sleep(0)
        if self.fail:
            raise RuntimeError("replica died")
        total = windows.sum(axis=(1, 2))
        return Scores(total, total / 2, total / 2, threshold=10.0)


def windows(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


async def test_concurrent_requests_share_one_call_and_get_their_own_scores():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.05)
    results = await asyncio.gather(*(coalescer.score("m", windows([i, i + 0.5])) for i in range(10)))
    assert backend.calls == [("m", 20)]
    for i, scores in enumerate(results):
        np.testing.assert_allclose(scores.score, [i, i + 0.5])
        assert scores.threshold == 10.0


async def test_models_are_never_mixed_in_one_call():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.01)
    await asyncio.gather(coalescer.score("a", windows([1])), coalescer.score("b", windows([2])),
                         coalescer.score("a", windows([3])))
    assert sorted(backend.calls) == [("a", 2), ("b", 1)]


async def test_a_full_batch_goes_out_without_waiting():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=4, max_wait_s=60.0)
    scores = await asyncio.wait_for(coalescer.score("m", windows([1, 2, 3, 4])), timeout=5)
    np.testing.assert_allclose(scores.score, [1, 2, 3, 4])


async def test_a_lone_request_is_sent_after_the_wait():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=256, max_wait_s=0.001)
    scores = await asyncio.wait_for(coalescer.score("m", windows([7])), timeout=5)
    assert scores.score.tolist() == [7] and backend.calls == [("m", 1)]


async def test_calls_never_exceed_the_max_batch():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=4, max_wait_s=0.01)
    big, small = await asyncio.gather(coalescer.score("m", windows(list(range(10)))),
                                      coalescer.score("m", windows([100, 101, 102])))
    assert max(size for _, size in backend.calls) <= 4
    assert sum(size for _, size in backend.calls) == 13
    np.testing.assert_allclose(big.score, range(10))
    np.testing.assert_allclose(small.score, [100, 101, 102])


async def test_a_failed_call_fails_every_request_in_it():
    coalescer = Coalescer(RecordingBackend(fail=True), max_batch=64, max_wait_s=0.01)
    results = await asyncio.gather(*(coalescer.score("m", windows([1])) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_drain_sends_what_is_queued():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=60.0)
    pending = asyncio.ensure_future(coalescer.score("m", windows([5])))
    await asyncio.sleep(0)
    await coalescer.drain()
    assert (await pending).score.tolist() == [5]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max batch"):
        Coalescer(RecordingBackend(), max_batch=0)
