"""How far behind the ingress's event loop runs: the queue in front of the coalescer that it cannot see.

Past its CPU, an ingress falls behind on its own work: messages wait in gRPC's buffers and the loop's ready queue
before they reach the coalescer, where admission keeps the scoring budget. In-process scoring, which shares the
process, hits this first. That wait shows as loop lag, how late a timer fires; admission counts it as part of a
request's expected wait, so an ingress that is behind refuses at once instead of answering late.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    """`seconds`: the event loop's recent lag, an EWMA of how late a timer every `interval_s` fires."""

    def __init__(self, interval_s: float = 0.01, weight: float = 0.3) -> None:
        self.interval_s = interval_s
        self.weight = weight
        self.seconds = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.seconds += self.weight * (max(0.0, loop.time() - due) - self.seconds)
