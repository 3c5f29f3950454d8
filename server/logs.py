"""Structured logs: one JSON object per line (or plain text), with the `fields` passed through `extra`."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class Throttled:
    """Logs a repeated warning at most once per `every_s` seconds, then says how many were held back meanwhile.

    A backend outage fails every call, thousands a second under load: one line per call buries the lines that say
    what happened, and writing them costs the event loop. Warnings are told apart by their `key` (by default the
    message template, so the same warning about different models or errors counts as one)."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}  # key -> when it was last logged
        self._held: dict[str, int] = {}  # key -> warnings held back since

    def warning(self, message: str, *args: object, key: str | None = None) -> None:
        key = message if key is None else key
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every_s:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            message += f" ({held} more like it in the last %.0f s not logged)"
            args = (*args, now - last)
        self.logger.warning(message, *args, extra={"fields": {"suppressed": held}})


# Loggers Ray gives handlers of their own (its default format, not JSON).
RAY_LOGGERS = ("ray", "ray.serve")


class _KeepFormat(logging.StreamHandler):
    """A handler whose format, once set, stays: `ray.init` sets its own format on every handler of Ray's logger."""

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        if self.formatter is None:
            super().setFormatter(fmt)


class _DropRaySigtermWarning(logging.Filter):
    """Ray warns that it set no SIGTERM handler when started off the main thread, as the ingress starts it (so that
    health answers meanwhile). The ingress handles SIGTERM itself, to drain: the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("SIGTERM handler is not set")


def configure(log_format: str = "json", level: int = logging.INFO) -> None:
    """Send aelstm's logs, and Ray's (call this after importing Ray, which installs its own handler then), to
    stderr in `log_format` (json or text)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("aelstm")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    ray_handler = _KeepFormat(sys.stderr)
    ray_handler.setFormatter(handler.formatter)
    for name in RAY_LOGGERS:  # Ray's own lines share the stream: the same format, so a JSON stream stays JSON
        ray_logger = logging.getLogger(name)
        ray_logger.handlers[:] = [ray_handler]
        ray_logger.propagate = False
    ray_worker = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _DropRaySigtermWarning) for f in ray_worker.filters):
        ray_worker.addFilter(_DropRaySigtermWarning())
