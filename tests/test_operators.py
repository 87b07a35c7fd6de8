"""Measurement operators: adjointness, composition, buffers, errors."""

from __future__ import annotations

import pytest
import torch

from manifold_defense.projection.operators import (
    AdditiveNoise, Compose, Downsample, GaussianBlur, GaussianMeasurement, Identity, Lambda, PixelMask,
)

SHAPE = (1, 28, 28)


def linear_operators() -> list[torch.nn.Module]:
    g = torch.Generator().manual_seed(0)
    return [
        Identity(),
        PixelMask.random(SHAPE, 0.3, generator=g),
        PixelMask.block(SHAPE, 5, 5, 10),
        GaussianMeasurement(50, SHAPE, generator=g),
        Downsample(4),
        GaussianBlur(1.5),
        Compose(GaussianBlur(1.0), Downsample(2)),
        Downsample(2) @ PixelMask.random(SHAPE, 0.5, generator=g),
    ]


@pytest.mark.parametrize("op", linear_operators(), ids=lambda op: type(op).__name__)
def test_adjoint_is_numerically_exact(op):
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    op = op.double()
    y = torch.randn_like(op(x))
    lhs = (op(x) * y).sum()
    rhs = (x * op.adjoint(y)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10), (float(lhs), float(rhs))
    assert op.A_adjoint(y).shape == x.shape and torch.equal(op.A(x), op(x))


def test_gaussian_matrix_scale_and_shape():
    op = GaussianMeasurement(400, SHAPE, generator=torch.Generator().manual_seed(1))
    assert op(torch.rand(2, *SHAPE)).shape == (2, 400)
    assert abs(float(op.matrix.var()) * 400 - 1.0) < 0.05  # entries N(0, 1/m)


def test_state_lives_in_buffers():
    op = Compose(PixelMask.random(SHAPE, 0.5), GaussianMeasurement(10, SHAPE))
    names = {name for name, _ in op.named_buffers()}
    assert names == {"ops.0.mask", "ops.1.matrix"} and not list(op.parameters())


def test_nonlinear_operator_has_no_adjoint():
    op = Lambda(torch.tanh)
    assert torch.equal(op(torch.zeros(1, *SHAPE)), torch.zeros(1, *SHAPE))
    with pytest.raises(NotImplementedError):
        op.adjoint(torch.zeros(1, *SHAPE))
    with pytest.raises(NotImplementedError):
        Compose(Identity(), op).adjoint(torch.zeros(1, *SHAPE))


def test_bad_operator_arguments():
    with pytest.raises(ValueError, match="0 or 1"):
        PixelMask(torch.full(SHAPE, 0.5))
    with pytest.raises(ValueError, match="measurements"):
        GaussianMeasurement(0, SHAPE)
    with pytest.raises(ValueError, match="divisible"):
        Downsample(3)(torch.rand(1, *SHAPE))
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlur(0.0)
    with pytest.raises(TypeError, match="callable"):
        Lambda(3)  # type: ignore[arg-type]


def test_additive_noise_is_reproducible_and_scaled():
    x = torch.zeros(4, *SHAPE)
    a = AdditiveNoise(0.1, generator=torch.Generator().manual_seed(0))(x)
    b = AdditiveNoise(0.1, generator=torch.Generator().manual_seed(0))(x)
    assert torch.equal(a, b) and abs(float(a.std()) - 0.1) < 0.01
    assert torch.equal(AdditiveNoise(0.0)(x), x)
    with pytest.raises(NotImplementedError):
        AdditiveNoise(0.1).adjoint(x)
    with pytest.raises(ValueError, match="sigma"):
        AdditiveNoise(-1.0)
