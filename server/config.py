"""Every serving setting, declared once: name, type, default, limits and help text.

`ScorerSettings` is what the Ray Serve scoring application needs (replicas, batching, devices); `ServeConfig` adds
what an ingress needs. The `aelstm serve` and `aelstm deploy` flags, the YAML file, the `serve deploy` arguments and
the Ray deployment options are all derived from these declarations, so a default or a limit lives in one place.
Precedence: defaults, then one YAML file, then command-line flags.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from aelstm.core.errors import AelstmError

from .admission import DEFAULT_SCORING_BUDGET_MS
from .scoring import Limits

BACKENDS = ("ray", "inprocess")
DEVICES = ("auto", "cpu", "cuda")
# How a change of a scorer setting reaches a deployed application: LIVE settings go to running replicas (Ray Serve's
# user_config, `reconfigure`), SCALE settings add or remove replicas, RESTART settings need new replicas (their
# resources or what they load at start), rolled over by Ray Serve.
LIVE, SCALE, RESTART = "live", "scale", "restart"


def setting(default: Any, help: str, *, minimum: float | None = None, choices: tuple[str, ...] | None = None,
            default_text: str | None = None, **extra: Any):
    """A declared setting: `minimum`/`choices` are checked on every config; `default_text` replaces the shown
    default where it depends on other settings."""
    metadata = {"help": help, "minimum": minimum, "choices": choices, "default_text": default_text, **extra}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


def shown_default(spec) -> str:
    """The default as `--help` and the example file show it."""
    if spec.metadata.get("default_text"):
        return spec.metadata["default_text"]
    default = spec.default if spec.default is not MISSING else spec.default_factory()
    return "none" if default is None or default == () else str(default)


class _Settings:
    """Shared behaviour of the settings dataclasses: building from a mapping, checking declared limits."""

    @classmethod
    def names(cls) -> set[str]:
        return {spec.name for spec in fields(cls)}

    @classmethod
    def from_mapping(cls, values: dict, base=None):
        """`base` (or the defaults) with every value that is not None; keys may use dashes or underscores."""
        known = cls.names()
        chosen = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise AelstmError(f"unknown setting {key!r}; known: {', '.join(sorted(known))}")
            if value is not None:
                chosen[name] = tuple(value) if isinstance(value, list) else value
        try:
            return replace(base, **chosen) if base is not None else cls(**chosen)
        except TypeError as exc:
            raise AelstmError(f"invalid serve settings: {exc}") from exc

    def declared_problems(self) -> list[str]:
        problems = []
        for spec in fields(self):
            value, minimum, choices = getattr(self, spec.name), spec.metadata["minimum"], spec.metadata["choices"]
            flag = spec.name.replace("_", "-")
            if choices and value not in choices:
                problems.append(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
            elif minimum is not None and value is not None:
                if not isinstance(value, int | float) or isinstance(value, bool):
                    problems.append(f"{flag} must be a number, got {value!r}")
                elif value < minimum:
                    problems.append(f"{flag} must be ≥ {minimum:g}, got {value}")
        return problems

    def raise_problems(self, problems: list[str]) -> None:
        if problems:
            raise AelstmError("invalid serve settings: " + "; ".join(problems))


@dataclass(frozen=True)
class ScorerSettings(_Settings):
    """The scoring application's shape: what `aelstm deploy` and `serve deploy` take."""

    replicas: int = setting(1, "Scorer replicas (the minimum when autoscaling).", minimum=1, applies=SCALE)
    max_replicas: int | None = setting(None, "Autoscale the Scorer between --replicas and this many replicas.",
                                       minimum=1, applies=SCALE)
    target_ongoing_requests: float = setting(
        2.0, "Autoscaling: scoring calls under way per replica that Ray Serve aims for.", minimum=0.1, applies=SCALE)
    max_batch: int = setting(256, "Most windows per scoring call.", minimum=1, applies=LIVE)
    replica_batch_wait_ms: float = setting(
        0.0, "How long a replica waits to merge calls from several ingresses (@serve.batch); 0: no merging, each "
             "call (already coalesced by its ingress) is scored as it comes.", minimum=0, applies=LIVE)
    threads_per_replica: int = setting(1, "onnxruntime threads per replica (in-process: scoring threads).",
                                       minimum=1, applies=LIVE)
    cpus_per_replica: float = setting(1.0, "CPUs Ray reserves per replica.", minimum=0, applies=RESTART)
    gpus_per_replica: float = setting(0.0, "GPUs per replica; CUDA is used when onnxruntime-gpu finds one.",
                                      minimum=0, applies=RESTART)
    models_per_replica: int = setting(4, "Models a replica keeps loaded (LRU).", minimum=1, applies=RESTART)
    device: str = setting("auto", "onnxruntime device.", choices=DEVICES, applies=RESTART)

    def __post_init__(self) -> None:
        self.raise_problems(self.scorer_problems())

    def scorer_problems(self) -> list[str]:
        problems = self.declared_problems()
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            problems.append(f"max-replicas ({self.max_replicas}) is below replicas ({self.replicas})")
        return problems

    @classmethod
    def applying(cls, how: str) -> tuple[str, ...]:
        """Names of the scorer settings whose change applies `how` (`LIVE`, `SCALE` or `RESTART`)."""
        return tuple(spec.name for spec in fields(ScorerSettings) if spec.metadata["applies"] == how)

    def tuning(self) -> dict[str, Any]:
        """The live settings, as the Scorer's Ray Serve `user_config`."""
        return {name: getattr(self, name) for name in self.applying(LIVE)}

    def scorer(self) -> ScorerSettings:
        """Just the scoring application's settings (a ServeConfig carries them among its own)."""
        return ScorerSettings(**{spec.name: getattr(self, spec.name) for spec in fields(ScorerSettings)})


@dataclass(frozen=True)
class ServeConfig(ScorerSettings):
    """One ingress: where it listens, which backend scores, limits, security, logs."""

    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(50051, "gRPC port (0 picks a free one).", minimum=0)
    backend: str = setting("ray", "Where scoring runs: Ray Serve replicas, or onnxruntime in this process.",
                           choices=BACKENDS)
    registry: str = setting("registry", "Model registry directory: <fleet>/<version>/ bundles.")
    default_bundle: str | None = setting(None, "Bundle serving fleets without a model of their own (when the "
                                               "registry has no _default fleet).")
    poll_s: float = setting(2.0, "Seconds between registry scans and backend health checks.", minimum=0.01)
    ray_address: str | None = setting(
        None, "Attach to the scoring application on this Ray cluster (deployed by `aelstm deploy`) instead of "
              "starting an embedded Ray.")
    ray_cpus: int = setting(2, "CPUs of the embedded Ray.", minimum=1)
    ray_temp_dir: str | None = setting(
        None, "Folder in which the embedded Ray makes its own private temp dir (removed when the ingress stops). "
              "Ray's socket paths must fit in 107 bytes, so keep it short.",
        default_text="the system temp dir")
    batch_wait_ms: float | None = setting(None, "Longest wait to fill a scoring call while others are busy.",
                                          minimum=0, default_text="2, or the call gap if longer")
    calls_in_flight: int | None = setting(None, "Scoring calls under way per model before new windows wait to "
                                                "join the next.", minimum=1,
                                          default_text="2 per replica; in-process: one per thread")
    call_gap_ms: float | None = setting(None, "Shortest time between two scoring calls of a model while it is "
                                              "busy, so calls fill up.", minimum=0,
                                        default_text="ray 5, in-process 0")
    scoring_budget_ms: float = setting(
        DEFAULT_SCORING_BUDGET_MS, "Longest a request's windows may take to be scored, waiting for a call and the "
                                   "call itself (per model); what would take longer is refused at once with "
                                   "RESOURCE_EXHAUSTED and a retry hint. The default leaves the rest of a 50 ms "
                                   "latency objective to the network and the caller.",
        minimum=0.1)
    backend_grace_s: float = setting(
        10.0, "While the scoring application is being replaced (a deploy rolling its replicas over, a replica "
              "lost), hold scoring calls and try them again for up to this many seconds before their items get "
              "UNAVAILABLE (sooner for a caller whose deadline comes first); 0: fail them at once.", minimum=0)
    metrics_port: int | None = setting(9464, "Prometheus /metrics port; 0 turns it off.", minimum=0)
    max_devices: int = setting(100_000, "Device windows held for `readings` items (least recent evicted).",
                               minimum=1)
    max_device_window_mb: float = setting(256.0, "MiB of device windows held in all, ids and streaming-threshold "
                                                 "state included (about 6 KiB a device under the default DSPOT); "
                                                 "least recent evicted.", minimum=0.001)
    max_id_bytes: int = setting(256, "Longest fleet_id, device_id and request_id in UTF-8 bytes (longer ones "
                                     "get INVALID_ARGUMENT).", minimum=1)
    max_items: int = setting(4096, "Items per request.", minimum=1)
    max_readings_per_item: int = setting(4096, "Readings per `readings` item.", minimum=1)
    max_in_flight_per_stream: int = setting(256, "Requests of one stream scored at once (then reading pauses).",
                                            minimum=1)
    max_message_mb: int = setting(16, "Largest gRPC message in MiB.", minimum=1)
    watcher_queue: int = setting(1024, "Anomalies queued per watcher before the oldest are dropped.", minimum=1)
    tls_cert: str | None = setting(None, "PEM server certificate (with --tls-key) to serve TLS.")
    tls_key: str | None = setting(None, "PEM private key of --tls-cert.")
    tls_client_ca: str | None = setting(None, "PEM CA: require client certificates it signed (mutual TLS).")
    tokens: tuple[str, ...] = setting((), "Accepted bearer token (repeatable; env AELSTM_TOKENS, space-separated). "
                                          "None: no auth.", flag="--token", envvar="AELSTM_TOKENS")
    tokens_file: str | None = setting(None, "YAML file of fleet-scoped tokens: `token or sha256:<digest>: fleet, "
                                            "fleet` (env AELSTM_TOKENS_FILE).", envvar="AELSTM_TOKENS_FILE")
    allow_plaintext_tokens: bool = setting(False, "Accept tokens without TLS on a non-loopback address.")
    record_dir: str | None = setting(None, "Record a sample of the readings judged normal here (Parquet, a folder "
                                           "per fleet), for `aelstm retrain`; unset: nothing is recorded.")
    record_devices: float = setting(0.1, "Fraction of each fleet's devices whose normal readings are recorded (the "
                                         "same devices on every ingress).", minimum=0)
    record_flush_s: float = setting(60.0, "Seconds between writes of the recorded readings.", minimum=0.1)
    record_keep_days: float = setting(7.0, "Days recordings are kept before they are removed.", minimum=0)
    retrain_every_s: float | None = setting(None, "Retrain every served fleet on its recorded readings this often "
                                                  "(needs --record-dir and torch), in a separate low-priority "
                                                  "process; new models are gated before they are published.",
                                            minimum=1)
    retrain_min_rows: int = setting(2000, "Readings a fleet needs recorded since its served version before it is "
                                          "retrained.", minimum=1)
    retrain_on_drift: float | None = setting(
        None, "Also retrain a served fleet as soon as its drift (aelstm_fleet_drift: how many times more often than at "
              "calibration its scores pass the calibration p99; 1 = as calibrated) reaches this, checked every poll "
              "(needs --record-dir and torch).", minimum=1)
    retrain_fit_resource: str | None = setting(
        None, "On a Ray cluster (--ray-address): retraining fits take their CPUs in units of this Ray custom resource "
              "instead, so they run only on the training nodes that offer it, never beside scoring replicas.")
    retrain_drift_cooldown_s: float = setting(
        3600.0, "Shortest time between two drift-triggered retrains of one fleet; a fleet with too few readings "
                "recorded yet is looked at again after the next write of the recordings (--record-flush-s).",
        minimum=0)
    drain_grace_s: float = setting(10.0, "Seconds to finish in-flight calls on shutdown.", minimum=0)
    log_format: str = setting("json", "Log lines as JSON or text.", choices=("json", "text"))

    def __post_init__(self) -> None:
        problems = self.scorer_problems()
        if self.port >= 65536:
            problems.append(f"port must be in 0..65535, got {self.port}")
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("TLS needs both tls-cert and tls-key")
        if self.record_devices > 1:
            problems.append(f"record-devices is a fraction of devices: at most 1, got {self.record_devices}")
        if self.ray_temp_dir is not None:
            problems.extend(ray_temp_dir_problems(self.ray_temp_dir))
        if self.retrain_every_s is not None and not self.record_dir:
            problems.append("retrain-every-s retrains on recorded readings: it needs record-dir")
        if self.retrain_on_drift is not None and not self.record_dir:
            problems.append("retrain-on-drift retrains on recorded readings: it needs record-dir")
        if self.retrain_fit_resource and not self.ray_address:
            problems.append("retrain-fit-resource places retraining fits on a Ray cluster's nodes: it needs "
                            "ray-address")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls-client-ca (mutual TLS) needs tls-cert and tls-key")
        if (self.tokens or self.tokens_file) and not self.tls_cert and not self.allow_plaintext_tokens:
            from .security import is_loopback

            if not is_loopback(self.host):
                problems.append(f"tokens would cross the network in plaintext on {self.host}: serve TLS "
                                f"(--tls-cert, --tls-key) or pass --allow-plaintext-tokens")
        self.raise_problems(problems)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def backend_calls(self) -> int:
        """Coalesced calls under way per model: enough to keep every replica (or scoring thread) busy."""
        if self.calls_in_flight is not None:
            return self.calls_in_flight
        if self.backend == "inprocess":
            return self.threads_per_replica
        return 2 * max(self.replicas, self.max_replicas or 0)

    def call_gap_s(self) -> float:
        """Shortest spacing of one model's calls while busy: a Ray call costs about a millisecond of CPU on each
        side, so under load calls go out a few milliseconds apart and fill up; in-process calls cost almost
        nothing."""
        if self.call_gap_ms is not None:
            return self.call_gap_ms / 1000
        return 0.0 if self.backend == "inprocess" else 0.005

    def batch_wait_s(self) -> float:
        """Longest a window waits to join a call: by default never less than the call gap, which it would cut."""
        if self.batch_wait_ms is not None:
            return self.batch_wait_ms / 1000
        return max(0.002, self.call_gap_s())

    def limits(self) -> Limits:
        return Limits(max_items=self.max_items, max_readings_per_item=self.max_readings_per_item,
                      max_in_flight_per_stream=self.max_in_flight_per_stream, max_id_bytes=self.max_id_bytes,
                      max_response_bytes=self.max_message_mb * 1024 * 1024)

    def max_device_bytes(self) -> int:
        return int(self.max_device_window_mb * 1024 * 1024)


# Ray puts Unix sockets in its temp dir, whose paths must fit in 107 bytes. The embedded Ray's own folder
# ("/aelstm-ray-XXXXXXXX"), its session ("/session_<date>_<time>_<µs>_<pid>") and "/sockets/plasma_store" take
# up to 84 of them.
RAY_SOCKET_PATH_MAX = 107
EMBEDDED_RAY_SOCKET_SUFFIX = 84


def ray_temp_dir_problems(folder: str) -> list[str]:
    """Why the embedded Ray could not start in `folder`, found now rather than as a Ray start that times out."""
    path = Path(folder).absolute()
    if not path.is_dir():
        return [f"ray-temp-dir {folder} is not an existing folder"]
    room = RAY_SOCKET_PATH_MAX - EMBEDDED_RAY_SOCKET_SUFFIX
    if len(str(path)) > room:
        return [f"ray-temp-dir {path} is {len(str(path))} characters long: Ray's socket paths under it would pass "
                f"{RAY_SOCKET_PATH_MAX} bytes; use a folder of at most {room} characters"]
    return []


def cpu_shortfall(settings: ScorerSettings, cpus: float) -> str | None:
    """Why Scorer replicas would stay pending on a Ray with `cpus` CPUs, if they would (the model store takes
    none)."""
    most = max(settings.replicas, settings.max_replicas or 0)
    needed = most * settings.cpus_per_replica
    if needed <= cpus:
        return None
    return (f"{most} Scorer replica(s) at {settings.cpus_per_replica:g} CPU each need {needed:g} CPUs, but only "
            f"{cpus:g} are available: Ray Serve would leave the rest pending")


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping of setting: value, with one-line errors."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise AelstmError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise AelstmError(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise AelstmError(f"config {path} must be a mapping of setting: value")
    return data


def load_config(path: str | Path | None, overrides: dict, kind: type[_Settings] = ServeConfig):
    """Defaults, then the YAML mapping at `path` (if any), then `overrides` (None values are skipped)."""
    config = kind.from_mapping(read_yaml(path)) if path is not None else kind()
    return kind.from_mapping(overrides, base=config)
