from dataclasses import replace

import numpy as np
import pytest
import torch

from aelstm.core.errors import DataError
from aelstm.core.policy import DEFAULT_POLICY, MULTIVARIATE_POLICY, Policy
from aelstm.training import train as training_train
from aelstm.training.model import JointAELSTM, ModelConfig
from aelstm.training.train import TrainConfig, fit

STATIC = "sum | pot:risk=0.0001"  # a fixed level on the score: these tests judge the model, not a policy

def test_score_is_the_sum_of_its_weighted_normalised_parts():
    model = JointAELSTM(ModelConfig(n_features=2, window=8)).eval()
    model.set_score_weights(0.3, 0.7, 2.0, 4.0)
    windows = torch.randn(5, 8, 2)
    with torch.no_grad():
        rec, pred = model.step_errors(windows)
        score, rec_part, pred_part = model(windows)
    torch.testing.assert_close(rec_part, 0.3 * rec[:, -1] / 2.0)
    torch.testing.assert_close(pred_part, 0.7 * pred[:, -1] / 4.0)
    torch.testing.assert_close(score, rec_part + pred_part)


def test_clip_policy_bounds_scaled_readings():
    model = JointAELSTM(ModelConfig(n_features=1, window=4)).eval()
    model.set_scaling(np.array([0.0]), np.array([1.0]), clip=True)
    near = torch.full((1, 4, 1), 1.0)
    far = torch.full((1, 4, 1), 1000.0)
    with torch.no_grad():
        assert torch.allclose(model(near)[0], model(far)[0])


def _sine(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (np.sin(2 * np.pi * t / 24) + 0.05 * rng.normal(size=n))[:, None]


def test_joint_training_learns_normal_behaviour_and_flags_a_spike():
    config = TrainConfig(window=24, hidden=16, latent=4, epochs=15, patience=3, seed=3, policy=STATIC)
    fitted = fit(_sine(1200), config, progress=False)
    assert fitted.history[-1]["val_loss"] < fitted.history[0]["val_loss"]
    test = _sine(200, seed=9)
    test[150] += 3.0
    windows = np.lib.stride_tricks.sliding_window_view(test[:, 0], 24)[:, :, None]
    scores = fitted.score(windows)
    spike = 150 - 23
    assert scores[spike] > fitted.policy.initial_threshold
    assert np.mean(np.delete(scores, range(spike, spike + 24)) > fitted.policy.initial_threshold) < 0.05


def test_training_is_reproducible_with_a_seed():
    config = TrainConfig(window=12, hidden=8, latent=2, epochs=2, seed=5)
    first = fit(_sine(300), config, progress=False)
    second = fit(_sine(300), config, progress=False)
    windows = np.lib.stride_tricks.sliding_window_view(_sine(100)[:, 0], 12)[:, :, None]
    np.testing.assert_array_equal(first.score(windows), second.score(windows))


@pytest.mark.parametrize("mode", ["separate", "ae", "lstm"])
def test_ablations_train_and_score(mode):
    fitted = fit(_sine(400), TrainConfig(window=12, hidden=8, latent=2, epochs=2, mode=mode), progress=False)
    alpha, beta = fitted.config.score_weights
    windows = np.lib.stride_tricks.sliding_window_view(_sine(60)[:, 0], 12)[:, :, None]
    _, rec_part, pred_part = fitted.score_parts(windows)
    assert (alpha == 0) == bool(np.all(rec_part == 0)) and (beta == 0) == bool(np.all(pred_part == 0))


def test_too_little_normal_data_is_explained():
    with pytest.raises(DataError, match="too few"):
        fit(_sine(40), TrainConfig(window=32), progress=False)


def test_bad_hyper_parameters_are_named():
    with pytest.raises(DataError, match="mode must be one of"):
        TrainConfig(mode="both")
    with pytest.raises(DataError, match="alpha, beta"):
        TrainConfig(alpha=0, beta=0)


def test_fine_tuning_starts_from_the_given_weights_and_leaves_them_unchanged():
    config = TrainConfig(window=12, hidden=8, latent=2, epochs=20, patience=3, seed=1)
    pretrained = fit(_sine(1500), config, progress=False)
    before = {k: v.clone() for k, v in pretrained.model.state_dict().items()}
    short = _sine(200, seed=4)
    one_epoch = replace(config, epochs=1)
    tuned = fit(short, one_epoch, progress=False, init=pretrained)
    scratch = fit(short, one_epoch, progress=False)
    assert tuned.history[0]["val_loss"] < scratch.history[0]["val_loss"] / 2
    assert tuned.model is not pretrained.model
    assert all(torch.equal(before[k], v) for k, v in pretrained.model.state_dict().items())


def test_fine_tuning_refuses_another_architecture_or_mode():
    pretrained = fit(_sine(300), TrainConfig(window=12, hidden=8, latent=2, epochs=1), progress=False)
    for config in (TrainConfig(window=12, hidden=16, latent=2, epochs=1),
                   TrainConfig(window=12, hidden=8, latent=2, epochs=1, mode="ae")):
        with pytest.raises(DataError, match="cannot fine-tune"):
            fit(_sine(300), config, progress=False, init=pretrained)


def test_reference_widens_the_scaler_and_joins_the_calibration():
    config = TrainConfig(window=12, hidden=8, latent=2, epochs=1, validation_fraction=0.25)
    normal, reference = _sine(400), 5.0 + 3.0 * _sine(800, seed=2)
    alone = fit(normal, config, progress=False)
    both = fit(normal, config, progress=False, reference=reference)
    assert both.scaler.maximum[0] == pytest.approx(reference[:600].max(), rel=1e-6)
    assert both.scaler.minimum[0] == pytest.approx(min(normal[:300].min(), reference[:600].min()), rel=1e-6)
    assert alone.validation["windows"] == 100 - 11
    assert both.validation["windows"] == (100 - 11) + (200 - 11)
    with pytest.raises(DataError, match="features"):
        fit(normal, config, progress=False, reference=np.zeros((800, 2)))


def test_patches_are_the_readings_ending_at_each_step_oldest_first():
    model = JointAELSTM(ModelConfig(n_features=2, window=5, patch=3))
    windows = torch.arange(10.0).reshape(1, 5, 2)  # reading t is (2t, 2t + 1)
    patches = model.patches(windows)
    assert patches.shape == (1, 3, 6)
    torch.testing.assert_close(patches[0, -1], torch.arange(4.0, 10.0))  # readings 2, 3, 4
    torch.testing.assert_close(patches[0, 0], torch.arange(0.0, 6.0))  # readings 0, 1, 2


@pytest.mark.parametrize(("lstm_input", "pred_steps"), [("latent", 8 - 3), ("reading", 8 - 1)])
def test_patch_model_reconstructs_patches_and_predicts_the_next_reading(lstm_input, pred_steps):
    model = JointAELSTM(ModelConfig(n_features=2, window=8, patch=3, lstm_input=lstm_input)).eval()
    with torch.no_grad():
        rec, pred = model.step_errors(torch.randn(4, 8, 2))
    assert rec.shape == (4, 8 - 3 + 1) and pred.shape == (4, pred_steps)


def test_a_window_must_be_longer_than_its_patch():
    with pytest.raises(DataError, match=r"window 4 is too short for patch 4 \(need window ≥ patch \+ 1 = 5\)"):
        TrainConfig(window=4, patch=4)
    with pytest.raises(DataError, match="patch must be ≥ 1"):
        TrainConfig(patch=0)
    with pytest.raises(ValueError, match="patch must be in"):
        JointAELSTM(ModelConfig(n_features=1, window=4, patch=4))


def test_with_patches_the_autoencoder_alone_sees_a_change_of_shape_within_the_normal_range():
    test = _sine(300, seed=9)
    faster = np.arange(140, 188)
    test[140:188, 0] = np.sin(2 * np.pi * faster / 8)  # three times the normal frequency, same range
    windows = np.lib.stride_tricks.sliding_window_view(test[:, 0], 24)[:, :, None]
    inside = slice(140 - 23 + 8, 188 - 23)  # windows whose last 8 readings are all in the faster part
    flagged = {}
    for patch in (1, 6):
        config = TrainConfig(window=24, hidden=16, latent=4, patch=patch, mode="ae", epochs=15, seed=3, policy=STATIC)
        fitted = fit(_sine(1200), config, progress=False)
        flagged[patch] = np.mean(fitted.score(windows[inside]) > fitted.policy.initial_threshold)
    assert flagged[1] < 0.2 and flagged[6] > 0.9, flagged


def test_early_stopping_stops_before_the_budget_on_easy_data():
    config = TrainConfig(window=12, hidden=8, latent=2, epochs=200, patience=3, seed=0)
    fitted = fit(_sine(600), config, progress=False)
    assert len(fitted.history) < 200
    assert fitted.early_stops == {"joint": len(fitted.history)}
    # none of the last `patience` epochs improved by min_delta; the lowest loss seen is the one kept and reported
    losses = [record["val_loss"] for record in fitted.history]
    assert min(losses[-config.patience :]) >= min(losses[: -config.patience]) * (1 - config.min_delta)
    assert fitted.validation["loss"] == min(losses)


def test_an_epoch_trains_on_at_most_epoch_windows_drawn_afresh(monkeypatch):
    import aelstm.training.train as train

    seen: list[torch.Tensor] = []
    losses = train._losses

    def recording(model, batch):
        if model.training:
            seen.append(batch.clone())
        return losses(model, batch)

    monkeypatch.setattr(train, "_losses", recording)
    config = TrainConfig(window=12, hidden=8, latent=2, epochs=2, patience=5, batch_size=16, epoch_windows=40)
    fit(_sine(600), config, progress=False)
    epochs = [torch.cat(seen[: len(seen) // 2]), torch.cat(seen[len(seen) // 2 :])]
    assert [len(epoch) for epoch in epochs] == [40, 40]  # 600 readings give ~470 training windows
    assert not torch.equal(epochs[0], epochs[1])  # a new draw each epoch, not the same 40 windows


def test_a_cap_above_the_number_of_windows_trains_exactly_as_without_one():
    config = TrainConfig(window=12, hidden=8, latent=2, epochs=2, seed=5, epoch_windows=None)
    uncapped = fit(_sine(300), config, progress=False)
    capped = fit(_sine(300), replace(config, epoch_windows=10_000), progress=False)
    windows = np.lib.stride_tricks.sliding_window_view(_sine(100)[:, 0], 12)[:, :, None]
    np.testing.assert_array_equal(uncapped.score(windows), capped.score(windows))
    with pytest.raises(DataError, match="epoch windows"):
        TrainConfig(epoch_windows=0)


def test_score_steps_average_each_error_over_the_last_steps():
    model = JointAELSTM(ModelConfig(n_features=2, window=8, patch=2, score_steps=4)).eval()
    windows = torch.randn(3, 8, 2)
    with torch.no_grad():
        rec, pred = model.step_errors(windows)
        _, rec_part, pred_part = model(windows)
    torch.testing.assert_close(rec_part, 0.5 * rec[:, -4:].mean(dim=1))
    torch.testing.assert_close(pred_part, 0.5 * pred[:, -4:].mean(dim=1))
    with pytest.raises(DataError, match="score steps must be in"):
        TrainConfig(window=8, patch=2, score_steps=7)


def _scored(error_score: str, normal: np.ndarray, vectors: list[list[float]]) -> np.ndarray:
    """Prediction error scores of `vectors` under weights fitted on `normal` error vectors."""
    from aelstm.training.error_weights import error_weights

    model = JointAELSTM(ModelConfig(n_features=normal.shape[1], window=4, error_score=error_score))
    weights = error_weights(normal, error_score)
    model.set_error_weights(weights, weights)
    with torch.no_grad():
        return model.error_score(torch.tensor([vectors], dtype=torch.float32), model.pred_error_weights)[0].numpy()


def test_standardised_scores_weigh_each_sensor_by_its_normal_error():
    """A quiet sensor 3σ off against a noisy one 0.3σ off: the same squared error in min–max units."""
    normal = np.random.default_rng(0).normal(size=(5000, 2)) * [1.0, 0.1]
    quiet_off, noisy_off = [0.0, 0.3], [0.3, 0.0]
    pooled = _scored("pooled", normal, [quiet_off, noisy_off])
    assert pooled[0] == pytest.approx(pooled[1])
    for name in ("standardised", "feature-max"):
        scores = _scored(name, normal, [quiet_off, noisy_off])
        assert scores[0] > 50 * scores[1], (name, scores)


def test_feature_max_is_the_largest_standardised_error():
    normal = np.random.default_rng(0).normal(size=(5000, 3))
    vectors = [[3**0.5, 0.0, 0.0], [1.0, 1.0, 1.0]]
    spread = _scored("standardised", normal, vectors)
    peak = _scored("feature-max", normal, vectors)
    assert spread[0] == pytest.approx(spread[1], rel=0.1)  # the same mean of squares
    assert peak[0] == pytest.approx(3 * spread[0], rel=0.1)
    assert peak[1] == pytest.approx(spread[1], rel=0.1)


def test_error_scores_with_unit_weights_are_the_pooled_score():
    windows = torch.randn(4, 8, 3)
    scores = {}
    for name in ("pooled", "standardised"):
        torch.manual_seed(0)  # the same weights each time
        model = JointAELSTM(ModelConfig(n_features=3, window=8, error_score=name)).eval()
        with torch.no_grad():
            scores[name] = model(windows)[0]
    torch.testing.assert_close(scores["standardised"], scores["pooled"])
    with pytest.raises(DataError, match="error score must be one of"):
        TrainConfig(error_score="gaussian")


def test_a_constant_sensor_does_not_make_scores_infinite():
    t = np.arange(600)
    values = np.stack([np.sin(2 * np.pi * t / 24), np.full(600, 5.0)], axis=1)
    for name in ("standardised", "feature-max"):
        fitted = fit(values, TrainConfig(window=12, hidden=8, latent=2, epochs=2, policy=STATIC, error_score=name),
                     progress=False)
        moved = values[-40:].copy()
        moved[:, 1] = 5.5
        assert np.isfinite(fitted.score(np.stack([moved[i : i + 12] for i in range(20)]))).all(), name


def test_the_shipped_policy_follows_the_data_shape():
    t = np.arange(400)
    one = np.sin(2 * np.pi * t / 24)[:, None]
    several = np.stack([one[:, 0], np.cos(2 * np.pi * t / 24)], axis=1)
    quick = TrainConfig(window=8, hidden=4, latent=2, epochs=1)
    assert fit(one, quick, progress=False).policy.spec == Policy.parse(DEFAULT_POLICY).spec
    assert fit(several, quick, progress=False).policy.spec == Policy.parse(MULTIVARIATE_POLICY).spec
    chosen = replace(quick, policy="sum | quantile:q=0.99")
    assert fit(several, chosen, progress=False).policy.spec == "sum | quantile:q=0.99"
    with pytest.raises(DataError, match="no alarm policy chosen yet"):
        quick.alarm_policy  # noqa: B018


def test_early_stopping_judges_at_most_its_share_of_the_validation_windows(monkeypatch):
    monkeypatch.setattr(training_train, "EARLY_STOPPING_WINDOWS", 40)
    judged: list[int] = []
    step_errors = JointAELSTM.step_errors

    def counting(self, windows):
        if not torch.is_grad_enabled():  # the validation pass of each epoch, not a training batch
            judged.append(len(windows))
        return step_errors(self, windows)

    monkeypatch.setattr(JointAELSTM, "step_errors", counting)
    values = np.sin(np.arange(1000) / 7.0)[:, None] + 0.01 * np.random.default_rng(0).normal(size=(1000, 1))
    fitted = fit(values, TrainConfig(window=8, hidden=8, latent=2, epochs=3, patience=5))
    assert judged == [40, 40, 40]  # 193 validation windows, 40 of them judged each epoch
    assert fitted.validation["windows"] == 193  # the calibration still sees every one
