"""Fan-out of flagged items to `WatchAnomalies` streams.

Each watcher has its own bounded queue; publishing never waits. A watcher that falls behind loses its oldest
anomalies (counted), so a slow dashboard can never slow down scoring.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aelstm.v1 import scoring_pb2 as pb


@dataclass(eq=False)
class Watcher:
    fleet: str
    queue: asyncio.Queue
    dropped: int = 0


class AnomalyHub:
    """Watchers of one fleet, or of every fleet when their fleet is ""."""

    def __init__(self, queue_size: int = 1024) -> None:
        self.queue_size = queue_size
        self._watchers: set[Watcher] = set()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._watchers)

    def subscribe(self, fleet: str) -> Watcher:
        watcher = Watcher(fleet, asyncio.Queue(maxsize=self.queue_size))
        self._watchers.add(watcher)
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def publish(self, anomaly: pb.Anomaly) -> None:
        for watcher in self._watchers:
            if watcher.fleet and watcher.fleet != anomaly.fleet_id:
                continue
            if watcher.queue.full():
                watcher.queue.get_nowait()
                watcher.dropped += 1
                self.dropped += 1
            watcher.queue.put_nowait(anomaly)
