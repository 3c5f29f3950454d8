"""The models being served: scans the registry, loads new versions into the backend, swaps them in atomically.

A new version becomes visible only after the backend has loaded it and scored a probe window with it; one that
fails is refused (logged, counted) and the fleet keeps its previous version. Requests already under way finish on
the version they resolved, so a swap never loses a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .backend import BackendUnavailable, ScoringBackend
from .registry import ModelEntry, RegistryScanner, RegistrySnapshot

log = logging.getLogger(__name__)


class ModelBook:
    """Holds the current `RegistrySnapshot`; `refresh()` once, or `watch()` to poll the registry for changes."""

    def __init__(self, scanner: RegistryScanner, backend: ScoringBackend, poll_s: float = 2.0,
                 on_change: Callable[[RegistrySnapshot], Awaitable[None]] | None = None) -> None:
        self.scanner = scanner
        self.backend = backend
        self.poll_s = poll_s
        self.snapshot = RegistrySnapshot()
        self._on_change = on_change

    def resolve(self, fleet: str) -> ModelEntry | None:
        return self.snapshot.resolve(fleet)

    async def refresh(self) -> bool:
        """Scan once; returns whether the served models changed."""
        current = {e.key for e in self.snapshot.entries()}
        for _ in range(16):  # each failed round refuses at least one version, so this ends
            scanned = await asyncio.to_thread(self.scanner.scan)
            failed = False
            for entry in scanned.entries():
                if entry.key in current:
                    continue
                try:
                    await self.backend.prepare(entry)
                except BackendUnavailable:
                    raise  # nothing wrong with the model: try again once the backend is back
                except Exception as exc:
                    self.scanner.refuse(entry, f"the backend could not load it ({type(exc).__name__}: {exc})")
                    failed = True
            if not failed:
                break
        else:
            return False
        if scanned == self.snapshot:
            return False
        self.snapshot = scanned
        for entry in scanned.entries():
            if entry.key not in current:
                log.info("serving model %s version %s for fleet %s", entry.bundle.name, entry.version, entry.fleet,
                         extra={"fields": {"fleet": entry.fleet, "version": entry.version, "model": entry.bundle.name,
                                           "sha256": entry.digest}})
        await self.backend.retain({e.key for e in scanned.entries()})
        if self._on_change is not None:
            await self._on_change(scanned)
        return True

    async def reload(self) -> None:
        """Load every served model into the backend again (it restarted), then pick up registry changes."""
        for entry in self.snapshot.entries():
            await self.backend.prepare(entry)
        await self.refresh()

    async def watch(self) -> None:
        """Poll forever (cancel to stop); a failing scan is logged and retried at the next tick."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.refresh()
            except BackendUnavailable as exc:
                log.debug("registry scan deferred: %s", exc)
            except Exception:
                log.exception("registry scan failed; still serving the previous models")
