"""The exact gradient of the deployed projection: it is the true derivative (finite differences), the
checkpointed and fully unrolled versions agree, and its forward pass is the deployed defense."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import APGD, BPDA, ExactGradient
from attacks.base import predict
from manifold_defense import DefendedClassifier, ProjectionConfig, project
from manifold_defense.models import MLP, WGANGenerator

CONFIGS = {
    "adam+encoder": ProjectionConfig(restarts=2, steps=7, lr=0.05, decay_at=(0.5,)),
    "momentum+halving": ProjectionConfig(restarts=4, steps=8, optimizer="momentum", lr=0.5, halving_at=(0.25, 0.5),
                                         init_std=1.0, use_encoder=False),
    "defense-gan-like: momentum, restarts, no encoder": ProjectionConfig(restarts=4, steps=8, optimizer="momentum",
                                                                          lr=0.5, init_std=1.0, use_encoder=False),
    "early-stop+penalty+chunks": ProjectionConfig(restarts=3, steps=9, lr=0.1, early_stop_tol=0.05, patience=2,
                                                  latent_penalty=1e-3, max_batch=4, init_std=1.0),
}


def _models(dtype: torch.dtype = torch.float64) -> tuple[nn.Module, nn.Module, nn.Module]:
    torch.manual_seed(0)
    generator = WGANGenerator(latent_dim=8, dim=4).eval().to(dtype)
    classifier = MLP(hidden=16, depth=1).eval().to(dtype)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 8)).eval().to(dtype)
    return generator, classifier, encoder


def _defended(name: str, dtype: torch.dtype = torch.float64) -> DefendedClassifier:
    generator, classifier, encoder = _models(dtype)
    return DefendedClassifier(classifier, generator, CONFIGS[name].replace(seed=3), encoder=encoder).eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_exact_gradient_matches_central_finite_differences(name):
    d = _defended(name)
    x = 0.1 + 0.8 * torch.rand(3, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    model = ExactGradient(d, checkpoint_every=3)
    x_in = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((model(x_in) * w).sum(), x_in)
    assert grad.abs().max() > 0
    for seed in range(3):
        v = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + seed))
        h = 1e-6
        with torch.no_grad():
            fd = ((d(x + h * v) * w).sum() - (d(x - h * v) * w).sum()) / (2 * h)
        assert float((grad * v).sum()) == pytest.approx(float(fd), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("segment", [1, 4, 100])
def test_checkpointed_and_unrolled_gradients_agree(name, segment):
    d = _defended(name, torch.float32)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    grads, outputs = [], []
    for every in (None, segment):
        x_in = x.clone().requires_grad_(True)
        out = d.project(x_in, create_graph=True, checkpoint_every=every)
        (g,) = torch.autograd.grad(out.x_hat.pow(2).sum() + out.x_hat.mean(), x_in)
        grads.append(g)
        outputs.append(out.x_hat.detach())
    assert torch.equal(outputs[0], outputs[1])
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6 * float(grads[0].abs().max()))


@pytest.mark.parametrize("name, recomputed", [("defense-gan-like: momentum, restarts, no encoder", 5),
                                               ("momentum+halving", 20)])
def test_the_backward_pass_recomputes_only_the_winning_restarts_when_none_is_dropped(name, recomputed):
    """Without halving or early stopping a losing restart has zero gradient at every step, so the
    backward pass recomputes one row per image (the gradient stays exact: see the tests above)."""
    d = _defended(name, torch.float32)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(4), requires_grad=True)
    out = d.project(x, create_graph=True, checkpoint_every=3)
    rows: list[int] = []
    hook = d.generator.register_forward_hook(lambda _m, inputs, _o: rows.append(inputs[0].shape[0]))
    try:
        out.x_hat.sum().backward()
    finally:
        hook.remove()
    assert max(rows[1:]) == recomputed  # rows[0]: the final pick, re-evaluated over every surviving row
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_reaches_the_encoder_but_not_the_generator():
    d = _defended("adam+encoder", torch.float32)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    d.project(x, create_graph=True, checkpoint_every=2).x_hat.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.encoder.parameters())
    assert all(p.grad is None for p in d.generator.parameters())


def test_forward_is_the_deployed_defense_and_inputs_untouched():
    d = _defended("momentum+halving", torch.float32)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    before = x.clone()
    with torch.no_grad():
        deployed = d(x)
    x_in = x.clone().requires_grad_(True)
    assert torch.equal(ExactGradient(d)(x_in).detach(), deployed)
    assert torch.equal(BPDA.from_defense(d, approximation="unroll", unroll_steps=2)(x_in).detach(), deployed)
    assert torch.allclose(BPDA.from_defense(d)(x_in).detach(), deployed, atol=1e-5)
    assert torch.equal(x, before)


def test_exact_gradient_mode_of_the_wrapper():
    generator, classifier, encoder = _models(torch.float32)
    d = DefendedClassifier(classifier, generator, CONFIGS["adam+encoder"].replace(seed=3), encoder=encoder, gradient="exact",
                           checkpoint_every=2)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    (g,) = torch.autograd.grad(d(x).sum(), x)
    (g_ref,) = torch.autograd.grad(ExactGradient(d, checkpoint_every=5)(x).sum(), x)
    assert torch.allclose(g, g_ref, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="checkpoint_every"):
        DefendedClassifier(classifier, generator, CONFIGS["adam+encoder"], encoder=encoder, checkpoint_every=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        project(generator, x.detach(), CONFIGS["adam+encoder"], create_graph=True, checkpoint_every=0)


def test_bpda_approximations(trained_mlp, pca_generator):
    d = DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, steps=10, init_std=1.0, seed=0))
    with pytest.raises(ValueError, match="encoder"):
        BPDA.from_defense(d, approximation="amortised")
    with pytest.raises(ValueError, match="approximation"):
        BPDA.from_defense(d, approximation="nope")  # type: ignore[arg-type]
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    for approximation in ("identity", "unroll"):
        (g,) = torch.autograd.grad(BPDA.from_defense(d, approximation=approximation)(x).sum(), x)  # type: ignore[arg-type]
        assert torch.isfinite(g).all() and g.abs().max() > 0


def test_apgd_through_the_exact_gradient_beats_the_detached_defense(trained_mlp, pca_generator, fmnist_small):
    _, _, x, y = fmnist_small
    x, y = x[:24], y[:24]
    d = DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, steps=15, lr=0.3, init_std=0.1,
                                                                        seed=0)).eval()
    clean = float((predict(d, x) == y).float().mean())
    exact = APGD(eps=0.15, steps=15, loss="dlr", seed=0)(ExactGradient(d), x, y)
    detached = APGD(eps=0.15, steps=15, loss="dlr", seed=0)(d, x, y)  # zero gradient: the masking symptom
    assert bool((exact.distance <= 0.15 + 1e-6).all())
    assert torch.equal(exact.success, predict(d, exact.adversarial) != y)  # judged on the deployed defense
    assert 1 - exact.success_rate < clean - 0.3
    assert 1 - exact.success_rate < 1 - detached.success_rate - 0.2


def test_apgd_keeps_an_iterate_that_broke_the_example(trained_mlp, fmnist_small):
    _, _, x, y = fmnist_small
    result = APGD(eps=0.1, steps=20, loss="ce", seed=0)(trained_mlp, x[:32], y[:32])
    assert result.success_rate > 0.8  # the undefended MLP breaks
    again = APGD(eps=0.1, steps=20, loss="ce", seed=0)(trained_mlp, x[:32], y[:32])
    assert torch.equal(result.adversarial, again.adversarial)  # seeds reproduce
    with pytest.raises(ValueError, match="loss"):
        APGD(eps=0.1, loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rho"):
        APGD(eps=0.1, rho=0.0)
