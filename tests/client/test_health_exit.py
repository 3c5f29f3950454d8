"""`aelstm-client health` tells a server that answers NOT_SERVING apart from failed runs and unreachable servers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aelstm.client.cli import main
from aelstm.client.connection import ExitCode


@pytest.fixture
def not_serving():
    """A gRPC server on 127.0.0.1 whose health service says NOT_SERVING."""
    server = grpc.server(ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_not_serving_has_its_own_exit_code(not_serving):
    result = CliRunner().invoke(main, ["--target", not_serving, "health"])
    assert result.exit_code == ExitCode.NOT_SERVING == 8, result.output
    assert ExitCode.NOT_SERVING != ExitCode.CHECK_FAILED
    assert f"{not_serving}: NOT_SERVING" in result.output
    assert "8  health: the server answered but is not SERVING" in CliRunner().invoke(main, ["--help"]).output
