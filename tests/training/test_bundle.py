import json
import shutil

import numpy as np
import pytest

from aelstm.core.bundle import MANIFEST_FILE, load_bundle
from aelstm.core.data import load_nab
from aelstm.core.errors import BundleError, DataError
from aelstm.core.policy import DEFAULT_POLICY, Policy
from aelstm.core.preprocess import sliding_windows
from aelstm.core.runtime import BundleScorer
from aelstm.training.train import TrainConfig, fit, write_bundle
from support import EC2_LATENCY


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    _, bundle, _ = tiny_bundle
    return shutil.copytree(bundle.path, tmp_path / "copy")


def _edit_manifest(path, change):
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    change(manifest)
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_manifest_describes_the_model(tiny_bundle):
    _, bundle, _ = tiny_bundle
    m = bundle.manifest
    assert bundle.features == ("value",) and bundle.window == 16
    assert m["score"]["alpha"] == 0.5 and m["score"]["rec_scale"] > 0
    # The shipped default alarm policy, fitted, travels in the manifest as one object and is rebuilt from it.
    assert bundle.policy.spec == Policy.parse(DEFAULT_POLICY).spec and bundle.policy.fitted
    assert Policy.from_dict(json.loads(json.dumps(m["policy"]))) == bundle.policy
    assert bundle.threshold == bundle.policy.initial_threshold > 0
    assert m["sampling"]["period_ms"] == 5 * 60 * 1000  # NAB's machine_temperature: a reading every 5 minutes
    assert len(m["training"]["data_fingerprint"]) == 64 and m["training"]["seed"] == 0
    assert m["onnx"]["opset"] >= 17 and len(m["onnx"]["sha256"]) == 64
    assert m["preprocessing"]["denoise"]["wavelet"] == "db4"
    assert m["validation"]["windows"] > 0


def test_onnx_matches_torch_on_real_windows(tiny_bundle):
    fitted, bundle, series = tiny_bundle
    windows = sliding_windows(series.values, bundle.window)[::7]
    onnx = BundleScorer(bundle, device="cpu").score(windows)
    torch_scores = fitted.score(windows)
    tolerance = 1e-4 * np.maximum(1.0, np.abs(torch_scores))
    assert np.all(np.abs(onnx.score - torch_scores) <= tolerance)
    np.testing.assert_allclose(onnx.rec_part + onnx.pred_part, onnx.score, rtol=1e-5)


@pytest.mark.parametrize("mode", ["joint", "lstm"])
def test_onnx_matches_torch_with_patches(tmp_path, mode):
    series = load_nab(EC2_LATENCY)
    normal = series.values[:1500]
    config = TrainConfig(window=12, hidden=8, latent=3, patch=4, score_steps=3, epochs=1, mode=mode)
    fitted = fit(normal, config, progress=False)
    bundle = write_bundle(fitted, tmp_path, feature_names=("value",), name="patched", version="1", source={})
    assert (bundle.manifest["architecture"]["patch"], bundle.manifest["architecture"]["score_steps"]) == (4, 3)
    windows = sliding_windows(series.values, 12)[::5]
    onnx = BundleScorer(bundle, device="cpu").score(windows)
    torch_parts = fitted.score_parts(windows)
    for got, want in zip((onnx.score, onnx.rec_part, onnx.pred_part), torch_parts, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("error_score", ["standardised", "feature-max"])
def test_onnx_matches_torch_for_each_error_score(tmp_path, error_score):
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(size=(900, 3)), axis=0)
    config = TrainConfig(window=10, hidden=8, latent=3, patch=2, epochs=1, error_score=error_score)
    fitted = fit(values[:600], config, progress=False)
    bundle = write_bundle(fitted, tmp_path, feature_names=("a", "b", "c"), name="multi", version="1", source={})
    assert bundle.manifest["architecture"]["error_score"] == bundle.manifest["score"]["error_score"] == error_score
    windows = sliding_windows(values, 10)[::7]
    onnx = BundleScorer(bundle, device="cpu").score(windows)
    for got, want in zip((onnx.score, onnx.rec_part, onnx.pred_part), fitted.score_parts(windows), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_a_bundle_from_before_patches_still_loads_and_scores(bundle_copy, tiny_bundle):
    _edit_manifest(bundle_copy, lambda m: (m["architecture"].pop("patch"), m["architecture"].pop("score_steps")))
    windows = sliding_windows(tiny_bundle[2].values[:100], 16)
    assert np.isfinite(BundleScorer(load_bundle(bundle_copy), device="cpu").score(windows).score).all()


def test_scorer_names_the_expected_shape(tiny_bundle):
    _, bundle, _ = tiny_bundle
    with pytest.raises(DataError, match=r"window=16, features=1"):
        BundleScorer(bundle, device="cpu").score(np.zeros((2, 8, 1)))


def test_missing_model_file_is_named(bundle_copy):
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is missing"):
        load_bundle(bundle_copy)


def test_tampered_model_fails_the_hash_check(bundle_copy):
    with (bundle_copy / "model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="does not match the manifest"):
        load_bundle(bundle_copy)


def test_unknown_schema_version_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="schema version 99"):
        load_bundle(bundle_copy)


def test_feature_mismatch_is_refused(bundle_copy):
    with pytest.raises(BundleError, match="do not match the expected"):
        load_bundle(bundle_copy, expect_features=("temperature",))
    _edit_manifest(bundle_copy, lambda m: m.update(features=["a", "b"]))
    with pytest.raises(BundleError, match="scaler parameters do not match 2 features"):
        load_bundle(bundle_copy)


def test_missing_manifest_and_bad_json(bundle_copy, tmp_path):
    (bundle_copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(tmp_path / "absent")
