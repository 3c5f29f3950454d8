"""Score one `ScoreRequest` into its `ScoreResponse`, without any transport. The gRPC servicer only streams
requests through it. Each request goes through the same stages: decode and validate each item once → ask the
device store what the item needs (`devices.admit`) → score the full windows in one coalesced call (replicas return
scores only) → the alarm policy decides, per device in reading order → encode the results.

Every request gets exactly one response and every item exactly one result, in order; a bad item gets an item
error and never breaks its request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass

import grpc
import numpy as np

from aelstm.v1 import scoring_pb2 as pb

from .admission import Overloaded, refuse_items
from .anomalies import AnomalyHub
from .coalescer import Coalescer
from .devices import DeviceStore, Outcome, Ready, Remembered, Retry, Ticket, Warming
from .drift import DriftMeter
from .handoff import Handoff
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
    packed_windows,
    quote,
    score_result,
    warming_result,
)
from .logs import Throttled
from .metrics import Metrics
from .models import ModelBook
from .recorder import Recorder
from .registry import ModelEntry
from .security import PERMISSION_DENIED, allowed, denied_message

log = logging.getLogger(__name__)

_STATUS_NAMES = {pb.ITEM_STATUS_OK: "ok", pb.ITEM_STATUS_WARMING_UP: "warming_up"}
_CODE_NAMES = {code.value[0]: code.name.lower() for code in grpc.StatusCode}


def _brief(exc: Exception, limit: int = 300) -> str:
    """An exception for an item error: cut to `limit` characters (its text may carry input of any size)."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "…"


def _judged_normal(result: pb.ItemResult) -> bool:
    """Scored, and none of the item's windows raised an alarm: its readings may teach a retrained model."""
    return result.status == pb.ITEM_STATUS_OK and not result.is_anomaly and not result.alarmed_windows


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

    def __init__(self, models: ModelBook, coalescer: Coalescer, devices: DeviceStore, hub: AnomalyHub,
                 metrics: Metrics, limits: Limits = Limits(), handoff: Handoff | None = None,
                 recorder: Recorder | None = None) -> None:
        self.models = models
        self.coalescer = coalescer
        self.devices = devices
        self.hub = hub
        self.metrics = metrics
        self.limits = limits
        self.handoff = handoff
        self.recorder = recorder
        self.drift = DriftMeter()
        self._backend_warnings = Throttled(log)  # a backend outage fails every call: one line per 10 s
        self._gates: dict[tuple[str, str], list] = {}  # device → [FIFO lock, requests at it]: see `_take_over`

    async def score_request(self, request: pb.ScoreRequest, rpc: str = "Score",
                            touched: set[tuple[str, str]] | None = None) -> pb.ScoreResponse:
        """The one response to `request`; never raises. `rpc` labels the metrics; `touched` (a stream's) collects
        the devices whose readings it held, to hand them over when the stream ends."""
        started = time.perf_counter()
        too_long = self._long_ids(request)
        try:
            if too_long:
                results = [error_result(item, INVALID_ARGUMENT, too_long) for item in request.items]
            else:
                results = await self._score_items(request, touched)
        except Exception as exc:
            log.exception("request %s failed", quote(request.request_id))
            results = [error_result(item, INTERNAL, f"internal error: {_brief(exc)}") for item in request.items]
        elapsed = time.perf_counter() - started
        fleet = self._fleet_label(request.fleet_id)
        self.metrics.requests.labels(fleet, rpc).inc()
        self.metrics.request_latency.labels(rpc).observe(elapsed)
        statuses = Counter(_STATUS_NAMES.get(result.status) or _CODE_NAMES.get(result.error.code, "error")
                           for result in results)
        for status, count in statuses.items():  # one update per status, not per item: a label lookup costs
            self.metrics.items.labels(fleet, status).inc(count)
        for result in results:
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

    async def hand_over(self, touched: set[tuple[str, str]]) -> None:
        """A stream ended: leave the state of the devices it sent readings for to whichever ingress sees them next."""
        if self.handoff is None or not touched:
            return
        states = {key: state for key in touched if (state := self.devices.export(*key)) is not None}
        await self.handoff.put(states)
        for key in states:
            self.devices.forget(*key)
            self.metrics.device_events.labels("handed_over").inc()

    async def _take_over(self, fleet: str, entry: ModelEntry, items) -> list[tuple[str, str]]:
        """Adopt the state another ingress left for the devices of these readings that this one does not hold;
        returns the device gates entered, to leave once the request's readings are admitted (`_leave`).

        Readings must be admitted in the order their requests arrived, yet taking a device over waits on the
        handoff store. So a device being taken over has a gate (a FIFO lock) until every request that queued at it
        has admitted its readings; requests for a known device without a gate go straight through."""
        gated = sorted({(fleet, item.device_id) for item in items if item.WhichOneof("payload") == "readings"
                        and self._id_problem(item.device_id) is None
                        and ((fleet, item.device_id) in self._gates or not self.devices.knows(fleet, item.device_id))})
        for key in gated:
            self._gates.setdefault(key, [asyncio.Lock(), 0])[1] += 1
        held = []
        try:
            for key in gated:  # in one order for every request: no two requests wait on each other
                await self._gates[key][0].acquire()
                held.append(key)
            unknown = [key for key in gated if not self.devices.knows(*key)]
            if unknown:
                for key, state in (await self.handoff.take(unknown)).items():
                    self.devices.adopt(*key, state, entry.key, entry.bundle.policy)
        except BaseException:
            self._leave(gated, held)
            raise
        return gated

    def _leave(self, gated: list[tuple[str, str]], held: list[tuple[str, str]] | None = None) -> None:
        for key in gated:
            gate = self._gates[key]
            if held is None or key in held:
                gate[0].release()
            gate[1] -= 1
            if not gate[1]:
                del self._gates[key]

    def _admit_all(self, request: pb.ScoreRequest, entry: ModelEntry, results: list[pb.ItemResult | None],
                   fresh: dict[int, tuple[np.ndarray, Ticket | None]], remembered: dict[int, Remembered],
                   touched: set[tuple[str, str]] | None) -> None:
        """Decode, check and admit every item, in order and without waiting: `fresh` gets the windows (and ticket)
        to score by item position, `remembered` the earlier verdicts of resends, `results` warming-up items and
        item errors."""
        plain = self._plain_windows(request.items, entry)
        if plain is not None:  # the usual request: whole windows, every one scorable as sent, checked as one array
            fresh.update((i, (plain[i : i + 1], None)) for i in range(len(plain)))
            return
        for i, item in enumerate(request.items):
            try:
                admitted = self._admit(request.fleet_id, entry, item)
            except ItemProblem as problem:
                results[i] = error_result(item, problem.code, problem.message, entry)
                continue
            if touched is not None and not isinstance(admitted, np.ndarray):
                touched.add((request.fleet_id, item.device_id))
            if isinstance(admitted, Warming):
                results[i] = warming_result(item, admitted.held, entry)
            elif isinstance(admitted, Remembered):
                remembered[i] = admitted
            elif isinstance(admitted, Ready):
                fresh[i] = (admitted.windows, admitted.ticket)
            else:
                fresh[i] = (admitted[None], None)

    async def _score_items(self, request: pb.ScoreRequest,
                           touched: set[tuple[str, str]] | None = None) -> list[pb.ItemResult]:
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
        try:  # refused on arrival, before decoding or touching a device: overload costs as little as it can
            self.coalescer.admit(entry.key, len(items))
        except Overloaded as exc:
            refuse_items(items, range(len(items)), results, entry, exc)
            return results
        fresh: dict[int, tuple[np.ndarray, Ticket | None]] = {}
        remembered: dict[int, Remembered] = {}
        retried: dict[int, tuple[np.ndarray, Ticket | None]] = {}
        gated = await self._take_over(request.fleet_id, entry, items) if self.handoff is not None else []
        try:
            try:
                self._admit_all(request, entry, results, fresh, remembered, touched)
            finally:
                self._leave(gated)
            if fresh:
                await self._score_windows(request, entry, fresh, results, started)
            for i, admitted in remembered.items():  # resends: what their readings got the first time
                outcome = await admitted.outcome  # after this request's own windows: it may be one of them
                if isinstance(outcome, Retry):
                    retried[i] = (outcome.windows, self.devices.retry(request.fleet_id, items[i].device_id,
                                                                     entry.key, entry.bundle.policy))
                else:
                    results[i] = self._remembered_result(items[i], entry, outcome)
            if retried:
                await self._score_windows(request, entry, retried, results, started)
        finally:
            for window, ticket in (*fresh.values(), *retried.values()):
                if ticket is not None:
                    ticket.fail(window)  # a no-op once judged; else (failed, cancelled) the device goes on
        return results

    async def _score_windows(self, request: pb.ScoreRequest, entry: ModelEntry,
                             windows: dict[int, tuple[np.ndarray, Ticket | None]],
                             results: list[pb.ItemResult | None], started: float) -> None:
        """Score full windows (item position → its windows `[k, window, features]`, its ticket) in one coalesced
        call and judge them with the alarm policy: a device's own state in reading order for `readings` items, the
        fitted policy alone for `window` items."""
        items = request.items
        stages = self.metrics.stage_seconds
        stages.labels("prepare").observe(time.perf_counter() - started)
        positions = list(windows)
        try:
            scores = await self.coalescer.score(entry.key, np.concatenate([windows[i][0] for i in positions]))
        except Overloaded as exc:
            refuse_items(items, positions, results, entry, exc)
            return
        except Exception as exc:
            self._backend_warnings.warning("scoring backend failed for %s: %s", entry.key, _brief(exc))
            for i in positions:
                results[i] = error_result(items[i], UNAVAILABLE, f"scoring backend failed, retry: {_brief(exc)}",
                                          entry)
            return
        responding = time.perf_counter()
        finite = np.isfinite(scores.score) & np.isfinite(scores.rec_part) & np.isfinite(scores.pred_part)
        all_finite = bool(finite.all())
        self._observe_drift(entry, scores.score if all_finite else scores.score[finite])
        # `window` items read their one score as Python floats: converted once per call, where there are any
        as_floats = (scores.score.tolist(), scores.rec_part.tolist(), scores.pred_part.tolist()) if any(
            ticket is None for _, ticket in windows.values()) else None
        end = 0
        for i in positions:
            part, ticket = windows[i]
            start, end = end, end + len(part)
            if not all_finite and not finite[start:end].all():
                log.error("model %s gave a non-finite score: refused as INTERNAL", entry.key)
                results[i] = error_result(items[i], INTERNAL, "the model gave a non-finite score for this "
                                          "window; it was not returned", entry)
                continue
            if ticket is not None:
                outcome = await ticket.judge(scores.score[start:end], scores.rec_part[start:end],
                                             scores.pred_part[start:end])
                results[i] = self._remembered_result(items[i], entry, outcome)
                if self.recorder is not None and entry.fleet == request.fleet_id and _judged_normal(results[i]):
                    self.recorder.offer(request.fleet_id, items[i].device_id, items[i].timestamp_ms, part[:, -1],
                                        entry.bundle.features)
            else:
                score, rec, pred = (values[start] for values in as_floats)
                results[i] = score_result(items[i], entry, score, rec, pred, entry.bundle.judge_alone((rec, pred)))
            if results[i].is_anomaly:
                self._flag(request, results[i])
        stages.labels("respond").observe(time.perf_counter() - responding)

    def _observe_drift(self, entry: ModelEntry, scores: np.ndarray) -> None:
        self.drift.observe(entry.key, scores, entry.bundle.manifest.get("validation", {}).get("score_p99"))
        ratio = self.drift.ratio(entry.key)
        if ratio is not None:
            self.metrics.drift.labels(entry.fleet).set(ratio)

    def _remembered_result(self, item: pb.Item, entry: ModelEntry, outcome: Outcome) -> pb.ItemResult:
        if outcome.verdict is None:
            return warming_result(item, outcome.held, entry)
        return score_result(item, entry, outcome.score, outcome.rec, outcome.pred, outcome.verdict, outcome.alarmed)

    def _plain_windows(self, items, entry: ModelEntry) -> np.ndarray | None:
        """Every item's window when all are plainly scorable windows under valid device ids (see `packed_windows`);
        None sends them through `_admit` one by one."""
        if all(self._id_problem(item.device_id) is None for item in items):
            return packed_windows(items, entry)
        return None

    def _id_problem(self, device_id: str) -> str | None:
        """Why `device_id` cannot name a device (None: it can)."""
        if not device_id:
            return "item has no device_id"
        if self._too_long(device_id):
            return f"device_id is {len(device_id.encode())} bytes, the limit is {self.limits.max_id_bytes} (UTF-8)"
        return None

    def _admit(self, fleet: str, entry: ModelEntry, item: pb.Item) -> np.ndarray | Warming | Ready | Remembered:
        """Decode and check one item once: a whole window to score, or what the device store says of readings."""
        if (problem := self._id_problem(item.device_id)) is not None:
            raise ItemProblem(INVALID_ARGUMENT, problem)
        kind = item.WhichOneof("payload")
        if kind == "window":
            return check_window(decode_tensor(item.window, "window"), entry)
        if kind == "readings":
            readings = decode_tensor(item.readings, "readings")
            if len(readings) > self.limits.max_readings_per_item:
                raise ItemProblem(RESOURCE_EXHAUSTED, f"item has {len(readings)} readings, the limit is "
                                                      f"{self.limits.max_readings_per_item}: send them in parts")
            check_features(readings, entry, "readings")
            bundle = entry.bundle
            admitted = self.devices.admit(fleet, item.device_id, readings, item.timestamp_ms, model_key=entry.key,
                                          window=bundle.window, policy=bundle.policy,
                                          period_ms=bundle.sampling_period_ms)
            self.metrics.devices.set(len(self.devices))
            if isinstance(admitted, Ready):
                try:
                    check_fillable(admitted.windows, entry)
                except ItemProblem:
                    admitted.ticket.fail(admitted.windows)
                    raise
            return admitted
        raise ItemProblem(INVALID_ARGUMENT, "item carries neither `window` nor `readings`")

    def _flag(self, request: pb.ScoreRequest, result: pb.ItemResult) -> None:
        self.metrics.anomalies.labels(self._fleet_label(request.fleet_id)).inc()
        self.hub.publish(pb.Anomaly(fleet_id=request.fleet_id, request_id=request.request_id, result=result,
                                    flagged_at_ms=int(time.time() * 1000)))
