"""The `aelstm.v1.AnomalyScorer` gRPC service: streams requests through `RequestScorer.score_request` with
backpressure and drain, describes models, and fans flagged items out to watchers."""

from __future__ import annotations

import asyncio
import logging
import math

import grpc

from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

from .coalescer import current_deadline, current_fleet
from .items import model_info, quote
from .scoring import RequestScorer
from .security import allowed, denied_message, granted_fleets

log = logging.getLogger(__name__)



def _retrieve(future: asyncio.Future) -> None:
    """Done callback of a read nobody may await any more (the call was cancelled): its outcome, often
    StopAsyncIteration, is retrieved so that asyncio does not log "Task exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


def caller_deadline(context: grpc.aio.ServicerContext) -> float:
    """When the caller stops waiting for this call, on the event loop's clock (inf: it set no deadline)."""
    remaining = context.time_remaining()
    return math.inf if remaining is None else asyncio.get_running_loop().time() + remaining


class AnomalyScorerService(pb_grpc.AnomalyScorerServicer):
    def __init__(self, scorer: RequestScorer) -> None:
        self.scorer = scorer
        self.models = scorer.models
        self.hub = scorer.hub
        self.metrics = scorer.metrics
        self.limits = scorer.limits
        self.draining = asyncio.Event()
        self._handing: set[asyncio.Task] = set()  # hand-overs of ended streams still under way

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        current_fleet.set(request.fleet_id)
        current_deadline.set(caller_deadline(context))
        return await self.scorer.score_request(request, "Score")

    async def StreamScore(self, request_iterator, context: grpc.aio.ServicerContext):
        """Answers requests concurrently as they arrive (up to `max_in_flight_per_stream`, then reading pauses).

        A request's slot is freed only once its response has been handed to gRPC (the yield returned), so a
        client that stops reading stops the server reading its requests: memory stays bounded.
        On drain it stops reading, answers everything received, and ends the stream with UNAVAILABLE.
        """
        out: asyncio.Queue[pb.ScoreResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.limits.max_in_flight_per_stream)
        current_deadline.set(caller_deadline(context))  # the stream's: every request read inherits it
        reader = asyncio.create_task(self._read_stream(request_iterator, out, slots))
        try:
            while (response := await out.get()) is not None:
                yield response
                slots.release()
            drained = await reader
        finally:
            reader.cancel()
        if drained:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down: reconnect and resend "
                                                             "requests that got no response")

    async def _read_stream(self, request_iterator, out: asyncio.Queue, slots: asyncio.Semaphore) -> bool:
        """Feed responses into `out`, then None; returns whether it stopped because of a drain. Takes a slot per
        request read; the consumer of `out` frees it once the response is sent."""
        answering: set[asyncio.Task] = set()
        touched: set[tuple[str, str]] = set()  # devices this stream sent readings for: handed over at its end

        async def answer(request: pb.ScoreRequest) -> None:
            current_fleet.set(request.fleet_id)  # this task's own context: its queue line in the coalescer
            out.put_nowait(await self.scorer.score_request(request, "StreamScore", touched))  # never raises

        requests = aiter(request_iterator)
        drain = asyncio.ensure_future(self.draining.wait())
        following: asyncio.Future | None = None
        drained = False
        try:
            while True:
                await slots.acquire()
                following = asyncio.ensure_future(anext(requests))
                following.add_done_callback(_retrieve)
                await asyncio.wait({following, drain}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    drained = True
                    break
                try:
                    request = following.result()
                except StopAsyncIteration:
                    break
                task = asyncio.create_task(answer(request))
                answering.add(task)
                task.add_done_callback(answering.discard)
        finally:
            drain.cancel()
            if following is not None:
                following.cancel()  # cancelled while waiting (the call ended): the read must not outlive it
            handing = asyncio.ensure_future(self._hand_over(set(answering), touched))  # even when cancelled
            self._handing.add(handing)
            handing.add_done_callback(self._handing.discard)
            if answering:
                await asyncio.gather(*answering, return_exceptions=True)
            out.put_nowait(None)
        return drained

    async def _hand_over(self, answering: set[asyncio.Task], touched: set[tuple[str, str]]) -> None:
        """Once the stream's last answers are done (or cancelled), hand its devices over."""
        await asyncio.gather(*answering, return_exceptions=True)
        await self.scorer.hand_over(touched)

    # --- models and anomalies --------------------------------------------------------------------------------

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        snapshot, grant = self.models.snapshot, granted_fleets()
        entries = snapshot.entries()
        if grant is not None:  # its fleets' own models, and the default when one of them has none
            entries = [e for e in entries if (not e.is_default and e.fleet in grant)
                       or (e.is_default and any(f not in snapshot.fleets for f in grant))]
        return pb.ListModelsResponse(models=[model_info(e, self.scorer.drift.ratio(e.key)) for e in entries])

    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelInfo:
        if not allowed(request.fleet_id):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied_message(request.fleet_id))
        entry = self.models.resolve(request.fleet_id)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"fleet {quote(request.fleet_id)} has no model and "
                                                           f"there is no default model")
        return model_info(entry, self.scorer.drift.ratio(entry.key))

    async def WatchAnomalies(self, request: pb.WatchAnomaliesRequest, context):
        """Flagged items as they come; on drain the stream ends with UNAVAILABLE (reconnect elsewhere)."""
        grant = granted_fleets()  # with a fleet-scoped token, "" means the token's fleets
        if request.fleet_id and not allowed(request.fleet_id):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied_message(request.fleet_id))
        watcher = self.hub.subscribe(request.fleet_id)
        self.metrics.watchers.set(len(self.hub))
        drain = asyncio.ensure_future(self.draining.wait())
        following: asyncio.Future | None = None
        drained = False
        try:
            while True:
                following = asyncio.ensure_future(watcher.queue.get())
                await asyncio.wait({following, drain}, return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    drained = True
                    break
                anomaly = following.result()
                if grant is None or anomaly.fleet_id in grant:
                    yield anomaly
        finally:
            # Also reached when the client cancels mid-wait: no pending task may outlive the call.
            if following is not None:
                following.cancel()
            drain.cancel()
            self.hub.unsubscribe(watcher)
            self.metrics.watchers.set(len(self.hub))
            self.metrics.watcher_dropped.inc(watcher.dropped)
        if drained:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down: reconnect to watch on")
