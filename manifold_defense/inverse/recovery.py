"""Inverse problems with a generative prior (Bora, Jalal, Price, Dimakis 2017, "Compressed Sensing
using Generative Models"), and the baselines it is compared to.

Recover x* from y = A(x*) + noise by min_z ||y - A(G(z))||^2 + lambda ||z||^2 on the projection engine
(restarts, schedule, chunking are the defense's own), or by sparse recovery:

* :func:`lasso_dct` / :func:`lasso_wavelet`: min_c ||y - A Psi c||^2 / (2m) + alpha ||c||_1 with Psi the
  inverse 2-D DCT or a Daubechies wavelet synthesis (scikit-learn's Lasso, PyWavelets);
* :func:`deep_image_prior`: optimise an untrained conv net's weights for a fixed random input so
  that A(net(input)) fits y (Ulyanov et al. 2018; Van Veen et al. 2018 for compressed sensing).

Example:
    >>> import torch
    >>> from manifold_defense.inverse import recover
    >>> from manifold_defense.projection import GaussianMeasurement
    >>> from manifold_defense.models import WGANGenerator
    >>> G = WGANGenerator(dim=8).eval()
    >>> x = G(torch.randn(2, 128)).detach()
    >>> A = GaussianMeasurement(100, (1, 28, 28), generator=torch.Generator().manual_seed(0))
    >>> recover(A(x), A, G).x_hat.shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..projection.operators import Operator
from ..projection import ProjectionConfig, ProjectionResult, project

__all__ = ["recover", "lasso_dct", "lasso_wavelet", "deep_image_prior", "operator_matrix"]

RECOVERY_CONFIG = ProjectionConfig(restarts=10, steps=300, optimizer="adam", lr=0.05, decay_at=(0.5, 0.8),
                                   lr_decay=0.3, init_std=1.0, latent_penalty=1e-3)


def recover(
    y: torch.Tensor,
    operator: nn.Module,
    generator: nn.Module,
    config: ProjectionConfig | None = None,
    *,
    rng: torch.Generator | None = None,
) -> ProjectionResult:
    """x_hat = G(z*), z* = argmin_z ||y - A(G(z))||^2 / m + lambda ||z||^2.

    Args:
        y: measurements, shape (N, ...) as ``operator`` produces them.
        operator: A.
        generator: G.
        config: defaults to 10 restarts x 300 Adam steps with a small latent penalty (Bora et al.'s).
        rng: CPU generator for the restarts.

    Raises:
        TypeError, ValueError: non-floating or non-finite measurements, or another device than G's.
    """
    return project(generator, None, config or RECOVERY_CONFIG, operator=operator, rng=rng, measurements=y)


def operator_matrix(operator: Operator, image_shape: tuple[int, int, int]) -> np.ndarray:
    """The (m, n) matrix of a linear operator, column j = A(e_j)."""
    n = math.prod(image_shape)
    with torch.no_grad():
        cols = operator(torch.eye(n).view(n, *image_shape)).reshape(n, -1)
    return cols.T.double().numpy()


def _dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix D (size x size): coefficients = D @ signal."""
    k = np.arange(size)[:, None]
    i = np.arange(size)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    d[0] /= np.sqrt(2.0)
    return d


def _lasso(a: np.ndarray, synthesis: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    from sklearn.linear_model import Lasso

    design = a @ synthesis
    out = np.empty((y.shape[0], synthesis.shape[0]))
    for i in range(y.shape[0]):  # scikit-learn's solver takes one signal at a time
        model = Lasso(alpha=alpha, fit_intercept=False, max_iter=5000, tol=1e-5)
        model.fit(design, y[i])
        out[i] = synthesis @ model.coef_
    return out


def lasso_dct(y: torch.Tensor, operator: Operator, image_shape: tuple[int, int, int], *, alpha: float = 1e-4) -> torch.Tensor:
    """Lasso in the 2-D DCT basis; returns images (N, C, H, W) clipped to [0, 1]."""
    c, h, w = image_shape
    if c != 1 or h != w:
        raise ValueError(f"lasso_dct supports one-channel square images, got {image_shape}")
    d = _dct_matrix(h)
    synthesis = np.kron(d, d).T  # vec(D^T C D) = (D (x) D)^T vec(C)
    x = _lasso(operator_matrix(operator, image_shape), synthesis, y.double().numpy(), alpha)
    return torch.from_numpy(x).float().view(-1, *image_shape).clamp(0, 1)


def lasso_wavelet(y: torch.Tensor, operator: Operator, image_shape: tuple[int, int, int], *, wavelet: str = "db1",
                  alpha: float = 1e-4) -> torch.Tensor:
    """Lasso in a 2-D wavelet basis (PyWavelets, periodised); returns images clipped to [0, 1]."""
    import pywt

    c, h, w = image_shape
    if c != 1:
        raise ValueError(f"lasso_wavelet supports one-channel images, got {image_shape}")
    template = pywt.wavedec2(np.zeros((h, w)), wavelet, mode="periodization")
    arr, slices = pywt.coeffs_to_array(template)
    synthesis = np.empty((h * w, arr.size))
    for j in range(arr.size):  # column j: the image of the j-th unit coefficient
        unit = np.zeros(arr.size)
        unit[j] = 1.0
        coeffs = pywt.array_to_coeffs(unit.reshape(arr.shape), slices, output_format="wavedec2")
        synthesis[:, j] = pywt.waverec2(coeffs, wavelet, mode="periodization")[:h, :w].reshape(-1)
    x = _lasso(operator_matrix(operator, image_shape), synthesis, y.double().numpy(), alpha)
    return torch.from_numpy(x).float().view(-1, *image_shape).clamp(0, 1)


class _DIPNet(nn.Module):
    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(8, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 1), nn.Sigmoid(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.net(noise)


def deep_image_prior(y: torch.Tensor, operator: nn.Module, image_shape: tuple[int, int, int], *, steps: int = 500,
                     lr: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Deep Image Prior compressed sensing: one untrained network per image, fit to its measurements.

    DIP has no shared weights to batch over: every image owns a network, and each step runs them
    one after another (the baseline's cost, not the library's hot path). Returns images (N, C, H, W).
    """
    c, h, w = image_shape
    if h % 4 or w % 4:
        raise ValueError(f"deep_image_prior needs H and W divisible by 4, got {image_shape}")
    gen = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    torch.manual_seed(seed)
    nets = nn.ModuleList(_DIPNet(c) for _ in range(n))
    noise = torch.rand(n, 1, 8, h // 4, w // 4, generator=gen) * 0.1
    opt = torch.optim.Adam(nets.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            x_hat = torch.cat([net(noise[i]) for i, net in enumerate(nets)])
            loss = (operator(x_hat) - y).pow(2).flatten(1).mean(1).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return torch.cat([net(noise[i]) for i, net in enumerate(nets)])
