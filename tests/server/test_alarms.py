"""A device's judgements follow its reading order, whatever order their scores arrive in."""

from __future__ import annotations

import asyncio

import numpy as np

from aelstm.core.spot import SpotConfig, StreamingThreshold
from aelstm.server.alarms import DeviceAlarm
from aelstm.server.devices import DeviceWindows


def threshold() -> StreamingThreshold:
    return StreamingThreshold.calibrate(np.random.default_rng(0).exponential(size=2_000), SpotConfig(depth=5))


async def test_judgements_run_in_reading_order_whatever_order_scores_arrive():
    scores = np.random.default_rng(1).exponential(size=30) * np.linspace(1, 4, 30)
    alarm = DeviceAlarm("model", threshold())
    judgements = [alarm.reserve(fresh=True) for _ in scores]
    tasks = {i: asyncio.create_task(judgements[i].judge(float(scores[i]))) for i in reversed(range(len(scores)))}
    verdicts = [await tasks[i] for i in range(len(scores))]
    alarms, limits = threshold().run(scores)
    assert [a for _, a in verdicts] == alarms.tolist()
    np.testing.assert_array_equal([limit for limit, _ in verdicts], limits)


async def test_an_unjudged_place_never_blocks_the_device():
    alarm = DeviceAlarm("model", threshold())
    first, dropped, last = (alarm.reserve(fresh=True) for _ in range(3))
    dropped.release()  # its scoring failed; released before the one before it was judged
    waiting = asyncio.create_task(last.judge(1.0))
    await asyncio.sleep(0)
    assert not waiting.done()  # still behind `first`
    await first.judge(1.0)
    await asyncio.wait_for(waiting, timeout=1.0)
    assert alarm.state.seen == threshold().start().seen + 2


def test_a_device_state_counts_against_the_byte_budget_and_a_new_model_starts_over():
    devices = DeviceWindows()
    devices.append("f", "d", np.zeros((4, 1), np.float32), window=4)
    before = devices.bytes
    alarm, fresh = devices.alarm_of("f", "d", "model-1", threshold())
    assert fresh and devices.bytes == before + alarm.nbytes
    assert devices.alarm_of("f", "d", "model-1", threshold())[0] is alarm
    assert devices.alarm_of("f", "d", "model-2", threshold())[0] is not alarm
    devices.append("f", "d", np.zeros((4, 1), np.float32), window=4, timestamp_ms=5)
    devices.append("f", "d", np.zeros((4, 1), np.float32), window=4, timestamp_ms=5)
    assert devices.alarm_of("f", "d", "model-2", threshold())[1] is False  # a resend
