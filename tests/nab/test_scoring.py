"""The NAB score on tiny synthetic files (hand-checked weights, sweep = definition) and the corpus self-check."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.core.errors import DataError
from aelstm.training.nab.corpus import load_corpus, probation_length
from aelstm.training.nab.results import SCORE_DECIMALS, as_written
from aelstm.training.nab.scoring import PROFILES, FileLayout, NabScorer, file_counts, scaled_sigmoid
from aelstm.training.nab.zscore import rolling_zscore

STANDARD, LOW_FP, LOW_FN = PROFILES


def test_probation_is_fifteen_percent_capped_at_750() -> None:
    assert probation_length(1000) == 150
    assert probation_length(1001) == 150
    assert probation_length(22695) == 750


def test_scaled_sigmoid_ends() -> None:
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(-1.0) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert scaled_sigmoid(3.5) == -1.0


def test_weights_by_hand() -> None:
    # 10 probation rows, one window on rows 20..29 (width 10), 50 rows in all.
    layout = FileLayout.build(50, [(20, 29)], probation=10)
    unit = layout.unit
    assert unit[:10].tolist() == [-1.0] * 10  # before the first window: −fpW
    assert unit[10] == pytest.approx(1.0)  # first row of the window earns tpW
    assert unit[19] == pytest.approx(scaled_sigmoid(-0.1) / scaled_sigmoid(-1.0))
    assert unit[20] == pytest.approx(scaled_sigmoid(1 / 9))  # one row after the window: almost free
    assert unit[-1] == pytest.approx(scaled_sigmoid(20 / 9))


def test_earliest_detection_counts_once_and_probation_is_ignored() -> None:
    layout = FileLayout.build(50, [(20, 29)], probation=10)
    scores = np.zeros(50)
    scores[3] = 1.0  # inside the probationary period: ignored
    scores[[22, 25, 28]] = 0.9
    counts = file_counts(scores, layout, STANDARD, 0.5)
    assert counts == {"raw": pytest.approx(layout.unit[12]), "tp": 1, "fn": 0, "fp": 0}
    scores[45] = 0.9
    counts = file_counts(scores, layout, LOW_FP, 0.5)
    assert counts["fp"] == 1
    assert counts["raw"] == pytest.approx(layout.unit[12] + 0.22 * layout.unit[35])


def test_missed_window_costs_fn_weight() -> None:
    layout = FileLayout.build(50, [(20, 29)], probation=10)
    assert file_counts(np.zeros(50), layout, LOW_FN, 0.5)["raw"] == -2.0


def _random_corpus(rng: np.random.Generator) -> tuple[NabScorer, list[np.ndarray]]:
    layouts, scores = [], []
    for _ in range(5):
        rows = int(rng.integers(200, 400))
        probation = probation_length(rows)
        starts = np.sort(rng.choice(np.arange(probation, rows - 20, 25), size=int(rng.integers(0, 4)), replace=False))
        layouts.append(FileLayout.build(rows, [(s, s + int(rng.integers(1, 20))) for s in starts], probation))
        scores.append(np.round(rng.random(rows) ** 3, 2))  # coarse values: many ties
    return NabScorer(layouts), scores


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_sweep_equals_definition_at_every_candidate(profile) -> None:
    scorer, scores = _random_corpus(np.random.default_rng(7))
    thresholds, raw = scorer.sweep(scores, profile)
    candidates = np.r_[1.1, np.unique(np.concatenate(scores))[::-1]]
    direct = np.array([scorer.at(scores, profile, t).raw for t in candidates])
    swept = np.array([raw[np.searchsorted(-thresholds, -t, side="right") - 1] for t in candidates])
    np.testing.assert_allclose(swept, direct, atol=1e-9)
    best = scorer.optimised(scores, profile)
    assert best.raw == pytest.approx(direct.max())
    assert best.threshold == candidates[np.flatnonzero(np.isclose(direct, direct.max(), atol=1e-9))[0]]


def test_normalisation_null_and_perfect() -> None:
    layout = FileLayout.build(100, [(40, 49), (70, 79)], probation=15)
    scorer = NabScorer([layout])
    perfect = np.zeros(100)
    perfect[[40, 70]] = 1.0
    for profile in PROFILES:
        assert scorer.optimised([perfect], profile).score == pytest.approx(100.0)
        assert scorer.at([np.zeros(100)], profile, 0.5).score == pytest.approx(0.0)


def test_bad_inputs_are_refused() -> None:
    layout = FileLayout.build(50, [(20, 29)], probation=10)
    with pytest.raises(DataError, match="scores for a file"):
        file_counts(np.zeros(49), layout, STANDARD, 0.5)
    with pytest.raises(DataError, match="finite"):
        file_counts(np.full(50, np.nan), layout, STANDARD, 0.5)
    with pytest.raises(DataError, match="invalid"):
        FileLayout.build(50, [(5, 29)], probation=10)


def _legacy_nab_parse(text: str) -> float:
    """What NAB's pinned pandas reads from a CSV cell: digits summed into a double, then divided by powers of ten
    (binary exponentiation: several roundings). Cells in exponent notation (tiny scores) are read exactly here."""
    if "e" in text:
        return float(text)
    whole, _, fraction = text.partition(".")
    digits = (whole + fraction)[:17]  # the parser keeps 17 digits, the leading 0 included
    number = 0.0
    for digit in digits:
        number = number * 10.0 + int(digit)
    decimals, power = len(digits) - len(whole), 10.0
    while decimals:
        if decimals & 1:
            number /= power
        decimals >>= 1
        power *= power
    return number


def _ranks(values) -> np.ndarray:
    return np.unique(np.asarray(values), return_inverse=True)[1]


def test_written_scores_keep_their_order_and_ties_under_the_official_parser() -> None:
    """The NAB score depends only on the order and ties of the scores; the legacy parser of the official tools may
    be a unit in the last place off, but it orders our CSV cells exactly as the values we score."""
    rng = np.random.default_rng(5)
    near_one = 1.0 - rng.integers(1, 40, size=200) * 2.0**-53  # distinct floats that 15 decimals partly merge
    scores = np.r_[rng.random(500), np.round(rng.random(200), 3), near_one, 0.0, 1.0, 1.2, -0.1]
    written = as_written(scores)
    cells = np.char.mod(f"%.{SCORE_DECIMALS}f", np.clip(scores, 0.0, 1.0))
    assert written.tolist() == [float(cell) for cell in cells]
    np.testing.assert_array_equal(_ranks([_legacy_nab_parse(cell) for cell in cells]), _ranks(written))
    assert written.min() == 0.0 and written.max() == 1.0


@pytest.mark.datasets
def test_zscore_self_check_on_the_full_corpus(shared_datasets) -> None:
    """NAB_SCORING.md's self-check: 33.61 / 10.73 / 45.39 from the official tools on 17-digit CSVs.

    Read the way the official tools read those CSVs (0.9999999999999999 becomes 1.0), our scorer gives the same
    three figures; on the unrounded floats the low-FP optimum at T = 1.0 gives 11.78. Our own CSVs hold 15 decimals,
    which every parser reads alike, so what we score is what the official tools score on our files.
    """
    corpus = load_corpus(shared_datasets / "nab")
    scorer = NabScorer.of(corpus)
    floats = [rolling_zscore(nab.values) for nab in corpus]
    official = [np.array([_legacy_nab_parse(repr(float(v))) for v in scores]) for scores in floats]
    assert scorer.windows == 116
    for profile, expected in zip(PROFILES, (33.61, 10.73, 45.39), strict=True):
        assert scorer.optimised(official, profile).score == pytest.approx(expected, abs=0.005)
    assert scorer.optimised(floats, LOW_FP).score == pytest.approx(11.78, abs=0.005)


def test_a_subset_is_normalised_with_its_own_null_and_perfect() -> None:
    """The development and held-out halves are scored like corpora of their own: 100 and 0 mean the same there."""
    layouts = [FileLayout.build(100, [(40, 49)], probation=15), FileLayout.build(100, [(30, 39), (60, 69)], 15)]
    full, subset = NabScorer(layouts), NabScorer(layouts[1:])
    assert (full.windows, subset.windows) == (3, 2)
    perfect = np.zeros(100)
    perfect[[30, 60]] = 1.0
    for profile in PROFILES:
        assert subset.optimised([perfect], profile).score == pytest.approx(100.0)
        assert subset.at([np.zeros(100)], profile, 0.5).score == pytest.approx(0.0)
        hit_one = full.at([np.zeros(100), perfect], profile, 0.5)  # 2 of 3 windows on their first row
        assert hit_one.score == pytest.approx(100 * 2 / 3)  # raw 2·tp − fn against null −3·fn, perfect 3·tp
