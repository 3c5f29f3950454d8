"""Serving side of aelstm: the gRPC ingress, scoring backends (Ray Serve or in-process), model registry."""

import os

# gRPC core logs an INFO line each time Ray forks a worker while the ingress is up: noise, not news.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
# Ray starts its GCS and raylet with fork + preexec_fn + exec from this multi-threaded process. With gRPC's fork
# handlers on, a forked child sometimes aborted (SIGABRT) before exec; Popen cannot tell that from success, so Ray
# waited for a GCS or raylet that never ran ("Timed out waiting for file .../gcs_server_port_...", "The current node
# timed out during startup"). The children exec at once and need no gRPC in between: keep the handlers off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
