"""The training scripts run end to end at --quick sizes and write loadable checkpoints with their config."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifold_defense.models import load_model, read_config
from manifold_defense.training import classifier, encoder, wgan_gp
from manifold_defense.training.cli import parse_config


@pytest.mark.slow
def test_wgan_then_encoder_then_classifier(tmp_path: Path):
    gen_out, enc_out, clf_out = str(tmp_path / "g"), str(tmp_path / "e"), str(tmp_path / "c")
    wgan_gp.main(["--quick", "--iterations", "3", "--out", gen_out, "--device", "cpu"])
    encoder.main(["--quick", "--iterations", "3", "--generator", gen_out, "--out", enc_out, "--device", "cpu"])
    classifier.main(["--quick", "--train-limit", "256", "--out", clf_out, "--device", "cpu"])
    assert load_model(gen_out).latent_dim == 128  # type: ignore[attr-defined]
    assert read_config(gen_out)["metadata"]["config"]["iterations"] == 3
    assert read_config(gen_out)["metadata"]["command"].startswith("python -m manifold_defense.training.wgan_gp")
    assert "test_pixel_mse_G_of_E" in read_config(enc_out)["metadata"]
    acc = read_config(clf_out)["metadata"]["test_accuracy"]
    assert 0.0 <= acc <= 1.0
    assert read_config(clf_out)["metadata"]["command"].startswith("python -m manifold_defense.training.classifier")
    load_model(clf_out)


def test_cli_rejects_unknown_flags():
    with pytest.raises(SystemExit):
        parse_config(classifier.ClassifierConfig, ["--learning-rate", "3"])


def test_cli_types_and_quick_overrides():
    config = parse_config(classifier.ClassifierConfig, ["--quick", "--lr", "0.5", "--epochs", "2"])
    assert config.lr == 0.5 and config.epochs == 2 and config.train_limit == 512


@pytest.mark.slow
def test_encoder_fine_tuned_for_noise_from_an_existing_encoder(tmp_path: Path):
    first, tuned = str(tmp_path / "e"), str(tmp_path / "e_noise")
    encoder.main(["--quick", "--iterations", "2", "--out", first, "--device", "cpu"])
    encoder.main(["--quick", "--iterations", "2", "--init", first, "--noise-sigma", "0.5", "--out", tuned,
                  "--device", "cpu"])
    config = read_config(tuned)["metadata"]["config"]
    assert config["init"] == first and config["noise_sigma"] == 0.5
    curve = read_config(tuned)["metadata"]["learning_curve"]
    assert [row["iteration"] for row in curve] == [1, 2] and all(row["test_x_mse"] > 0 for row in curve)
    assert load_model(tuned).latent_dim == load_model(first).latent_dim  # type: ignore[attr-defined]


def test_encoder_init_must_be_an_encoder_of_the_generator(tmp_path: Path):
    with pytest.raises(ValueError, match="not an encoder"):
        encoder.train(parse_config(encoder.EncoderConfig, ["--quick", "--init", "classifier", "--out",
                                                           str(tmp_path / "e"), "--device", "cpu"]))
