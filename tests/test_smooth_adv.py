"""SmoothAdv against a smoothed linear classifier, whose certified radius is known in closed form:
for f(x) = argmax(W x + b) with two classes, g = f and the L2 distance to the boundary is
|w . x + c| / ||w|| (w, c the difference of the two rows). An attack beyond that distance must flip g;
one well inside it cannot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import SmoothAdv
from manifold_defense.certify import SmoothedClassifier


def _linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    layer = nn.Linear(4, 2)
    model = nn.Sequential(nn.Flatten(), layer).eval()
    w = (layer.weight[1] - layer.weight[0]).detach()
    c = float((layer.bias[1] - layer.bias[0]).detach())
    return model, w, torch.tensor(c)


def test_smooth_adv_flips_beyond_the_boundary_and_not_inside_it() -> None:
    model, w, c = _linear()
    x = torch.rand(16, 1, 2, 2)
    margin = ((x.flatten(1) @ w + c).abs() / w.norm())  # distance to the decision boundary
    y = model(x).argmax(1)
    smoothed = SmoothedClassifier(model, num_classes=2, sigma=0.1)
    bounds = (-20.0, 20.0)
    gen = torch.Generator().manual_seed(0)
    far = SmoothAdv(eps=float(margin.max()) * 2.0 + 0.5, steps=20, samples=32, bounds=bounds, seed=0)(smoothed, x, y)
    assert (smoothed.predict(far.adversarial, n=2000, generator=gen) != y).all()
    near = SmoothAdv(eps=float(margin.min()) * 0.3, steps=20, samples=32, bounds=bounds, seed=0)(smoothed, x, y)
    assert (smoothed.predict(near.adversarial, n=2000, generator=gen) == y).all()
    assert bool((near.distance <= float(margin.min()) * 0.3 + 1e-5).all())


def test_smooth_adv_leaves_its_inputs_alone_and_rejects_bad_settings() -> None:
    model, _, _ = _linear()
    smoothed = SmoothedClassifier(model, num_classes=2, sigma=0.25)
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
    before = x.clone()
    SmoothAdv(eps=0.3, steps=2, samples=2)(smoothed, x, y)
    assert torch.equal(x, before) and not model.training
    with pytest.raises(ValueError, match="samples"):
        SmoothAdv(eps=0.3, samples=0)
    with pytest.raises(ValueError, match="eps"):
        SmoothAdv(eps=-1.0)
