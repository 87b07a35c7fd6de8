"""Properties of the projection engine."""

from __future__ import annotations

import copy

import pytest
import torch

from manifold_defense import ProjectionConfig, project
from manifold_defense.projection.operators import PixelMask

FAST = ProjectionConfig(restarts=4, steps=150, optimizer="adam", lr=0.1, decay_at=(0.7,), init_std=1.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_point_on_range_projects_back(tiny_generator, on_range):
    x, _ = on_range
    out = project(tiny_generator, x, FAST, rng=seeded())
    assert out.x_hat.shape == x.shape and out.z.shape == (6, 8)
    assert float(out.residual.max()) < 1e-4
    assert torch.allclose(out.x_hat, x, atol=3e-2)


def test_projection_is_idempotent(tiny_generator):
    x = torch.rand(5, 1, 28, 28, generator=seeded(1))
    first = project(tiny_generator, x, FAST, rng=seeded())
    second = project(tiny_generator, first.x_hat, FAST, rng=seeded(7))
    # Projecting a projection moves it (almost) nowhere: far less than the first projection moved x.
    moved_first = (first.x_hat - x).pow(2).mean()
    moved_second = (second.x_hat - first.x_hat).pow(2).mean()
    assert float(moved_second) < 1e-3 * float(moved_first) + 1e-5


def test_more_restarts_never_worse(tiny_generator):
    x = torch.rand(5, 1, 28, 28, generator=seeded(2))
    config = FAST.replace(decay_at=(0.5, 0.75))
    residuals = [project(tiny_generator, x, config.replace(restarts=r), rng=seeded()).residual for r in (1, 2, 4, 8)]
    # Restart r is the same draw whatever R is, so more restarts only add candidates. Rows are
    # independent up to float noise (BLAS blocking depends on the batch size): hence the 1e-3.
    for fewer, more in zip(residuals, residuals[1:]):
        assert bool((more <= fewer * (1 + 1e-3)).all())
    assert float(residuals[-1].mean()) < float(residuals[0].mean())


def test_seed_reproduces_bit_for_bit(tiny_generator):
    x = torch.rand(3, 1, 28, 28, generator=seeded(4))
    a = project(tiny_generator, x, FAST, rng=seeded(11))
    b = project(tiny_generator, x, FAST, rng=seeded(11))
    c = project(tiny_generator, x, FAST.replace(seed=11))
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.z, b.z) and torch.equal(a.z, c.z)
    d = project(tiny_generator, x, FAST, rng=seeded(12))
    assert not torch.equal(a.z, d.z)


@pytest.mark.slow
def test_chunking_does_not_change_the_answer(tiny_generator):
    x = torch.rand(5, 1, 28, 28, generator=seeded(5))
    whole = project(tiny_generator, x, FAST, rng=seeded())
    chunked = project(tiny_generator, x, FAST.replace(max_batch=4), rng=seeded())  # one image per chunk
    assert torch.allclose(whole.z, chunked.z, atol=1e-4)
    assert torch.allclose(whole.residual, chunked.residual, rtol=1e-3, atol=1e-7)


def test_early_stopping_and_halving_save_generator_calls(tiny_generator):
    x = torch.rand(4, 1, 28, 28, generator=seeded(6))
    full = project(tiny_generator, x, FAST.replace(restarts=8), rng=seeded())
    halved = project(tiny_generator, x, FAST.replace(restarts=8, halving_at=(0.2, 0.4)), rng=seeded())
    stopped = project(tiny_generator, x, FAST.replace(restarts=8, early_stop_tol=1e-2, patience=5), rng=seeded())
    assert full.generator_calls == 4 * 8 * (150 + 1)
    assert halved.generator_calls < 0.5 * full.generator_calls
    assert stopped.generator_calls < full.generator_calls
    # Dropping restarts may cost a little quality, never a lot.
    assert float(halved.residual.mean()) < 1.5 * float(full.residual.mean()) + 1e-5


def test_momentum_reference_optimizer_runs(tiny_generator, on_range):
    x, _ = on_range
    ref = project(tiny_generator, x, ProjectionConfig.defense_gan(restarts=2, steps=50), rng=seeded())
    start = project(tiny_generator, x, ProjectionConfig.defense_gan(restarts=2, steps=0), rng=seeded())
    assert bool((ref.residual < start.residual).all())


def test_latent_penalty_shrinks_z(tiny_generator):
    x = torch.rand(4, 1, 28, 28, generator=seeded(8))
    free = project(tiny_generator, x, FAST, rng=seeded())
    shrunk = project(tiny_generator, x, FAST.replace(latent_penalty=0.1), rng=seeded())
    assert float(shrunk.z.norm(dim=1).mean()) < float(free.z.norm(dim=1).mean())
    assert torch.allclose(shrunk.loss, shrunk.residual + 0.1 * shrunk.z.pow(2).sum(1), rtol=1e-4)


def test_masked_projection_only_fits_observed_pixels(tiny_generator, on_range):
    x, _ = on_range
    mask = PixelMask.random((1, 28, 28), keep=0.5, generator=seeded(9))
    corrupted = x * mask.mask + (1 - mask.mask) * 0.5  # unobserved pixels replaced by grey
    out = project(tiny_generator, corrupted, FAST, operator=mask, rng=seeded())
    assert float(out.residual.max()) < 1e-4  # measured on observed pixels only


def test_nothing_passed_in_is_changed(tiny_generator):
    x = torch.rand(3, 1, 28, 28, generator=seeded(10))
    x_before = x.clone()
    weights_before = copy.deepcopy(tiny_generator.state_dict())
    tiny_generator.train()
    project(tiny_generator, x, FAST.replace(steps=5), rng=seeded())
    assert torch.equal(x, x_before)
    assert tiny_generator.training  # mode untouched
    assert all(torch.equal(v, weights_before[k]) for k, v in tiny_generator.state_dict().items())
    assert all(p.grad is None for p in tiny_generator.parameters())


def test_unrolled_projection_is_differentiable(tiny_generator):
    x = torch.rand(2, 1, 28, 28, generator=seeded(12), requires_grad=True)
    out = project(tiny_generator, x, FAST.replace(steps=5, restarts=2), rng=seeded(), create_graph=True)
    (grad,) = torch.autograd.grad(out.x_hat.sum(), x)
    assert grad.shape == x.shape and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


def test_works_under_no_grad(tiny_generator, on_range):
    x, _ = on_range
    with torch.no_grad():
        out = project(tiny_generator, x, FAST.replace(steps=20), rng=seeded())
    assert not out.x_hat.requires_grad and out.x_hat.device == x.device


@pytest.mark.parametrize(
    "field, value",
    [("restarts", 0), ("steps", -1), ("lr", 0.0), ("optimizer", "sgd"), ("momentum", 1.0), ("max_batch", 0),
     ("decay_at", (1.5,)), ("latent_penalty", -1.0), ("pixel_range", (1.0, 0.0)), ("patience", 0)],
)
def test_bad_config_raises(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        ProjectionConfig(**{field: value})


def test_unknown_config_field_raises():
    with pytest.raises(TypeError):
        ProjectionConfig(restart=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown"):
        ProjectionConfig.from_dict({"restart": 3})


def test_config_dict_round_trip():
    c = ProjectionConfig(halving_at=(0.25, 0.5), seed=3)
    assert ProjectionConfig.from_dict(c.to_dict()) == c
