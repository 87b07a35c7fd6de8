"""Bad input gets a clear exception naming the problem."""

from __future__ import annotations

import pytest
import torch

from manifold_defense import DefendedClassifier, ProjectionConfig, project


@pytest.fixture
def defended(tiny_classifier, tiny_generator):
    return DefendedClassifier(tiny_classifier, tiny_generator, ProjectionConfig(restarts=2, steps=2))


@pytest.mark.parametrize(
    "bad, error, words",
    [
        (torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8), TypeError, "floating"),
        (torch.rand(2, 1, 28, 28, dtype=torch.float64), TypeError, "dtype"),
        (torch.rand(1, 28, 28), ValueError, "shape"),
        (torch.rand(2, 3, 28, 28), ValueError, "generator makes"),
        (torch.rand(2, 1, 32, 32), ValueError, "generator makes"),
        (torch.rand(0, 1, 28, 28), ValueError, "empty"),
        (torch.full((2, 1, 28, 28), float("nan")), ValueError, "NaN"),
        (torch.full((2, 1, 28, 28), float("inf")), ValueError, "NaN or infinite"),
        (torch.rand(2, 1, 28, 28) * 255, ValueError, "pixel range"),
        (torch.rand(2, 1, 28, 28) - 0.5, ValueError, "pixel range"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images_raise(defended, bad, error, words):
    with pytest.raises(error, match=words):
        defended(bad)


def test_project_checks_range_too(tiny_generator):
    with pytest.raises(ValueError, match="pixel range"):
        project(tiny_generator, torch.rand(2, 1, 28, 28) + 1.0)


def test_custom_pixel_range_is_honoured(tiny_classifier, tiny_generator):
    config = ProjectionConfig(restarts=2, steps=1, pixel_range=(-1.0, 1.0))
    d = DefendedClassifier(tiny_classifier, tiny_generator, config)
    d(torch.rand(2, 1, 28, 28) * 2 - 1)  # accepted


def test_generator_without_latent_dim_needs_it(tiny_classifier):
    g = torch.nn.Sequential(torch.nn.Linear(4, 784), torch.nn.Unflatten(1, (1, 28, 28)), torch.nn.Sigmoid())
    with pytest.raises(ValueError, match="latent_dim"):
        DefendedClassifier(tiny_classifier, g)
    d = DefendedClassifier(tiny_classifier, g, ProjectionConfig(restarts=2, steps=1), latent_dim=4)
    assert d.image_shape == (1, 28, 28)
    assert d(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_bad_gradient_mode_raises(tiny_classifier, tiny_generator):
    with pytest.raises(ValueError, match="gradient"):
        DefendedClassifier(tiny_classifier, tiny_generator, gradient="straight")  # type: ignore[arg-type]


def test_non_module_raises(tiny_generator):
    with pytest.raises(TypeError, match="nn.Module"):
        DefendedClassifier(lambda x: x, tiny_generator)  # type: ignore[arg-type]


def test_classifier_generator_mismatch_is_named(tiny_generator):
    from manifold_defense.models import ModelA

    d = DefendedClassifier(ModelA(in_channels=3, width=4), tiny_generator, ProjectionConfig(restarts=2, steps=1))
    with pytest.raises(ValueError, match="classifier and generator do not match"):
        d(torch.rand(2, 1, 28, 28))
