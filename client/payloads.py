"""Encoding device data as ScoreRequest bytes, once, ahead of sending.

The load generator must not spend its time in protobuf: request bodies (fleet + items) are serialised ahead of time and
each message is the serialised request id followed by the prebuilt body. Protobuf merges concatenated messages
(singular fields: last wins, repeated fields: appended), so the result parses as one ScoreRequest.
"""

from __future__ import annotations

import numpy as np

from aelstm.v1 import scoring_pb2 as pb


def tensor(values: np.ndarray) -> pb.Tensor:
    """Packed little-endian float32 tensor of a [rows, features] array."""
    array = np.ascontiguousarray(values, dtype="<f4")
    return pb.Tensor(shape=array.shape, packed=array.tobytes())


def window_item(device_id: str, window: np.ndarray, timestamp_ms: int = 0) -> pb.Item:
    return pb.Item(device_id=device_id, window=tensor(window), timestamp_ms=timestamp_ms)


def readings_item(device_id: str, readings: np.ndarray, timestamp_ms: int = 0) -> pb.Item:
    return pb.Item(device_id=device_id, readings=tensor(np.atleast_2d(readings)), timestamp_ms=timestamp_ms)


def request_body(fleet_id: str, items: list[pb.Item]) -> bytes:
    """Everything of a ScoreRequest except its id."""
    return pb.ScoreRequest(fleet_id=fleet_id, items=items).SerializeToString()


def with_request_id(request_id: str, body: bytes) -> bytes:
    """A complete serialised ScoreRequest: field 1 (request_id) prepended to a prebuilt body."""
    encoded = request_id.encode()
    if len(encoded) > 127:
        raise ValueError("request ids longer than 127 bytes are not supported")
    return b"\x0a" + bytes((len(encoded),)) + encoded + body
