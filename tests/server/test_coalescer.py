"""Coalescer: items of concurrent requests share backend calls; a lone request goes out at once."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable

import numpy as np
import pytest

from aelstm.core.runtime import Scores
from aelstm.server.admission import Overloaded, ServiceTime
from aelstm.server.backend import BackendUnavailable
from aelstm.server.coalescer import Coalescer, current_deadline, current_fleet
from aelstm.server.loop_lag import LoopLag


class RecordingBackend:
    """Scores a window as the sum of its values; records the size of every call."""

    name = "recording"

    def __init__(self, fail: bool = False, gate: asyncio.Event | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail
        self.gate = gate  # calls wait for it: a slow backend

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        self.calls.append((key, len(windows)))
        await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("replica died")
        total = windows.sum(axis=(1, 2))
        return Scores(total, total / 2, total / 2)


def windows(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1, 1)


async def test_requests_arriving_during_a_call_share_the_next_one():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=60.0, max_calls=1)
    pending = [asyncio.ensure_future(coalescer.score("m", windows([i, i + 0.5]))) for i in range(10)]
    await asyncio.sleep(0.01)
    assert backend.calls == [("m", 2)]  # the first went out alone, at once; the others wait for it
    gate.set()
    results = await asyncio.gather(*pending)
    assert backend.calls == [("m", 2), ("m", 18)]
    for i, scores in enumerate(results):
        np.testing.assert_allclose(scores.score, [i, i + 0.5])


async def test_calls_under_way_never_exceed_max_calls():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=60.0)
    first = asyncio.ensure_future(coalescer.score("m", windows([1])))
    second = asyncio.ensure_future(coalescer.score("m", windows([2])))
    await asyncio.sleep(0.05)
    assert backend.calls == [("m", 1)]  # the second waits here, where its wait is seen and bounded
    gate.set()
    assert [(await f).score.tolist() for f in (first, second)] == [[1], [2]]
    assert backend.calls == [("m", 1), ("m", 1)]


async def test_models_are_never_mixed_in_one_call():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=60.0, max_calls=1)
    pending = [asyncio.ensure_future(coalescer.score(key, windows([value])))
               for key, value in (("a", 1), ("b", 2), ("a", 3), ("a", 4))]
    await asyncio.sleep(0.01)
    gate.set()
    assert [(await p).score.tolist() for p in pending] == [[1], [2], [3], [4]]
    assert backend.calls == [("a", 1), ("b", 1), ("a", 2)]


async def test_a_full_batch_goes_out_as_soon_as_a_call_may():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=4, max_wait_s=60.0, max_calls=2, min_gap_s=60.0, budget_s=60.0)
    busy = asyncio.ensure_future(coalescer.score("m", windows([0])))
    full = asyncio.ensure_future(coalescer.score("m", windows([1, 2, 3, 4])))
    await asyncio.sleep(0.01)
    assert backend.calls == [("m", 1), ("m", 4)]  # the gap holds small calls back, never a full one
    gate.set()
    np.testing.assert_allclose((await full).score, [1, 2, 3, 4])
    await busy


async def test_a_lone_request_does_not_wait():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=256, max_wait_s=60.0)
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
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=60.0, max_calls=1)
    busy = asyncio.ensure_future(coalescer.score("m", windows([4])))
    pending = asyncio.ensure_future(coalescer.score("m", windows([5])))
    await asyncio.sleep(0)
    await coalescer.drain()
    assert (await pending).score.tolist() == [5]
    assert (await busy).score.tolist() == [4]


@pytest.mark.parametrize("sizes", [{"max_batch": 0}, {"max_calls": 0}])
def test_sizes_must_be_positive(sizes):
    with pytest.raises(ValueError, match="must be ≥ 1"):
        Coalescer(RecordingBackend(), **sizes)


async def test_calls_of_a_busy_model_go_out_at_most_one_gap_apart():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=256, max_wait_s=60.0, max_calls=4, min_gap_s=0.05,
                          budget_s=60.0)
    busy = asyncio.ensure_future(coalescer.score("m", windows([1])))
    await asyncio.wait_for(_until(lambda: backend.calls == [("m", 1)]), timeout=5)  # the model was idle: at once
    loop = asyncio.get_running_loop()
    started = loop.time()
    following = [asyncio.ensure_future(coalescer.score("m", windows([v]))) for v in (2, 3, 4)]
    await asyncio.sleep(0.01)
    assert backend.calls == [("m", 1)]  # a call is under way: within the gap they wait and share one call
    while len(backend.calls) < 2:
        await asyncio.sleep(0.005)
    assert backend.calls == [("m", 1), ("m", 3)] and loop.time() - started < 1.0
    gate.set()
    assert [r.score.tolist() for r in await asyncio.gather(busy, *following)] == [[1], [2], [3], [4]]


async def test_a_request_finding_the_model_idle_goes_at_once_whatever_the_gap():
    backend = RecordingBackend()
    coalescer = Coalescer(backend, max_batch=256, max_wait_s=60.0, max_calls=4, min_gap_s=60.0,
                          budget_s=60.0)
    for value in (1, 2, 3):  # each call has ended before the next request: none waits for the gap
        scores = await asyncio.wait_for(coalescer.score("m", windows([value])), timeout=5)
        assert scores.score.tolist() == [value]
    assert backend.calls == [("m", 1)] * 3


async def test_the_gap_never_holds_a_request_longer_than_max_wait():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=256, max_wait_s=0.01, max_calls=4, min_gap_s=60.0,
                          budget_s=60.0)
    busy = asyncio.ensure_future(coalescer.score("m", windows([1])))
    waiting = asyncio.ensure_future(coalescer.score("m", windows([2])))
    await asyncio.wait_for(_until(lambda: len(backend.calls) == 2), timeout=5)  # well before the 60-s gap
    gate.set()
    assert (await waiting).score.tolist() == [2] and (await busy).score.tolist() == [1]


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


def fleet_score(coalescer: Coalescer, fleet: str, values: list[float]) -> asyncio.Future:
    """`coalescer.score` as a request of `fleet` (the gRPC service sets the fleet so for each request)."""
    context = contextvars.copy_context()
    context.run(current_fleet.set, fleet)
    return asyncio.get_running_loop().create_task(coalescer.score("m", windows(values)), context=context)


async def test_a_request_that_waited_past_the_budget_is_refused_not_sent():
    gate = asyncio.Event()
    backend = RecordingBackend()
    refused = []
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=0.02,
                          on_refuse=lambda reason, n: refused.append((reason, n)))
    await coalescer.score("m", windows([0] * 64))  # its pace is known
    backend.gate = gate
    busy = asyncio.ensure_future(coalescer.score("m", windows([1])))
    late = asyncio.ensure_future(coalescer.score("m", windows([2, 3])))
    await asyncio.sleep(0.05)  # the call under way outlasts the second request's budget
    gate.set()
    assert (await busy).score.tolist() == [1]
    with pytest.raises(Overloaded, match="waited") as caught:
        await late
    assert caught.value.retry_after_ms >= 1
    assert backend.calls == [("m", 64), ("m", 1)] and refused == [("expired", 2)]


async def test_nothing_is_refused_before_the_models_pace_is_known():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=0.01)
    first = asyncio.ensure_future(coalescer.score("m", windows([1])))  # a cold first call, slower than the budget
    second = asyncio.ensure_future(coalescer.score("m", windows([2])))
    await asyncio.sleep(0.05)
    gate.set()
    assert [(await f).score.tolist() for f in (first, second)] == [[1], [2]]


async def test_a_backlog_past_the_budget_is_refused_at_once_with_a_retry_hint():
    gate = asyncio.Event()
    backend = SlowBackend(seconds_per_window=0.001)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=0.1)
    await coalescer.score("m", windows([0] * 64))  # one full call teaches it ~1 ms per window
    backend.gate = gate
    queued = [asyncio.ensure_future(coalescer.score("m", windows([1] * 16))) for _ in range(4)]
    await asyncio.sleep(0)  # one call under way (16 ms), 48 windows waiting for the next (64 ms when it fills):
    # 64 more do not fit it, so they wait for both, then their own call: about 144 ms
    started = asyncio.get_running_loop().time()
    with pytest.raises(Overloaded, match="would wait") as caught:
        await coalescer.score("m", windows([2] * 64))
    assert asyncio.get_running_loop().time() - started < 0.01  # refused at once, not after waiting
    assert caught.value.retry_after_ms >= 40  # at least the backlog beyond the budget
    gate.set()
    assert [(await q).score.tolist() for q in queued] == [[1] * 16] * 4


async def test_an_ingress_behind_on_its_event_loop_refuses_on_arrival():
    """The queue is empty, but the loop runs 30 ms late: a 20 ms budget cannot be kept, so admission refuses
    before any work is spent; once the loop catches up, the same request is admitted (its call: 0.1 ms)."""
    lag = [0.03]
    backend = SlowBackend(seconds_per_window=0.0001)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=0.02,
                          lag=lambda: lag[0])
    coalescer.admit("m", 1)  # before the model's pace is known nothing is refused
    await coalescer.score("m", windows([0] * 64))  # the pace is known from here
    lag[0] = 0.03
    with pytest.raises(Overloaded, match=r"would wait about 30 ms for a scoring call of about [0-7] ms"):
        coalescer.admit("m", 1)
    lag[0] = 0.001
    coalescer.admit("m", 1)
    assert (await coalescer.score("m", windows([3]))).score.tolist() == [3]


async def test_loop_lag_measures_how_late_the_loop_runs():
    lag = LoopLag(interval_s=0.005, weight=1.0)
    task = asyncio.create_task(lag.run())
    await asyncio.sleep(0.02)
    assert lag.seconds < 0.01
    time.sleep(0.05)  # the loop is blocked: the timer fires ~50 ms late
    await asyncio.sleep(0.001)
    assert lag.seconds > 0.03
    task.cancel()


async def test_the_budget_counts_the_call_a_request_will_be_part_of():
    """Waiting behind a call under way: refused while full calls take 32 ms (12 ms to wait + 32 over the 35 ms
    budget), admitted once they take 8 (under overload calls grow long, and their time is part of the latency)."""
    gate = asyncio.Event()
    coalescer = Coalescer(RecordingBackend(gate=gate), max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=0.035)
    under_way = asyncio.ensure_future(coalescer.score("m", windows([1] * 24)))
    await asyncio.sleep(0)
    service = coalescer._service["m"]
    service.observe(64, 0.032)  # 0.5 ms a window: the call under way (24) has ~12 ms to go
    with pytest.raises(Overloaded, match="would wait about 12 ms for a scoring call of about 32 ms"):
        coalescer.admit("m", 16)
    for _ in range(30):
        service.observe(64, 0.008)  # calls got cheap: 0.125 ms a window
    coalescer.admit("m", 16)  # ~3 ms for the call under way, 8 for its own
    gate.set()
    await under_way


async def test_a_model_whose_calls_outlast_the_budget_is_served_at_its_own_pace():
    """Full calls of 64 ms against a 20 ms budget: no request can be scored within it, yet refusing every one
    while the model is busy would serve nobody, so a short wait (a quarter of the budget) is still admitted."""
    gate = asyncio.Event()
    coalescer = Coalescer(RecordingBackend(gate=gate), max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=0.02)
    under_way = asyncio.ensure_future(coalescer.score("m", windows([1] * 2)))
    await asyncio.sleep(0)
    coalescer._service["m"].observe(64, 0.064)  # 1 ms a window: the call under way has ~2 ms to go
    coalescer.admit("m", 16)
    waiting = asyncio.ensure_future(coalescer.score("m", windows([2] * 64)))  # admitted: it fills the next call
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="would wait about 66 ms"):
        coalescer.admit("m", 16)  # behind that full call too
    gate.set()
    await asyncio.gather(under_way, waiting)


async def test_a_backlog_that_fits_the_next_call_is_admitted():
    """48 windows waiting go with the next call: a request that fits behind them waits for the call under way
    only, then its own call, not for 48 windows' worth at the measured pace first; one that does not fit waits for
    a full call more."""
    gate = asyncio.Event()
    coalescer = Coalescer(RecordingBackend(gate=gate), max_batch=64, max_wait_s=0.001, max_calls=1,
                          budget_s=0.045)
    under_way = asyncio.ensure_future(coalescer.score("m", windows([1] * 16)))
    await asyncio.sleep(0)
    coalescer._service["m"].observe(64, 0.032)  # 0.5 ms a window
    waiting = [asyncio.ensure_future(coalescer.score("m", windows([2] * 16))) for _ in range(3)]
    await asyncio.sleep(0)
    coalescer.admit("m", 16)  # goes with the next call: 8 ms for the call under way, then its own: 32 ms in all 40
    with pytest.raises(Overloaded, match="would wait"):
        coalescer.admit("m", 64)  # after the next call: about 8 + 32 + 32 ms
    gate.set()
    assert [(await f).score.tolist() for f in (under_way, *waiting)] == [[1] * 16] + [[2] * 16] * 3


async def test_a_fleets_burst_does_not_delay_another_fleet():
    gate = asyncio.Event()
    backend = RecordingBackend(gate=gate)
    coalescer = Coalescer(backend, max_batch=8, max_wait_s=0.001, max_calls=1, budget_s=60.0)
    burst = [fleet_score(coalescer, "loud", [i] * 4) for i in range(6)]  # the first goes out, five wait
    await asyncio.sleep(0)
    quiet = fleet_score(coalescer, "quiet", [100] * 4)
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(quiet, *burst)
    assert backend.calls[1] == ("m", 8)  # the next call: one loud request and the quiet one, not two loud
    assert quiet.result().score.tolist() == [100] * 4


async def test_admission_counts_only_a_fair_share_of_other_fleets_backlog():
    gate = asyncio.Event()
    backend = SlowBackend(seconds_per_window=0.001)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, budget_s=0.1)
    await coalescer.score("m", windows([0] * 64))
    backend.gate = gate
    burst = [fleet_score(coalescer, "loud", [1] * 16) for _ in range(8)]  # 16 under way, 64 waiting, 48 refused
    await asyncio.sleep(0)
    quiet = fleet_score(coalescer, "quiet", [2] * 16)  # 16 in flight, then a call with 16 of loud's: ~80 ms
    with pytest.raises(Overloaded):
        await fleet_score(coalescer, "loud", [1] * 16)  # ahead of it: all of loud's own
    gate.set()
    assert (await quiet).score.tolist() == [2] * 16
    await asyncio.gather(*burst, return_exceptions=True)


class SlowBackend(RecordingBackend):
    """Takes `seconds_per_window` per window (after `gate`, when set): a backend of known capacity."""

    def __init__(self, seconds_per_window: float) -> None:
        super().__init__()
        self.seconds_per_window = seconds_per_window

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.seconds_per_window * len(windows))
        return await super().score(key, windows)


class ReplacedBackend:
    """Unavailable (its application being replaced) for its first `outages` calls, then scores as the sum."""

    name = "replaced"

    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.calls = 0

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        self.calls += 1
        if self.calls <= self.outages:
            raise BackendUnavailable("the scoring application is being replaced (ActorDiedError)")
        total = windows.sum(axis=(1, 2))
        return Scores(total, total / 2, total / 2)


async def test_a_call_is_held_through_a_replacement_within_its_grace():
    backend = ReplacedBackend(outages=3)
    held = []
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, grace_s=5.0, on_held=held.append)
    scores = await asyncio.wait_for(coalescer.score("m", windows([1, 2])), 5)
    assert scores.score.tolist() == [1, 2] and backend.calls == 4
    assert held == ["answered"]  # one held call, counted once however many tries it took
    await coalescer.score("m", windows([3]))
    assert held == ["answered"]  # a call that was never held is not counted


async def test_held_time_is_not_taken_for_service_time():
    backend = ReplacedBackend(outages=2)  # 50 + 100 ms held
    coalescer = Coalescer(backend, max_batch=4, max_wait_s=0.001, max_calls=1, grace_s=5.0)
    await coalescer.score("m", windows([1, 2, 3, 4]))  # a full call: its time counts, the time held does not
    assert coalescer._service["m"].call_s(4) < 0.04


async def test_past_its_grace_a_call_fails_and_without_one_at_once():
    backend = ReplacedBackend(outages=100)
    held = []
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, grace_s=0.3, on_held=held.append)
    started = asyncio.get_running_loop().time()
    with pytest.raises(BackendUnavailable):
        await coalescer.score("m", windows([1]))
    assert 0.1 < asyncio.get_running_loop().time() - started < 0.6
    assert held == ["gave_up"]
    once = ReplacedBackend(outages=100)
    with pytest.raises(BackendUnavailable):
        await Coalescer(once, max_batch=64, max_wait_s=0.001, max_calls=1).score("m", windows([1]))
    assert once.calls == 1


class SwitchedBackend(RecordingBackend):
    """Scores as the sum while up; while `down`, every call (recorded) is refused as during a replacement."""

    down = False

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        if self.down:
            self.calls.append((key, len(windows)))
            raise BackendUnavailable("the scoring application is being replaced (ActorDiedError)")
        return await super().score(key, windows)


async def test_a_held_call_keeps_no_request_past_its_callers_deadline():
    gate = asyncio.Event()
    backend = SwitchedBackend(gate=gate)
    held = []
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.05, max_calls=2, min_gap_s=0.05, grace_s=5.0,
                          on_held=held.append)
    busy = asyncio.ensure_future(coalescer.score("m", windows([0])))  # under way: the next two wait for the gap
    await asyncio.wait_for(_until(lambda: len(backend.calls) == 1), timeout=5)
    backend.down = True
    loop = asyncio.get_running_loop()

    async def score_by(deadline_s: float, value: float) -> float:
        current_deadline.set(loop.time() + deadline_s)
        started = loop.time()
        with pytest.raises(BackendUnavailable):
            await coalescer.score("m", windows([value]))
        return loop.time() - started

    hasty, patient = await asyncio.gather(score_by(0.2, 1), score_by(0.6, 2))
    assert {size for _, size in backend.calls[1:]} == {2}  # one call, held for both
    assert hasty < 0.3 and 0.3 < patient < 0.7  # each let go by its own deadline, well inside the 5-s grace
    assert held == ["gave_up"]
    gate.set()
    await busy


async def test_a_held_call_stops_trying_once_every_caller_has_gone():
    backend = ReplacedBackend(outages=100)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, grace_s=5.0)
    caller = asyncio.ensure_future(coalescer.score("m", windows([1])))
    await asyncio.sleep(0.1)
    caller.cancel()  # the gRPC call was cancelled
    await asyncio.sleep(0.6)
    tries = backend.calls
    await asyncio.sleep(0.6)
    assert backend.calls == tries and not coalescer._calls  # the held call ended with nobody left to answer


async def test_other_failures_are_not_held():
    backend = RecordingBackend(fail=True)
    coalescer = Coalescer(backend, max_batch=64, max_wait_s=0.001, max_calls=1, grace_s=5.0)
    with pytest.raises(RuntimeError, match="replica died"):
        await coalescer.score("m", windows([1]))
    assert len(backend.calls) == 1


def test_service_time_separates_a_calls_fixed_cost_from_its_cost_per_window():
    service = ServiceTime(min_windows=64)
    for windows in [16, 64, 32, 128, 48, 96] * 5:  # 3.5 ms a call plus 0.05 ms a window
        service.observe(windows, 0.0035 + 0.00005 * windows)
    assert service.known
    assert service.call_s(256) == pytest.approx(0.0035 + 0.00005 * 256, rel=0.01)
    assert service.call_s(1) == pytest.approx(0.0036, rel=0.05)


def test_service_time_of_calls_of_one_size_is_their_pace():
    service = ServiceTime(min_windows=64)
    service.observe(1, 0.003)  # a lone small call says nothing yet
    assert not service.known
    for _ in range(40):  # under overload every call is full
        service.observe(256, 0.02)
    assert service.call_s(256) == pytest.approx(0.02, rel=0.01)
