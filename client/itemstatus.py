"""Names for what the server says about each item: its status, and the gRPC code of an item error."""

from __future__ import annotations

import grpc

from aelstm.v1 import scoring_pb2 as pb

STATUS_NAMES = {pb.ITEM_STATUS_OK: "ok", pb.ITEM_STATUS_WARMING_UP: "warming_up", pb.ITEM_STATUS_ERROR: "error",
                pb.ITEM_STATUS_UNSPECIFIED: "unspecified"}

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, str(status))


def error_code_name(code: int) -> str:
    """`UNAVAILABLE` for 14: item errors carry the numeric gRPC code, reports show its name."""
    return _CODE_NAMES.get(code, str(code))


def by_code(counts: dict[str, int]) -> str:
    """`UNAVAILABLE 816, INVALID_ARGUMENT 2`: item error counts, largest first."""
    return ", ".join(f"{code} {n}" for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
