"""Registry: publishing versions atomically, refusing bad bundles, default model resolution."""

from __future__ import annotations

import json
import shutil

import pytest

from aelstm.core.errors import AelstmError, BundleError
from aelstm.server.registry import (
    DEFAULT_FLEET,
    RegistryScanner,
    _claim,
    issued,
    list_versions,
    pin,
    publish,
    rollback,
    unpin,
)


def test_publish_numbers_versions_and_stamps_the_manifest(tmp_path, ec2_bundle):
    first = publish(ec2_bundle.path, tmp_path, "thermostats")
    second = publish(ec2_bundle.path, tmp_path, "thermostats")
    assert (first.version, second.version) == ("1", "2")
    assert second.bundle.version == "2"
    assert second.bundle.manifest["registry"]["fleet"] == "thermostats"
    assert sorted(p.name for p in (tmp_path / "thermostats").iterdir()) == ["1", "2"]  # no staging left


def test_publish_refuses_an_invalid_bundle_and_leaves_nothing(tmp_path, ec2_bundle):
    broken = tmp_path / "broken"
    shutil.copytree(ec2_bundle.path, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(BundleError, match="hash"):
        publish(broken, tmp_path / "registry", "fleet")
    assert not (tmp_path / "registry").exists()


@pytest.mark.parametrize("fleet", ["", "../up", "a/b", ".hidden", " padded"])
def test_publish_refuses_fleet_ids_that_are_not_plain_names(tmp_path, ec2_bundle, fleet):
    with pytest.raises(AelstmError, match="invalid fleet id"):
        publish(ec2_bundle.path, tmp_path, fleet)


def test_scan_serves_the_newest_valid_version_and_refuses_a_broken_one(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "a")
    publish(ec2_bundle.path, tmp_path, "a")
    scanner = RegistryScanner(tmp_path)
    snapshot = scanner.scan()
    assert snapshot.resolve("a").version == "2"
    # A version 3 that fails validation is refused; version 2 keeps serving.
    shutil.copytree(tmp_path / "a" / "2", tmp_path / "a" / "3")
    manifest = json.loads((tmp_path / "a" / "3" / "manifest.json").read_text())
    manifest["window"] = 1
    (tmp_path / "a" / "3" / "manifest.json").write_text(json.dumps(manifest))
    again = scanner.scan()
    assert again.resolve("a").version == "2"
    assert scanner.refusals == 1
    scanner.scan()
    assert scanner.refusals == 1  # refused once, not at every scan


def test_backend_refusal_falls_back_to_the_previous_version(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "a")
    scanner = RegistryScanner(tmp_path)
    scanner.scan()
    newer = publish(ec2_bundle.path, tmp_path, "a")
    assert scanner.scan().resolve("a").version == "2"
    scanner.refuse(newer, "cannot load")
    assert scanner.scan().resolve("a").version == "1"


def test_default_model_from_the_registry_or_a_configured_bundle(tmp_path, ec2_bundle, machine_bundle):
    publish(machine_bundle.path, tmp_path, "machines")
    configured = RegistryScanner(tmp_path, default_bundle=ec2_bundle.path).scan()
    assert configured.resolve("machines").bundle.name == "machine-temp"
    assert configured.resolve("anything").bundle.name == "ec2-latency"
    assert configured.resolve("anything").is_default
    assert RegistryScanner(tmp_path).scan().resolve("anything") is None
    publish(machine_bundle.path, tmp_path, DEFAULT_FLEET)  # a registry default wins over the configured one
    assert RegistryScanner(tmp_path, default_bundle=ec2_bundle.path).scan().resolve("x").bundle.name == "machine-temp"


def test_scanning_a_missing_registry_serves_nothing(tmp_path):
    assert RegistryScanner(tmp_path / "absent").scan().entries() == []


def test_publish_never_hands_out_a_deleted_versions_number_again(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "b")
    publish(ec2_bundle.path, tmp_path, "b")
    shutil.rmtree(tmp_path / "b" / "2")  # a bad version, deleted
    assert publish(ec2_bundle.path, tmp_path, "b").version == "3"
    assert sorted(issued(tmp_path, "b")) == ["1", "2", "3"]


def test_a_version_number_is_claimed_once_with_its_digest(tmp_path):
    assert _claim(tmp_path, "f", "1", "a" * 64)
    assert not _claim(tmp_path, "f", "1", "b" * 64)
    assert issued(tmp_path, "f") == {"1": "a" * 64}
    assert [p.name for p in (tmp_path / ".issued" / "f").iterdir()] == ["1"]  # no claim file left behind


def replace_folder(target, bundle_dir) -> None:
    """What an operator does by hand: delete a version folder and copy another bundle under its number."""
    shutil.rmtree(target)
    shutil.copytree(bundle_dir, target)


def test_a_replaced_published_version_is_refused_and_every_scanner_agrees(tmp_path, ec2_bundle, machine_bundle):
    first = publish(ec2_bundle.path, tmp_path, "a")
    second = publish(ec2_bundle.path, tmp_path, "a")
    events = []
    running = RegistryScanner(tmp_path, on_event=lambda event, fleet: events.append((event, fleet)))
    assert running.scan().resolve("a") == second
    replace_folder(tmp_path / "a" / "2", machine_bundle.path)
    after = running.scan().resolve("a")
    fresh = RegistryScanner(tmp_path).scan().resolve("a")  # an ingress started after the change
    assert after.key == fresh.key == first.key  # not the version-2 content it scanned before
    assert events == [("replaced", "a"), ("refused", "a")]
    assert running.refusals == 1
    running.scan()
    assert running.refusals == 1  # refused once while the folder stays as it is


def test_a_folder_outside_the_ledger_is_read_again_when_replaced(tmp_path, ec2_bundle, machine_bundle):
    shutil.copytree(ec2_bundle.path, tmp_path / "a" / "1")  # copied by hand: no record of what it held
    scanner = RegistryScanner(tmp_path)
    before = scanner.scan().resolve("a")
    replace_folder(tmp_path / "a" / "1", machine_bundle.path)
    after = scanner.scan().resolve("a")
    assert (before.bundle.name, after.bundle.name) == ("ec2-latency", "machine-temp")
    assert before.key != after.key and before.digest != after.digest


def test_rollback_publishes_old_content_under_a_new_number(tmp_path, ec2_bundle, machine_bundle):
    publish(ec2_bundle.path, tmp_path, "a")
    publish(machine_bundle.path, tmp_path, "a")
    back = rollback(tmp_path, "a")
    assert (back.version, back.bundle.name) == ("3", "ec2-latency")
    assert back.bundle.manifest["registry"]["rollback_of"] == "1"
    assert RegistryScanner(tmp_path).scan().resolve("a").version == "3"
    assert rollback(tmp_path, "a", to="2").version == "4"
    with pytest.raises(AelstmError, match="no version 9"):
        rollback(tmp_path, "a", to="9")


def test_a_pinned_fleet_serves_its_pin_whatever_is_published_until_unpinned(tmp_path, ec2_bundle, machine_bundle):
    publish(ec2_bundle.path, tmp_path, "a")
    publish(machine_bundle.path, tmp_path, "a")
    scanner = RegistryScanner(tmp_path)
    pin(tmp_path, "a", "1")
    assert scanner.scan().resolve("a").version == "1"
    publish(machine_bundle.path, tmp_path, "a")  # e.g. a retrain publishing while the fleet is held
    assert scanner.scan().resolve("a").version == "1"
    assert [(r.version, r.state, r.note) for r in list_versions(tmp_path)] == [
        ("3", "present", ""), ("2", "present", ""), ("1", "served", "pinned")]
    with pytest.raises(AelstmError, match="no version 7"):
        pin(tmp_path, "a", "7")
    shutil.rmtree(tmp_path / "a" / "1")  # a pinned version that is gone falls back to the newest
    assert scanner.scan().resolve("a").version == "3"
    assert unpin(tmp_path, "a") == "1" and unpin(tmp_path, "a") is None
    assert scanner.scan().resolve("a").version == "3"
