import warnings

import numpy as np
import pytest

from aelstm.core.data import (
    ColumnNotice,
    NonNumericWarning,
    Series,
    load_csv,
    load_nab,
    load_nbaiot,
    load_skab,
    load_ton_iot,
)
from aelstm.core.errors import DataError
from aelstm.core.scoring import labelled_events
from support import EC2_LATENCY, MACHINE_TEMPERATURE


def test_nab_fixture_labels_follow_the_windows():
    series = load_nab(MACHINE_TEMPERATURE)
    assert series.values.shape == (22695, 1)
    assert series.feature_names == ("value",)
    # four labelled failures, each one contiguous window
    assert len(labelled_events(series.labels)) == 4
    first = np.argmax(series.labels)
    assert str(series.timestamps[first]).startswith("2013-12-10T06:25")


def test_generic_csv_selects_numeric_features_and_labels(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text("time,temp,hum,site,label\n2024-01-01,1.0,,a,0\n2024-01-02,2.0,3.0,b,1\n")
    series = load_csv(path, time_column="time", label_column="label")
    assert series.feature_names == ("temp", "hum")
    assert np.isnan(series.values[0, 1])
    assert series.labels.tolist() == [0, 1]


def _rows(header: str, rows) -> str:
    return header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows)


def test_generic_csv_reads_a_label_named_column_as_labels_and_leaves_out_row_indices(tmp_path):
    path = tmp_path / "plant.csv"
    path.write_text(_rows(",step,timestamp,temp,Anomaly", [(i, i + 1, 1_700_000_000 + 60 * i, 20 + i % 3, int(i == 2))
                                                         for i in range(5)]))
    with pytest.warns(ColumnNotice) as notices:
        series = load_csv(path)
    assert series.feature_names == ("temp",)
    assert series.labels.tolist() == [0, 0, 1, 0, 0]
    assert [str(n.message) for n in notices] == [
        "plant.csv: labels from column 'Anomaly'; not used as features: 'Unnamed: 0', 'step', 'timestamp' (label-named "
        "or row-index columns; name them in --features to use them)"
    ]
    with pytest.warns(ColumnNotice, match=r"plant.csv: labels from column 'Anomaly'$"):
        assert load_csv(path, feature_columns=["step", "temp"]).feature_names == ("step", "temp")


def test_generic_csv_keeps_integer_readings_that_merely_rise(tmp_path):
    path = tmp_path / "counts.csv"
    path.write_text(_rows("count,level,attack,index", [(3, 1.0, 2, 0), (5, 2.0, 0, 2), (9, 3.0, 1, 4)]))
    with pytest.warns(ColumnNotice, match=r"not used as features: 'attack', 'index'"):
        series = load_csv(path)
    assert series.feature_names == ("count", "level")  # rising, but neither counting rows nor named as an index
    assert series.labels is None  # 'attack' holds a 2: not a 0/1 label column


def test_generic_csv_without_special_columns_is_silent(tmp_path):
    path = tmp_path / "plain.csv"
    path.write_text(_rows("a,b", [(1, 5), (1, 4), (2, 6)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_csv(path).feature_names == ("a", "b")


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        ("a,b\n1,2\n", {"feature_columns": ["c"]}, "missing column"),
        ("a,b\nx,y\n", {"feature_columns": ["a"]}, "no numeric values"),
        ("a,b\n1,2\n", {"label_column": "label"}, "label column 'label' not found"),
        ("a\n", {}, "no rows"),
    ],
)
def test_generic_csv_errors_say_what_is_wrong(tmp_path, content, kwargs, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_csv(path, **kwargs)


def test_text_in_a_numeric_column_is_refused_naming_column_count_and_first_cell(tmp_path):
    path = tmp_path / "sensors.csv"
    path.write_text("time,temp,hum\n1,1.5,2\n2,hot,\n3,N/A,4\n4,2.5,5\n")
    with pytest.raises(DataError, match=r"column 'temp' has 2 non-numeric cell\(s\), first in data row 2: 'hot'"):
        load_csv(path, time_column="time")
    with pytest.raises(DataError, match="non-numeric"):
        load_csv(path, feature_columns=["temp"])


def test_text_read_as_missing_is_counted_in_a_warning_and_gaps_stay_silent(tmp_path):
    path = tmp_path / "sensors.csv"
    path.write_text("temp,hum\n1.5,2\nhot,\nNaN,4\n2.5,5\n")
    with pytest.warns(NonNumericWarning, match=r"missing values: column 'temp' has 2 non-numeric cell\(s\)"):
        series = load_csv(path, non_numeric="missing")
    assert np.isnan(series.values[1:3, 0]).all() and np.isnan(series.values[1, 1])
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("temp,hum\n1.5,2\n, \n2.5,5\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(load_csv(gaps).values[1]).all()


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_nab(tmp_path / "nope.csv")


def test_series_rejects_mismatched_labels():
    with pytest.raises(DataError, match="labels"):
        Series("x", np.zeros((3, 1)), ("v",), labels=np.zeros(2, dtype=np.int8))


def test_slice_keeps_labels_and_timestamps():
    series = load_nab(EC2_LATENCY).slice(10, 20)
    assert len(series) == len(series.labels) == len(series.timestamps) == 10


@pytest.mark.datasets
def test_skab_run_has_eight_sensors_and_labels(shared_datasets):
    series = load_skab(shared_datasets / "skab" / "data" / "valve1" / "0.csv")
    assert series.values.shape[1] == 8
    assert series.labels is not None and series.labels.any()
    free = load_skab(shared_datasets / "skab" / "data" / "anomaly-free" / "anomaly-free.csv")
    assert free.labels is None


@pytest.mark.datasets
def test_ton_iot_strings_do_not_leak_the_label(shared_datasets):
    series = load_ton_iot(shared_datasets / "ton_iot" / "Train_Test_IoT_Fridge.csv")
    assert series.feature_names == ("fridge_temperature", "temp_condition")
    condition = series.values[:, 1]
    assert set(np.unique(condition)) == {0.0, 1.0}
    # both classes use both encoded values: the trailing-space oracle is gone
    for label in (0, 1):
        assert set(np.unique(condition[series.labels == label])) == {0.0, 1.0}
    assert np.all(np.diff(series.timestamps.astype(np.int64)) >= 0)


@pytest.mark.datasets
def test_nbaiot_sample_schema(shared_datasets):
    folder = shared_datasets / "nbaiot_sample" / "sample_prabeen6260"
    benign = load_nbaiot(folder / "benign_traffic.csv")
    attack = load_nbaiot(folder / "scan.csv")
    assert benign.values.shape == (299, 115)
    assert not benign.labels.any() and attack.labels.all()
