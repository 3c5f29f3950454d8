"""Serving side of aelstm: the gRPC ingress, scoring backends (Ray Serve or in-process), model registry."""

import os

# gRPC core logs an INFO line each time Ray forks a worker while the ingress is up: noise, not news.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
