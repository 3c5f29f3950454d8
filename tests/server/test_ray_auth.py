"""Joining a token-protected cluster turns Ray's token mode on in this process; an embedded Ray started later in
the same process must still come up (before the fix its GCS wanted a token the process's own client never sent:
"Missing authorization header in request!", then a start-up time-out)."""

import os
import secrets
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SCRIPT = """
import logging, ray
from aelstm.server.ray_backend import configure_ray_environment
configure_ray_environment("127.0.0.1:1")  # as an ingress joining a cluster does, with ray already imported
assert __import__("os").environ["RAY_AUTH_MODE"] == "token"
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
ray.shutdown()
print("started")
"""


def test_an_embedded_ray_starts_after_token_mode_was_turned_on_in_the_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(RAY_ADDRESS="local", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_TOKEN=secrets.token_hex(32))
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=170)
    assert done.returncode == 0 and "started" in done.stdout, done.stderr[-2000:]
