"""`aelstm serve` settings: defaults, one YAML file, then command-line flags, each overriding the one before."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import yaml

from aelstm.training.errors import AelstmError

from .ray_backend import RaySettings
from .service import Limits

BACKENDS = ("ray", "inprocess")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    backend: str = "ray"
    registry: str = "registry"
    default_bundle: str | None = None
    poll_s: float = 2.0
    ray_address: str | None = None
    ray_cpus: int = 2
    replicas: int = 1
    max_replicas: int | None = None
    max_batch: int = 256
    batch_wait_ms: float = 2.0
    calls_in_flight: int | None = None
    replica_batch_wait_ms: float = 0.0
    threads_per_replica: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    models_per_replica: int = 4
    device: str = "auto"
    metrics_port: int | None = 9464
    max_devices: int = 100_000
    max_items: int = 4096
    max_readings_per_item: int = 4096
    max_in_flight_per_stream: int = 256
    max_message_mb: int = 16
    watcher_queue: int = 1024
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    tokens: tuple[str, ...] = field(default_factory=tuple)
    drain_grace_s: float = 10.0
    log_format: str = "json"

    def __post_init__(self) -> None:
        problems = []
        if self.backend not in BACKENDS:
            problems.append(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not 0 <= self.port < 65536:
            problems.append(f"port must be in 0..65535, got {self.port}")
        for name in ("replicas", "max_batch", "threads_per_replica", "models_per_replica", "ray_cpus",
                     "max_devices", "max_items", "max_readings_per_item", "max_in_flight_per_stream",
                     "max_message_mb", "watcher_queue"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        if self.calls_in_flight is not None and self.calls_in_flight < 1:
            problems.append(f"calls-in-flight must be ≥ 1, got {self.calls_in_flight}")
        if min(self.batch_wait_ms, self.replica_batch_wait_ms, self.gpus_per_replica, self.cpus_per_replica) < 0 \
                or self.poll_s <= 0:
            problems.append("batch waits and cpus/gpus-per-replica must be ≥ 0, poll-s > 0")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            problems.append(f"max-replicas ({self.max_replicas}) is below replicas ({self.replicas})")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("TLS needs both tls-cert and tls-key")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls-client-ca (mutual TLS) needs tls-cert and tls-key")
        if self.log_format not in ("json", "text"):
            problems.append(f"log-format must be json or text, got {self.log_format!r}")
        if problems:
            raise AelstmError("invalid serve settings: " + "; ".join(problems))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def ray_settings(self) -> RaySettings:
        return RaySettings(address=self.ray_address, num_cpus=self.ray_cpus, replicas=self.replicas,
                           max_replicas=self.max_replicas, max_batch=self.max_batch,
                           batch_wait_s=self.replica_batch_wait_ms / 1000, threads_per_replica=self.threads_per_replica,
                           cpus_per_replica=self.cpus_per_replica, gpus_per_replica=self.gpus_per_replica,
                           models_per_replica=self.models_per_replica, device=self.device)

    def backend_calls(self) -> int:
        """Coalesced calls under way per model: enough to keep every replica (or scoring thread) busy."""
        if self.calls_in_flight is not None:
            return self.calls_in_flight
        if self.backend == "inprocess":
            return self.threads_per_replica
        return 2 * max(self.replicas, self.max_replicas or 0)

    def limits(self) -> Limits:
        return Limits(max_items=self.max_items, max_readings_per_item=self.max_readings_per_item,
                      max_in_flight_per_stream=self.max_in_flight_per_stream)


FIELD_NAMES = {f.name for f in fields(ServeConfig)}


def merge(config: ServeConfig, overrides: dict) -> ServeConfig:
    """`config` with every override that is not None (keys may use dashes or underscores)."""
    values = {}
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in FIELD_NAMES:
            raise AelstmError(f"unknown setting {key!r}; known: {', '.join(sorted(FIELD_NAMES))}")
        if value is not None:
            values[name] = tuple(value) if name == "tokens" else value
    try:
        return replace(config, **values)
    except TypeError as exc:
        raise AelstmError(f"invalid serve settings: {exc}") from exc


def load_config(path: str | Path | None, overrides: dict) -> ServeConfig:
    """Defaults, then the YAML mapping at `path` (if any), then `overrides`."""
    config = ServeConfig()
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise AelstmError(f"cannot read config {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise AelstmError(f"config {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise AelstmError(f"config {path} must be a mapping of setting: value")
        config = merge(config, data)
    return merge(config, overrides)
