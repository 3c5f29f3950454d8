"""Protocol splits never let a test row into training: checked on small synthetic copies of the dataset layouts
(every reading encodes its own time index), then on the real datasets when ../shared/datasets is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aelstm.core.data import SKAB_FEATURES
from aelstm.core.errors import DataError
from aelstm.training.evaluation.protocols import SKAB_TRAIN_ROWS, SPLITS, TON_IOT_DEVICES, load_protocol

WINDOW = 16


ANOMALY_FREE_OFFSET = 10_000


def write_skab(root: Path) -> None:
    """Labelled runs whose readings are their own row index; the anomaly-free run's readings are offset by
    ANOMALY_FREE_OFFSET so they can be told apart."""
    runs = [(folder, str(number)) for folder, count in (("valve1", 2), ("valve2", 1), ("other", 1))
            for number in range(count)]
    for folder, stem in [*runs, ("anomaly-free", "anomaly-free")]:
        path = root / "skab" / "data" / folder / f"{stem}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = 700
        frame = pd.DataFrame({"datetime": pd.date_range("2020-03-09", periods=rows, freq="s").astype(str)})
        offset = ANOMALY_FREE_OFFSET if folder == "anomaly-free" else 0
        for feature in SKAB_FEATURES:
            frame[feature] = np.arange(rows, dtype=float) + offset
        if folder != "anomaly-free":
            frame["anomaly"] = (np.arange(rows) >= 500).astype(float)
            frame["changepoint"] = 0.0
        frame.to_csv(path, sep=";", index=False)


def write_ton_iot(root: Path, normal: int = 300, attack: int = 200) -> None:
    """Rows in file order grouped by type (as the real files are), `ts` increasing with the time index."""
    folder = root / "ton_iot"
    folder.mkdir(parents=True, exist_ok=True)
    index = np.arange(normal + attack)
    frame = pd.DataFrame({
        "ts": 1_554_000_000 + index * 5,
        "date": "31-Mar-19",
        "time": " 19:19:40 ",
        "fridge_temperature": index.astype(float),  # the reading is its own time index
        "temp_condition": np.where(index < normal, "high  ", "low"),
        "label": (index >= normal).astype(int),
        "type": np.where(index < normal, "normal", "ddos"),
    })
    shuffled = frame.sample(frac=1.0, random_state=0).sort_values("type", kind="stable")
    for device in TON_IOT_DEVICES:
        shuffled.to_csv(folder / f"Train_Test_IoT_{device}.csv", index=False, encoding="utf-8-sig")


def time_index(values: np.ndarray) -> set[int]:
    return set(values[:, 0].astype(int).tolist())


@pytest.mark.parametrize("dataset", ["skab", "skab-anomaly-free"])
def test_skab_trains_on_the_first_400_rows_and_judges_the_rest(tmp_path, dataset):
    write_skab(tmp_path)
    protocol = load_protocol(dataset, tmp_path)
    assert [c.name for c in protocol.cases] == ["other/0", "valve1/0", "valve1/1", "valve2/0"]
    for case in protocol.cases:
        assert case.test_from == SKAB_TRAIN_ROWS
        assert time_index(case.normal) == set(range(SKAB_TRAIN_ROWS))
        assert not time_index(case.normal) & time_index(case.values[case.test_from :])
        assert case.test_labels.sum() == 200 and not case.labelled
    if dataset == "skab":
        assert protocol.reference is None
    else:
        assert time_index(protocol.reference) == set(range(ANOMALY_FREE_OFFSET, ANOMALY_FREE_OFFSET + 700))


def test_skab_without_the_anomaly_free_run_is_a_clear_error(tmp_path):
    write_skab(tmp_path)
    (tmp_path / "skab" / "data" / "anomaly-free" / "anomaly-free.csv").unlink()
    with pytest.raises(DataError, match="anomaly-free"):
        load_protocol("skab-anomaly-free", tmp_path)
    assert load_protocol("skab", tmp_path).reference is None


def test_ton_iot_training_rows_precede_and_never_overlap_test_rows(tmp_path):
    write_ton_iot(tmp_path)
    protocol = load_protocol("ton_iot", tmp_path, window=WINDOW)
    assert [c.name for c in protocol.cases] == list(TON_IOT_DEVICES)
    for case in protocol.cases:
        test = case.values[case.test_from :, 0]
        (attack_values, attack_labels), = case.labelled
        trained = time_index(case.normal) | time_index(attack_values)
        assert not trained & set(test.astype(int).tolist())
        assert case.normal[:, 0].max() < test[case.test_labels == 0].min()
        assert attack_values[:, 0].max() < test[case.test_labels == 1].min()
        assert attack_labels.all() and not case.labels[: case.test_from].any()
        context = case.values[: case.test_from, 0]
        assert len(context) == WINDOW - 1 and context.max() < test.min()  # only past rows as context
        assert np.all(np.diff(test[case.test_labels == 0]) > 0)  # time order kept
        assert case.feature_names == ("fridge_temperature", "temp_condition")


def test_missing_datasets_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="datasets folder not found"):
        load_protocol("skab", tmp_path / "absent")


def test_real_skab_protocol(shared_datasets):
    protocol = load_protocol("skab-anomaly-free", shared_datasets)
    assert len(protocol.cases) == 34
    dirty = {c.name for c in protocol.cases if c.labels[:SKAB_TRAIN_ROWS].any()}
    assert dirty == {"other/2"}  # the caveat SOURCE.md documents, and the only one
    assert sum(len(c.test_labels) for c in protocol.cases) == 23_801
    assert sum(int(c.test_labels.sum()) for c in protocol.cases) == 12_771
    assert protocol.reference.shape == (9_405, len(SKAB_FEATURES)) and np.isfinite(protocol.reference).all()


def test_real_ton_iot_quick_protocol(shared_datasets):
    protocol = load_protocol("ton_iot", shared_datasets, quick=True, window=WINDOW)
    (case,) = protocol.cases
    assert case.name == "Fridge" and case.feature_names == ("fridge_temperature", "temp_condition")
    assert len(case.normal) == 2000 and case.test_labels.sum() == 1000


def test_real_nbaiot_schema(shared_datasets):
    (case,) = load_protocol("nbaiot", shared_datasets).cases
    assert len(case.feature_names) == 115 and case.values.shape == (4 * 299, 115)
    assert case.test_from == 149 and not case.labels[:299].any() and case.labels[299:].all()


def test_skab_development_and_held_out_runs_are_disjoint_and_cover_all(tmp_path):
    write_skab(tmp_path)
    names = {split: [c.name for c in load_protocol("skab", tmp_path, split=split).cases] for split in SPLITS}
    assert names["development"] == ["valve1/0", "valve1/1"]
    assert names["held-out"] == ["other/0", "valve2/0"]
    assert not set(names["development"]) & set(names["held-out"])
    assert sorted(names["development"] + names["held-out"]) == sorted(names["all"])
    note = load_protocol("skab", tmp_path, split="held-out").split_note
    assert "chosen on the development runs (valve1/*)" in note and "none of them chose any setting" in note


def test_only_skab_declares_a_split(tmp_path):
    write_ton_iot(tmp_path)
    with pytest.raises(DataError, match="declares no development split"):
        load_protocol("ton_iot", tmp_path, split="held-out")
    with pytest.raises(DataError, match="unknown split"):
        load_protocol("skab", tmp_path, split="test")
