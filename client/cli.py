"""`aelstm-client`: the command line (connection options on the group, one sub-command per job)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from aelstm.core.cli_options import OneLineErrorGroup, data_options, read_series
from aelstm.core.progress import PLAIN_EVERY_S, ProgressBar

from .connection import EXIT_MEANINGS, ClientError, ConnectionOptions, ExitCode, rpc_failure
from .fleets import load_fleets
from .live import LiveProgress
from .loadtest import LoadRun, Schedule, run_report
from .parallel import run_in_processes
from .queries import get_model, list_models, training_range, wait_until_serving, watch_anomalies
from .replay import replay as replay_series
from .report import problems, render
from .results import failed_answers, flag_episodes, summary
from .scorefile import score_file
from .sweep import sustained, sweep_table, sweep_verdict
from .synthetic import ANOMALY_KINDS, inject_anomalies, normal_telemetry, telemetry_from_series
from .workload import build_workload

EXIT_CODES = "\n".join(f"  {code.value:>3}  {EXIT_MEANINGS[code]}" for code in ExitCode)

stderr = Console(stderr=True)
# Reports are wide tables: keep them readable when written to a file or pipe.
stdout = Console() if Console().is_terminal else Console(width=140)


_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


class Duration(click.ParamType):
    """Seconds as `10`, `2.5s`, `500ms` or `2m`."""

    name = "duration"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float | int):
            return float(value)
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|)\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a duration (e.g. 10s, 500ms, 2m)", param, ctx)
        return float(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]


class Rates(click.ParamType):
    """One rate (`2000`) or a sweep `start:stop:step` (`1000:20000:1000`, stop included)."""

    name = "rate"

    def convert(self, value, param, ctx) -> list[float]:
        if isinstance(value, list):
            return value
        try:
            parts = [float(p) for p in str(value).split(":")]
        except ValueError:
            self.fail(f"{value!r} is not a rate or start:stop:step", param, ctx)
        if len(parts) == 1:
            rates = parts
        elif len(parts) == 3 and parts[2] > 0 and parts[1] >= parts[0]:
            rates = list(np.arange(parts[0], parts[1] + parts[2] / 2, parts[2]))
        else:
            self.fail(f"{value!r}: a sweep is start:stop:step with stop ≥ start and step > 0", param, ctx)
        if min(rates) <= 0:
            self.fail("rates must be > 0", param, ctx)
        return [float(r) for r in rates]


def run(coroutine):
    return asyncio.run(coroutine)


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                "auto_envvar_prefix": "AELSTM_CLIENT"},
             epilog=f"Exit codes:\n\n\b\n{EXIT_CODES}\n  130  interrupted\n\n"
                    "Every option can also come from the environment: AELSTM_CLIENT_TARGET, AELSTM_CLIENT_TOKEN, ...")
@click.version_option(package_name="aelstm")
@click.option("--target", default="127.0.0.1:50051", show_default=True, help="Server address host:port.")
@click.option("--tls", is_flag=True, help="Use TLS (server verified against --ca, or the system roots).")
@click.option("--ca", type=click.Path(path_type=Path), help="PEM file of the CA that signed the server's certificate.")
@click.option("--cert", type=click.Path(path_type=Path), help="PEM client certificate (mutual TLS).")
@click.option("--key", type=click.Path(path_type=Path), help="PEM private key of --cert.")
@click.option("--token", help="Bearer token, sent as `authorization: Bearer <token>` metadata.")
@click.option("--deadline", type=Duration(), default="10s", show_default=True,
              help="Deadline per message: per call for unary RPCs; for streams, an answer later than this counts "
                   "as DEADLINE_EXCEEDED.")
@click.pass_context
def main(ctx: click.Context, target, tls, ca, cert, key, token, deadline) -> None:
    """aelstm-client: talk to an aelstm anomaly-scoring server as IoT gateways do.

    Load-test it with simulated fleets, replay a recorded series, score a file, watch the anomalies it flags, or
    list its models. Connection options go before the command, e.g. `aelstm-client --target host:50051 models`.
    """
    if deadline <= 0:
        raise click.BadParameter("must be > 0", param_hint="--deadline")
    ctx.obj = ConnectionOptions(target=target, tls=tls, ca=ca, cert=cert, key=key, token=token, deadline_s=deadline)


@main.command()
@click.option("--wait", "wait_s", type=Duration(), default="0s", show_default=True,
              help="Keep checking until the server is SERVING or this much time has passed.")
@click.pass_obj
def health(options: ConnectionOptions, wait_s: float) -> None:
    """Check the server's standard gRPC health status; exit 0 only when it is SERVING, 8 when it answers with
    another status (NOT_SERVING), 3 when it cannot be reached.

    With --wait, keep checking (a server still starting is not an error until the wait is over).
    """
    status = run(wait_until_serving(options, wait_s))
    click.echo(f"{options.target}: {status}")
    if status != "SERVING":
        raise ClientError(f"server at {options.target} is {status}", ExitCode.NOT_SERVING)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_obj
def models(options: ConnectionOptions, as_json: bool) -> None:
    """List the fleets the server knows and the model each one uses.

    drift: the share of this ingress's last 10,000 windows of that model scored above its calibration p99, over
    the 1 % expected (1: as calibrated, 5: high scores five times as often); "-" before 200 windows."""
    infos = run(list_models(options))
    if as_json:
        click.echo(json.dumps([{"fleet_id": m.fleet_id, "model_name": m.model_name, "model_version": m.model_version,
                                "window": m.window, "features": list(m.features), "threshold": m.threshold,
                                "threshold_method": m.threshold_method, "is_default": m.is_default,
                                "drift": m.drift if m.HasField("drift") else None}
                               for m in infos], indent=2))
        return
    table = Table(title=f"models on {options.target}")
    for column in ("fleet", "model", "version", "window", "features", "threshold", "drift", "default"):
        table.add_column(column)
    for m in infos:
        features = ", ".join(m.features) if len(m.features) <= 4 else f"{len(m.features)} features"
        drift = f"{m.drift:.2f}" if m.HasField("drift") else "-"
        table.add_row(m.fleet_id or "(default)", m.model_name, m.model_version, str(m.window), features,
                      f"{m.threshold:.4g} ({m.threshold_method})", drift, "yes" if m.is_default else "")
    stdout.print(table)


@main.command()
@click.option("--fleet", default="", help="Fleet to watch [default: every fleet].")
@click.option("--count", type=int, help="Stop after this many anomalies.")
@click.option("--for", "timeout_s", type=Duration(), help="Stop after this long (e.g. 60s) [default: until Ctrl-C].")
@click.pass_obj
def watch(options: ConnectionOptions, fleet: str, count: int | None, timeout_s: float | None) -> None:
    """Print anomalies as the server publishes them, one line each.

    Ends with exit 0 after --count anomalies or --for; the server ending the stream or the connection dropping
    before then is one error line and exit 3.
    """

    async def follow() -> None:
        async for anomaly in watch_anomalies(options, fleet, count=count, timeout_s=timeout_s):
            r = anomaly.result
            flagged = np.datetime64(anomaly.flagged_at_ms, "ms")
            reading = f" reading at {np.datetime64(r.timestamp_ms, 'ms')}" if r.timestamp_ms else ""
            click.echo(f"{flagged} fleet={anomaly.fleet_id or '-'} device={r.device_id} score={r.score:.4g} "
                       f"threshold={r.threshold:.4g} model={r.model_name} v{r.model_version}{reading}")

    run(follow())


def _read_for_model(options: ConnectionOptions, fleet: str, data: Path, dataset: str, time_column, label_column,
                    features, delimiter, non_numeric) -> tuple:
    """(DATA as the fleet's model reads it, the model's window length): a CSV's features default to the model's
    own feature columns, by name, so an extra column (a label, a counter) never shifts them."""
    info = run(get_model(options, fleet))
    features = features or (tuple(info.features) if dataset == "csv" else None)
    series = read_series(data, dataset, time_column, label_column, features, delimiter, non_numeric)
    if series.values.shape[1] != len(info.features):
        raise ClientError(f"the file has {series.values.shape[1]} feature(s), fleet {fleet!r}'s model expects "
                          f"{len(info.features)}: {list(info.features)}")
    return series, info.window


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@data_options
@click.option("--fleet", default="", help="Fleet whose model scores the file [default: the default model].")
@click.option("--device", "device_id", default="file", show_default=True, help="Device id sent with each window.")
@click.option("--batch-size", default=256, show_default=True, help="Windows per Score request.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="CSV of scores to write [default: stdout].")
@click.pass_obj
def score(options: ConnectionOptions, data, dataset, time_column, label_column, features, delimiter, non_numeric,
          fleet, device_id, batch_size, output) -> None:
    """Score every full window of DATA on the server (unary Score RPC); one CSV row per window end.

    Whole windows are judged against the model's calibrated level; a streaming threshold, which follows a device's
    readings in order, judges `replay` (its default `--mode readings`). Exits 7 when a window is answered with an
    item error (the CSV is written first; see its error_code column).
    """
    if batch_size < 1:
        raise ClientError("--batch-size must be ≥ 1")
    series, window = _read_for_model(options, fleet, data, dataset, time_column, label_column, features, delimiter,
                                      non_numeric)
    total = max(0, len(series) - window + 1)
    retries: list[None] = []
    with ProgressBar("scoring", total, "windows", console=stderr) as progress:
        table = run(score_file(options, series, fleet_id=fleet, device_id=device_id, window=window,
                               batch_size=batch_size, on_batch=progress.advance, on_retry=lambda: retries.append(None)))
    table.to_csv(output if output else sys.stdout, index=False)
    click.echo(summary(table), err=True)
    if retries:
        click.echo(f"requests sent again for items answered UNAVAILABLE: {len(retries)}", err=True)
    _check_answers(table)


def _check_answers(table) -> None:
    """Exit 7 when a row was answered with an item error or never answered (after the output is written)."""
    failure = failed_answers(table)
    if failure:
        raise ClientError(failure, ExitCode.CHECK_FAILED)


def episodes_table(episodes) -> Table:
    """Anomaly episodes as a table (with a `labelled` column when the series has labels)."""
    table = Table(title=f"{len(episodes)} anomaly episode(s)")
    for column in episodes.columns:
        table.add_column(column.replace("_", " "), justify="left" if column in ("start", "end") else "right")
    for episode in episodes.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in episode))
    return table


@main.command()
@click.argument("data", type=click.Path(path_type=Path))
@data_options
@click.option("--fleet", required=True, help="Fleet the device belongs to.")
@click.option("--device", "device_id", required=True, help="Device id the readings come from.")
@click.option("--mode", type=click.Choice(["readings", "windows"]), default="readings", show_default=True,
              help="Send one reading per message (the server keeps the window) or whole windows.")
@click.option("--speed", default=0.0, show_default=True,
              help="Replay at this multiple of real time (from the timestamps, or --interval); 0: as fast as the "
                   "server answers.")
@click.option("--interval", type=Duration(), default="1s", show_default=True,
              help="Time between readings when the file has no timestamps.")
@click.option("--max-in-flight", default=64, show_default=True, help="Messages sent but not yet answered, at most.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Also write every answer to this CSV.")
@click.option("--every-flag", is_flag=True,
              help="Print every flagged reading, not only the first of each episode.")
@click.pass_obj
def replay(options: ConnectionOptions, data, dataset, time_column, label_column, features, delimiter, non_numeric,
           fleet, device_id, mode, speed, interval, max_in_flight, output, every_flag) -> None:
    """Stream DATA over StreamScore as a gateway would and print anomalies as they arrive.

    Flags less than one window apart form one episode; each episode is printed when it starts (every flag with
    --every-flag) and all of them are listed at the end, with the latency per message. With labels (NAB, SKAB, ...
    or --label-column) the episodes are checked against the labelled anomalies. Exits 7 when a reading is answered
    with an item error or gets no answer (WARMING_UP, while the server fills the device's window, is no error).
    """
    if speed < 0 or max_in_flight < 1:
        raise ClientError("--speed must be ≥ 0 and --max-in-flight ≥ 1")
    series, window = _read_for_model(options, fleet, data, dataset, time_column, label_column, features, delimiter,
                                      non_numeric)

    last_flag = [-window - 1]

    def show(row: int, result) -> None:
        if not result.is_anomaly:
            return
        starts_episode = abs(row - last_flag[0]) > window
        last_flag[0] = max(last_flag[0], row)
        if not (every_flag or starts_episode):
            return
        when = np.datetime_as_string(series.timestamps[row], "s") if series.timestamps is not None else "-"
        label = f" label={int(series.labels[row])}" if series.labels is not None else ""
        click.echo(f"{when} row={row} device={result.device_id} score={result.score:.4g} > "
                   f"{result.threshold:.4g}{label}")

    retries: list[None] = []
    table = run(replay_series(options, series, fleet_id=fleet, device_id=device_id, mode=mode, window=window,
                              speed=speed, interval_s=interval, max_in_flight=max_in_flight, on_result=show,
                              on_reconnect=lambda resent: click.echo(
                                  f"stream ended UNAVAILABLE: reopened it, resent {resent} unanswered message(s)",
                                  err=True), on_retry=lambda: retries.append(None)))
    if output:
        table.to_csv(output, index=False)
    episodes = flag_episodes(table, gap=window)
    if len(episodes):
        stdout.print(episodes_table(episodes))
    click.echo(summary(table), err=True)
    if retries:
        click.echo(f"messages sent again for items answered UNAVAILABLE: {len(retries)}", err=True)
    _check_answers(table)


def _workload_telemetry(data: Path | None, read_args: tuple, devices: int, length: int, features: int, info,
                        anomaly_rate: float, kinds: tuple[str, ...], seed: int):
    """Readings per device with injected anomalies: a recorded file's, or synthetic ones inside the model's
    training range (from its manifest) so that normal telemetry looks normal to the model."""
    rng = np.random.default_rng(seed)
    if data is not None:
        series = read_series(data, *read_args)
        if series.values.shape[1] != features:
            raise ClientError(f"{data} has {series.values.shape[1]} feature(s), the model expects {features}")
        base = telemetry_from_series(series.values, series.labels, devices, rng)
        scale = np.nanstd(series.values, axis=0) + 1e-9
    else:
        limits = training_range(info)
        low, high = limits if limits is not None else (np.zeros(features), np.ones(features))
        centre, scale = (low + high) / 2, (high - low) / 2 + 1e-9
        values = normal_telemetry(devices, length, features, rng, centre, scale)
        base = inject_anomalies(values, 0.0, rng)
    return inject_anomalies(base.values, anomaly_rate, rng, kinds=kinds, scale=scale, events=base.events,
                            event_kinds=base.event_kinds)


def _final_report(config: dict, runs: list[dict], sweeping: bool, slo_ms: float) -> tuple[dict, str | None]:
    """Print the report of one run or a sweep; returns it (for --json) and why the run failed its check, if it did."""
    lost = sum(r["measured"]["lost"] + r["warmup"]["lost"] for r in runs)
    stdout.print(f"fleets: {', '.join(config['fleets'])} ({config['fleet_source']})")
    if not sweeping:
        run = runs[0]
        stdout.print(render(run))
        failures = problems(run["measured"]) + [f"warm-up: {p}" for p in problems(run["warmup"])]
        return {"config": config, **run}, "; ".join(failures) or None
    verdict = sweep_verdict(runs, slo_ms)
    stdout.print(sweep_table(runs, slo_ms, title=f"rate sweep (p99 ≤ {slo_ms:g} ms, no errors, none lost)"))
    best = verdict["best"]
    if best is None:
        stdout.print("no rate met the SLO")
    else:
        stdout.print(render(best))
        stdout.print(f"max sustained: {best['schedule']['rate']:.0f} msgs/s = "
                     f"{best['measured']['throughput']['items_per_s']:.0f} items/s "
                     f"(p99 {best['measured']['latency_ms']['p99']:.2f} ms, lost 0)")
    failure = "no rate met the SLO" if best is None else f"{lost} message(s) lost" if lost else None
    return {"config": config, "sweep": runs, "max_sustained": verdict}, failure


@main.command()
@click.option("--gateways", "-G", default=4, show_default=True, help="Simulated gateways, one stream each.")
@click.option("--fleets", "-F", "fleet_count", type=click.IntRange(min=1),
              help="Made-up fleets fleet-0, fleet-1, ...: the server scores a fleet it has no model for with its "
                   "default model, so these need one. [default: every fleet the server lists (ListModels), its "
                   "default model as fleet 'default']")
@click.option("--fleet", "fleet_ids", multiple=True, help="Name the fleets instead (repeat the option).")
@click.option("--devices", "-D", default=256, show_default=True, help="Simulated devices over all fleets.")
@click.option("--batch", "-b", default=16, show_default=True, help="Device items per message.")
@click.option("--items", "item_kind", type=click.Choice(["windows", "readings"]), default="windows",
              show_default=True, help="Send whole windows, or one new reading per device (the server keeps windows).")
@click.option("--window", type=int, help="Window length [default: from the server's model (GetModel)].")
@click.option("--feature-count", type=int, help="Features per reading [default: from GetModel].")
@click.option("--mode", type=click.Choice(["open", "closed"]), default="open", show_default=True,
              help="open: messages at a fixed rate whatever the answers; closed: a fixed number in flight.")
@click.option("--rate", type=Rates(), default="1000", show_default=True,
              help="Open loop: messages per second over all gateways, or a sweep start:stop:step.")
@click.option("--arrival", type=click.Choice(["constant", "poisson"]), default="constant", show_default=True,
              help="Open loop: inter-arrival times.")
@click.option("--concurrency", default=16, show_default=True, help="Closed loop: messages in flight.")
@click.option("--rpc", type=click.Choice(["stream", "unary"]), default="stream", show_default=True,
              help="stream: one StreamScore stream per gateway; unary: each message as its own Score call (same "
                   "payloads and timing), for servers that cannot stream.")
@click.option("--warmup", type=Duration(), default="2s", show_default=True, help="Sent, left out of the figures.")
@click.option("--duration", type=Duration(), default="10s", show_default=True, help="Measured time (per rate).")
@click.option("--messages", type=int, help="Measured messages to send instead of a duration.")
@click.option("--drain", type=Duration(), default="10s", show_default=True,
              help="After sending, wait this long for outstanding answers; still unanswered then: lost.")
@click.option("--max-time", type=Duration(), default="10m", show_default=True, help="Hard bound on each run.")
@click.option("--slo-ms", default=50.0, show_default=True, help="Sweep: highest rate whose p99 stays within this.")
@click.option("--anomaly-rate", default=0.01, show_default=True,
              help="Fraction of readings inside injected anomalies.")
@click.option("--anomalies", default=",".join(ANOMALY_KINDS), show_default=True,
              help="Kinds of anomaly to inject.")
@click.option("--data", type=click.Path(path_type=Path), help="Replay this file's readings instead of synthetic ones.")
@data_options
@click.option("--series-length", default=2048, show_default=True, help="Synthetic readings per device.")
@click.option("--pool", default=1000, show_default=True, help="Prebuilt messages per gateway (cycled).")
@click.option("--processes", default=1, show_default=True,
              help="Worker processes sharing the gateways (one process drives a few thousand messages/s).")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the synthetic telemetry, the injected anomalies and Poisson arrivals.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the whole report here as JSON.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help=f"Progress while running: a live line on a terminal, a plain line every {PLAIN_EVERY_S:g} s in a "
                   "log or pipe.")
@click.pass_obj
def loadtest(options: ConnectionOptions, gateways, fleet_count, fleet_ids, devices, batch, item_kind, window,
             feature_count, mode, rate, arrival, concurrency, rpc, warmup, duration, messages, drain, max_time, slo_ms,
             anomaly_rate, anomalies, data, dataset, time_column, label_column, features, delimiter, non_numeric,
             series_length, pool, processes, seed, json_path, progress) -> None:
    """Load-test the server as G gateways feeding F fleets of D devices, and report what it sustained.

    Fleets: those named with --fleet; else with -F N, made-up fleet-0 ... fleet-(N-1), which need a default model on
    the server; else every fleet the server lists, its default model as fleet 'default'. The report says which.

    Latency is measured from each message's intended send time (open loop), so queueing in a slow server shows
    up instead of being hidden. Figures exclude the warm-up. The run fails (exit 7) when a message is lost or
    answered with an error, or an item is answered with an item error (counted by gRPC code; WARMING_UP is not an
    error); a sweep (--rate START:STOP:STEP, stopping at the first rate that misses) fails when no rate met --slo-ms
    (with no errors of either kind) or a message was lost.
    """
    if processes < 1:
        raise ClientError("--processes must be ≥ 1")
    kinds = tuple(k.strip() for k in anomalies.split(",") if k.strip())
    unknown = sorted(set(kinds) - set(ANOMALY_KINDS))
    if unknown or not kinds:
        raise ClientError(f"unknown anomaly kind(s) {unknown}; choose from {', '.join(ANOMALY_KINDS)}")
    fleets, fleet_source = run(load_fleets(options, fleet_ids, fleet_count))
    info = run(get_model(options, fleets[0]))
    for other in fleets[1:]:
        other_info = run(get_model(options, other))
        if (other_info.window, len(other_info.features)) != (info.window, len(info.features)) and window is None:
            raise ClientError(f"fleets {fleets[0]!r} and {other!r} expect different windows; load-test them "
                              "separately (--fleet) or give --window and --feature-count")
    window = window or info.window
    feature_count = feature_count or len(info.features)
    read_args = (dataset, time_column, label_column, features, delimiter, non_numeric)
    telemetry = _workload_telemetry(data, read_args, devices, series_length, feature_count, info, anomaly_rate,
                                    kinds, seed)
    workload = build_workload(telemetry, fleets=fleets, gateways=gateways, batch=batch, window=window,
                              pool_messages=pool, items=item_kind)
    config = {"target": options.target, "tls": options.uses_tls, "rpc": rpc, "gateways": gateways, "fleets": fleets,
              "fleet_source": fleet_source,
              "devices": devices, "batch": batch, "items": item_kind, "window": window, "features": feature_count,
              "data": str(data) if data else "synthetic", "anomaly_rate": anomaly_rate, "anomalies": list(kinds),
              "deadline_s": options.deadline_s, "slo_ms": slo_ms, "processes": min(processes, gateways),
              "model": f"{info.model_name} v{info.model_version}"}
    runs = []
    sweeping = mode == "open" and len(rate) > 1
    for target_rate in rate if mode == "open" else [0.0]:
        schedule = Schedule(mode=mode, rate=target_rate, arrival=arrival, concurrency=concurrency,
                            warmup_s=warmup, duration_s=None if messages else duration, messages=messages,
                            drain_s=drain, max_time_s=max_time, seed=seed, rpc=rpc)
        title = f"{mode}-loop" + (f" at {target_rate:.0f} msgs/s" if mode == "open" else f" × {concurrency}")
        with LiveProgress(stderr, title, enabled=progress) as live:
            if processes > 1:
                counted = run_in_processes(options, workload, schedule, processes, on_progress=live.update)
            else:
                counted = run(LoadRun(options, workload, schedule, on_progress=live.update).run())
        result = run_report(counted, schedule)
        answered = result["measured"]["answered"] + result["warmup"]["answered"]
        if not answered and counted.failure is not None:
            raise rpc_failure(counted.failure, options, "Score" if rpc == "unary" else "StreamScore")
        runs.append(result)
        if sweeping:
            m = result["measured"]
            verdict = "sustained" if sustained(result, slo_ms) else f"not sustained (SLO {slo_ms:g} ms)"
            stderr.print(f"{target_rate:.0f} msgs/s: {m['throughput']['items_per_s']:.0f} items/s, p99 "
                         f"{m['latency_ms']['p99']:.2f} ms, errors {sum(m['errors'].values())}, item errors "
                         f"{sum(m['item_errors'].values())}, lost {m['lost']}: {verdict}")
            if not sustained(result, slo_ms):
                break
    report, failure = _final_report(config, runs, sweeping, slo_ms)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=float))
    if failure:
        raise ClientError(f"the run failed its check: {failure} (see the report)", ExitCode.CHECK_FAILED)
