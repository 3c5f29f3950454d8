"""Scale-out on a real Ray cluster on this machine (a head and a worker node that score, and a training node with
no CPUs, `ray.cluster_utils.Cluster`),
run by `test_cluster.py` in a process of its own (Ray keeps per-process state that a later embedded Ray in the same
process would trip over):

- `aelstm train-fleets --ray-address --fit-resource` fits two fleets at once on the training node alone, and stops
  at once when no node offers the resource;
- `aelstm deploy` places Scorer replicas on both scoring nodes; bundles reach them through the model store (by sha256);
- two ingresses take traffic: one in this process, one an `aelstm serve --ray-address` subprocess; stopping the
  second leaves the first serving (it never deletes what others use);
- the worker node is removed under load: every request is still answered, and the longest gap is reported;
- the application is deleted: health says NOT_SERVING; it is deployed again: health recovers and scoring works.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aelstm.core.bundle import load_bundle
from aelstm.core.preprocess import sliding_windows
from aelstm.core.runtime import BundleScorer
from aelstm.server.app import ScoringServer
from aelstm.server.config import ScorerSettings, ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@contextlib.contextmanager
def scoring_and_training_nodes():
    """Head and worker node, one CPU each (so two single-CPU replicas must land on different nodes), and a training
    node that offers no CPUs but two units of the `training` resource that places fits (two one-CPU fits at once)."""
    import ray
    from ray.cluster_utils import Cluster

    from aelstm.server.ray_backend import configure_ray_environment

    configure_ray_environment()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1)
    trainer = cluster.add_node(num_cpus=0, resources={TRAINING_RESOURCE: 2})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, worker, trainer
    finally:
        ray.shutdown()  # the cluster's processes, Serve's included, end with it
        cluster.shutdown()


class Trained:
    """The bundle and the series it was trained on (what the scenario needs of the test's fixture)."""

    def __init__(self, path: Path, csv: Path) -> None:
        from aelstm.core.data import load_nab

        self.path = path
        self.series = load_nab(csv)

# Bursts and node loss here test routing and recovery, not admission (test_overload.py does): nothing is refused.
NO_REFUSAL_MS = 60_000.0
TRAINING_RESOURCE = "training"  # offered by the training node only: fits are placed by it


def requests(ec2_bundle, count: int, prefix: str) -> list[pb.ScoreRequest]:
    windows = sliding_windows(ec2_bundle.series.values.astype(np.float32), 16)
    return [pb.ScoreRequest(request_id=f"{prefix}-{i}", fleet_id="ec2", items=[
        pb.Item(device_id=f"d{i % 7}", window=pb.Tensor(shape=[16, 1], packed=windows[i % len(windows)].tobytes()))])
        for i in range(count)]


async def health_of(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        return reply.status


async def wait_for_health(address: str, wanted: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := await health_of(address)) != wanted:
        assert time.monotonic() < deadline, f"health stayed {status}, wanted {wanted}"
        await asyncio.sleep(0.2)


async def stream_answers(address: str, batch: list[pb.ScoreRequest], pause_s: float = 0.0) -> dict:
    """Send `batch` on one stream; returns request id -> (response, time answered)."""
    async def send():
        for request in batch:
            yield request
            if pause_s:
                await asyncio.sleep(pause_s)

    answers = {}
    async with grpc.aio.insecure_channel(address) as channel:
        async for response in pb_grpc.AnomalyScorerStub(channel).StreamScore(send()):
            answers[response.request_id] = (response, time.monotonic())
    return answers


def train_fleets_on(address: str, tmp_path: Path, resource: str) -> subprocess.CompletedProcess:
    """`aelstm train-fleets --ray-address --fit-resource` with two small fleets (one CPU each)."""
    data = tmp_path / "fleets"
    data.mkdir(exist_ok=True)
    t = np.arange(600)
    for name, period in (("pumps", 12), ("fans", 30)):
        rows = "\n".join(f"{np.sin(2 * np.pi * i / period):.5f}" for i in t)
        (data / f"{name}.csv").write_text("v\n" + rows + "\n")
    command = [sys.executable, "-m", "aelstm.cli", "train-fleets", str(data),
               "--registry", str(tmp_path / "fleet-registry"), "--ray-address", address, "--fit-resource", resource,
               "--summary", str(tmp_path / "fleets.json"), "--quiet", "--window", "16", "--hidden", "16",
               "--latent", "4", "--epochs", "3"]
    return subprocess.run(command, capture_output=True, text=True, timeout=240)


def start_second_ingress(registry, address: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "aelstm.cli", "serve", "--port", "0",
               "--metrics-port", "0", "--registry", str(registry), "--ray-address", address, "--poll-s", "0.5",
               "--scoring-budget-ms", str(NO_REFUSAL_MS)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"serving on (\S+) .*health SERVING", line)
    if match is None:
        process.kill()
        raise AssertionError(f"second ingress did not start: {line!r} {process.communicate(timeout=30)}")
    return process, match.group(1)


async def scenario(cluster, worker, trainer, tmp_path: Path, ec2_bundle) -> dict:
    """Every step asserts; returns the figures worth reporting."""
    from ray import serve

    from aelstm.server.ray_backend import deploy, replica_placement

    registry = tmp_path / "registry"
    # Fits go only to the node offering the resource they are placed by ...
    done = train_fleets_on(cluster.address, tmp_path, TRAINING_RESOURCE)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((tmp_path / "fleets.json").read_text())
    assert all(o["status"] == "published" for o in trained), trained
    assert {o["node"] for o in trained} == {trainer.node_id}, (trainer.node_id, trained)
    # ... and a resource no node offers stops the job at once instead of leaving its fits pending forever.
    done = train_fleets_on(cluster.address, tmp_path, "nowhere")
    assert done.returncode == 1 and "no node of this Ray cluster has the 1 'nowhere' unit(s)" in done.stderr, \
        done.stderr[-3000:]
    publish(ec2_bundle.path, registry, "ec2")
    settings = ScorerSettings(replicas=2, cpus_per_replica=1.0)
    await asyncio.to_thread(deploy, settings)
    placement = await replica_placement()
    assert len(placement) == 2 and len(set(placement.values())) == 2, placement  # one replica per scoring node
    assert trainer.node_id not in placement.values(), placement  # none on the training node, which has no CPUs

    first = ScoringServer(ServeConfig(port=0, registry=str(registry), metrics_port=0, poll_s=0.5,
                                      ray_address=cluster.address, replicas=2, drain_grace_s=5.0,
                                      scoring_budget_ms=NO_REFUSAL_MS))
    await first.start()
    second, second_address = start_second_ingress(registry, cluster.address)
    try:
        assert await health_of(first.address) == SERVING
        assert first.metrics.registry.get_sample_value("aelstm_backend_replicas") == 2
        both = await asyncio.gather(stream_answers(first.address, requests(ec2_bundle, 40, "a")),
                                    stream_answers(second_address, requests(ec2_bundle, 40, "b")))
        for answers in both:
            assert len(answers) == 40
            assert all(r.results[0].status == pb.ITEM_STATUS_OK for r, _ in answers.values())

        second.send_signal(signal.SIGTERM)  # an ingress leaving must not take the application with it
        _, stderr = second.communicate(timeout=60)
        assert second.returncode == 0, stderr
        await asyncio.sleep(1.5)  # several health checks
        assert await health_of(first.address) == SERVING
        answers = await stream_answers(first.address, requests(ec2_bundle, 20, "after"))
        assert all(r.results[0].status == pb.ITEM_STATUS_OK for r, _ in answers.values())

        # The worker node goes away while a stream is sending: every request is still answered.
        load = requests(ec2_bundle, 300, "loss")
        started = time.monotonic()
        sending = asyncio.ensure_future(stream_answers(first.address, load, pause_s=0.02))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.remove_node, worker)
        answers = await sending
        assert len(answers) == len(load)
        times = sorted([started] + [t for _, t in answers.values()])
        gap = max(b - a for a, b in itertools.pairwise(times))
        statuses = [r.results[0].status for r, _ in answers.values()]
        figures = {"placement": {str(pid): node for pid, node in placement.items()},
                   "node_loss": {"requests": len(load), "ok": statuses.count(pb.ITEM_STATUS_OK),
                                 "longest_gap_s": round(gap, 3)}}
        assert statuses.count(pb.ITEM_STATUS_OK) >= len(load) - 5  # at most the calls in flight on the lost node

        # The application disappears: health tells the truth, then recovers once it is deployed again (this time
        # with replicas that merge concurrent calls through @serve.batch: the scores must not change).
        await asyncio.to_thread(serve.delete, "aelstm")
        await wait_for_health(first.address, NOT_SERVING, timeout_s=30)
        await asyncio.to_thread(deploy, ScorerSettings(replicas=1, cpus_per_replica=1.0, replica_batch_wait_ms=2.0))
        await wait_for_health(first.address, SERVING, timeout_s=120)
        batch = requests(ec2_bundle, 10, "redeployed")
        answers = await stream_answers(first.address, batch)
        assert all(r.results[0].status == pb.ITEM_STATUS_OK for r, _ in answers.values())
        windows = np.stack([np.frombuffer(r.items[0].window.packed, "<f4").reshape(16, 1) for r in batch])
        offline = BundleScorer(load_bundle(ec2_bundle.path), device="cpu").score(windows).score
        np.testing.assert_allclose([answers[r.request_id][0].results[0].score for r in batch], offline, rtol=1e-4)
        return figures
    finally:
        if second.poll() is None:
            second.kill()
        await first.stop(0)


def main() -> None:
    """`python cluster_scenario.py BUNDLE CSV WORKDIR`: prints the figures as one JSON line, exits 1 on failure."""
    bundle, csv, workdir = map(Path, sys.argv[1:4])
    with scoring_and_training_nodes() as nodes:
        figures = asyncio.run(scenario(*nodes, workdir, Trained(bundle, csv)))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
