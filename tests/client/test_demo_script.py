"""scripts/demo.sh refuses to run against whatever already listens on its port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.sh"


def test_demo_stops_when_its_port_is_taken():
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        demo = subprocess.Popen(["bash", str(DEMO)], env={**os.environ, "AELSTM_DEMO_PORT": str(port)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = demo.communicate(timeout=30)
        finally:
            if demo.poll() is None:  # still training or serving: stop the whole demo
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
    assert demo.returncode == 1
    assert err.strip() == (f"demo: port {port} is already in use; stop what listens there or pick another with "
                           "AELSTM_DEMO_PORT")
    assert out == ""
