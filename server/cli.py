"""`aelstm`: the model commands (train, score, info) and the server commands."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from aelstm.training.cli import MODEL_COMMANDS, OneLineErrorGroup

from .config import BACKENDS, load_config
from .registry import DEFAULT_FLEET
from .registry import publish as publish_bundle


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aelstm")
def main() -> None:
    """aelstm: anomaly detection for IoT fleets with a joint autoencoder + LSTM.

    Train a model per fleet on normal history, inspect it, and serve it over gRPC on Ray Serve.
    """


for command in MODEL_COMMANDS:
    main.add_command(command)


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--fleet", required=True, help=f"Fleet the model serves ({DEFAULT_FLEET} for the default model).")
@click.option("--registry", type=click.Path(path_type=Path), default="registry", show_default=True,
              envvar="AELSTM_REGISTRY", help="Registry directory (env AELSTM_REGISTRY).")
def publish(bundle_dir: Path, fleet: str, registry: Path) -> None:
    """Validate BUNDLE_DIR and add it to the registry as the fleet's next version.

    A running `aelstm serve` on the same registry picks it up within its poll interval, without a restart.
    """
    entry = publish_bundle(bundle_dir, registry, fleet)
    click.echo(f"published {entry.bundle.name} as fleet {fleet} version {entry.version} ({entry.bundle.path})")


def _option(name: str, help: str, **kwargs):
    return click.option(name, default=None, help=help, **kwargs)


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML file of settings (same names as the flags); flags override it.")
@_option("--host", "Address to listen on [default: 127.0.0.1].")
@_option("--port", "gRPC port [default: 50051; 0 picks a free one].", type=int)
@_option("--backend", "Where scoring runs: Ray Serve replicas, or onnxruntime in this process [default: ray].",
         type=click.Choice(BACKENDS))
@_option("--registry", "Model registry directory: <fleet>/<version>/ bundles [default: ./registry].")
@_option("--default-bundle", "Bundle serving fleets without a model of their own (when the registry has no "
         f"{DEFAULT_FLEET} fleet).")
@_option("--poll-s", "Seconds between registry scans for new versions [default: 2].", type=float)
@_option("--ray-address", "Join this Ray cluster instead of starting an embedded one.")
@_option("--ray-cpus", "CPUs of the embedded Ray [default: 2].", type=int)
@_option("--replicas", "Scorer replicas (the minimum when autoscaling) [default: 1].", type=int)
@_option("--max-replicas", "Autoscale the Scorer up to this many replicas.", type=int)
@_option("--max-batch", "Most windows per scoring call [default: 256].", type=int)
@_option("--batch-wait-ms", "Longest wait to fill a scoring call while others are busy [default: 2].",
         type=float)
@_option("--calls-in-flight", "Scoring calls under way per model before new windows wait to join the next "
         "[default: 2 per replica; in-process: one per thread].", type=int)
@_option("--replica-batch-wait-ms", "Ray: how long a replica waits to merge calls (@serve.batch) [default: 0].",
         type=float)
@_option("--threads-per-replica", "onnxruntime threads per replica (in-process: scoring threads) [default: 1].",
         type=int)
@_option("--cpus-per-replica", "CPUs Ray reserves per replica [default: 1].", type=float)
@_option("--gpus-per-replica", "GPUs per replica; CUDA is used when onnxruntime-gpu finds one [default: 0].",
         type=float)
@_option("--models-per-replica", "Models a replica keeps loaded (LRU) [default: 4].", type=int)
@_option("--device", "onnxruntime device [default: auto].", type=click.Choice(["auto", "cpu", "cuda"]))
@_option("--metrics-port", "Prometheus /metrics port; 0 turns it off [default: 9464].", type=int)
@_option("--max-devices", "Device windows held for `readings` items (least recent evicted) [default: 100000].",
         type=int)
@_option("--max-items", "Items per request [default: 4096].", type=int)
@_option("--max-message-mb", "Largest gRPC message in MiB [default: 16].", type=int)
@_option("--tls-cert", "PEM server certificate (with --tls-key) to serve TLS.")
@_option("--tls-key", "PEM private key of --tls-cert.")
@_option("--tls-client-ca", "PEM CA: require client certificates it signed (mutual TLS).")
@click.option("--token", "tokens", multiple=True, envvar="AELSTM_TOKENS",
              help="Accepted bearer token (repeatable; env AELSTM_TOKENS, space-separated). None: no auth.")
@_option("--drain-grace-s", "Seconds to finish in-flight calls on shutdown [default: 10].", type=float)
@_option("--log-format", "Log lines as JSON or text [default: json].", type=click.Choice(["json", "text"]))
def serve(config_file: Path | None, **flags) -> None:
    """Serve the registry's models over gRPC (aelstm.v1.AnomalyScorer, health, reflection).

    Starts an embedded local Ray (or joins --ray-address) unless --backend inprocess. Prints the address once
    health is SERVING; Ctrl-C or SIGTERM answers what is in flight and stops cleanly.
    """
    flags["tokens"] = flags["tokens"] or None
    config = load_config(config_file, flags)
    asyncio.run(_serve(config))


async def _serve(config) -> None:
    from . import logs
    from .app import ScoringServer

    logs.configure(config.log_format)
    Path(config.registry).mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signals() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

    on_signals()
    server = ScoringServer(config)
    await server.start()
    on_signals()  # again: starting Ray installs its own SIGTERM handler, which would skip the drain
    if stop.is_set():
        await server.stop()
        return
    models = len(server.models.snapshot.entries())
    state = "SERVING" if server.serving else f"NOT_SERVING until a model is published to {config.registry}"
    click.echo(f"aelstm serving on {server.address} (backend {server.backend.name}, {models} model(s), "
               f"health {state})", nl=True)
    sys.stdout.flush()
    await stop.wait()
    click.echo("stopping: answering requests in flight", err=True)
    await server.stop()
