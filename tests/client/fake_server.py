"""A small in-process AnomalyScorer for client tests and the generator benchmark.

It scores by a simple, known rule (|z| of a window's last reading against the readings before it), so the client's
detection figures are computed by its real code path against answers we can predict. It can answer instantly, take a
fixed service time per request (sequentially per stream, so a queue builds when traffic outruns it), drop one answer,
answer every item with an item error (as a server whose backend is down does), refuse every n-th request as an
overloaded server does (RESOURCE_EXHAUSTED with a retry hint), or demand a token. Run it standalone
with `python tests/client/fake_server.py` (prints its port).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np

from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc

INVALID_ARGUMENT = 3
RESOURCE_EXHAUSTED = 8
UNAVAILABLE = 14


@dataclass
class FakeBehaviour:
    """How the fake answers; mutable so a test can change it while the server runs."""

    window: int = 16
    features: tuple[str, ...] = ("value",)
    threshold: float = 6.0
    service_time_s: float = 0.0
    instant: bool = False  # answer every item OK with score 0, without reading the data (generator throughput)
    drop_request_number: int | None = None  # 1-based count of StreamScore requests whose answer is dropped
    item_error_code: int | None = None  # answer every item with an item error of this gRPC code
    refuse_every: int | None = None  # refuse every n-th request answered (all its items), as an overloaded server
    unavailable_answers: int = 0  # answer the first n requests with item-level UNAVAILABLE, as a server whose
    # backend is being replaced for longer than it holds calls
    retry_after_ms: int = 100  # the retry hint of those refusals
    answers: int = 0  # requests answered
    token: str | None = None
    watch_ends_after_s: float | None = None  # end WatchAnomalies with status OK after this long, as a draining server
    requests_seen: int = 0
    score_calls: int = 0  # unary Score calls answered (each waits service_time_s, concurrently)
    fleets: tuple[str, ...] = ("fleet-a", "fleet-b")
    has_default: bool = True  # without a default model, fleets not in `fleets` are NOT_FOUND
    watchers: list[asyncio.Queue] = field(default_factory=list)


def rule_score(window: np.ndarray) -> float:
    """Largest |z| over features of the last reading against the rest of the window."""
    history, last = window[:-1], window[-1]
    spread = history.std(axis=0) + 1e-3
    return float(np.max(np.abs(last - history.mean(axis=0)) / spread))


def _tensor(tensor: pb.Tensor) -> np.ndarray:
    if tensor.WhichOneof("data") == "packed":
        flat = np.frombuffer(tensor.packed, dtype="<f4")
    else:
        flat = np.asarray(tensor.values.values, dtype=np.float32)
    return flat.reshape(tuple(tensor.shape))


class FakeScorer(scoring_pb2_grpc.AnomalyScorerServicer):
    def __init__(self, behaviour: FakeBehaviour):
        self.b = behaviour
        self._instant_results: dict[int, bytes] = {}

    def _refused(self, context: grpc.aio.ServicerContext) -> bool:
        """True (with the status set) when a token is required and the call lacks it."""
        if self.b.token is None:
            return False
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") == f"Bearer {self.b.token}":
            return False
        context.set_code(grpc.StatusCode.UNAUTHENTICATED)
        context.set_details("missing or wrong bearer token")
        return True

    def _result(self, item: pb.Item, history: dict[str, deque]) -> pb.ItemResult:
        b = self.b
        common = {"device_id": item.device_id, "timestamp_ms": item.timestamp_ms, "model_name": "fake",
                  "model_version": "1", "threshold": b.threshold}
        if b.item_error_code is not None:
            error = pb.ItemError(code=b.item_error_code, message="scoring backend unavailable")
            return pb.ItemResult(status=pb.ITEM_STATUS_ERROR, error=error, **common)
        kind = item.WhichOneof("payload")
        data = _tensor(getattr(item, kind))
        if data.ndim != 2 or data.shape[1] != len(b.features) or (kind == "window" and data.shape[0] != b.window):
            error = pb.ItemError(code=INVALID_ARGUMENT, message=f"bad shape {list(data.shape)}")
            return pb.ItemResult(status=pb.ITEM_STATUS_ERROR, error=error, **common)
        if kind == "readings":
            held = history.setdefault(item.device_id, deque(maxlen=b.window))
            held.extend(data)
            if len(held) < b.window:
                return pb.ItemResult(status=pb.ITEM_STATUS_WARMING_UP, readings_held=len(held),
                                     readings_needed=b.window, **common)
            data = np.asarray(held)
        score = rule_score(data)
        return pb.ItemResult(status=pb.ITEM_STATUS_OK, score=score, rec_part=score / 2, pred_part=score / 2,
                             is_anomaly=score > b.threshold, **common)

    def _instant_answer(self, request: pb.ScoreRequest) -> pb.ScoreResponse:
        """Answer every item OK (score 0) from a cached, serialised result list: as little server work as possible."""
        count = len(request.items)
        cached = self._instant_results.get(count)
        if cached is None:
            ok = pb.ItemResult(status=pb.ITEM_STATUS_OK, model_name="fake", model_version="1")
            cached = self._instant_results[count] = pb.ScoreResponse(results=[ok] * count).SerializeToString()
        response = pb.ScoreResponse.FromString(cached)
        response.request_id, response.fleet_id = request.request_id, request.fleet_id
        return response

    def _answer(self, request: pb.ScoreRequest, history: dict[str, deque]) -> pb.ScoreResponse:
        self.b.answers += 1
        if self.b.refuse_every and self.b.answers % self.b.refuse_every == 0:
            error = pb.ItemError(code=RESOURCE_EXHAUSTED, message="overloaded", retry_after_ms=self.b.retry_after_ms)
            return pb.ScoreResponse(request_id=request.request_id, fleet_id=request.fleet_id, results=[
                pb.ItemResult(device_id=item.device_id, status=pb.ITEM_STATUS_ERROR, error=error)
                for item in request.items])
        if self.b.answers <= self.b.unavailable_answers:
            error = pb.ItemError(code=UNAVAILABLE, message="scoring backend failed, retry: being replaced")
            return pb.ScoreResponse(request_id=request.request_id, fleet_id=request.fleet_id, results=[
                pb.ItemResult(device_id=item.device_id, status=pb.ITEM_STATUS_ERROR, error=error)
                for item in request.items])
        if self.b.instant:
            return self._instant_answer(request)
        started = time.perf_counter()
        results = [self._result(item, history) for item in request.items]
        for result in results:
            if result.is_anomaly:
                anomaly = pb.Anomaly(fleet_id=request.fleet_id, request_id=request.request_id, result=result,
                                     flagged_at_ms=int(time.time() * 1000))
                for queue in self.b.watchers:
                    queue.put_nowait(anomaly)
        return pb.ScoreResponse(request_id=request.request_id, fleet_id=request.fleet_id, results=results,
                                server_time_us=int((time.perf_counter() - started) * 1e6))

    async def StreamScore(self, request_iterator, context):
        if self._refused(context):
            return
        history: dict[str, deque] = {}
        async for request in request_iterator:
            self.b.requests_seen += 1
            if self.b.service_time_s:
                await asyncio.sleep(self.b.service_time_s)
            if self.b.requests_seen == self.b.drop_request_number:
                continue
            yield self._answer(request, history)

    async def Score(self, request, context):
        if self._refused(context):
            return pb.ScoreResponse()
        if self.b.service_time_s:
            await asyncio.sleep(self.b.service_time_s)
        self.b.score_calls += 1
        return self._answer(request, {})

    def _info(self, fleet: str) -> pb.ModelInfo:
        return pb.ModelInfo(fleet_id=fleet, model_name="fake", model_version="1", window=self.b.window,
                            features=self.b.features, threshold=self.b.threshold, threshold_method="fixed",
                            is_default=fleet not in self.b.fleets)

    async def ListModels(self, request, context):
        if self._refused(context):
            return pb.ListModelsResponse()
        default = ("",) if self.b.has_default else ()
        return pb.ListModelsResponse(models=[self._info(f) for f in (*default, *self.b.fleets)])

    async def GetModel(self, request, context):
        if self._refused(context):
            return pb.ModelInfo()
        if request.fleet_id == "missing" or not (self.b.has_default or request.fleet_id in self.b.fleets):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model for fleet {request.fleet_id!r}")
        return self._info(request.fleet_id)

    async def WatchAnomalies(self, request, context):
        if self._refused(context):
            return
        if self.b.watch_ends_after_s is not None:
            await asyncio.sleep(self.b.watch_ends_after_s)
            return
        queue: asyncio.Queue = asyncio.Queue()
        self.b.watchers.append(queue)
        try:
            while True:
                anomaly = await queue.get()
                if not request.fleet_id or anomaly.fleet_id == request.fleet_id:
                    yield anomaly
        finally:
            self.b.watchers.remove(queue)


@asynccontextmanager
async def running_fake(behaviour: FakeBehaviour, credentials: grpc.ServerCredentials | None = None):
    """Serve the fake on 127.0.0.1 at an ephemeral port; yields `host:port` and stops the server on exit."""
    server = grpc.aio.server()
    scoring_pb2_grpc.add_AnomalyScorerServicer_to_server(FakeScorer(behaviour), server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


class ServerThread:
    """Runs an async context manager that serves and yields `host:port` in its own thread and event loop, so
    synchronous code (the CLI) can call the server; leaving the `with` block stops it."""

    def __init__(self, serving: Callable[[], AbstractAsyncContextManager[str]]):
        self._serving = serving
        self.target = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with self._serving() as target:
                self.target = target
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
        finally:  # tasks a server left behind (e.g. a cancelled watcher's read) end before the loop closes
            leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(60) or self._failure is not None:
            raise RuntimeError(f"server did not start: {self._failure!r}")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


class FakeServerThread(ServerThread):
    def __init__(self, behaviour: FakeBehaviour, credentials: grpc.ServerCredentials | None = None):
        super().__init__(lambda: running_fake(behaviour, credentials))
        self.behaviour = behaviour


async def _serve_forever(behaviour: FakeBehaviour) -> None:
    async with running_fake(behaviour) as target:
        print(target.rsplit(":", 1)[1], flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--features", type=int, default=1)
    parser.add_argument("--instant", action="store_true", help="answer every item OK without reading it")
    args = parser.parse_args()
    names = tuple(f"f{i}" for i in range(args.features))
    asyncio.run(_serve_forever(FakeBehaviour(window=args.window, features=names, instant=args.instant)))
