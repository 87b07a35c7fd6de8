"""Training objectives for randomized smoothing (issue #46): consistency regularisation, SmoothAdv
training, a classifier adapted to a generative denoiser, and a denoiser (the encoder of G(E(x))) trained
for a frozen classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from manifold_defense.models import MLP, load_model, read_config, save_model
from manifold_defense.training import classifier, encoder
from manifold_defense.training.classifier import consistency_loss
from manifold_defense.training.cli import parse_config
from manifold_defense.training.smooth_adv import smoothadv_inputs, warmup_eps


@torch.no_grad()
def _soft_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> float:
    probs = torch.softmax(model((x[None] + noise).flatten(0, 1)), -1).view(*noise.shape[:2], -1).mean(0)
    return float(torch.nn.functional.nll_loss(probs.log(), y))


def test_the_consistency_term_is_zero_for_agreeing_copies_and_grows_with_disagreement() -> None:
    y = torch.tensor([0, 1])
    same = torch.tensor([[[3.0, 0.0], [0.0, 3.0]]] * 2)
    base = consistency_loss(same, y, 0.0, 0.0)
    assert float(consistency_loss(same, y, 10.0, 0.0)) == pytest.approx(float(base), abs=1e-6)
    apart = torch.stack([same[0], -same[0]])
    assert float(consistency_loss(apart, y, 10.0, 0.0)) > float(consistency_loss(apart, y, 0.0, 0.0)) + 1.0


def test_consistency_training_lowers_its_loss(tmp_path: Path) -> None:
    out = tmp_path / "c"
    classifier.main(["--architecture", "mlp", "--train-limit", "512", "--epochs", "3", "--noise-sigma", "0.25",
                     "--consistency-weight", "5", "--lr", "3e-3", "--device", "cpu", "--out", str(out)])
    curve = read_config(out)["metadata"]["learning_curve"]
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    with pytest.raises(ValueError, match="noise-sigma"):
        classifier.train(parse_config(classifier.ClassifierConfig, ["--quick", "--consistency-weight", "5",
                                                                     "--out", str(tmp_path / "x"), "--device", "cpu"]))


def test_smoothadv_raises_the_soft_loss_inside_the_ball_and_leaves_inputs_and_model_alone() -> None:
    torch.manual_seed(0)
    model = MLP(hidden=16).train()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    noise = 0.5 * torch.randn(2, *x.shape)
    x0, before = x.clone(), [p.detach().clone() for p in model.parameters()]
    adv = smoothadv_inputs(model, x, y, noise, eps=1.0, steps=3, bounds=(0.0, 1.0))
    assert torch.equal(x, x0) and model.training
    assert all(torch.equal(a, b) and b.grad is None and b.requires_grad for a, b in zip(before, model.parameters()))
    assert float((adv - x).flatten(1).norm(dim=1).max()) <= 1.0 + 1e-5
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    model.eval()
    assert _soft_loss(model, adv, y, noise) > _soft_loss(model, x, y, noise) + 0.05
    assert torch.equal(smoothadv_inputs(model, x, y, noise, eps=0.0, steps=1, bounds=(0.0, 1.0)), x)
    with pytest.raises(ValueError, match="noise must have shape"):
        smoothadv_inputs(model, x, y, noise[0], eps=1.0, steps=1, bounds=(0.0, 1.0))
    assert [warmup_eps(0.5, e, 2) for e in range(3)] == [0.25, 0.5, 0.5] and warmup_eps(0.5, 0, 0) == 0.5


@pytest.mark.parametrize("consistency", ["0", "5"])
def test_smoothadv_training_lowers_its_loss_and_needs_noise(tmp_path: Path, consistency: str) -> None:
    out = tmp_path / "s"
    classifier.main(["--architecture", "mlp", "--train-limit", "512", "--epochs", "3", "--noise-sigma", "0.25",
                     "--smoothadv-eps", "0.5", "--smoothadv-warmup", "0", "--consistency-weight", consistency,
                     "--lr", "3e-3", "--device", "cpu", "--out", str(out)])
    meta = read_config(out)["metadata"]
    assert meta["config"]["smoothadv_eps"] == 0.5
    assert meta["learning_curve"][-1]["train_loss"] < meta["learning_curve"][0]["train_loss"]
    for flags, match in ((["--smoothadv-eps", "0.5"], "noise-sigma"),
                         (["--smoothadv-eps", "0.5", "--noise-sigma", "0.5", "--denoiser", "amortised"], "denoiser none")):
        with pytest.raises(ValueError, match=match):
            classifier.train(parse_config(classifier.ClassifierConfig, ["--quick", *flags, "--out", str(tmp_path / "x"),
                                                                         "--device", "cpu"]))


def test_a_classifier_fine_tuned_behind_the_amortised_denoiser(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model(MLP(hidden=16), tmp_path / "start")
    out = tmp_path / "tuned"
    classifier.main(["--init", str(tmp_path / "start"), "--denoiser", "amortised", "--encoder", "encoder_noise_0.5",
                     "--noise-sigma", "0.5", "--train-limit", "256", "--epochs", "1", "--device", "cpu", "--out", str(out)])
    config = read_config(out)["metadata"]["config"]
    assert config["denoiser"] == "amortised" and config["init"] == str(tmp_path / "start")
    start, tuned = load_model(tmp_path / "start"), load_model(out)
    assert any(not torch.equal(a, b) for a, b in zip(start.parameters(), tuned.parameters()))
    with pytest.raises(ValueError, match="noise-sigma"):
        classifier.train(parse_config(classifier.ClassifierConfig, ["--quick", "--denoiser", "diffusion",
                                                                     "--out", str(tmp_path / "x"), "--device", "cpu"]))


@pytest.mark.slow
def test_an_encoder_trained_for_a_frozen_classifier_leaves_the_classifier_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    clf = MLP(hidden=16).eval()
    before = [p.detach().clone() for p in clf.parameters()]
    real_load = encoder.load_named
    monkeypatch.setattr(encoder, "load_named", lambda name, *a, **k: clf if name == "my_classifier" else real_load(name, *a, **k))
    encoder.main(["--quick", "--iterations", "3", "--init", "encoder", "--noise-sigma", "0.5", "--classifier",
                  "my_classifier", "--classification-weight", "1", "--device", "cpu", "--out", str(tmp_path / "e")])
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, clf.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(load_model(tmp_path / "e").parameters(),
                                                    real_load("encoder").parameters()))
    assert read_config(tmp_path / "e")["metadata"]["config"]["classification_weight"] == 1.0
    with pytest.raises(ValueError, match="needs --classifier"):
        encoder.train(parse_config(encoder.EncoderConfig, ["--quick", "--classification-weight", "1",
                                                           "--out", str(tmp_path / "x"), "--device", "cpu"]))
