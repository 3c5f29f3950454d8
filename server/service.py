"""The `aelstm.v1.AnomalyScorer` gRPC service: validation, per-device windows, coalesced scoring, fan-out.

Every request gets exactly one response and every item exactly one result, in order; a bad item gets an item
error and never breaks its request or its stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc
import numpy as np

from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

from .alarms import Judgement
from .anomalies import AnomalyHub
from .coalescer import Coalescer
from .devices import DeviceWindows
from .items import (
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    ItemProblem,
    check_features,
    check_window,
    decode_tensor,
    error_result,
    model_info,
    quote,
    score_result,
    warming_result,
)
from .metrics import Metrics
from .models import ModelBook
from .registry import ModelEntry
from .security import PERMISSION_DENIED, allowed, denied_message, granted_fleets

log = logging.getLogger(__name__)

_STATUS_NAMES = {pb.ITEM_STATUS_OK: "ok", pb.ITEM_STATUS_WARMING_UP: "warming_up"}
_CODE_NAMES = {code.value[0]: code.name.lower() for code in grpc.StatusCode}


def _retrieve(future: asyncio.Future) -> None:
    """Done callback of a read nobody may await any more (the call was cancelled): its outcome, often
    StopAsyncIteration, is retrieved so that asyncio does not log "Task exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


def _brief(exc: Exception, limit: int = 300) -> str:
    """An exception for an item error: cut to `limit` characters (its text may carry input of any size)."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class Limits:
    """Per-request limits; anything above gets RESOURCE_EXHAUSTED item errors saying what to split."""

    max_items: int = 4096
    max_readings_per_item: int = 4096
    max_in_flight_per_stream: int = 256
    max_id_bytes: int = 256  # fleet_id, device_id, request_id: longer ones are refused, never echoed
    max_response_bytes: int = 16 * 1024 * 1024  # the send limit: a bigger response degrades to compact errors


OTHER_FLEETS = "other"  # the metrics label of every fleet without a model of its own (labels must stay bounded)


class AnomalyScorerService(pb_grpc.AnomalyScorerServicer):
    def __init__(self, models: ModelBook, coalescer: Coalescer, devices: DeviceWindows, hub: AnomalyHub,
                 metrics: Metrics, limits: Limits = Limits()) -> None:
        self.models = models
        self.coalescer = coalescer
        self.devices = devices
        self.hub = hub
        self.metrics = metrics
        self.limits = limits
        self.draining = asyncio.Event()

    # --- scoring ---------------------------------------------------------------------------------------------

    async def answer(self, request: pb.ScoreRequest, rpc: str) -> pb.ScoreResponse:
        """The one response to `request`; never raises."""
        started = time.perf_counter()
        too_long = self._long_ids(request)
        try:
            if too_long:
                results = [error_result(item, INVALID_ARGUMENT, too_long) for item in request.items]
            else:
                results = await self._score_items(request)
        except Exception as exc:
            log.exception("request %s failed", quote(request.request_id))
            results = [error_result(item, INTERNAL, f"internal error: {_brief(exc)}") for item in request.items]
        elapsed = time.perf_counter() - started
        fleet = self._fleet_label(request.fleet_id)
        self.metrics.requests.labels(fleet, rpc).inc()
        self.metrics.request_latency.labels(rpc).observe(elapsed)
        for result in results:
            status = _STATUS_NAMES.get(result.status) or _CODE_NAMES.get(result.error.code, "error")
            self.metrics.items.labels(fleet, status).inc()
            if self._too_long(result.device_id):
                result.device_id = ""  # refused above; never echoed
        response = pb.ScoreResponse(request_id=self._echo(request.request_id), fleet_id=self._echo(request.fleet_id),
                                    results=results, server_time_us=int(elapsed * 1e6))
        return self._fit(response)

    def _too_long(self, text: str) -> bool:
        return len(text) > self.limits.max_id_bytes // 4 and len(text.encode()) > self.limits.max_id_bytes

    def _echo(self, text: str) -> str:
        """An id as the response echoes it: "" when it is over the limit (it was refused)."""
        return "" if self._too_long(text) else text

    def _long_ids(self, request: pb.ScoreRequest) -> str | None:
        """Why the request's own ids are refused (every item gets INVALID_ARGUMENT), or None."""
        for name in ("request_id", "fleet_id"):
            value = getattr(request, name)
            if self._too_long(value):
                return (f"{name} is {len(value.encode())} bytes, the limit is {self.limits.max_id_bytes} "
                        f"(UTF-8): the response echoes it as \"\"")
        return None

    def _fleet_label(self, fleet: str) -> str:
        """Only fleets with a model of their own get a label of their own (each label is memory kept forever)."""
        entry = self.models.resolve(fleet)
        return fleet if entry is not None and not entry.is_default and entry.fleet == fleet else OTHER_FLEETS

    def _fit(self, response: pb.ScoreResponse) -> pb.ScoreResponse:
        """`response`, or compact item errors in its place when it would exceed the send limit (which would end
        the whole stream with RESOURCE_EXHAUSTED)."""
        limit = self.limits.max_response_bytes
        size = response.ByteSize()
        if size <= limit:
            return response
        log.warning("response to %s would be %d bytes, over the %d-byte send limit: sent as compact errors",
                    quote(response.request_id), size, limit)
        message = f"the response would be {size} bytes, over the {limit}-byte limit: send fewer items per request"
        compact = pb.ScoreResponse(request_id=response.request_id, fleet_id=response.fleet_id,
                                   server_time_us=response.server_time_us)
        for result in response.results:  # in request order, without the device ids (most of the size)
            compact.results.add(status=pb.ITEM_STATUS_ERROR,
                                timestamp_ms=result.timestamp_ms,
                                error=pb.ItemError(code=RESOURCE_EXHAUSTED, message=message))
        if compact.ByteSize() > limit:
            for result in compact.results:
                result.error.message = "response too large: send fewer items per request"
        return compact

    async def _score_items(self, request: pb.ScoreRequest) -> list[pb.ItemResult]:
        started = time.perf_counter()
        items = request.items
        if len(items) > self.limits.max_items:
            message = f"request has {len(items)} items, the limit is {self.limits.max_items}: split it"
            return [error_result(item, RESOURCE_EXHAUSTED, message) for item in items]
        if not allowed(request.fleet_id):
            return [error_result(item, PERMISSION_DENIED, denied_message(request.fleet_id)) for item in items]
        entry = self.models.resolve(request.fleet_id)
        if entry is None:
            message = (f"fleet {quote(request.fleet_id)} has no model and no default model is configured: publish "
                       f"one with `aelstm publish BUNDLE --fleet FLEET`")
            return [error_result(item, NOT_FOUND, message) for item in items]
        results: list[pb.ItemResult | None] = [None] * len(items)
        windows, positions, judgements = [], [], {}
        try:
            for i, item in enumerate(items):
                try:
                    window = self._window_of(request.fleet_id, entry, item, judgements, i)
                except ItemProblem as problem:
                    results[i] = error_result(item, problem.code, problem.message, entry)
                    continue
                if isinstance(window, int):
                    results[i] = warming_result(item, window, entry)
                else:
                    windows.append(window)
                    positions.append(i)
            if windows:
                await self._score_windows(request, entry, windows, positions, judgements, results, started)
        finally:
            for judgement in judgements.values():  # unjudged (failed, refused, cancelled): let the device go on
                judgement.release()
        return results

    async def _score_windows(self, request: pb.ScoreRequest, entry: ModelEntry, windows: list[np.ndarray],
                             positions: list[int], judgements: dict[int, Judgement],
                             results: list[pb.ItemResult | None], started: float) -> None:
        """Score the full windows in one coalesced call and fill in their results (a device's streaming
        threshold judges its scores in reading order)."""
        items = request.items
        stages = self.metrics.stage_seconds
        stages.labels("prepare").observe(time.perf_counter() - started)
        try:
            scores = await self.coalescer.score(entry.key, np.stack(windows))
        except Exception as exc:
            log.warning("scoring backend failed for %s: %s", entry.key, exc)
            for i in positions:
                results[i] = error_result(items[i], UNAVAILABLE, f"scoring backend failed, retry: {_brief(exc)}",
                                          entry)
        else:
            responding = time.perf_counter()
            finite = np.isfinite(scores.score) & np.isfinite(scores.rec_part) & np.isfinite(scores.pred_part)
            for k, i in enumerate(positions):
                if not finite[k]:
                    log.error("model %s gave a non-finite score: refused as INTERNAL", entry.key)
                    results[i] = error_result(items[i], INTERNAL, "the model gave a non-finite score for this "
                                              "window; it was not returned", entry)
                    continue
                score = float(scores.score[k])
                threshold, alarm = scores.threshold, score > scores.threshold
                if (judgement := judgements.get(i)) is not None:
                    threshold, alarm = await judgement.judge(score)
                results[i] = score_result(items[i], entry, score, float(scores.rec_part[k]),
                                          float(scores.pred_part[k]), threshold, alarm)
                if alarm:
                    self._flag(request, results[i])
            stages.labels("respond").observe(time.perf_counter() - responding)

    def _window_of(self, fleet: str, entry: ModelEntry, item: pb.Item, judgements: dict[int, Judgement],
                   position: int) -> np.ndarray | int:
        """The item's full window, or how many readings its device holds while it warms up. A full window of
        readings under a streaming threshold also takes its place in the device's judging order."""
        if not item.device_id:
            raise ItemProblem(INVALID_ARGUMENT, "item has no device_id")
        if self._too_long(item.device_id):
            raise ItemProblem(INVALID_ARGUMENT, f"device_id is {len(item.device_id.encode())} bytes, the limit is "
                                                f"{self.limits.max_id_bytes} (UTF-8)")
        kind = item.WhichOneof("payload")
        if kind == "window":
            return check_window(decode_tensor(item.window, "window"), entry)
        if kind == "readings":
            readings = decode_tensor(item.readings, "readings")
            if len(readings) > self.limits.max_readings_per_item:
                raise ItemProblem(RESOURCE_EXHAUSTED, f"item has {len(readings)} readings, the limit is "
                                                      f"{self.limits.max_readings_per_item}: send them in parts")
            check_features(readings, entry, "readings")
            window, held = self.devices.append(fleet, item.device_id, readings, entry.bundle.window,
                                                item.timestamp_ms)
            self.metrics.devices.set(len(self.devices))
            if window is None:
                return held
            window = check_window(window, entry)
            if (streaming := entry.bundle.streaming_threshold) is not None:
                alarm, fresh = self.devices.alarm_of(fleet, item.device_id, entry.key, streaming)
                judgements[position] = alarm.reserve(fresh)
            return window
        raise ItemProblem(INVALID_ARGUMENT, "item carries neither `window` nor `readings`")

    def _flag(self, request: pb.ScoreRequest, result: pb.ItemResult) -> None:
        self.metrics.anomalies.labels(self._fleet_label(request.fleet_id)).inc()
        self.hub.publish(pb.Anomaly(fleet_id=request.fleet_id, request_id=request.request_id, result=result,
                                    flagged_at_ms=int(time.time() * 1000)))

    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        return await self.answer(request, "Score")

    async def StreamScore(self, request_iterator, context: grpc.aio.ServicerContext):
        """Answers requests concurrently as they arrive (up to `max_in_flight_per_stream`, then reading pauses).

        A request's slot is freed only once its response has been handed to gRPC (the yield returned), so a
        client that stops reading stops the server reading its requests: memory stays bounded.
        On drain it stops reading, answers everything received, and ends the stream with UNAVAILABLE.
        """
        out: asyncio.Queue[pb.ScoreResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.limits.max_in_flight_per_stream)
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

        async def answer(request: pb.ScoreRequest) -> None:
            out.put_nowait(await self.answer(request, "StreamScore"))  # answer() never raises

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
            if answering:
                await asyncio.gather(*answering, return_exceptions=True)
            out.put_nowait(None)
        return drained

    # --- models and anomalies --------------------------------------------------------------------------------

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        snapshot, grant = self.models.snapshot, granted_fleets()
        entries = snapshot.entries()
        if grant is not None:  # its fleets' own models, and the default when one of them has none
            entries = [e for e in entries if (not e.is_default and e.fleet in grant)
                       or (e.is_default and any(f not in snapshot.fleets for f in grant))]
        return pb.ListModelsResponse(models=[model_info(e) for e in entries])

    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelInfo:
        if not allowed(request.fleet_id):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied_message(request.fleet_id))
        entry = self.models.resolve(request.fleet_id)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"fleet {quote(request.fleet_id)} has no model and "
                                                           f"there is no default model")
        return model_info(entry)

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
