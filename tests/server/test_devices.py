"""The ingress's device store: windows, remembered verdicts, gaps, policy state, bounds, judging order."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest

from aelstm.core.policy import Policy
from aelstm.server.devices import OUT_OF_RANGE, DeviceStore, Ready, Remembered, Retry, Warming
from aelstm.server.items import ItemProblem

DSPOT = "sum | spot:risk=0.0001,depth=512"
POLICY = Policy.parse(DSPOT).fit(np.random.default_rng(0).exponential(size=(2_000, 2)))


def rows(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


def admit(store: DeviceStore, values, timestamp_ms: int = 0, *, device: str = "d", fleet: str = "f",
          window: int = 3, model: str = "m1", policy: Policy = POLICY, period_ms: float | None = None):
    return store.admit(fleet, device, rows(*values), timestamp_ms, model_key=model, window=window, policy=policy,
                       period_ms=period_ms)


def last_readings(admitted: Ready) -> list[float]:
    return admitted.windows[-1].ravel().tolist()


async def judged(admitted: Ready, score: float = 0.5):
    k = len(admitted.windows)
    return await admitted.ticket.judge(np.full(k, score), np.full(k, score / 2), np.full(k, score / 2))


async def test_a_device_warms_up_then_every_reading_ends_a_window():
    store = DeviceStore()
    assert admit(store, [1, 2]) == Warming(2)
    ready = admit(store, [3])
    assert isinstance(ready, Ready) and last_readings(ready) == [1, 2, 3]
    ready = admit(store, [4, 5])
    assert [w.ravel().tolist() for w in ready.windows] == [[2, 3, 4], [3, 4, 5]]


async def test_devices_and_fleets_are_separate():
    store = DeviceStore()
    admit(store, [1, 2], window=2)
    assert admit(store, [9], device="b", window=2) == Warming(1)
    assert admit(store, [9], fleet="g", window=2) == Warming(1)


async def test_least_recently_updated_device_is_evicted_and_counted():
    events = Counter()
    store = DeviceStore(max_devices=2, count=lambda event: events.update([event]))
    for device in ("a", "b", "a", "c"):  # a is refreshed, so c evicts b
        admit(store, [1], device=device, window=2)
    assert len(store) == 2 and events["evicted"] == 1
    assert admit(store, [2], device="b", window=2) == Warming(1)


async def test_a_change_of_features_starts_the_window_over():
    store = DeviceStore()
    admit(store, [1, 2])
    assert store.admit("f", "d", np.zeros((1, 2), np.float32), 0, model_key="m2", window=3,
                       policy=POLICY) == Warming(1)


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        DeviceStore(max_devices=0)
    with pytest.raises(ValueError):
        DeviceStore(remember=0)


async def test_windows_are_bounded_in_bytes_ids_included():
    store = DeviceStore(max_bytes=200_000)
    for i in range(100):
        admit(store, [1], device=f"{i:03d}" + "x" * 65_536, window=4)
    assert store.bytes <= 200_000 and 1 <= len(store) <= 3
    assert admit(store, [2], device="099" + "x" * 65_536, window=4) == Warming(2)  # the most recent was kept


async def test_a_resend_gets_the_verdict_its_own_readings_got_never_the_newest():
    """Readings at ts 10/20/30/40 with window 3: resending ts 30 gets the window ending at ts 30."""
    store = DeviceStore()
    assert admit(store, [1], 10) == Warming(1)
    admit(store, [2], 20)
    outcomes = {}
    for ts, value in ((30, 3.0), (40, 4.0)):
        outcomes[ts] = await judged(admit(store, [value], ts), score=value)
    resent = admit(store, [3], 30)
    assert isinstance(resent, Remembered)
    assert (await resent.outcome) == outcomes[30] != outcomes[40]
    warming = admit(store, [1], 10)
    assert (await warming.outcome).held == 1 and (await warming.outcome).verdict is None


async def test_late_data_not_remembered_is_refused_never_scored_as_the_newest():
    events = Counter()
    store = DeviceStore(remember=2, count=lambda event: events.update([event]))
    for ts in (10, 20, 30, 40):
        admit(store, [ts], ts)
    for late in (15, 10):  # never sent, and sent but forgotten
        with pytest.raises(ItemProblem, match="late data") as refused:
            admit(store, [0], late)
        assert refused.value.code == OUT_OF_RANGE
    assert events["late_refused"] == 2
    assert last_readings(admit(store, [50], 50)) == [30, 40, 50]  # nothing late was spliced in


async def test_a_failed_item_is_scored_again_on_resend_without_teaching():
    store = DeviceStore()
    admit(store, [1, 2], 20)
    ready = admit(store, [3], 30)
    ready.ticket.fail(ready.windows)  # the backend failed
    outcome = await admit(store, [3], 30).outcome
    assert isinstance(outcome, Retry) and outcome.windows.ravel().tolist() == [1, 2, 3]
    before = store.export("f", "d")
    retry = store.retry("f", "d", "m1", POLICY)
    await retry.judge(np.array([9.0]), np.array([4.5]), np.array([4.5]))
    assert store.export("f", "d") == before


async def test_a_short_gap_is_filled_a_long_one_restarts_the_window():
    events = Counter()
    store = DeviceStore(max_gap_readings=2, count=lambda event: events.update([event]))
    for ts in (1_000, 2_000, 3_000):
        admit(store, [ts / 1000], ts, window=4)  # learns a period of 1 s
    filled = admit(store, [6], 6_000, window=4)  # 4 and 5 missing: two NaN readings, filled by the model
    assert np.isnan(last_readings(filled)).tolist() == [False, True, True, False]
    assert admit(store, [10], 10_000, window=4) == Warming(1)  # 7, 8 and 9 missing: over the limit, a restart
    assert events["gap_filled"] == 1 and events["gap_restarted"] == 1


async def test_a_declared_period_finds_a_gap_at_once():
    store = DeviceStore(max_gap_readings=0)
    admit(store, [1, 2], 2_000, period_ms=1_000)
    assert admit(store, [4], 4_000, period_ms=1_000) == Warming(1)


async def test_judgements_run_in_reading_order_whatever_order_scores_arrive():
    store = DeviceStore()
    scores = np.random.default_rng(1).exponential(size=30) * np.linspace(1, 4, 30)
    admit(store, [0, 0])
    tickets = [admit(store, [i]).ticket for i in range(len(scores))]
    tasks = {i: asyncio.create_task(tickets[i].judge(scores[i : i + 1], scores[i : i + 1] / 2,
                                                     scores[i : i + 1] / 2))
             for i in reversed(range(len(scores)))}
    verdicts = [(await tasks[i]).verdict for i in range(len(scores))]
    alarms, _, thresholds = POLICY.run(np.stack([scores / 2, scores / 2], axis=1))
    assert [v.alarm for v in verdicts] == alarms.tolist()
    np.testing.assert_allclose([v.threshold for v in verdicts], thresholds)


async def test_an_unjudged_place_never_blocks_the_device():
    store = DeviceStore()
    admit(store, [0, 0])
    first, dropped, last = (admit(store, [i]) for i in range(3))
    dropped.ticket.fail(dropped.windows)  # its scoring failed; released before the one before it was judged
    waiting = asyncio.create_task(judged(last))
    await asyncio.sleep(0)
    assert not waiting.done()  # still behind `first`
    await judged(first)
    await asyncio.wait_for(waiting, timeout=1.0)


async def test_a_new_model_keeps_the_policy_state_only_when_its_calibration_is_the_same():
    events = Counter()
    store = DeviceStore(count=lambda event: events.update([event]))
    admit(store, [0, 0])
    for i in range(50):
        await judged(admit(store, [i]), score=5.0)
    learnt = store.export("f", "d")["policy"]
    same = Policy.from_dict(POLICY.to_dict())  # a re-deploy or a rollback to the same content
    await judged(admit(store, [50], model="m2", policy=same))
    assert events["policy_carried_over"] == 1
    moved = store.export("f", "d")["policy"]
    assert moved["states"][1]["baseline"][:-1] == learnt["states"][1]["baseline"]  # DSPOT's baseline carried over
    refit = Policy.parse(DSPOT).fit(np.random.default_rng(1).exponential(size=(2_000, 2)))  # a retrained model
    await judged(admit(store, [51], model="m3", policy=refit))
    assert events["policy_restarted"] == 1
    restarted = store.export("f", "d")["policy"]
    assert restarted["states"][1]["baseline"][:-1] == refit.start().to_dict()["states"][1]["baseline"][1:]
    other = Policy.parse("sum | pot:risk=0.001").fit(np.random.default_rng(1).exponential(size=(2_000, 2)))
    await judged(admit(store, [52], model="m4", policy=other))
    assert events["policy_restarted"] == 2


async def test_a_device_state_counts_against_the_byte_budget():
    store = DeviceStore()
    admit(store, [0, 0])
    before = store.bytes
    admit(store, [1], 0)
    assert store.bytes >= before + POLICY.start().nbytes
