"""Serving side of aelstm: the gRPC ingress, scoring backends (Ray Serve or in-process), model registry."""
