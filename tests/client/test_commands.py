"""score, replay, watch and loadtest from the command line, against the fake scorer."""

from __future__ import annotations

import io
import json
import threading

import grpc
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fake_server import UNAVAILABLE, FakeBehaviour, FakeServerThread, rule_score

from aelstm.client.cli import main
from aelstm.client.connection import ExitCode
from aelstm.client.payloads import window_item
from aelstm.client.replay import send_offsets
from aelstm.client.results import flag_episodes
from aelstm.core import progress
from aelstm.core.data import load_nab
from aelstm.core.preprocess import sliding_windows
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc
from support import EC2_LATENCY

WINDOW = 16


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def expected_flags(values: np.ndarray, threshold: float) -> np.ndarray:
    windows = sliding_windows(values.astype(np.float32), WINDOW, 1)
    return np.array([rule_score(w) > threshold for w in windows])


@pytest.fixture
def short_csv(tmp_path):
    """The first 400 readings of the EC2 fixture with its NAB labels as a column."""
    series = load_nab(EC2_LATENCY)
    rows = slice(2000, 2400)  # includes a labelled anomaly window
    frame = pd.DataFrame({"timestamp": series.timestamps[rows], "value": series.values[rows, 0],
                          "label": series.labels[rows]})
    path = tmp_path / "short.csv"
    frame.to_csv(path, index=False)
    return path, frame


def test_score_writes_one_row_per_window_with_the_servers_answers(fake, behaviour):
    result = invoke("--target", fake.target, "score", EC2_LATENCY, "--dataset", "nab", "--fleet", "fleet-a",
                    "--batch-size", "500")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    series = load_nab(EC2_LATENCY)
    assert len(table) == len(series) - WINDOW + 1
    assert (table["row"] == np.arange(WINDOW - 1, len(series))).all()
    assert (table["status"] == "ok").all()
    assert (table["is_anomaly"].to_numpy() == expected_flags(series.values, behaviour.threshold)).all()
    assert "labelled events flagged" in result.stderr


@pytest.fixture
def csv_with_text(short_csv, tmp_path):
    """The short series with two readings replaced by text, as a sensor export might write them."""
    _, frame = short_csv
    frame = frame.astype({"value": object})
    frame.loc[[20, 30], "value"] = ["hot", "N/A"]
    path = tmp_path / "text.csv"
    frame.to_csv(path, index=False)
    return path


def test_score_refuses_text_in_a_numeric_column(fake, csv_with_text):
    result = invoke("--target", fake.target, "score", csv_with_text, "--time-column", "timestamp",
                    "--features", "value", "--fleet", "fleet-a")
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert result.output.strip() == (f"error: {csv_with_text}: column 'value' has 2 non-numeric cell(s), first in "
                                     "data row 21: 'hot'; fix the file, or read them as missing values (--non-numeric "
                                     "missing)")


def test_score_reads_text_as_missing_with_a_counted_warning_when_asked(fake, csv_with_text):
    result = invoke("--target", fake.target, "score", csv_with_text, "--time-column", "timestamp",
                    "--features", "value", "--fleet", "fleet-a", "--non-numeric", "missing")
    assert result.exit_code == 0, result.output
    assert (f"warning: {csv_with_text}: read as missing values: column 'value' has 2 non-numeric cell(s)"
            in result.stderr)


def test_score_refuses_a_file_whose_features_do_not_match(fake, tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("a,b\n" + "\n".join(f"{i % 7},{i % 5}" for i in range(40)))
    result = invoke("--target", fake.target, "score", path)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "missing column(s) ['value'] of the features ['value']" in result.output  # read by the model's names
    result = invoke("--target", fake.target, "score", path, "--features", "a,b")
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "expects 1" in result.output


@pytest.mark.parametrize(("mode", "every_flag"), [("readings", False), ("windows", True)])
def test_replay_prints_flags_live_and_sums_up_against_labels(fake, behaviour, short_csv, mode, every_flag, tmp_path):
    path, frame = short_csv
    out = tmp_path / "answers.csv"
    result = invoke("--target", fake.target, "replay", path, "--time-column", "timestamp", "--label-column", "label",
                    "--features", "value", "--fleet", "fleet-a", "--device", "d1", "--mode", mode, "-o", out,
                    *(["--every-flag"] if every_flag else []))
    assert result.exit_code == 0, result.output
    answers = pd.read_csv(out)
    flags = expected_flags(frame[["value"]].to_numpy(), behaviour.threshold)
    scored = answers[answers["status"] == "ok"]
    assert len(scored) == len(frame) - WINDOW + 1
    assert (answers["status"] == "warming_up").sum() == (WINDOW - 1 if mode == "readings" else 0)
    assert (scored["is_anomaly"].to_numpy() == flags).all()
    flagged_lines = [line for line in result.stdout.splitlines() if "score=" in line]
    episodes = flag_episodes(answers.assign(is_anomaly=answers["is_anomaly"].astype(bool)), gap=WINDOW)
    assert len(flagged_lines) == (flags.sum() if every_flag else len(episodes)) > 0
    assert f"{len(episodes)} anomaly episode(s)" in result.stdout
    assert "point-wise precision" in result.stderr and "latency per message: p50" in result.stderr
    assert answers.loc[answers["status"] != "lost", "latency_ms"].gt(0).all()


@pytest.mark.parametrize("command", ["score", "replay"])
def test_score_and_replay_exit_check_failed_when_items_come_back_as_errors(fake, behaviour, short_csv, tmp_path,
                                                                          command):
    behaviour.item_error_code = UNAVAILABLE
    path, frame = short_csv
    out = tmp_path / "answers.csv"
    result = invoke("--target", fake.target, command, path, "--time-column", "timestamp", "--features", "value",
                    "--fleet", "fleet-a", "-o", out, *(["--device", "d1"] if command == "replay" else []))
    assert result.exit_code == ExitCode.CHECK_FAILED, result.output
    rows = len(frame) if command == "replay" else len(frame) - WINDOW + 1
    assert f"error: {rows} of {rows} row(s) answered with an item error (UNAVAILABLE {rows})" in result.stderr
    answers = pd.read_csv(out)
    assert (answers["status"] == "error").all() and (answers["error_code"] == "UNAVAILABLE").all()


@pytest.mark.parametrize("command", ["score", "replay"])
def test_score_and_replay_send_again_what_comes_back_unavailable(fake, behaviour, short_csv, tmp_path, command):
    """A deploy outlasting the server's grace: the message is sent again after a backoff and then scored."""
    behaviour.unavailable_answers = 2
    path, frame = short_csv
    out = tmp_path / "answers.csv"
    result = invoke("--target", fake.target, command, path, "--time-column", "timestamp", "--features", "value",
                    "--fleet", "fleet-a", "-o", out,
                    *(["--device", "d1"] if command == "replay" else ["--batch-size", len(frame)]))
    assert result.exit_code == 0, result.output
    assert "sent again for items answered UNAVAILABLE: 2" in result.stderr
    answers = pd.read_csv(out)
    assert answers["status"].isin(["ok", "warming_up"]).all() and (answers["status"] == "ok").any()
    assert behaviour.answers == (3 if command == "score" else len(frame) + 2)


def test_replay_paces_by_timestamps_or_interval():
    series = load_nab(EC2_LATENCY)
    offsets = send_offsets(series, speed=300.0, interval_s=1.0)
    assert offsets[1] == pytest.approx(300 / 300)  # NAB readings are 5 minutes apart
    assert send_offsets(series, speed=0.0, interval_s=1.0) is None


def test_watch_prints_what_the_server_flags(fake):
    watched = threading.Event()

    def score_spikes() -> None:  # until the watcher has seen one: it may subscribe after the first
        window = np.zeros((WINDOW, 1), np.float32)
        window[:-1, 0] = np.linspace(0, 0.1, WINDOW - 1)
        window[-1, 0] = 50.0
        with grpc.insecure_channel(fake.target) as channel:
            request = pb.ScoreRequest(request_id="r1", fleet_id="fleet-a", items=[window_item("spiky", window)])
            while not watched.wait(0.05):
                scoring_pb2_grpc.AnomalyScorerStub(channel).Score(request, timeout=5)

    sender = threading.Thread(target=score_spikes)
    sender.start()
    try:
        result = invoke("--target", fake.target, "watch", "--fleet", "fleet-a", "--count", "1", "--for", "10s")
    finally:
        watched.set()
        sender.join()
    assert result.exit_code == 0, result.output
    assert "device=spiky" in result.output and "fleet=fleet-a" in result.output


def test_watch_fails_when_the_server_ends_the_stream(fake, behaviour):
    behaviour.watch_ends_after_s = 0.3
    result = invoke("--target", fake.target, "watch", "--for", "10s")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert result.output.strip() == f"error: {fake.target} ended the watch (is the server shutting down?)"


def test_watch_fails_when_the_server_goes_away():
    server = FakeServerThread(FakeBehaviour()).__enter__()
    stopper = threading.Timer(0.5, server.__exit__, args=(None, None, None))
    stopper.start()
    result = invoke("--target", server.target, "watch", "--for", "10s")
    stopper.join()
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    # the fake server runs in this process: grpc may log its cancelled stream into the same captured stderr
    assert result.output.splitlines()[-1].startswith(f"error: lost the connection to {server.target} while watching")


def test_loadtest_writes_a_consistent_json_report(fake, tmp_path):
    path = tmp_path / "report.json"
    result = invoke("--target", fake.target, "loadtest", "-G", "2", "-D", "16", "-b", "4", "--rate", "100",
                    "--warmup", "0.2s", "--duration", "1s", "--no-progress", "--json", path)
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    measured = report["measured"]
    assert measured["sent"] == measured["answered"] > 0 and measured["lost"] == 0
    assert report["config"]["window"] == WINDOW
    assert report["config"]["fleets"] == ["fleet-a", "fleet-b", "default"]  # the fake's fleets and its default
    assert set(measured["fleets"]) == set(report["config"]["fleets"])
    assert set(measured["latency_ms"]) >= {"p50", "p90", "p99", "p99.9", "max"}
    assert "LOST" in result.output


def test_loadtest_feeds_the_fleets_the_server_has(fake, behaviour, tmp_path):
    """A server with fleet `machines` and no default model: made-up fleet names would all be NOT_FOUND."""
    behaviour.fleets, behaviour.has_default = ("machines",), False
    path = tmp_path / "report.json"
    result = invoke("--target", fake.target, "loadtest", "-G", "4", "-D", "16", "-b", "2", "--rate", "50",
                    "--warmup", "0s", "--duration", "0.3s", "--no-progress", "--json", path)
    assert result.exit_code == 0, result.output
    assert "fleets: machines (from the server's ListModels" in result.output
    report = json.loads(path.read_text())
    assert report["config"]["fleets"] == ["machines"] == list(report["measured"]["fleets"])


def test_loadtest_refuses_made_up_fleets_without_a_default_model(fake, behaviour):
    behaviour.fleets, behaviour.has_default = ("machines",), False
    result = invoke("--target", fake.target, "loadtest", "-G", "4", "-F", "2", "--duration", "0.3s", "--no-progress")
    assert result.exit_code == ExitCode.REJECTED, result.output
    assert "has none; its fleets: machines" in result.output


def test_progress_in_a_log_is_plain_periodic_lines(fake, monkeypatch):
    """stderr is no terminal here (as when it goes to a log file): progress comes as lines, not a redrawn bar."""
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.2)
    result = invoke("--target", fake.target, "loadtest", "-G", "2", "-D", "16", "-b", "4", "--rate", "100",
                    "--warmup", "0.2s", "--duration", "1s")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("open-loop at 100 msgs/s")]
    assert len(lines) >= 2 and "measuring" in lines[-1]
    assert "\r" not in result.stderr and "\x1b" not in result.stderr


def test_loadtest_rpc_unary_sends_score_calls(fake, behaviour, tmp_path):
    path = tmp_path / "report.json"
    result = invoke("--target", fake.target, "loadtest", "-G", "2", "-D", "16", "-b", "4", "--rate", "100",
                    "--rpc", "unary", "--warmup", "0.2s", "--duration", "1s", "--no-progress", "--json", path)
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    measured = report["measured"]
    assert measured["sent"] == measured["answered"] > 0 and measured["lost"] == 0
    assert report["config"]["rpc"] == report["schedule"]["rpc"] == "unary"
    assert behaviour.score_calls == measured["sent"] + report["warmup"]["sent"] and behaviour.requests_seen == 0


def test_loadtest_exits_check_failed_when_an_answer_is_lost(fake, behaviour):
    behaviour.drop_request_number = 10
    result = invoke("--target", fake.target, "--deadline", "1s", "loadtest", "-G", "1", "-D", "8", "-b", "2",
                    "--rate", "100", "--warmup", "0s", "--duration", "0.5s", "--no-progress")
    assert result.exit_code == ExitCode.CHECK_FAILED, result.output
    assert "lost" in result.output


def test_loadtest_fails_when_every_item_is_an_item_error(fake, behaviour, tmp_path):
    """A server whose backend is down answers every message, each item with UNAVAILABLE: that is no success."""
    behaviour.item_error_code = UNAVAILABLE
    path = tmp_path / "report.json"
    result = invoke("--target", fake.target, "loadtest", "-G", "2", "-D", "16", "-b", "4", "--rate", "100",
                    "--warmup", "0.2s", "--duration", "0.5s", "--no-progress", "--json", path)
    assert result.exit_code == ExitCode.CHECK_FAILED, result.output
    assert "item errors UNAVAILABLE" in result.output
    measured = json.loads(path.read_text())["measured"]
    assert measured["answered"] == measured["sent"] > 0 and measured["items_answered"] == 0
    assert measured["item_errors"] == {"UNAVAILABLE": measured["items_sent"]}
    assert all(fleet["item_errors"] for fleet in measured["fleets"].values())


def test_sweep_reports_the_highest_rate_within_the_slo(fake, behaviour, tmp_path):
    """One stream answering one message per 20 ms (50/s at most) sustains 10 msgs/s; at 70 msgs/s the queue grows
    by 20 messages a second, far past 200 ms within the run."""
    behaviour.service_time_s = 0.02
    path = tmp_path / "sweep.json"
    result = invoke("--target", fake.target, "loadtest", "-G", "1", "-F", "1", "-D", "4", "-b", "1",
                    "--rate", "10:130:60", "--slo-ms", "200", "--warmup", "0.2s", "--duration", "1s",
                    "--no-progress", "--json", path)
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    assert report["max_sustained"]["rate"] == 10
    assert [run["schedule"]["rate"] for run in report["sweep"]] == [10, 70]  # stops at the first miss
    assert report["sweep"][1]["measured"]["latency_ms"]["p99"] > 200


def test_loadtest_over_two_processes_merges_into_one_consistent_report(fake, behaviour, tmp_path):
    behaviour.drop_request_number = 30
    path = tmp_path / "report.json"
    result = invoke("--target", fake.target, "loadtest", "-G", "4", "-D", "16", "-b", "2", "--rate", "100",
                    "--warmup", "0.2s", "--duration", "1s", "--processes", "2", "--no-progress", "--json", path)
    assert result.exit_code == ExitCode.CHECK_FAILED, result.output  # the dropped answer
    report = json.loads(path.read_text())
    measured, warmup = report["measured"], report["warmup"]
    assert report["config"]["processes"] == 2
    assert measured["sent"] == pytest.approx(100, abs=3) and warmup["sent"] == pytest.approx(20, abs=3)
    assert measured["lost"] + warmup["lost"] == 1
    assert measured["sent"] == measured["answered"] + measured["lost"]
    assert sum(f["sent"] for f in measured["fleets"].values()) == measured["sent"]
