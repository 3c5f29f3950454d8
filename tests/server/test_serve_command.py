"""`aelstm serve` as a user runs it: a subprocess that prints its address once SERVING and stops on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serve(tmp_path, bundle, *flags: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "aelstm.cli", "serve", "--port", "0",
               "--metrics-port", "0", "--registry", str(tmp_path / "registry"), "--default-bundle", str(bundle),
               *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()  # blocks until ready (or the process dies)
    match = re.search(r"serving on (\S+) .*health SERVING", line)
    if match is None:
        process.kill()
        raise AssertionError(f"no ready line: {line!r} {process.communicate(timeout=30)}")
    return process, match.group(1)


def check_and_stop(process: subprocess.Popen, address: str) -> str:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    return stderr


def test_serve_in_process(tmp_path, ec2_bundle):
    process, address = serve(tmp_path, ec2_bundle.path, "--backend", "inprocess", "--log-format", "json")
    stderr = check_and_stop(process, address)
    assert '"msg": "stopped"' in stderr


@pytest.mark.integration
def test_serve_on_embedded_ray_leaves_nothing_in_the_temp_dir(tmp_path, ec2_bundle):
    temp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    try:
        started = time.monotonic()
        process, address = serve(tmp_path, ec2_bundle.path, env={**os.environ, "TMPDIR": str(temp)})
        assert time.monotonic() - started < 240
        assert list(temp.glob("aelstm-ray-*"))  # the embedded Ray's own temp dir, while it runs
        stderr = check_and_stop(process, address)
        assert "ready on CPUExecutionProvider" in stderr or "ready on CUDAExecutionProvider" in stderr
        assert "SIGTERM handler is not set" not in stderr
        for line in stderr.splitlines():  # Ray's lines too: --log-format json means every line
            assert isinstance(json.loads(line), dict), line
        left = sorted(p.name for p in temp.iterdir() if p.name != ".ses")  # onnxruntime's stamp, written at import
        assert left == []  # Ray's temp dir and any bundle copies are gone
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_a_server_that_can_never_serve_exits_with_one_error_line(tmp_path):
    bad = tmp_path / "bad-bundle"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    command = [sys.executable, "-m", "aelstm.cli", "serve", "--port", "0",
               "--metrics-port", "0", "--registry", str(tmp_path / "registry"), "--default-bundle", str(bad),
               "--backend", "inprocess", "--log-format", "text"]
    process = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "default bundle" in errors[0], process.stderr
    assert "Traceback" not in process.stderr and process.stdout == ""


def test_the_start_line_does_not_say_serving_while_not_serving(tmp_path):
    command = [sys.executable, "-m", "aelstm.cli", "serve", "--port", "0",
               "--metrics-port", "0", "--registry", str(tmp_path / "registry"), "--backend", "inprocess"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
    finally:
        process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert "serving" not in line.lower().replace("not_serving", ""), line
    assert re.match(r"aelstm listening on 127\.0\.0\.1:\d+ .*health NOT_SERVING until a model is published", line)


def test_status_reports_each_ingress_and_fails_when_one_is_not_serving(tmp_path, ec2_bundle):
    from click.testing import CliRunner

    from aelstm.cli import main

    process, address = serve(tmp_path, ec2_bundle.path, "--backend", "inprocess")
    try:
        good = CliRunner().invoke(main, ["status", "--ingress", address])
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            gone = f"127.0.0.1:{unused.getsockname()[1]}"
        mixed = CliRunner().invoke(main, ["status", "--ingress", address, "--ingress", gone])
    finally:
        check_and_stop(process, address)
    assert good.exit_code == 0, good.output
    assert f"ingress {address}: SERVING" in good.output and "ec2-latency version" in good.output
    assert mixed.exit_code == 1 and f"ingress {gone}: UNREACHABLE" in mixed.output
    assert "not everything is serving" in mixed.output


def test_status_shows_the_gpus_and_custom_resources_a_node_offers():
    """Which nodes train (`--fit-resource`) shows in `aelstm status`; Ray's own per-node entries do not."""
    from aelstm.server.status import node_line

    trainer = {"NodeID": "a" * 28, "NodeManagerAddress": "10.0.0.2",
               "Resources": {"CPU": 8.0, "GPU": 1.0, "memory": 1e9, "object_store_memory": 1e8, "node:10.0.0.2": 1.0,
                             "accelerator_type:H100": 1.0, "training": 2.0}}
    assert node_line(trainer) == "  node aaaaaaaaaaaa 10.0.0.2 CPUs 8 GPUs 1 training 2"
    head = {"NodeID": "b" * 28, "NodeManagerAddress": "10.0.0.1",
            "Resources": {"CPU": 4.0, "node:__internal_head__": 1.0, "node:10.0.0.1": 1.0}}
    assert node_line(head) == "  node bbbbbbbbbbbb 10.0.0.1 CPUs 4"
