"""Inverse problems: generator-prior recovery, sparse baselines, DIP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifold_defense import ProjectionConfig
from manifold_defense.inverse.recovery import _dct_matrix, deep_image_prior, lasso_dct, lasso_wavelet, operator_matrix, recover
from manifold_defense.projection import Downsample, GaussianMeasurement, PixelMask

SHAPE = (1, 28, 28)


def test_generator_prior_recovers_range_points_from_few_measurements(pca_generator):
    z = torch.randn(4, 24, generator=torch.Generator().manual_seed(0))
    x = pca_generator(z)
    A = GaussianMeasurement(60, SHAPE, generator=torch.Generator().manual_seed(1))  # 60 << 784 pixels
    config = ProjectionConfig(restarts=2, steps=300, optimizer="adam", lr=0.1, decay_at=(0.6,), lr_decay=0.2, init_std=1.0)
    out = recover(A(x), A, pca_generator, config, rng=torch.Generator().manual_seed(0))
    assert float((out.x_hat - x).pow(2).mean()) < 1e-4


def test_recover_rejects_bad_measurements(pca_generator):
    A = GaussianMeasurement(10, SHAPE)
    with pytest.raises(ValueError, match="NaN"):
        recover(torch.full((2, 10), float("nan")), A, pca_generator)
    with pytest.raises(TypeError, match="floating"):
        recover(torch.zeros(2, 10, dtype=torch.long), A, pca_generator)


def test_dct_is_orthonormal():
    d = _dct_matrix(28)
    assert np.allclose(d @ d.T, np.eye(28), atol=1e-10)


def test_operator_matrix_matches_operator():
    A = Downsample(2) @ PixelMask.random(SHAPE, 0.5, generator=torch.Generator().manual_seed(0))
    x = torch.rand(3, *SHAPE, dtype=torch.float64)
    M = operator_matrix(A, SHAPE)
    assert np.allclose(M @ x.flatten(1).numpy().T, A.double()(x).flatten(1).numpy().T, atol=1e-6)


def test_lasso_recovers_a_dct_sparse_image():
    d = _dct_matrix(28)
    coeffs = np.zeros((28, 28))
    coeffs[0, 0], coeffs[1, 2], coeffs[3, 1] = 10.0, 2.0, -1.5
    img = torch.from_numpy((d.T @ coeffs @ d) / 28 + 0.0).float().view(1, *SHAPE).clamp(0, 1)
    A = GaussianMeasurement(200, SHAPE, generator=torch.Generator().manual_seed(2))
    x_hat = lasso_dct(A(img), A, SHAPE, alpha=1e-6)
    assert float((x_hat - img).pow(2).mean()) < 1e-4
    x_w = lasso_wavelet(A(img), A, SHAPE, alpha=1e-6)
    assert x_w.shape == img.shape and float((x_w - img).pow(2).mean()) < float(img.pow(2).mean())


def test_deep_image_prior_fits_measurements(fmnist_small):
    x = fmnist_small[2][:2]
    A = GaussianMeasurement(300, SHAPE, generator=torch.Generator().manual_seed(3))
    x_hat = deep_image_prior(A(x), A, SHAPE, steps=60)
    assert x_hat.shape == x.shape and float((x_hat - x).pow(2).mean()) < float((0.5 - x).pow(2).mean())
