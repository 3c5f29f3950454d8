"""`aelstm status`: one view of a deployment. The Ray cluster's nodes, the scoring application and where its
replicas run; for each ingress named, its health and the model version it serves per fleet."""

from __future__ import annotations

import asyncio
from collections import Counter

from aelstm.client.connection import ClientError, ConnectionOptions
from aelstm.client.queries import list_models, wait_until_serving

from .scoring_app import APP_NAME


def cluster_report() -> tuple[list[str], bool]:
    """Lines about the connected Ray cluster and the scoring application; and whether the application runs."""
    import ray
    from ray import serve

    from .ray_backend import replica_placement

    nodes = [node for node in ray.nodes() if node["Alive"]]
    lines = [f"cluster: {len(nodes)} node(s), {sum(n['Resources'].get('CPU', 0) for n in nodes):g} CPU(s)"]
    lines += [node_line(n) for n in nodes]
    app = serve.status().applications.get(APP_NAME)
    if app is None:
        return [*lines, f"application {APP_NAME}: not deployed (aelstm deploy)"], False
    lines.append(f"application {APP_NAME}: {_name(app.status)}")
    for name, deployment in app.deployments.items():
        states = ", ".join(f"{count} {_name(state)}" for state, count in deployment.replica_states.items())
        lines.append(f"  {name}: {_name(deployment.status)} ({states or 'no replicas'})")
    running = app.status == "RUNNING"
    if running:
        per_node = Counter(asyncio.run(replica_placement()).values())
        lines += [f"  Scorer replicas on node {node[:12]}: {count}" for node, count in sorted(per_node.items())]
    return lines, running


BUILT_IN = {"CPU", "GPU", "memory", "object_store_memory"}  # besides `node:<ip>` and `accelerator_type:<type>`


def node_line(node: dict) -> str:
    """One node: id, address, CPUs, GPUs where it has any, and the custom resources it offers (such as the one
    training fits are placed by: `--fit-resource`), so an operator sees which nodes train."""
    resources = node["Resources"]
    line = f"  node {node['NodeID'][:12]} {node['NodeManagerAddress']} CPUs {resources.get('CPU', 0):g}"
    if resources.get("GPU"):
        line += f" GPUs {resources['GPU']:g}"
    custom = sorted((name, amount) for name, amount in resources.items()
                    if name not in BUILT_IN and not name.startswith(("node:", "accelerator_type:")))
    return line + "".join(f" {name} {amount:g}" for name, amount in custom)


def _name(status) -> str:
    """RUNNING, not ApplicationStatus.RUNNING: Serve's statuses are string enums."""
    return getattr(status, "value", str(status))


async def ingress_report(options: ConnectionOptions) -> tuple[list[str], bool]:
    """Lines about one ingress: health, then fleet -> model and version; and whether it is SERVING."""
    try:
        status = await wait_until_serving(options, 0.0)
        models = await list_models(options)
    except ClientError as exc:
        return [f"ingress {options.target}: UNREACHABLE ({exc})"], False
    lines = [f"ingress {options.target}: {status}"]
    lines += [f"  {m.fleet_id or '(default)'}: {m.model_name} version {m.model_version}" for m in models]
    return lines, status == "SERVING"
