"""The fixed development / held-out split: disjoint, the whole corpus, and built by its declared rule."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import pytest

from aelstm.core.errors import DataError
from aelstm.training.nab.corpus import load_corpus
from aelstm.training.nab.split import Split
from support import REPO

SPLIT_FILE = REPO / "benchmarks" / "nab" / "split.json"


def test_the_halves_are_disjoint_and_follow_the_declared_rule() -> None:
    split = Split.load(SPLIT_FILE)
    keys = sorted([*split.development, *split.held_out])
    assert not set(split.development) & set(split.held_out) and len(set(keys)) == len(keys)
    for _, files in groupby(keys, key=lambda key: key.split("/")[0]):
        files = sorted(files)  # within a category, by name: even positions develop, odd ones are held out
        assert set(files[0::2]) <= set(split.development) and set(files[1::2]) <= set(split.held_out)


@pytest.mark.datasets
def test_the_split_covers_the_corpus(shared_datasets) -> None:
    corpus = load_corpus(shared_datasets / "nab")
    development, held_out = Split.load(SPLIT_FILE).halves(corpus)
    assert len(development) + len(held_out) == len(corpus) == 58
    assert {nab.key for nab in development} | {nab.key for nab in held_out} == {nab.key for nab in corpus}
    assert sum(len(nab.windows) for nab in development + held_out) == 116


def test_a_bad_split_is_refused(tmp_path: Path) -> None:
    overlapping = tmp_path / "split.json"
    overlapping.write_text(json.dumps({"development": ["a/x.csv", "a/y.csv"], "held_out": ["a/y.csv"]}))
    with pytest.raises(DataError, match="overlap"):
        Split.load(overlapping)
    split = Split(("a/x.csv",), ("a/y.csv",))
    with pytest.raises(DataError, match=r"unnamed \['a/z.csv'\]"):
        split.check_covers(["a/x.csv", "a/y.csv", "a/z.csv"])
