"""Resending a message whose items got item-level UNAVAILABLE: the server could not reach its scoring backend (a
deploy replacing replicas outlasted the server's own grace). Readings are idempotent, so a resend of the whole
message under its request id gets what was already judged unchanged and scores what was not. Bounded: a few
resends, with jittered doubling backoff, never past the message's deadline."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from aelstm.v1 import scoring_pb2 as pb

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


def unavailable_items(response: pb.ScoreResponse) -> int:
    """Items answered UNAVAILABLE (no retry hint: those are overload refusals, retried after their hint)."""
    return sum(r.status == pb.ITEM_STATUS_ERROR and r.error.code == UNAVAILABLE and not r.error.retry_after_ms
               for r in response.results)


@dataclass(frozen=True)
class ItemRetry:
    """How often and how soon a message with UNAVAILABLE items is sent again."""

    attempts: int = 3  # resends at most; 0: none
    backoff_s: float = 0.2  # before the first, doubling after each
    max_backoff_s: float = 2.0

    def delay_s(self, resent: int, left_s: float) -> float | None:
        """The wait before resend number `resent + 1`, or None when no resend is due: all were made, or it would
        come later than `left_s` (what is left of the deadline)."""
        if resent >= self.attempts:
            return None
        delay = min(self.backoff_s * 2 ** resent, self.max_backoff_s) * (0.5 + random.random() / 2)
        return delay if delay < left_s else None


DEFAULT_RETRY = ItemRetry()
