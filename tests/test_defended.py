"""The wrap-a-classifier API."""

from __future__ import annotations

import torch

from manifold_defense import DefendedClassifier, ProjectionConfig

CFG = ProjectionConfig(restarts=2, steps=30, optimizer="adam", lr=0.1, init_std=1.0, seed=0)


def test_forward_is_classifier_of_projection(tiny_classifier, tiny_generator):
    d = DefendedClassifier(tiny_classifier, tiny_generator, CFG).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits = d(x)
        expected = tiny_classifier(d.project(x).x_hat)
    assert logits.shape == (4, 10)
    assert torch.allclose(logits, expected)


def test_gradient_modes(tiny_classifier, tiny_generator):
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    grads = {}
    for mode in ("detached", "bpda", "unrolled"):
        d = DefendedClassifier(tiny_classifier, tiny_generator, CFG.replace(steps=5), gradient=mode)
        (grads[mode],) = torch.autograd.grad(d(x).logsumexp(1).sum(), x)
    assert float(grads["detached"].abs().sum()) == 0.0  # the projection is treated as a constant
    assert float(grads["bpda"].abs().sum()) > 0
    assert float(grads["unrolled"].abs().sum()) > 0


def test_bpda_gradient_is_classifier_gradient_at_projection(tiny_classifier, tiny_generator):
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    d = DefendedClassifier(tiny_classifier, tiny_generator, CFG, gradient="bpda")
    (g,) = torch.autograd.grad(d(x)[:, 3].sum(), x)
    x_hat = d.project(x.detach()).x_hat.requires_grad_(True)
    (g_ref,) = torch.autograd.grad(tiny_classifier(x_hat)[:, 3].sum(), x_hat)
    assert torch.allclose(g, g_ref, atol=1e-6)


def test_wrapper_leaves_user_modules_alone(tiny_classifier, tiny_generator):
    tiny_classifier.train()
    d = DefendedClassifier(tiny_classifier, tiny_generator, CFG)
    d(torch.rand(2, 1, 28, 28))
    assert tiny_classifier.training and not tiny_generator.training
    assert all(p.grad is None for p in tiny_generator.parameters())


def test_output_on_input_device_and_seeded(tiny_classifier, tiny_generator):
    d = DefendedClassifier(tiny_classifier, tiny_generator, CFG).eval()
    x = torch.rand(3, 1, 28, 28)
    a, b = d(x), d(x)
    assert a.device == x.device and torch.equal(a, b)


def test_encoder_warm_start_is_used(tiny_classifier, tiny_generator, on_range):
    x, z = on_range

    class Oracle(torch.nn.Module):  # an encoder that knows the answer
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return z

    d = DefendedClassifier(tiny_classifier, tiny_generator, CFG.replace(steps=0, restarts=3), encoder=Oracle())
    out = d.project(x)
    assert torch.equal(out.z, z) and float(out.residual.max()) < 1e-10


def test_one_restart_without_encoder_warns(tiny_classifier, tiny_generator):
    import pytest

    with pytest.warns(UserWarning, match="weak defense"):
        DefendedClassifier(tiny_classifier, tiny_generator, ProjectionConfig(restarts=1))


def test_amortised_projection_needs_an_encoder(tiny_classifier, tiny_generator):
    import pytest

    with pytest.raises(ValueError, match="steps=0"):
        DefendedClassifier(tiny_classifier, tiny_generator, ProjectionConfig(steps=0))
    with pytest.raises(ValueError, match="steps=0"):
        DefendedClassifier(tiny_classifier, tiny_generator, ProjectionConfig(steps=0, use_encoder=False),
                           encoder=torch.nn.Flatten())


def test_setting_the_encoder_reaches_the_purifier() -> None:
    G = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Unflatten(1, (1, 4, 4)), torch.nn.Sigmoid())
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    first = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    second = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    defended = DefendedClassifier(clf, G, ProjectionConfig(steps=0, restarts=1), encoder=first, latent_dim=4)
    defended.encoder = second
    assert defended.encoder is second and defended.purifier.encoder is second
    assert "encoder" not in dict(defended.named_children())  # not a second, unused copy on the wrapper
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(defended.purify(x), G(second(x)).clamp(0, 1))
