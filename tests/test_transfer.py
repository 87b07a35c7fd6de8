"""The transfer family: adversarials crafted on other models (through their exact gradients) and
judged on this one, per example the first candidate that fools it."""

from __future__ import annotations

import pytest
import torch

from eval.suite import ATTACKS, SuiteConfig, register_transfer_source, run_suite, transfer_source
from manifold_defense import DefendedClassifier, ProjectionConfig
from manifold_defense.domains import get_domain


@pytest.fixture
def defense(trained_mlp, pca_generator) -> DefendedClassifier:
    return DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, steps=3, lr=0.3, seed=0)).eval()


def test_transfer_from_the_model_itself_is_that_models_white_box_attack(trained_mlp, defense, fmnist_small) -> None:
    _, _, x, y = fmnist_small
    x, y = x[:16], y[:16]
    register_transfer_source("test_self", trained_mlp)
    cfg = SuiteConfig(attacks=("exact_apgd_ce", "transfer"), apgd_steps=5, batch_size=8, models=("undefended",),
                      eps=0.1, transfer_from=("test_self",))
    white_box, transfer = run_suite(trained_mlp, defense, x, y, cfg, progress=False)
    assert transfer.key == "transfer" and transfer.accuracy < 1.0
    assert torch.equal(white_box.correct, transfer.correct)  # same attack, same seed, same model


def test_candidates_stay_in_the_ball_and_the_first_that_fools_is_kept(trained_mlp, defense, fmnist_small) -> None:
    _, _, x, y = fmnist_small
    x, y = x[:8].clone(), y[:8]
    before = x.clone()
    register_transfer_source("test_mlp", trained_mlp)
    register_transfer_source("test_defense", defense)
    cfg = SuiteConfig(apgd_steps=4, eps=0.1, transfer_from=("test_defense", "test_mlp"))
    adv = ATTACKS["transfer"].run(trained_mlp, defense, x, y, cfg)
    assert set(adv) == {"undefended", "defended"} and torch.equal(x, before)  # input untouched
    for images in adv.values():
        assert float((images - x).abs().max()) <= 0.1 + 1e-6 and images.min() >= 0 and images.max() <= 1
    # A source judged on itself: whatever one candidate fools, the kept one fools too.
    alone = ATTACKS["transfer"].run(trained_mlp, defense, x, y, SuiteConfig(apgd_steps=4, eps=0.1,
                                                                            transfer_from=("test_mlp",)))
    fooled_alone = trained_mlp(alone["undefended"]).argmax(1) != y
    fooled_both = trained_mlp(adv["undefended"]).argmax(1) != y
    assert bool((fooled_both >= fooled_alone).all())


def test_transfer_needs_known_sources(trained_mlp, defense, fmnist_small) -> None:
    _, _, x, y = fmnist_small
    with pytest.raises(ValueError, match="needs source models"):
        ATTACKS["transfer"].run(trained_mlp, defense, x[:2], y[:2], SuiteConfig())
    with pytest.raises(ValueError, match="unknown transfer source 'nope'"):
        transfer_source("nope", get_domain("fashion_mnist"))
    with pytest.raises(TypeError, match="nn.Module"):
        register_transfer_source("bad", lambda t: t)  # type: ignore[arg-type]


def test_the_cache_knows_the_sources_weights_not_only_their_names(trained_mlp, defense, fmnist_small,
                                                                   tmp_path) -> None:
    from eval.suite.batch_cache import BatchCache
    from manifold_defense.models import MLP

    _, _, x, y = fmnist_small
    cfg = SuiteConfig(attacks=("transfer",), apgd_steps=2, batch_size=4, models=("undefended",), eps=0.1,
                      transfer_from=("test_swapped",))
    register_transfer_source("test_swapped", trained_mlp)
    cache = BatchCache(tmp_path, fingerprint="t")
    run_suite(trained_mlp, defense, x[:4], y[:4], cfg, progress=False, cache=cache)
    run_suite(trained_mlp, defense, x[:4], y[:4], cfg, progress=False, cache=cache)
    assert (cache.hits, cache.misses) == (1, 1)  # the same source: served from the cache
    torch.manual_seed(5)
    register_transfer_source("test_swapped", MLP(hidden=8, depth=1).eval())  # same name, other weights
    run_suite(trained_mlp, defense, x[:4], y[:4], cfg, progress=False, cache=cache)
    assert cache.misses == 2


def test_a_diffpure_source_is_named_by_its_t_star_and_steps(fmnist_small) -> None:
    from manifold_defense import PurifiedClassifier
    from manifold_defense.purify import DiffusionPurifier

    _, _, x, y = fmnist_small
    source = transfer_source("diffpure_t20_s2", get_domain("fashion_mnist"))
    assert isinstance(source, PurifiedClassifier) and source.randomized
    assert isinstance(source.purifier, DiffusionPurifier)
    assert (source.purifier.t_star, source.purifier.steps) == (20, 2)
    cfg = SuiteConfig(apgd_steps=2, eot_samples=1, eps=0.1, transfer_from=("diffpure_t20_s2",))
    adv = ATTACKS["transfer"].run(source.classifier, source, x[:4], y[:4], cfg)
    assert float((adv["defended"] - x[:4]).abs().max()) <= 0.1 + 1e-6
    with pytest.raises(ValueError, match="t_star"):
        transfer_source("diffpure_t5000", get_domain("fashion_mnist"))
