"""Registry: publishing versions atomically, refusing bad bundles, default model resolution."""

from __future__ import annotations

import json
import shutil

import pytest

from aelstm.core.errors import AelstmError, BundleError
from aelstm.server.registry import DEFAULT_FLEET, RegistryScanner, publish


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
    again = scanner.scan(snapshot)
    assert again.resolve("a").version == "2"
    assert scanner.refusals == 1
    scanner.scan(again)
    assert scanner.refusals == 1  # refused once, not at every scan


def test_backend_refusal_falls_back_to_the_previous_version(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "a")
    scanner = RegistryScanner(tmp_path)
    first = scanner.scan()
    newer = publish(ec2_bundle.path, tmp_path, "a")
    assert scanner.scan(first).resolve("a").version == "2"
    scanner.refuse(newer, "cannot load")
    assert scanner.scan(first).resolve("a").version == "1"


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
