"""The peer: the same model served the way Ray Serve documents it, behind Ray Serve's own gRPC proxy, with no ingress
of ours in front.

Ray Serve's proxy actor receives `aelstm.v1.AnomalyScorer` calls and hands each one to a `PeerScorer` replica (one
application, so no `application` metadata is needed). The replica decodes the items with the server's own helpers
(`aelstm.server.items`), scores them with the same `BundleScorer`, and answers a `ScoreResponse`; `@serve.batch`
merges the windows of calls queued at the replica into one onnxruntime run, as our Ray backend's replicas do. It
implements `Score` (what the benchmark measures), `GetModel` and `ListModels` (what `aelstm-client loadtest` asks
first); its replicas keep no per-device state, so it scores whole windows only. Ray runs with the settings `aelstm
serve` gives its embedded Ray (2 CPUs, one replica of 1 CPU, Serve's throughput-optimised mode, no direct ingress).

    python -m benchmarks.performance.peer --bundle BUNDLE --port 50090    # prints "serving on 127.0.0.1:50090"

It runs until SIGTERM or Ctrl-C, then shuts Serve and Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
import time

import grpc
import numpy as np

from aelstm.core.bundle import load_bundle
from aelstm.core.runtime import BundleScorer, Scores
from aelstm.server.items import (
    INVALID_ARGUMENT,
    ItemProblem,
    check_window,
    decode_tensor,
    error_result,
    model_info,
    score_result,
)
from aelstm.server.registry import DEFAULT_FLEET, ModelEntry
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

SERVICER = "aelstm.v1.scoring_pb2_grpc.add_AnomalyScorerServicer_to_server"
APP_NAME = "aelstm-peer"


def peer_deployment(bundle_dir: str, max_batch: int, batch_wait_s: float, device: str):
    """The PeerScorer deployment, sized like the Scorer of `aelstm serve --backend ray`."""
    from ray import serve

    @serve.deployment(name="PeerScorer", max_ongoing_requests=max(4 * max_batch, 64),
                      ray_actor_options={"num_cpus": 1})
    class PeerScorer:
        def __init__(self) -> None:
            bundle = load_bundle(bundle_dir)
            self.entry = ModelEntry(DEFAULT_FLEET, bundle.version, bundle)
            self.scorer = BundleScorer(bundle, device, 1)

        async def GetModel(self, request: pb.GetModelRequest) -> pb.ModelInfo:
            return model_info(self.entry)

        async def ListModels(self, request: pb.ListModelsRequest) -> pb.ListModelsResponse:
            return pb.ListModelsResponse(models=[model_info(self.entry)])

        async def Score(self, request: pb.ScoreRequest) -> pb.ScoreResponse:
            started = time.perf_counter()
            items = request.items
            results: list[pb.ItemResult | None] = [None] * len(items)
            windows, positions = [], []
            for i, item in enumerate(items):
                try:
                    if item.WhichOneof("payload") != "window":
                        raise ItemProblem(INVALID_ARGUMENT, "this server scores whole windows only")
                    windows.append(check_window(decode_tensor(item.window, "window"), self.entry))
                    positions.append(i)
                except ItemProblem as problem:
                    results[i] = error_result(item, problem.code, problem.message, self.entry)
            if windows:
                scores = await self.score_batch(np.stack(windows))
                for k, i in enumerate(positions):  # whole windows: judged by the fitted policy alone, as ours are
                    rec, pred = float(scores.rec_part[k]), float(scores.pred_part[k])
                    results[i] = score_result(items[i], self.entry, float(scores.score[k]), rec, pred,
                                              self.entry.bundle.judge_alone((rec, pred)))
            return pb.ScoreResponse(request_id=request.request_id, fleet_id=request.fleet_id, results=results,
                                    server_time_us=int((time.perf_counter() - started) * 1e6))

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=batch_wait_s,
                     batch_size_fn=lambda calls: sum(len(windows) for windows in calls))
        async def score_batch(self, calls: list[np.ndarray]) -> list[Scores]:
            scores = await asyncio.to_thread(self.scorer.score, np.concatenate(calls))
            bounds = np.cumsum([len(windows) for windows in calls])[:-1]
            parts = zip(*(np.split(a, bounds) for a in (scores.score, scores.rec_part, scores.pred_part)),
                        strict=True)
            return [Scores(score, rec, pred) for score, rec, pred in parts]

    return PeerScorer


def wait_until_answering(port: int, timeout_s: float) -> None:
    """The proxy learns its routes a moment after `serve.run` returns: wait for a real GetModel answer."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AnomalyScorerStub(channel)
        while True:
            try:
                stub.GetModel(pb.GetModelRequest(fleet_id="probe"), timeout=5)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="model bundle directory")
    parser.add_argument("--port", type=int, required=True, help="gRPC port of Serve's proxy")
    parser.add_argument("--http-port", type=int, required=True, help="HTTP port of Serve's proxy (unused, local)")
    parser.add_argument("--max-batch", type=int, default=256, help="most windows per onnxruntime run")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0,
                        help="@serve.batch wait to fill a run (0: merge only calls already queued)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0)
    parser.add_argument("--ray-cpus", type=int, default=2)
    args = parser.parse_args()
    # The same Serve settings `aelstm serve --backend ray` runs with (see aelstm.server.ray_backend).
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_SERVE_THROUGHPUT_OPTIMIZED="1",
                      RAY_SERVE_ENABLE_DIRECT_INGRESS="0")
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import LoggingConfig

    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)  # a Ray of its own, even if another one runs on this machine
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs a SIGTERM handler of its own
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.http_port},
                    grpc_options=gRPCOptions(port=args.port, grpc_servicer_functions=[SERVICER]),
                    logging_config=LoggingConfig(log_level="WARNING"))
        deployment = peer_deployment(os.path.abspath(args.bundle), args.max_batch, args.batch_wait_ms / 1000,
                                     args.device)
        if args.gpus_per_replica:
            deployment = deployment.options(ray_actor_options={"num_cpus": 1, "num_gpus": args.gpus_per_replica})
        serve.run(deployment.bind(), name=APP_NAME, route_prefix="/")
        wait_until_answering(args.port, timeout_s=120)
        print(f"serving on 127.0.0.1:{args.port}", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
