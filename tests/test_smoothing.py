"""Randomized smoothing: Cohen et al.'s PREDICT and CERTIFY, checked against cases with a known answer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from manifold_defense.certify import ABSTAIN, SmoothedClassifier, binomial_p_value, clopper_pearson_lower


class Constant(nn.Module):
    def __init__(self, label: int, classes: int = 4) -> None:
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((x.shape[0],), self.label), self.classes).float()


class Threshold(nn.Module):
    """Class 1 where the first pixel exceeds 0.5: the smoothed classifier's true radius at x is |x_0 - 0.5|."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.flatten(1)[:, :1] - 0.5
        return torch.cat([-first, first], dim=1)


class Coin(nn.Module):
    """A fair coin between two classes, whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], 2)


def test_a_constant_classifier_is_certified_at_the_bound_of_n_draws() -> None:
    smoothed = SmoothedClassifier(Constant(2), num_classes=4, sigma=0.5)
    x = torch.rand(3, 1, 4, 4)
    labels, radii = smoothed.certify(x, n0=10, n=1000, alpha=0.001, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.001 ** (1 / 1000))).item()
    assert labels.tolist() == [2, 2, 2]
    assert radii.tolist() == pytest.approx([expected] * 3, rel=1e-6)
    assert smoothed.predict(x, n=100, generator=torch.Generator().manual_seed(1)).tolist() == [2, 2, 2]


def test_certified_radius_never_exceeds_the_true_one_and_approaches_it() -> None:
    torch.manual_seed(0)
    distances = torch.tensor([0.05, 0.2, 0.4])
    x = torch.full((3, 1, 2, 2), 0.5)
    x[:, 0, 0, 0] += distances
    smoothed = SmoothedClassifier(Threshold(), num_classes=2, sigma=0.25)
    labels, radii = smoothed.certify(x, n0=100, n=20_000, alpha=0.001, generator=torch.Generator().manual_seed(0))
    assert labels.tolist() == [1, 1, 1]
    assert bool((radii <= distances + 1e-9).all())  # a certificate is a lower bound
    assert bool((radii >= 0.8 * distances - 0.01).all())  # and not a loose one at n = 20,000


def test_more_draws_never_inflate_the_certificate_of_a_constant() -> None:
    smoothed = SmoothedClassifier(Constant(1), num_classes=3, sigma=1.0)
    x = torch.rand(1, 1, 2, 2)
    small = smoothed.certify(x, n0=10, n=100, generator=torch.Generator().manual_seed(0))[1]
    large = smoothed.certify(x, n0=10, n=10_000, generator=torch.Generator().manual_seed(0))[1]
    assert float(small) < float(large)


def test_a_coin_makes_it_abstain() -> None:
    torch.manual_seed(0)
    smoothed = SmoothedClassifier(Coin(), num_classes=2, sigma=0.5)
    x = torch.rand(4, 1, 2, 2)
    assert smoothed.predict(x, n=200, alpha=0.001).tolist() == [ABSTAIN] * 4
    labels, radii = smoothed.certify(x, n0=20, n=200, alpha=0.001)
    assert labels.tolist() == [ABSTAIN] * 4 and radii.tolist() == [0.0] * 4


def test_counts_are_reproducible_batched_and_leave_the_input_alone() -> None:
    smoothed = SmoothedClassifier(Threshold(), num_classes=2, sigma=0.3)
    x = torch.rand(5, 1, 2, 2)
    before = x.clone()
    a = smoothed.counts(x, 50, batch_size=64, generator=torch.Generator().manual_seed(3))
    b = smoothed.counts(x, 50, batch_size=64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.sum(1).tolist() == [50] * 5 and torch.equal(x, before)


def test_statistics_match_the_reference_formulas() -> None:
    assert clopper_pearson_lower(0, 10, 0.01) == 0.0
    assert clopper_pearson_lower(10, 10, 0.01) == pytest.approx(0.01 ** (1 / 10))
    assert binomial_p_value(5, 10) == pytest.approx(1.0)
    assert binomial_p_value(10, 10) == pytest.approx(2 * 0.5 ** 10)
    assert math.isclose(clopper_pearson_lower(50, 100, 0.5), 0.5, abs_tol=0.02)


@pytest.mark.parametrize(("kwargs", "match"), [({"sigma": 0.0}, "sigma"), ({"sigma": float("nan")}, "sigma"),
                                               ({"num_classes": 1}, "num_classes")])
def test_bad_settings_are_refused(kwargs: dict, match: str) -> None:
    args = {"base": Constant(0), "num_classes": 4, "sigma": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        SmoothedClassifier(**args)


def test_bad_calls_are_refused() -> None:
    smoothed = SmoothedClassifier(Constant(0), num_classes=4, sigma=0.5)
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(ValueError, match="alpha"):
        smoothed.certify(x, alpha=1.0)
    with pytest.raises(ValueError, match="n0"):
        smoothed.certify(x, n0=0)
    with pytest.raises(ValueError, match="num"):
        smoothed.predict(x, n=0)
    with pytest.raises(ValueError, match="NaN"):
        smoothed.predict(torch.full((1, 1, 2, 2), float("nan")), n=10)
    with pytest.raises(TypeError, match="floating"):
        smoothed.predict(torch.ones(1, 1, 2, 2, dtype=torch.uint8), n=10)
    with pytest.raises(ValueError, match="num_classes"):
        SmoothedClassifier(Constant(3, classes=4), num_classes=2, sigma=0.5).counts(x, 5)
