"""What a load run counted, and how it is reported (rich tables on screen, a dict for --json).

Every message sent ends in exactly one of: answered (within the deadline), an error (by gRPC status; an answer later
than the per-message deadline counts as DEADLINE_EXCEEDED), or lost (the run ended and no answer or status came).
Inside an answered message every item is answered (a score, or WARMING_UP while its window fills), **refused** (the
server is overloaded: RESOURCE_EXHAUSTED with a retry hint) or an item error (by gRPC code): item errors fail the
run like message errors, since a backend that is down answers every item so; refusals do not (refusing what it
cannot serve in time is the server keeping its promise), but a rate with refusals is not sustained. Latency
percentiles are those of admitted messages (none of their items refused); refused messages are timed apart.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from rich.console import Group
from rich.table import Table

from aelstm.v1 import scoring_pb2 as pb

from .histogram import LatencyHistogram
from .itemstatus import by_code, error_code_name, status_name

_OK, _ERROR = pb.ITEM_STATUS_OK, pb.ITEM_STATUS_ERROR


@dataclass
class FleetTally:
    """Counts and latencies of one fleet in one phase."""

    sent: int = 0
    items_sent: int = 0
    answered: int = 0
    items_answered: int = 0  # items answered with a score or WARMING_UP
    errors: Counter = field(default_factory=Counter)  # messages, by gRPC status name
    item_errors: Counter = field(default_factory=Counter)  # items answered with an error, by gRPC code name
    items_refused: int = 0  # RESOURCE_EXHAUSTED with a retry hint: the server was overloaded
    refused: int = 0  # answered messages with at least one refused item
    lost: int = 0
    latencies_us: array = field(default_factory=lambda: array("d"))  # admitted messages
    refused_latencies_us: array = field(default_factory=lambda: array("d"))
    # Admitted messages: the part of their latency the server's scoring path reports (`server_time_us`); the rest
    # is transport, the server's stream reader, and this client.
    server_us: array = field(default_factory=lambda: array("d"))

    def histogram(self, latencies: str = "latencies_us") -> LatencyHistogram:
        """The histogram of one of the latency arrays, named by its field."""
        histogram = LatencyHistogram()
        histogram.record_many_us(np.frombuffer(getattr(self, latencies), dtype=np.float64))
        return histogram


def retry_hint_s(response: pb.ScoreResponse) -> float:
    """The longest retry hint of the response's refused items, in seconds (0 when none was refused)."""
    return max((r.error.retry_after_ms for r in response.results if r.status == _ERROR), default=0) / 1000


@dataclass
class _Second:
    """What the messages meant to be sent within one second got."""

    answered: int = 0
    items_scored: int = 0
    items_refused: int = 0
    latencies_us: list[float] = field(default_factory=list)  # admitted messages

    def merge(self, other: _Second) -> None:
        self.answered += other.answered
        self.items_scored += other.items_scored
        self.items_refused += other.items_refused
        self.latencies_us.extend(other.latencies_us)


@dataclass
class Timeline:
    """Per second of intended send time (on the machine's monotonic clock, shared by every process on it): how the
    service behaved over a run, e.g. while a burst lasted and how soon after it ended it recovered."""

    seconds: dict[int, _Second] = field(default_factory=dict)

    def record(self, intended: float, items_scored: int, items_refused: int, latency_us: float | None) -> None:
        second = self.seconds.setdefault(math.floor(intended), _Second())
        second.answered += 1
        second.items_scored += items_scored
        second.items_refused += items_refused
        if latency_us is not None:
            second.latencies_us.append(latency_us)

    def merge(self, other: Timeline) -> None:
        for t, theirs in other.seconds.items():
            self.seconds.setdefault(t, _Second()).merge(theirs)

    def summary(self) -> list[dict]:
        rows = []
        for t, s in sorted(self.seconds.items()):
            p99 = float(np.percentile(s.latencies_us, 99)) / 1000 if s.latencies_us else None
            rows.append({"t": t, "answered": s.answered, "items_scored": s.items_scored,
                         "items_refused": s.items_refused, "p99_ms": p99,
                         "max_ms": max(s.latencies_us) / 1000 if s.latencies_us else None})
        return rows


@dataclass
class Detection:
    """Flags against injected (or labelled) anomalies: per window, and per event (caught at least once)."""

    event_kinds: dict[int, str]
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    events_seen: set = field(default_factory=set)
    events_caught: set = field(default_factory=set)

    def update(self, statuses: list[int], flags: list[bool], events: np.ndarray | None) -> None:
        """Item i: its status, its flag, and `events[i]` its event id (0 = normal, -1 = not judged); `events` is
        None when every item is normal (the common case, counted without a per-item loop)."""
        if events is None:
            ok_flags = [flag for status, flag in zip(statuses, flags, strict=True) if status == _OK]
            flagged = sum(ok_flags)
            self.fp += flagged
            self.tn += len(ok_flags) - flagged
            return
        for status, flag, event in zip(statuses, flags, events.tolist(), strict=True):
            if status != _OK or event < 0:
                continue
            if event:
                self.events_seen.add(event)
                if flag:
                    self.tp += 1
                    self.events_caught.add(event)
                else:
                    self.fn += 1
            elif flag:
                self.fp += 1
            else:
                self.tn += 1

    def merge(self, other: Detection) -> None:
        self.tp, self.fp, self.fn, self.tn = (self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                                              self.tn + other.tn)
        self.events_seen |= other.events_seen
        self.events_caught |= other.events_caught

    def summary(self) -> dict:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_kind: dict[str, dict[str, int]] = {}
        for event in self.events_seen:
            kind = per_kind.setdefault(self.event_kinds.get(event, "labelled"), {"events": 0, "caught": 0})
            kind["events"] += 1
            kind["caught"] += event in self.events_caught
        seen = len(self.events_seen)
        return {
            "windows": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "precision": precision,
                        "recall": recall, "f1": f1},
            "events": {"seen": seen, "caught": len(self.events_caught),
                       "recall": len(self.events_caught) / seen if seen else 0.0, "by_kind": per_kind},
        }


def _either(pick, a: float | None, b: float | None) -> float | None:
    """pick(a, b) where both are known, else whichever is."""
    return b if a is None else a if b is None else pick(a, b)


@dataclass
class Tally:
    """One phase (warm-up or measured) of a run."""

    detection: Detection
    fleets: dict[str, FleetTally] = field(default_factory=dict)
    item_status: Counter = field(default_factory=Counter)
    timeline: Timeline = field(default_factory=Timeline)
    unmatched: int = 0
    resent: int = 0  # messages sent again on a reopened stream (the previous one ended UNAVAILABLE unanswered)
    reconnects: int = 0  # streams reopened after UNAVAILABLE
    item_retries: int = 0  # messages sent again because items were answered UNAVAILABLE
    first_send: float | None = None
    last_answer: float | None = None

    def fleet(self, fleet_id: str) -> FleetTally:
        tally = self.fleets.get(fleet_id)
        if tally is None:
            tally = self.fleets[fleet_id] = FleetTally()
        return tally

    def sent(self, fleet_id: str, items: int, when: float) -> None:
        if self.first_send is None:
            self.first_send = when
        tally = self.fleet(fleet_id)
        tally.sent += 1
        tally.items_sent += items

    def answered(self, fleet_id: str, response: pb.ScoreResponse, latency_us: float, late: bool,
                 events: np.ndarray | None, when: float) -> None:
        tally = self.fleet(fleet_id)
        self.last_answer = when
        results = response.results
        statuses = [result.status for result in results]
        refused = [r for r in results if r.status == _ERROR and r.error.retry_after_ms] if _ERROR in statuses else []
        if refused:
            tally.refused_latencies_us.append(latency_us)
        else:
            tally.latencies_us.append(latency_us)
            if response.server_time_us:  # 0: a server that does not time its requests
                tally.server_us.append(response.server_time_us)
        if late:
            tally.errors["DEADLINE_EXCEEDED"] += 1
            return
        tally.answered += 1
        self.item_status.update(statuses)
        failed = ([error_code_name(r.error.code) for r in results if r.status == _ERROR and not r.error.retry_after_ms]
                  if _ERROR in statuses else [])
        tally.item_errors.update(failed)
        tally.items_refused += len(refused)
        tally.refused += bool(refused)
        answered = len(results) - len(failed) - len(refused)
        tally.items_answered += answered
        self.timeline.record(when - latency_us / 1e6, answered, len(refused), None if refused else latency_us)
        self.detection.update(statuses, [result.is_anomaly for result in results], events)

    def merge(self, other: Tally) -> None:
        """Add another process's counts of the same phase."""
        for name, theirs in other.fleets.items():
            mine = self.fleet(name)
            mine.sent += theirs.sent
            mine.items_sent += theirs.items_sent
            mine.answered += theirs.answered
            mine.items_answered += theirs.items_answered
            mine.errors.update(theirs.errors)
            mine.item_errors.update(theirs.item_errors)
            mine.items_refused += theirs.items_refused
            mine.refused += theirs.refused
            mine.lost += theirs.lost
            mine.latencies_us.extend(theirs.latencies_us)
            mine.refused_latencies_us.extend(theirs.refused_latencies_us)
            mine.server_us.extend(theirs.server_us)
        self.item_status.update(other.item_status)
        self.timeline.merge(other.timeline)
        self.unmatched += other.unmatched
        self.resent += other.resent
        self.reconnects += other.reconnects
        self.item_retries += other.item_retries
        self.detection.merge(other.detection)
        self.first_send = _either(min, self.first_send, other.first_send)
        self.last_answer = _either(max, self.last_answer, other.last_answer)

    def totals(self) -> dict:
        fleets = self.fleets.values()
        errors: Counter = Counter()
        item_errors: Counter = Counter()
        for tally in fleets:
            errors.update(tally.errors)
            item_errors.update(tally.item_errors)
        return {
            "sent": sum(t.sent for t in fleets),
            "answered": sum(t.answered for t in fleets),
            "errors": dict(errors),
            "item_errors": dict(item_errors),
            "lost": sum(t.lost for t in fleets),
            "items_sent": sum(t.items_sent for t in fleets),
            "items_answered": sum(t.items_answered for t in fleets),
            "refused": sum(t.refused for t in fleets),
            "items_refused": sum(t.items_refused for t in fleets),
        }

    def histogram(self, latencies: str = "latencies_us") -> LatencyHistogram:
        """One latency array of every fleet (`FleetTally.histogram`), in one histogram."""
        histogram = LatencyHistogram()
        for tally in self.fleets.values():
            histogram.record_many_us(np.frombuffer(getattr(tally, latencies)))
        return histogram

    def summary(self) -> dict:
        """Everything about this phase as plain data (for --json and the screen report)."""
        totals = self.totals()
        span = (self.last_answer - self.first_send) if self.first_send and self.last_answer else 0.0
        totals.update(
            unmatched_answers=self.unmatched,
            resent=self.resent,
            reconnects=self.reconnects,
            item_retries=self.item_retries,
            item_status={status_name(k): v for k, v in sorted(self.item_status.items())},
            duration_s=span,
            throughput={"msgs_per_s": totals["answered"] / span if span else 0.0,
                        "items_per_s": totals["items_answered"] / span if span else 0.0},
            latency_ms=self.histogram().summary_ms(),
            refused_latency_ms=self.histogram("refused_latencies_us").summary_ms(),
            server_latency_ms=self.histogram("server_us").summary_ms(),
            fleets={
                name: {"sent": t.sent, "answered": t.answered, "errors": dict(t.errors), "lost": t.lost,
                       "items_answered": t.items_answered, "item_errors": dict(t.item_errors),
                       "refused": t.refused, "items_refused": t.items_refused,
                       "latency_ms": t.histogram().summary_ms()}
                for name, t in sorted(self.fleets.items())
            },
            detection=self.detection.summary(),
            timeline=self.timeline.summary(),
        )
        return totals


def problems(summary: dict) -> list[str]:
    """How a phase broke the service's promise (every message answered, every item without error), if it did."""
    found = [f"{summary['lost']} message(s) lost"] if summary["lost"] else []
    found += [f"{what} {by_code(summary[key])}" for key, what in (("errors", "message errors"),
                                                                   ("item_errors", "item errors")) if summary[key]]
    if summary["unmatched_answers"]:
        found.append(f"{summary['unmatched_answers']} answer(s) matching no request")
    return found


def passed(summary: dict) -> bool:
    return not problems(summary)


def _ms(value: float) -> str:
    return f"{value:.2f}"


def render(report: dict) -> Group:
    """The final report as rich tables."""
    measured = report["measured"]
    counts = Table(title="messages (measured, warm-up excluded)", show_header=True)
    for column in ("sent", "answered", "errors", "LOST", "items sent", "items answered", "items refused",
                   "item errors", "msgs/s", "items/s"):
        counts.add_column(column, justify="right")
    errors = by_code(measured["errors"]) or "0"
    counts.add_row(str(measured["sent"]), str(measured["answered"]), errors, str(measured["lost"]),
                   str(measured["items_sent"]), str(measured["items_answered"]), str(measured["items_refused"]),
                   by_code(measured["item_errors"]) or "0",
                   f"{measured['throughput']['msgs_per_s']:.0f}", f"{measured['throughput']['items_per_s']:.0f}")
    latency = Table(title="latency from intended send time of admitted messages (ms)")
    latency.add_column("fleet")
    for column in ("sent", "answered", "errors", "lost", "refused", "item errors", "p50", "p90", "p99", "p99.9",
                   "max"):
        latency.add_column(column, justify="right")
    rows = [("all", measured, measured["latency_ms"])]
    rows += [(name, fleet, fleet["latency_ms"]) for name, fleet in measured["fleets"].items()]
    for name, part, figures in rows:
        latency.add_row(name, str(part["sent"]), str(part["answered"]), str(sum(part["errors"].values())),
                        str(part["lost"]), str(part["refused"]), str(sum(part["item_errors"].values())),
                        *(_ms(figures[k]) for k in ("p50", "p90", "p99", "p99.9", "max")))
    parts: list = [counts, latency]
    server = measured["server_latency_ms"]
    if server["max"]:
        parts.append(f"of which in the server's scoring path (its server_time_us; the rest is transport, the "
                     f"server's stream reader and this client): p50 {_ms(server['p50'])} ms, p99 "
                     f"{_ms(server['p99'])} ms")
    detection = measured["detection"]
    if detection["events"]["seen"] or detection["windows"]["fp"]:
        table = Table(title="detection (injected anomalies, or those labelled in --data)")
        for column in ("windows P", "windows R", "F1", "tp", "fp", "fn", "events caught"):
            table.add_column(column, justify="right")
        w, e = detection["windows"], detection["events"]
        by_kind = ", ".join(f"{k} {v['caught']}/{v['events']}" for k, v in sorted(e["by_kind"].items()))
        table.add_row(f"{w['precision']:.3f}", f"{w['recall']:.3f}", f"{w['f1']:.3f}", str(w["tp"]), str(w["fp"]),
                      str(w["fn"]), f"{e['caught']}/{e['seen']} ({by_kind})")
        parts.append(table)
    if measured["refused"]:
        refused = measured["refused_latency_ms"]
        parts.append(f"refused (server overloaded, RESOURCE_EXHAUSTED with a retry hint): {measured['refused']} "
                     f"message(s), {measured['items_refused']} item(s); answered in p50 {_ms(refused['p50'])} ms, "
                     f"p99 {_ms(refused['p99'])} ms")
    if measured["unmatched_answers"]:
        parts.append(f"answers matching no request: {measured['unmatched_answers']}")
    if measured.get("reconnects"):
        parts.append(f"streams reopened after UNAVAILABLE: {measured['reconnects']}, messages resent: "
                     f"{measured['resent']}")
    if measured.get("item_retries"):
        parts.append(f"messages sent again for items answered UNAVAILABLE: {measured['item_retries']}")
    return Group(*parts)
