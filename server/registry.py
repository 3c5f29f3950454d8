"""Model registry on disk: `registry/<fleet>/<version>/` bundle directories, one default for fleets without a model.

A version is identified by its content (the sha256 of its files), not by its folder: `publish` records every version
number it hands out, with the digest it gave it, in `registry/.issued/<fleet>/<version>`, so a number is never
handed out twice, even after its folder was deleted. A scanner checks each version folder against that record and
refuses one whose content is not what was published under its number; it notices a folder replaced in place (its
files changed) and reads it again. Every ingress on one registry therefore serves the same content for a fleet
within its poll interval. The newest version of a fleet that validates is the one served; a newer one that fails
validation is refused and the previous one keeps serving.

Publishing writes a hidden temporary directory and renames it into place, so a scanner never sees half a bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aelstm.core.bundle import MANIFEST_FILE, Bundle, load_bundle
from aelstm.core.errors import AelstmError, BundleError

log = logging.getLogger(__name__)

DEFAULT_FLEET = "_default"
ISSUED_DIR = ".issued"
PINS_DIR = ".pins"  # registry/.pins/<fleet>: the version the fleet is held at

# (stat of the folder and of each file in it): changes whenever a folder is replaced or a file in it rewritten.
Signature = tuple[tuple[str, int, int, int], ...]


def content_digest(path: str | Path) -> str:
    """sha256 of a bundle's files, exactly as the scoring replicas verify them."""
    from .scoring_app import bundle_files, files_digest  # imported here: scoring_app imports this module's users

    return files_digest(bundle_files(path))


@dataclass(frozen=True)
class ModelEntry:
    """One servable model: the fleet it belongs to, its registry version, the validated bundle and its digest.

    `key` names the model for the backends and the device windows: fleet, version and content, so a folder that
    now holds other files is another model.
    """

    fleet: str
    version: str
    bundle: Bundle
    digest: str = ""
    key: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.digest:
            object.__setattr__(self, "digest", content_digest(self.bundle.path))
        object.__setattr__(self, "key", f"{self.fleet}/{self.version}@{self.digest}")

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


def fleet_names(registry: str | Path) -> list[str]:
    """Fleets with a folder in the registry (hidden folders are the registry's own)."""
    root = Path(registry)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []


def issued(registry: str | Path, fleet: str) -> dict[str, str]:
    """Every version number ever handed out for `fleet` -> the digest it was given."""
    ledger = Path(registry) / ISSUED_DIR / fleet
    if not ledger.is_dir():
        return {}
    return {p.name: p.read_text().strip() for p in ledger.iterdir() if p.name.isdigit()}


def issued_digest(registry: str | Path, fleet: str, version: str) -> str | None:
    """The digest `version` was published with, or None when the ledger has no record of it (a folder copied in
    by hand, or a registry older than the ledger)."""
    try:
        return (Path(registry) / ISSUED_DIR / fleet / version).read_text().strip()
    except FileNotFoundError:
        return None


def _claim(registry: Path, fleet: str, version: str, digest: str) -> bool:
    """Record `version` as issued with `digest`; False when it was issued before (atomic: a hard link never
    replaces an existing name, so two publishers can never both claim one number)."""
    ledger = registry / ISSUED_DIR / fleet
    ledger.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".claim-", dir=ledger)
    try:
        os.write(fd, f"{digest}\n".encode())
        os.close(fd)
        os.link(temp, ledger / version)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temp)


def _next_version(registry: Path, fleet: str) -> str:
    """One above every number issued or present: a deleted version's number is never handed out again."""
    numbers = [int(v) for v in issued(registry, fleet)]
    numbers += [int(p.name) for p in version_dirs(registry / fleet)]
    return str(max(numbers, default=0) + 1)


def publish(bundle_dir: str | Path, registry: str | Path, fleet: str, **provenance: str) -> ModelEntry:
    """Validate `bundle_dir` and copy it atomically into the registry as the fleet's next version; `provenance`
    is recorded in the manifest's `registry` section (e.g. `rollback_of`)."""
    check_fleet_name(fleet)
    registry = Path(registry)
    source = load_bundle(bundle_dir)
    fleet_dir = registry / fleet
    fleet_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=fleet_dir))
    try:
        for name in (MANIFEST_FILE, source.model_path.name):
            shutil.copy2(source.path / name, staging / name)
        manifest = json.loads((staging / MANIFEST_FILE).read_text())
        while True:
            version = _next_version(registry, fleet)
            manifest["model"]["version"] = version
            manifest["registry"] = {
                "fleet": fleet,
                "source_version": source.version,
                "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **provenance,
            }
            (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
            digest = content_digest(staging)  # validates the stamped bundle too
            if _claim(registry, fleet, version, digest):
                break
        os.rename(staging, fleet_dir / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ModelEntry(fleet, version, load_bundle(fleet_dir / version), digest)


def rollback(registry: str | Path, fleet: str, to: str | None = None) -> ModelEntry:
    """Publish the content of version `to` (default: the one below the newest present) as a new version."""
    if to is None:
        present = [p.name for p in version_dirs(Path(registry) / check_fleet_name(fleet))]
        if len(present) < 2:
            raise AelstmError(f"fleet {fleet} has {len(present)} version(s) in {registry}: nothing to roll back to")
        to = present[1]
    return publish(present_version(registry, fleet, to), registry, fleet, rollback_of=to)


def present_version(registry: str | Path, fleet: str, version: str) -> Path:
    """The folder of `version` of `fleet`, which must be present."""
    present = [p.name for p in version_dirs(Path(registry) / check_fleet_name(fleet))]
    if version not in present:
        raise AelstmError(f"fleet {fleet} has no version {version} in {registry} "
                          f"(present: {', '.join(present) or 'none'})")
    return Path(registry) / fleet / version


def pinned_version(registry: str | Path, fleet: str) -> str | None:
    """The version `fleet` is pinned to, if any."""
    try:
        return (Path(registry) / PINS_DIR / fleet).read_text().strip() or None
    except FileNotFoundError:
        return None


def pin(registry: str | Path, fleet: str, version: str) -> None:
    """Hold `fleet` at `version` (which must be present) whatever is published after it, until `unpin`: an
    operator's stop to automatic publishing (retraining, train-fleets) while a fleet is investigated."""
    present_version(registry, fleet, version)
    pins = Path(registry) / PINS_DIR
    pins.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{fleet}-", dir=pins)
    with os.fdopen(fd, "w") as out:
        out.write(version + "\n")
    os.replace(temp, pins / fleet)  # atomic: a scanner sees the old pin or the new one


def unpin(registry: str | Path, fleet: str) -> str | None:
    """Let `fleet` serve its newest valid version again; returns the version it was pinned to, if any."""
    was = pinned_version(registry, check_fleet_name(fleet))
    (Path(registry) / PINS_DIR / fleet).unlink(missing_ok=True)
    return was


def _signature(path: Path) -> Signature | None:
    """What a cheap stat says about a folder's identity and contents; None when it is gone."""
    try:
        parts = [os.stat(path)]
        names = sorted(os.listdir(path))
        parts += [os.stat(path / name) for name in names]
    except OSError:
        return None
    return tuple((name, s.st_ino, s.st_mtime_ns, s.st_size) for name, s in zip(["", *names], parts, strict=True))


class RegistryScanner:
    """Reads the registry into snapshots. Each version folder is read, validated and hashed once per content: the
    scanner remembers it by its stat signature, so a folder replaced in place is read again (and logged)."""

    def __init__(self, root: str | Path, default_bundle: str | Path | None = None,
                 on_event: Callable[[str, str], None] | None = None) -> None:
        self.root = Path(root)
        self.default_bundle = Path(default_bundle) if default_bundle else None
        self._seen: dict[Path, tuple[Signature, ModelEntry | None]] = {}  # None: refused
        self._on_event = on_event  # ("refused" | "replaced", fleet), as it happens
        self.refusals = 0

    def scan(self) -> RegistrySnapshot:
        """Per fleet its pinned version, or (unpinned, or the pinned one is gone or refused) its newest valid one;
        and the default model."""
        fleets = {fleet: entry for fleet in fleet_names(self.root) if (entry := self.serving(fleet)) is not None}
        default = fleets.pop(DEFAULT_FLEET, None)
        if default is None and self.default_bundle is not None:
            default = self._entry(self.default_bundle, DEFAULT_FLEET, None)
        return RegistrySnapshot(fleets, default)

    def serving(self, fleet: str) -> ModelEntry | None:
        """One fleet's pinned version, or its newest valid one; None when it has none. Reads only that fleet, so a
        job settling one fleet at a time never re-reads the whole registry."""
        held = pinned_version(self.root, fleet)
        for path in sorted(version_dirs(self.root / fleet), key=lambda p: p.name != held):  # pinned first
            entry = self._entry(path, fleet, path.name)
            if entry is not None:
                return entry
        return None

    def refuse(self, entry: ModelEntry, reason: str) -> None:
        """Mark a version the backend could not load, so scans skip it while its folder stays as it is."""
        seen = self._seen.get(entry.bundle.path)
        if seen is not None and seen[1] == entry:
            self._seen[entry.bundle.path] = (seen[0], None)
        self._refused(entry.fleet, entry.version, entry.bundle.path, reason)

    def _entry(self, path: Path, fleet: str, version: str | None) -> ModelEntry | None:
        """The model in `path` (a registry version, or the configured default when `version` is None), or None
        when it is refused; read again only when its folder changed."""
        signature = _signature(path)
        seen = self._seen.get(path)
        if seen is not None and seen[0] == signature:
            return seen[1]
        if seen is not None:
            log.warning("model %s version %s was replaced on disk: reading it again", fleet, version or "-",
                        extra={"fields": {"fleet": fleet, "version": version, "path": str(path)}})
            self._notify("replaced", fleet)
        entry = None
        try:
            bundle = load_bundle(path)
            digest = content_digest(path)
            published = issued_digest(self.root, fleet, version) if version is not None else None
            if published is not None and published != digest:
                self._refused(fleet, version, path, f"its files (sha256 {digest[:12]}) are not the ones published "
                              f"as version {version} (sha256 {published[:12]}): a version number is never reused; "
                              f"publish new content as a new version")
            else:
                entry = ModelEntry(fleet, version or bundle.version, bundle, digest)
        except BundleError as exc:
            self._refused(fleet, version, path, exc)
        if signature is not None:
            self._seen[path] = (signature, entry)
        return entry

    def _refused(self, fleet: str, version: str | None, path: Path, reason: object) -> None:
        self.refusals += 1
        log.error("refused model %s version %s: %s", fleet, version or "-", reason,
                  extra={"fields": {"fleet": fleet, "version": version, "path": str(path)}})
        self._notify("refused", fleet)

    def _notify(self, event: str, fleet: str) -> None:
        if self._on_event is not None:
            self._on_event(event, fleet)


@dataclass(frozen=True)
class VersionRecord:
    """One version number of a fleet as `aelstm registry list` shows it."""

    fleet: str
    version: str
    state: str  # served, present (older), refused (invalid, or not what was published), deleted (folder gone)
    digest: str  # sha256 of its files (present), or what was published under it (deleted)
    published_at: str = ""
    note: str = ""  # e.g. "rollback of 2"


def list_versions(registry: str | Path) -> list[VersionRecord]:
    """Every version of every fleet, issued or present, with what a scanner would serve now."""
    scanner = RegistryScanner(registry)
    snapshot = scanner.scan()
    records = []
    for fleet in sorted({*fleet_names(registry), *fleet_names(Path(registry) / ISSUED_DIR)}):
        ledger = issued(registry, fleet)
        present = {p.name: p for p in version_dirs(Path(registry) / fleet)}
        served = snapshot.default if fleet == DEFAULT_FLEET else snapshot.fleets.get(fleet)
        held = pinned_version(registry, fleet)
        for version in sorted({*ledger, *present}, key=int, reverse=True):
            if version not in present:
                records.append(VersionRecord(fleet, version, "deleted", ledger[version]))
                continue
            try:
                manifest = json.loads((present[version] / MANIFEST_FILE).read_text()).get("registry", {})
                digest = content_digest(present[version])
            except (OSError, ValueError, BundleError):
                manifest, digest = {}, ""
            if not digest or ledger.get(version, digest) != digest:
                state = "refused"
            else:
                state = "served" if served is not None and served.version == version else "present"
            notes = [f"rollback of {manifest['rollback_of']}"] if "rollback_of" in manifest else []
            notes += ["pinned"] if held == version else []
            note = ", ".join(notes)
            records.append(VersionRecord(fleet, version, state, digest, manifest.get("published_at", ""), note))
    return records
