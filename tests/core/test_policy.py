"""The alarm policy: post-rules fitted on normal terms, rebuilt from JSON, judging apart from learning."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aelstm.core.errors import DataError
from aelstm.core.policy import DEFAULT_POLICY, Policy

LIKELIHOOD = "likelihood | refractory:n=50 | fixed:value=0.5"
DSPOT = "sum | spot:risk=0.0001,depth=512"
SPECS = [DEFAULT_POLICY, DSPOT, "sum | pot:risk=0.001", "sum | quantile:q=0.99", LIKELIHOOD,
         "likelihood:short=5,long=200 | fixed:value=0.5", DSPOT + " | hold:n=16",
         DSPOT + " | confirm:k=2,n=3 | hold:n=16", DSPOT + " | suppress:n=50",
         DSPOT + " | confirm:k=2,n=3 | hold:n=16 | suppress:n=50"]


def normal_terms(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).exponential(size=(rows, 2))


@pytest.mark.parametrize("spec", SPECS)
def test_a_fitted_policy_round_trips_through_json_with_the_same_alarms(spec):
    policy = Policy.parse(spec).fit(normal_terms(2_000, 0))
    rebuilt = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    test = normal_terms(3_000, 1)
    test[2_000:2_010] += 25.0
    alarms, _, thresholds = policy.run(test)
    again = rebuilt.run(test)
    np.testing.assert_array_equal(alarms, again[0])
    np.testing.assert_array_equal(thresholds, again[2])
    assert alarms[2_000:2_010].any(), "a jump of 25 normal scales is flagged"
    assert alarms[:2_000].mean() < 0.02


@pytest.mark.parametrize("spec", SPECS)
def test_judging_changes_nothing_and_step_is_judge_then_learn(spec):
    policy = Policy.parse(spec).fit(normal_terms(1_000, 2))
    stepped, judged = policy.start(), policy.start()
    for row in normal_terms(300, 3):
        terms = tuple(row)
        before = json.dumps(judged.to_dict())
        verdict = judged.judge(terms)
        assert json.dumps(judged.to_dict()) == before  # pure
        assert judged.judge(terms) == verdict
        assert stepped.step(terms) == verdict
        judged.learn(terms)
    assert json.dumps(judged.to_dict()) == json.dumps(stepped.to_dict())


def test_a_state_moves_between_processes_and_only_to_the_same_rules():
    policy = Policy.parse(DSPOT).fit(normal_terms(2_000, 4))
    state = policy.start()
    drifted = normal_terms(600, 5) * 3.0
    for row in drifted:
        state.step(tuple(row))
    moved = policy.start()
    assert moved.restore(json.loads(json.dumps(state.to_dict())))
    probe = (3.0, 3.0)
    assert moved.judge(probe) == state.judge(probe) != policy.start().judge(probe)
    other = Policy.parse("sum | pot:risk=0.001").fit(normal_terms(2_000, 4))
    assert not other.start().restore(state.to_dict())
    assert not Policy.parse(DSPOT).fit(drifted).start().restore(state.to_dict())  # another calibration
    assert Policy.from_dict(json.loads(json.dumps(policy.to_dict()))).start().restore(state.to_dict())


def test_when_alarms_do_not_teach_a_long_anomaly_stays_flagged():
    terms = normal_terms(2_000, 6)
    long_anomaly = np.vstack([normal_terms(500, 7), normal_terms(1_500, 8) + 6.0])
    teaching = Policy.parse(DSPOT).fit(terms).flags(long_anomaly)
    holding = Policy.parse(DSPOT, alarms_teach=False).fit(terms).flags(long_anomaly)
    assert holding[500:].mean() > 0.95
    assert teaching[500:].mean() < 0.5  # DSPOT learns the new level: a drifted device goes quiet


def test_a_hold_keeps_an_alarm_raised_through_dips_and_then_lets_go():
    policy = Policy.parse("sum | fixed:value=1 | hold:n=3").fit(np.zeros((5, 1)))
    scores = np.array([0, 2, 0, 0, 2, 0, 0, 0, 0, 0, np.nan, 0], dtype=float)
    alarms = policy.flags(scores[:, None])
    np.testing.assert_array_equal(alarms, [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])


def test_suppress_lets_one_alarm_through_per_n_windows():
    policy = Policy.parse("sum | fixed:value=1 | suppress:n=3").fit(np.zeros((5, 1)))
    scores = np.array([2, 2, 2, 2, 2, 0, 2, np.nan, 2, 2, 0, 0, 0, 2], dtype=float)
    alarms = policy.flags(scores[:, None])
    # the quiet counts scorable windows from the alarm let through; a suppressed alarm never extends it
    np.testing.assert_array_equal(alarms, [1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1])


def test_a_suppressed_window_still_does_not_teach_when_alarms_do_not_teach():
    policy = Policy.parse("sum | spot:risk=0.01,depth=0 | suppress:n=10", alarms_teach=False).fit(
        normal_terms(2_000, 9))
    state = policy.start()
    state.step((1_000.0, 1_000.0))  # raised: the quiet begins
    before = json.dumps(state.to_dict()["states"][1])
    assert not state.step((1_000.0, 1_000.0)).alarm  # suppressed ...
    assert json.dumps(state.to_dict()["states"][1]) == before  # ... and, over its threshold, taught it nothing


def test_confirm_raises_an_alarm_only_while_k_of_the_last_n_verdicts_alarmed():
    policy = Policy.parse("sum | fixed:value=1 | confirm:k=2,n=3").fit(np.zeros((5, 1)))
    scores = np.array([2, 0, 0, 2, 0, 2, np.nan, 2, 2, 2, 0, 0, 0], dtype=float)
    alarms = policy.flags(scores[:, None])
    np.testing.assert_array_equal(alarms, [0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 0, 0])


def test_a_hold_after_confirm_holds_the_confirmed_alarms_only():
    policy = Policy.parse("sum | fixed:value=1 | confirm:k=2,n=2 | hold:n=2").fit(np.zeros((5, 1)))
    scores = np.array([2, 0, 0, 0, 2, 2, 0, 0, 0, 0], dtype=float)
    alarms = policy.flags(scores[:, None])
    np.testing.assert_array_equal(alarms, [0, 0, 0, 0, 0, 1, 1, 1, 0, 0])


def test_a_confirm_state_moves_mid_episode_with_the_same_verdicts():
    policy = Policy.parse("sum | fixed:value=1 | confirm:k=3,n=4").fit(np.zeros((5, 1)))
    state = policy.start()
    for score in (2.0, 0.0, 2.0):
        state.step((score,))
    moved = policy.start()
    assert moved.restore(json.loads(json.dumps(state.to_dict())))
    assert moved.step((2.0,)) == state.step((2.0,))
    assert moved.judge((2.0,)).alarm and not policy.start().judge((2.0,)).alarm


def test_windows_over_the_threshold_do_not_teach_before_they_are_confirmed_when_alarms_do_not_teach():
    """A long anomaly under a streaming threshold: its first windows, over the threshold but not yet confirmed,
    must not raise the level the rest of it has to cross."""
    spec = "sum | spot:risk=0.001,depth=0 | confirm:k=12,n=16"
    anomaly = np.vstack([normal_terms(500, 16), normal_terms(1_000, 17) + 6.0])
    quiet = Policy.parse(spec, alarms_teach=False).fit(normal_terms(400, 18)).flags(anomaly)
    assert quiet[520:].mean() > 0.95


def test_held_alarms_do_not_teach_when_alarms_do_not_teach():
    """A long anomaly whose score dips under the threshold now and then: without the hold its dips teach DSPOT
    and the alarm fades; with it the anomaly stays flagged, and a normal stream afterwards goes quiet again."""
    fitted = Policy.parse(DSPOT + " | hold:n=32", alarms_teach=False).fit(normal_terms(2_000, 12))
    plain = Policy.parse(DSPOT, alarms_teach=False).fit(normal_terms(2_000, 12))
    anomaly = normal_terms(1_000, 13) + 6.0
    anomaly[::20] = 0.1  # a dip every 20 windows
    stream = np.vstack([normal_terms(500, 14), anomaly, normal_terms(500, 15)])
    held, unheld = fitted.flags(stream), plain.flags(stream)
    assert held[501:1_500].all() and not unheld[501:1_500].all()  # the anomaly's first window is a dip
    assert held[1_600:].mean() < 0.02


def test_the_likelihood_is_causal_needs_history_and_floors_the_spread():
    policy = Policy.parse("likelihood:min_history=20 | fixed:value=0.5").fit(np.ones((30, 1)))
    flat = policy.run(np.ones((200, 1)))[1]
    assert np.isfinite(flat).all() and flat.max() < 0.2  # σ floor: a constant error is never a surprise
    fitted = Policy.parse("likelihood | fixed:value=0.5").fit(normal_terms(500, 9))
    raw = normal_terms(600, 10)
    changed = raw.copy()
    changed[400:] += 20.0
    base, after = fitted.run(raw)[1], fitted.run(changed)[1]
    np.testing.assert_array_equal(base[:400], after[:400])
    assert after[400] > 0.5 > base[400]


def test_refractory_keeps_one_alarm_per_burst():
    policy = Policy.parse("sum | refractory:n=3 | fixed:value=0.05").fit(np.zeros((5, 1)))
    scores = np.array([0.1, 0.9, 0.8, 0.95, 0.2, 0.0, 0.0, 0.3, 0.0])
    _, kept, _ = policy.run(scores[:, None])
    np.testing.assert_allclose(kept, [0.1, 0.9, 0.0, 0.95, 0.0, 0.0, 0.0, 0.3, 0.0])


def test_rows_without_a_score_never_alarm_and_teach_nothing():
    policy = Policy.parse(DSPOT).fit(normal_terms(1_000, 11))
    state = policy.start()
    before = json.dumps(state.to_dict())
    assert not state.step((np.nan, np.nan)).alarm
    assert json.dumps(state.to_dict()) == before


@pytest.mark.parametrize(("spec", "message"), [
    ("sum | magic", "unknown alarm rule"),
    ("sum", "must end with a threshold rule"),
    ("pot", "starts with a rule that reads error terms"),
    ("sum | pot | spot", "exactly one threshold rule"),
    ("sum | pot:risk", "is not key=value"),
    ("sum | pot:colour=3", "has no setting"),
    ("sum || pot", "empty rule"),
    ("sum | spot:risk=0.5", "risk must be in"),
    ("sum | hold:n=4 | pot", "come after the threshold rule"),
    ("sum | pot | hold | hold", "at most one each of: confirm, hold, suppress"),
    ("sum | pot | hold | confirm", "at most one each of: confirm, hold, suppress"),
    ("sum | pot | suppress | hold", "at most one each of: confirm, hold, suppress"),
    ("sum | pot | refractory", "at most one each of: confirm, hold, suppress"),
    ("sum | pot | suppress:n=0", "suppress needs n ≥ 1"),
    ("sum | confirm | pot", "come after the threshold rule"),
    ("sum | pot | hold:n=0", "hold needs n ≥ 1"),
    ("sum | pot | confirm:k=5,n=4", "confirm needs 1 ≤ k ≤ n"),
    ("sum | pot | confirm:k=0", "confirm needs 1 ≤ k ≤ n"),
])
def test_bad_policies_are_refused_with_what_to_fix(spec, message):
    with pytest.raises(DataError, match=message):
        Policy.parse(spec)


def test_an_unfitted_policy_cannot_judge():
    with pytest.raises(DataError, match="not fitted"):
        Policy.parse(DEFAULT_POLICY).start()


@pytest.mark.parametrize("spec", [DSPOT, "sum | spot:depth=0", "sum | pot", "sum | quantile"])
def test_constant_normal_scores_leave_room_for_the_arithmetic_of_another_runtime(spec):
    """A flat sensor's validation scores are all equal: a score 0.05 % above them (float32 in onnxruntime against
    torch) is no anomaly, while a real jump still is."""
    policy = Policy.parse(spec).fit(np.full((500, 2), 0.3))
    served = np.full((2_000, 2), 0.3 * 1.0005)
    served[1_500] = 0.6
    alarms = policy.flags(served)
    assert not alarms[:1_500].any() and alarms[1_500]
