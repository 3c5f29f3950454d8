"""Every command fails with one line and a documented exit code when the server cannot be used."""

from __future__ import annotations

import socket
import time

import grpc
import pytest
from click.testing import CliRunner
from conftest import self_signed
from fake_server import FakeBehaviour, FakeServerThread

from aelstm.client.cli import main
from aelstm.client.connection import ExitCode


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_one_line_error(result, code: ExitCode) -> None:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output


def test_models_lists_the_fleets(fake):
    result = invoke("--target", fake.target, "models", "--json")
    assert result.exit_code == 0, result.output
    assert '"fleet_id": "fleet-a"' in result.output


@pytest.mark.parametrize("command", [["models"], ["loadtest", "--duration", "1s"], ["watch", "--count", "1"]])
def test_server_down_exits_unreachable(command):
    result = invoke("--target", f"127.0.0.1:{free_port()}", *command)
    assert_one_line_error(result, ExitCode.UNREACHABLE)
    assert "cannot reach" in result.output


def test_health_of_a_server_that_never_comes_up_is_unreachable_after_the_wait():
    started = time.monotonic()
    result = invoke("--target", f"127.0.0.1:{free_port()}", "--deadline", "0.2s", "health", "--wait", "1s")
    assert result.exit_code == ExitCode.UNREACHABLE, result.output
    assert 1.0 <= time.monotonic() - started < 10


def test_unresolvable_target_exits_unreachable():
    assert_one_line_error(invoke("--target", "no-such-host.invalid:50051", "models"), ExitCode.UNREACHABLE)


def test_malformed_target_is_bad_input():
    assert_one_line_error(invoke("--target", "127.0.0.1:", "models"), ExitCode.BAD_INPUT)


def test_token_refused_and_accepted(fake, behaviour):
    behaviour.token = "s3cret"
    missing = invoke("--target", fake.target, "models")
    assert_one_line_error(missing, ExitCode.AUTH)
    assert "pass --token" in missing.output
    assert_one_line_error(invoke("--target", fake.target, "--token", "wrong", "models"), ExitCode.AUTH)
    assert invoke("--target", fake.target, "--token", "s3cret", "models").exit_code == 0


def test_unknown_fleet_is_rejected(fake):
    result = invoke("--target", fake.target, "loadtest", "--fleet", "missing", "--duration", "1s")
    assert_one_line_error(result, ExitCode.REJECTED)
    assert "NOT_FOUND" in result.output


def test_tls_failures_and_success(tmp_path):
    cert, key = self_signed(tmp_path / "server")
    other_ca, _ = self_signed(tmp_path / "other")
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    with FakeServerThread(FakeBehaviour(), credentials) as server:
        plain = invoke("--target", server.target, "models")
        assert_one_line_error(plain, ExitCode.TLS)
        assert "--tls" in plain.output
        assert_one_line_error(invoke("--target", server.target, "--ca", str(other_ca), "models"), ExitCode.TLS)
        assert invoke("--target", server.target, "--ca", str(cert), "models").exit_code == 0
    with FakeServerThread(FakeBehaviour()) as plain_server:
        assert_one_line_error(invoke("--target", plain_server.target, "--ca", str(cert), "models"), ExitCode.TLS)


def test_missing_ca_file_is_bad_input(fake, tmp_path):
    assert_one_line_error(invoke("--target", fake.target, "--ca", str(tmp_path / "none.pem"), "models"),
                          ExitCode.BAD_INPUT)


def test_exit_codes_are_documented():
    result = invoke("--help")
    for code in ExitCode:
        assert f"{code.value:>3}  " in result.output


@pytest.mark.parametrize("options", [["--gateways", "0"], ["--devices", "2", "--gateways", "4"],
                                     ["--anomaly-rate", "0.7"], ["--anomalies", "meteor"], ["--duration", "0s"],
                                     ["--mode", "closed", "--concurrency", "0"]])
def test_bad_loadtest_options_are_bad_input(fake, options):
    assert_one_line_error(invoke("--target", fake.target, "loadtest", "--no-progress", *options), ExitCode.BAD_INPUT)


def test_bad_rate_and_duration_are_usage_errors(fake):
    assert invoke("--target", fake.target, "loadtest", "--rate", "10:5:1").exit_code == ExitCode.USAGE
    assert invoke("--target", fake.target, "loadtest", "--duration", "soon").exit_code == ExitCode.USAGE
