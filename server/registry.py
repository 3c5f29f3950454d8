"""Model registry on disk: `registry/<fleet>/<version>/` bundle directories, one default for fleets without a model.

A version directory is immutable once published (`publish` writes a hidden temporary directory and renames it into
place, so a scanner never sees half a bundle). The newest version of a fleet that validates is the one served; a
newer one that fails validation is refused and the previous one keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aelstm.core.bundle import MANIFEST_FILE, Bundle, load_bundle
from aelstm.core.errors import AelstmError, BundleError

log = logging.getLogger(__name__)

DEFAULT_FLEET = "_default"


@dataclass(frozen=True)
class ModelEntry:
    """One servable model: the fleet it belongs to, its registry version and the validated bundle.

    `key` names the model for the backends (the absolute bundle path: a published version never changes).
    """

    fleet: str
    version: str
    bundle: Bundle
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", str(self.bundle.path.resolve()))  # once: resolving stats every parent

    @property
    def is_default(self) -> bool:
        return self.fleet == DEFAULT_FLEET


@dataclass(frozen=True)
class RegistrySnapshot:
    """The models served at one moment: per fleet, plus the default (None when there is none)."""

    fleets: dict[str, ModelEntry] = field(default_factory=dict)
    default: ModelEntry | None = None

    def resolve(self, fleet: str) -> ModelEntry | None:
        """The fleet's own model, else the default, else None."""
        return self.fleets.get(fleet, self.default)

    def entries(self) -> list[ModelEntry]:
        return [*self.fleets.values(), *([self.default] if self.default else [])]


def check_fleet_name(fleet: str) -> str:
    """Fleet ids become directory names: refuse anything that could escape or hide in the registry."""
    if not fleet or fleet.startswith(".") or "/" in fleet or "\\" in fleet or fleet != fleet.strip():
        raise AelstmError(f"invalid fleet id {fleet!r}: use a plain name such as 'thermostats' "
                          "(no '/', no leading '.')")
    return fleet


def version_dirs(fleet_dir: Path) -> list[Path]:
    """Published version directories of a fleet, newest first (numeric names only; temporaries are hidden)."""
    if not fleet_dir.is_dir():
        return []
    numbered = [p for p in fleet_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(numbered, key=lambda p: int(p.name), reverse=True)


def publish(bundle_dir: str | Path, registry: str | Path, fleet: str) -> ModelEntry:
    """Validate `bundle_dir` and copy it atomically into the registry as the fleet's next version."""
    check_fleet_name(fleet)
    source = load_bundle(bundle_dir)
    fleet_dir = Path(registry) / fleet
    fleet_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=fleet_dir))
    try:
        for name in (MANIFEST_FILE, source.model_path.name):
            shutil.copy2(source.path / name, staging / name)
        manifest = json.loads((staging / MANIFEST_FILE).read_text())
        while True:
            existing = version_dirs(fleet_dir)
            version = str(int(existing[0].name) + 1 if existing else 1)
            manifest["model"]["version"] = version
            manifest["registry"] = {
                "fleet": fleet,
                "source_version": source.version,
                "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            load_bundle(staging)
            try:
                os.rename(staging, fleet_dir / version)  # atomic; fails if another publisher took this number
            except OSError:
                if (fleet_dir / version).exists():
                    continue
                raise
            break
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ModelEntry(fleet, version, load_bundle(fleet_dir / version))


class RegistryScanner:
    """Reads the registry into snapshots, remembering refused bundles so each refusal is logged once."""

    def __init__(self, root: str | Path, default_bundle: str | Path | None = None) -> None:
        self.root = Path(root)
        self.default_bundle = Path(default_bundle) if default_bundle else None
        self._refused: set[Path] = set()
        self._accepted: dict[Path, ModelEntry] = {}
        self.refusals = 0

    def scan(self, keep: RegistrySnapshot | None = None) -> RegistrySnapshot:
        """Newest valid version per fleet; a fleet whose versions all fail keeps what `keep` served."""
        keep = keep or RegistrySnapshot()
        fleets: dict[str, ModelEntry] = {}
        fleet_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if self.root.is_dir() else []
        for fleet_dir in fleet_dirs:
            entry = self._newest_valid(fleet_dir.name, version_dirs(fleet_dir))
            previous = keep.fleets.get(fleet_dir.name) if fleet_dir.name != DEFAULT_FLEET else keep.default
            if entry is None:
                entry = previous
            if entry is not None:
                fleets[fleet_dir.name] = entry
        default = fleets.pop(DEFAULT_FLEET, None)
        if default is None and self.default_bundle is not None:
            default = self._configured_default(keep.default)
        return RegistrySnapshot(fleets, default)

    def refuse(self, entry: ModelEntry, reason: str) -> None:
        """Mark a version the backend could not load, so scans skip it from now on."""
        self._accepted.pop(entry.bundle.path, None)
        self._refuse(entry.bundle.path, entry.fleet, entry.version, reason)

    def _refuse(self, path: Path, fleet: str, version: str, reason: object) -> None:
        self._refused.add(path)
        self.refusals += 1
        log.error("refused model %s version %s: %s", fleet, version, reason,
                  extra={"fields": {"fleet": fleet, "version": version, "path": str(path)}})

    def _newest_valid(self, fleet: str, versions: list[Path]) -> ModelEntry | None:
        for path in versions:
            if path in self._refused:
                continue
            if path in self._accepted:
                return self._accepted[path]
            try:
                entry = ModelEntry(fleet, path.name, load_bundle(path))
            except BundleError as exc:
                self._refuse(path, fleet, path.name, exc)
                continue
            self._accepted[path] = entry
            return entry
        return None

    def _configured_default(self, previous: ModelEntry | None) -> ModelEntry | None:
        assert self.default_bundle is not None
        if previous is not None and previous.bundle.path == self.default_bundle:
            return previous
        if self.default_bundle in self._refused:
            return previous
        try:
            bundle = load_bundle(self.default_bundle)
        except BundleError as exc:
            self._refuse(self.default_bundle, DEFAULT_FLEET, "-", exc)
            return previous
        return ModelEntry(DEFAULT_FLEET, bundle.version, bundle)
