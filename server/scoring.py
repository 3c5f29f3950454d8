"""Score one `ScoreRequest` into its `ScoreResponse`, without any transport: validation, per-device windows and
streaming thresholds, coalesced scoring and result building. The gRPC servicer only streams requests through it.

Every request gets exactly one response and every item exactly one result, in order; a bad item gets an item
error and never breaks its request.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
import numpy as np

from aelstm.v1 import scoring_pb2 as pb

from .admission import Overloaded, refuse_items
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
    check_fillable,
    check_window,
    decode_tensor,
    error_result,
    quote,
    score_result,
    warming_result,
)
from .metrics import Metrics
from .models import ModelBook
from .registry import ModelEntry
from .security import PERMISSION_DENIED, allowed, denied_message

log = logging.getLogger(__name__)

_STATUS_NAMES = {pb.ITEM_STATUS_OK: "ok", pb.ITEM_STATUS_WARMING_UP: "warming_up"}
_CODE_NAMES = {code.value[0]: code.name.lower() for code in grpc.StatusCode}


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


class RequestScorer:
    """`score_request(request) -> response`: the one scoring path of every RPC that scores."""

    def __init__(self, models: ModelBook, coalescer: Coalescer, devices: DeviceWindows, hub: AnomalyHub,
                 metrics: Metrics, limits: Limits = Limits()) -> None:
        self.models = models
        self.coalescer = coalescer
        self.devices = devices
        self.hub = hub
        self.metrics = metrics
        self.limits = limits

    async def score_request(self, request: pb.ScoreRequest, rpc: str = "Score") -> pb.ScoreResponse:
        """The one response to `request`; never raises. `rpc` labels the metrics."""
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
        except Overloaded as exc:
            refuse_items(items, positions, results, entry, exc)
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
            window = check_fillable(window, entry)
            if (streaming := entry.bundle.streaming_threshold) is not None:
                alarm, fresh = self.devices.alarm_of(fleet, item.device_id, entry.key, streaming)
                judgements[position] = alarm.reserve(fresh)
            return window
        raise ItemProblem(INVALID_ARGUMENT, "item carries neither `window` nor `readings`")

    def _flag(self, request: pb.ScoreRequest, result: pb.ItemResult) -> None:
        self.metrics.anomalies.labels(self._fleet_label(request.fleet_id)).inc()
        self.hub.publish(pb.Anomaly(fleet_id=request.fleet_id, request_id=request.request_id, result=result,
                                    flagged_at_ms=int(time.time() * 1000)))
