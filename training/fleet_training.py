"""Train many fleets at once: each fleet's fit is one task (a Ray task on the embedded local Ray or a cluster, or a
plain call in this process), and each candidate is gated against what its fleet serves, then published or kept
aside, as soon as its own fit ends.

A fit's task gets the fleet's readings and returns the bundle's files, so a worker node needs no shared file
system; only the process that runs the job reads the data and writes the registry.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from aelstm.core.bundle import load_bundle
from aelstm.core.data import Series
from aelstm.core.errors import AelstmError, DataError
from aelstm.core.priority import below_scoring, is_below_scoring
from aelstm.core.progress import ProgressBar

from .config import TrainConfig, training_rows
from .epoch_board import EpochBoard
from .fleets import FleetData
from .gate import DEFAULT_MARGIN, GateResult, gate

ASIDE_DIR = ".aside"  # registry/.aside/<fleet>/<stamp>/: candidates the gate kept out, with the reason
DEFAULT_HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class FleetJob:
    """One fleet's fit: the readings it trains on and the later ones its gate judges."""

    name: str
    normal: Series
    holdout: Series
    config: TrainConfig


@dataclass(frozen=True)
class CandidateFit:
    """What a fit task returns: the bundle's files and how training went."""

    files: dict[str, bytes]
    epochs: int
    seconds: float
    validation: dict
    node: str | None = None  # the Ray node it trained on
    below_scoring: bool = False  # whether it trained in the idle scheduling class (`core.priority`)


@dataclass
class FleetOutcome:
    """One fleet's result: published (with its version), kept aside, or failed, and why."""

    fleet: str
    status: str  # published | kept aside | failed
    reason: str
    rows: int | None = None
    version: str | None = None
    epochs: int | None = None
    seconds: float | None = None
    validation: dict = field(default_factory=dict)
    gate: GateResult | None = None
    node: str | None = None
    below_scoring: bool | None = None

    def to_dict(self) -> dict:
        return {"fleet": self.fleet, "status": self.status, "reason": self.reason, "rows": self.rows,
                "version": self.version, "epochs": self.epochs, "seconds": self.seconds, "node": self.node,
                "below_scoring": self.below_scoring, "validation": self.validation,
                "gate": self.gate.to_dict() if self.gate else None}


def plan_job(fleet: FleetData, holdout_fraction: float, config: TrainConfig) -> FleetJob:
    """Split a fleet's normal readings (every row before its first labelled anomaly) into training and gate parts."""
    if fleet.series is None:
        raise DataError(fleet.error or "no readings")
    rows, _ = training_rows(fleet.series, None, False)
    cut = int(rows * (1.0 - holdout_fraction))
    return FleetJob(fleet.name, fleet.series.slice(0, cut), fleet.series.slice(cut, rows), config)


def fit_candidate(name: str, normal: Series, config: TrainConfig, threads: int,
                  on_epoch: Callable[[dict], None] | None = None) -> CandidateFit:
    """Train one fleet's candidate (anywhere: this is a Ray task's body) and return its bundle's files."""
    from .train import train_series  # torch: only where a fit runs, never in the driver

    with tempfile.TemporaryDirectory(prefix="aelstm-fleet-") as folder:
        fitted, _ = train_series(normal, folder, config, rows=len(normal), name=name, version="candidate",
                                 progress=False, threads=threads, on_epoch=on_epoch)
        files = {path.name: path.read_bytes() for path in Path(folder).iterdir() if path.is_file()}
    return CandidateFit(files, len(fitted.history), round(fitted.seconds, 2), fitted.validation,
                        below_scoring=is_below_scoring())


FitResult = tuple[str, CandidateFit | None, str | None]  # fleet, its fit or None, the failure's reason


class LocalRunner:
    """Fits one fleet after another in this process: the baseline, and a job without Ray."""

    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.board = EpochBoard()

    def run(self, jobs: list[FleetJob], poll: Callable[[], None]) -> Iterator[FitResult]:
        for job in jobs:
            def on_epoch(record: dict, name: str = job.name) -> None:
                self.board.report(name, record["epoch"])
                poll()

            try:
                yield job.name, fit_candidate(job.name, job.normal, job.config, self.threads, on_epoch), None
            except AelstmError as exc:
                yield job.name, None, str(exc)
            finally:
                self.board.finish(job.name)

    def running(self) -> dict[str, int]:
        return self.board.snapshot()


class RayRunner:
    """Fits every fleet as a Ray task of `cpus_per_fleet` CPUs (as many at once as the cluster has room for).
    `below_scoring`: each fit runs in a fresh worker that puts itself in the idle scheduling class (and exits after
    it, so no lowered worker is reused for anything else), for a cluster whose nodes also score.
    `resource`: each fit takes its `cpus_per_fleet` in units of this Ray custom resource instead of CPUs, so fits
    run only on the nodes that offer it, as many at once as its units allow. A training node offers its cores as
    such units and no CPUs (`ray start --num-cpus 0 --resources '{"training": 8}'`): Scorer replicas, which ask for
    CPUs, never land there, and fits never land beside them (even in the idle class, a fit beside the replicas slows
    scoring)."""

    def __init__(self, cpus_per_fleet: float = 1.0, threads: int = 1, below_scoring: bool = False,
                 resource: str | None = None) -> None:
        import ray

        self.ray = ray
        self.threads, self.below_scoring = threads, below_scoring
        self.options = ({"num_cpus": 0, "resources": {resource: cpus_per_fleet}} if resource
                        else {"num_cpus": cpus_per_fleet})
        problem = placement_problem([node["Resources"] for node in ray.nodes() if node["Alive"]], cpus_per_fleet,
                                    resource)
        if problem:
            raise AelstmError(problem)
        self.board = ray.remote(num_cpus=0)(EpochBoard).remote()
        self._fit = ray.remote(max_calls=1)(_fit_task) if below_scoring else ray.remote(_fit_task)

    def run(self, jobs: list[FleetJob], poll: Callable[[], None]) -> Iterator[FitResult]:
        ray = self.ray
        pending = {self._fit.options(**self.options, name=f"fit {job.name}").remote(
            job.name, job.normal, job.config, self.threads, self.board, self.below_scoring): job.name for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            poll()
            for ref in done:
                name = pending.pop(ref)
                try:
                    yield name, ray.get(ref), None
                except ray.exceptions.RayError as exc:  # its task raised, or its worker or node was lost
                    yield name, None, _task_failure(exc)

    def running(self) -> dict[str, int]:
        """Epochs per running fleet: progress only, so a board that cannot answer shows none, never fails the job."""
        try:
            return self.ray.get(self.board.snapshot.remote(), timeout=5)
        except self.ray.exceptions.RayError:  # its actor was lost, or the answer timed out
            return {}


def placement_problem(nodes: list[dict[str, float]], cpus: float, resource: str | None) -> str | None:
    """Why no node of a cluster (each alive node's total resources) could ever run a fit of `cpus` CPUs (or as many
    units of `resource`), or None: Ray would leave such fits pending forever, so the job says so before it starts."""
    name = resource or "CPU"
    most = max((node.get(name, 0.0) for node in nodes), default=0.0)
    if most >= cpus:
        return None
    if resource:
        return (f"no node of this Ray cluster has the {cpus:g} {resource!r} unit(s) a fit asks for (at most "
                f"{most:g}): start training nodes with `ray start --num-cpus 0 --resources '{{\"{resource}\": "
                f"CORES}}'`, or lower --cpus-per-fleet")
    return (f"no node of this Ray cluster has the {cpus:g} CPUs a fit asks for (at most {most:g}): lower "
            f"--cpus-per-fleet or add a larger node")


def _task_failure(exc: Exception) -> str:
    """A failed task's reason in one line: our own errors as they are, anything else as its final line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, AelstmError):
        return str(cause)
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _fit_task(name: str, normal: Series, config: TrainConfig, threads: int, board, lowered: bool) -> CandidateFit:
    """A Ray task: fit (below scoring when `lowered`), telling the board each epoch (fire and forget), and say on
    which node."""
    import ray

    if lowered:
        below_scoring()
    try:
        fit = fit_candidate(name, normal, config, threads, lambda record: board.report.remote(name, record["epoch"]))
        return replace(fit, node=ray.get_runtime_context().get_node_id())
    finally:
        board.finish.remote(name)


class FleetTrainer:
    """Runs a job over many fleets: fit each (via a runner), gate it, publish it or keep it aside."""

    def __init__(self, registry: Path, runner: LocalRunner | RayRunner, *,
                 holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION, margin: float = DEFAULT_MARGIN,
                 progress: bool = True) -> None:
        if not 0.0 < holdout_fraction < 0.5:
            raise AelstmError(f"the held-out fraction must be in (0, 0.5), got {holdout_fraction}")
        if margin < 0:
            raise AelstmError(f"the gate's margin must be ≥ 0, got {margin}")
        self.registry, self.runner = Path(registry), runner
        self.holdout_fraction, self.margin, self.progress = holdout_fraction, margin, progress

    def train(self, fleets: list[FleetData], config_for: Callable[[str], TrainConfig]) -> list[FleetOutcome]:
        """Every fleet's outcome, in the order of `fleets`, each trained with `config_for(fleet)`; one fleet's
        failure never stops the others."""
        outcomes: dict[str, FleetOutcome] = {}
        jobs: dict[str, FleetJob] = {}
        for fleet in fleets:
            try:
                jobs[fleet.name] = plan_job(fleet, self.holdout_fraction, config_for(fleet.name))
            except AelstmError as exc:
                outcomes[fleet.name] = FleetOutcome(fleet.name, "failed", str(exc))
        with ProgressBar("fleets", len(fleets), "fleets", enabled=self.progress, transient=False) as bar:
            bar.advance(len(outcomes))
            for name in outcomes:
                bar.log(f"{name}: failed: {outcomes[name].reason}")
            poll = lambda: bar.set_note(_running_note(self.runner.running()))  # noqa: E731
            for name, fit, error in self.runner.run(list(jobs.values()), poll):
                job = jobs[name]
                outcome = self._settle(job, fit) if fit is not None else FleetOutcome(name, "failed", error or "")
                outcome.rows = len(job.normal) + len(job.holdout)
                outcomes[name] = outcome
                bar.log(f"{name}: {outcome.status}{' as version ' + outcome.version if outcome.version else ''}: "
                        f"{outcome.reason}")
                bar.advance()
            bar.set_note("")
        return [outcomes[f.name] for f in fleets]

    def _settle(self, job: FleetJob, fit: CandidateFit) -> FleetOutcome:
        """Gate a fitted candidate, then publish it or keep it aside."""
        from aelstm.server.registry import RegistryScanner, publish

        outcome = FleetOutcome(job.name, "", "", epochs=fit.epochs, seconds=fit.seconds, validation=fit.validation,
                               node=fit.node, below_scoring=fit.below_scoring)
        staging = Path(tempfile.mkdtemp(prefix=f".candidate-{job.name}-", dir=self._ensure_registry()))
        try:
            for file_name, content in fit.files.items():
                (staging / file_name).write_bytes(content)
            candidate = load_bundle(staging)
            served = RegistryScanner(self.registry).serving(job.name)
            result = gate(candidate, (served.version, served.bundle) if served else None, job.holdout, self.margin)
            outcome.gate = result
            if result.passed:
                entry = publish(staging, self.registry, job.name, trained_by="aelstm train-fleets",
                                gate=result.reason)
                outcome.status, outcome.version, outcome.reason = "published", entry.version, result.reason
            else:
                aside = self._keep_aside(job.name, staging, result.reason)
                outcome.status, outcome.reason = "kept aside", f"{result.reason}; candidate kept in {aside}"
        except AelstmError as exc:
            outcome.status, outcome.reason = "failed", str(exc)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return outcome

    def _ensure_registry(self) -> Path:
        self.registry.mkdir(parents=True, exist_ok=True)
        return self.registry

    def _keep_aside(self, fleet: str, staging: Path, reason: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = self.registry / ASIDE_DIR / fleet / stamp
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, aside)
        (aside / "REASON").write_text(reason + "\n")
        return aside


def _running_note(epochs: dict[str, int], shown: int = 4) -> str:
    """`a epoch 12, b epoch 3, +5 more` for the fits running now."""
    if not epochs:
        return ""
    parts = [f"{name} epoch {epoch}" for name, epoch in sorted(epochs.items())[:shown]]
    more = f", +{len(epochs) - shown} more" if len(epochs) > shown else ""
    return "training " + ", ".join(parts) + more
