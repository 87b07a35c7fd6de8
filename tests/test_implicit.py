"""The implicit gradient of a projection defense: on a linear generator it is the closed-form
derivative of the least-squares projection (the tangent projector, or its measured version), its
forward pass is the deployed defense, and bad input is refused."""

from __future__ import annotations

import copy

import pytest
import torch

from attacks import APGD, ImplicitGradient
from manifold_defense import DefendedClassifier, ProjectionConfig
from manifold_defense.models import MLP
from manifold_defense.projection.operators import AdditiveNoise, PixelMask


def _closed_form(d: DefendedClassifier, mask: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """d x_hat / d x of min_z (1/m)||A(Wz + c) - A x||^2 + penalty ||z||^2 for G(z) = Wz + c."""
    w = d.generator.basis.T.double()                                   # (D, k)
    a = torch.eye(w.shape[0], dtype=torch.float64) if mask is None else torch.diag(mask.flatten().double())
    m = w.shape[0]  # the operators here keep every entry (a mask zeroes some)
    gram = w.T @ a.T @ a @ w + m * penalty * torch.eye(w.shape[1], dtype=torch.float64)
    return w @ torch.linalg.solve(gram, w.T @ a.T @ a)                  # (D, D)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("penalty", [0.0, 1e-3])
def test_on_a_linear_generator_it_is_the_derivative_of_the_least_squares_projection(pca_generator, masked, penalty):
    torch.manual_seed(0)
    mask = (torch.rand(1, 28, 28) < 0.5).float() if masked else None
    classifier = MLP(hidden=16, depth=1).eval().double()
    config = ProjectionConfig(restarts=2, steps=3, init_std=1.0, seed=0, latent_penalty=penalty, use_encoder=False)
    generator = copy.deepcopy(pca_generator)  # a session fixture: never converted in place
    d = DefendedClassifier(classifier, generator, config, operator=PixelMask(mask) if masked else None).double()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 10, dtype=torch.float64)
    (grad,) = torch.autograd.grad((ImplicitGradient(d)(x) * weights).sum(), x)
    x_hat = d.project(x.detach()).x_hat.requires_grad_(True)
    (v,) = torch.autograd.grad((classifier(x_hat) * weights).sum(), x_hat)
    expected = (v.flatten(1) @ _closed_form(d, mask, penalty)).reshape(x.shape)
    assert grad.abs().max() > 0
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-7 * float(expected.abs().max()))


def test_forward_is_the_deployed_defense_inputs_untouched_and_apgd_runs(pca_generator, trained_mlp, fmnist_small):
    d = DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, steps=10, init_std=1.0, seed=0,
                                                                        use_encoder=False)).eval()
    x, y = fmnist_small[2][:8], fmnist_small[3][:8]
    before = x.clone()
    with torch.no_grad():
        deployed = d(x)
    assert torch.equal(ImplicitGradient(d)(x.clone().requires_grad_(True)).detach(), deployed)
    result = APGD(eps=0.1, steps=5, seed=0)(ImplicitGradient(d), x, y)
    assert torch.equal(x, before)
    assert (result.adversarial - x).abs().max() <= 0.1 + 1e-6
    with torch.no_grad():
        assert (d(result.adversarial).argmax(1) == y).sum() <= (deployed.argmax(1) == y).sum()


def test_refuses_what_it_cannot_differentiate(pca_generator, trained_mlp):
    with pytest.raises(ValueError, match="projection defense"):
        ImplicitGradient(trained_mlp)  # type: ignore[arg-type]
    noisy = DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, init_std=1.0, use_encoder=False),
                               operator=AdditiveNoise(0.1))
    with pytest.raises(ValueError, match="linear"):
        ImplicitGradient(noisy)
