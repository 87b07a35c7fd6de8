"""The shipped defended configurations: every registry entry loads from the shipped checkpoints and
is what it says it is."""

from __future__ import annotations

import pytest
import torch

from manifold_defense.models import CheckpointError
from manifold_defense.domains import get_domain
from manifold_defense.pretrained import (DEFAULT_DEFENSE, SHIPPED_DEFENSES, available, defended_pretrained,
                                         load_pretrained)


@pytest.mark.parametrize("name", sorted(SHIPPED_DEFENSES))
def test_every_shipped_defense_loads_with_its_own_checkpoints(name: str):
    spec = SHIPPED_DEFENSES[name]
    assert spec.name == name and {spec.classifier, spec.encoder} <= set(available("fashion_mnist"))
    d = defended_pretrained("fashion_mnist", defense=name).eval()
    assert d.config.steps == spec.projection_steps and d.encoder is not None
    assert d.config.pixel_range == get_domain("fashion_mnist").pixel_range
    mine = load_pretrained(spec.classifier)
    for a, b in zip(d.classifier.state_dict().values(), mine.state_dict().values()):
        assert torch.equal(a, b)


def test_the_default_is_registered_and_amortised_means_c_of_g_of_e():
    assert DEFAULT_DEFENSE in SHIPPED_DEFENSES
    d = defended_pretrained("fashion_mnist", defense="amortised_at").eval()
    x, _ = get_domain("fashion_mnist").load("test", limit=6)
    with torch.no_grad():
        assert torch.allclose(d(x), d.classifier(d.generator(d.encoder(x))), atol=1e-5)


def test_a_classifier_module_replaces_the_configurations_own():
    own = load_pretrained("classifier_pgd_at")
    d = defended_pretrained("fashion_mnist", defense="projection", classifier=own)
    assert d.classifier is own


def test_an_encoder_replaces_the_configurations_own_by_name_or_as_a_module():
    d = defended_pretrained("fashion_mnist", defense="projection", encoder="encoder_noise_0.5")
    tuned = load_pretrained("encoder_noise_0.5")
    assert d.encoder is not None
    for a, b in zip(d.encoder.state_dict().values(), tuned.state_dict().values()):
        assert torch.equal(a, b)
    assert defended_pretrained("fashion_mnist", defense="projection", encoder=tuned).encoder is tuned
    with pytest.raises(ValueError, match="use_encoder=False"):
        defended_pretrained("fashion_mnist", defense="projection", encoder=tuned, use_encoder=False)


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="amortised_at"):
        defended_pretrained("fashion_mnist", defense="nope")
    with pytest.raises(CheckpointError, match="available"):
        load_pretrained("nope")


def test_load_named_takes_a_shipped_name_or_a_path_and_names_a_missing_one(tmp_path) -> None:
    import pytest

    from manifold_defense.models import CheckpointError, save_model
    from manifold_defense.models import MLP
    from manifold_defense.pretrained import load_named

    assert type(load_named("classifier_lenet")).__name__ == "LeNetSmall"
    save_model(MLP(hidden=4, depth=1), tmp_path / "mine_0.5")
    assert isinstance(load_named(str(tmp_path / "mine_0.5")), MLP)
    with pytest.raises(CheckpointError, match="no checkpoint 'nosuch'"):
        load_named("nosuch")


def test_the_ambient_generator_is_a_prior_for_recovery_and_a_defense_generator() -> None:
    from manifold_defense import DefendedClassifier, ProjectionConfig
    from manifold_defense.models import read_config
    from manifold_defense.domains import weights_path
    from manifold_defense.inverse import recover
    from manifold_defense.projection import GaussianMeasurement

    G = load_pretrained("generator_ambient_dropout_0.9").eval()
    config = read_config(weights_path(get_domain("fashion_mnist"), "generator_ambient_dropout_0.9"))["metadata"]["config"]
    assert config["measurement"] == "dropout:0.9" and config["unmeasured"] is False  # learned from measurements only
    x, _ = get_domain("fashion_mnist").load("test", limit=4)
    A = GaussianMeasurement(100, (1, 28, 28), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = A(x)
        far = (A(G(torch.randn(4, G.latent_dim, generator=torch.Generator().manual_seed(1)))) - y).pow(2).mean()
    found = recover(y, A, G, ProjectionConfig(restarts=2, steps=60, lr=0.05, init_std=1.0, seed=0))
    with torch.no_grad():
        assert found.x_hat.shape == x.shape and (A(found.x_hat) - y).pow(2).mean() < 0.5 * far
    defended = DefendedClassifier(load_pretrained("classifier"), G, ProjectionConfig(restarts=2, steps=5, seed=0))
    with torch.no_grad():
        assert defended(x).shape == (4, 10)


def test_diffpure_pretrained_puts_the_shipped_ddpm_in_front_and_refuses_a_checkpoint_that_is_no_ddpm() -> None:
    from manifold_defense.purify import DiffusionPurifier
    from manifold_defense.models import DDPM
    from manifold_defense.pretrained import diffpure_pretrained, load_ddpm

    own = load_pretrained("classifier_lenet")
    d = diffpure_pretrained("fashion_mnist", t_star=20, steps=2, classifier=own)
    assert d.classifier is own and d.randomized
    assert isinstance(d.purifier, DiffusionPurifier) and (d.purifier.t_star, d.purifier.steps) == (20, 2)
    assert isinstance(load_ddpm(), DDPM)
    with pytest.raises(ValueError, match="holds a .*not a DDPM"):
        load_ddpm("classifier")
    with pytest.raises(ValueError, match="t_star"):
        diffpure_pretrained("fashion_mnist", t_star=10**6)


def test_the_shipped_generative_ddpm_samples_labelled_images_its_classifier_recognises() -> None:
    """ddpm_cfg: class-conditional over every timestep (a generator of training data, issue #44)."""
    from manifold_defense.domains import get_domain, weights_path
    from manifold_defense.models import DDPM, read_config

    model = load_pretrained("ddpm_cfg")
    assert isinstance(model, DDPM) and model.num_classes == 10 and model.max_t == model.timesteps
    meta = read_config(weights_path(get_domain("fashion_mnist"), "ddpm_cfg"))["metadata"]
    assert meta["config"]["conditional"] and meta["command"].startswith("python -m manifold_defense.training.ddpm")
    labels = torch.arange(20) % 10
    x = model.sample(labels, steps=10, guidance=2.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        agree = (load_pretrained("classifier")(x).argmax(1) == labels).float().mean()
    assert agree >= 0.6  # measured 91% at iteration 7,000 with 25 steps; an untrained model gives about 10%
