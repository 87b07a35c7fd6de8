"""Tiny models and data for fast CPU tests (no downloads)."""

from __future__ import annotations

import os
import socket

import pytest
import torch

from manifold_defense.models import MLP, ModelA, WGANGenerator

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's --master_port (a fixed one collides)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tiny_generator() -> WGANGenerator:
    torch.manual_seed(0)
    return WGANGenerator(latent_dim=8, dim=4).eval()


@pytest.fixture
def tiny_classifier() -> MLP:
    torch.manual_seed(1)
    return MLP(hidden=16, depth=1).eval()


@pytest.fixture
def tiny_cnn() -> ModelA:
    torch.manual_seed(2)
    return ModelA(width=4).eval()


@pytest.fixture
def on_range(tiny_generator: WGANGenerator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images exactly on the tiny generator's range, and their latent codes."""
    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return tiny_generator(z), z


class PCAGenerator(torch.nn.Module):
    """A linear generator G(z) = mean + z @ basis: projection onto an affine PCA subspace (tests only)."""

    def __init__(self, images: torch.Tensor, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.output_shape = tuple(images.shape[1:])
        flat = images.flatten(1)
        mean = flat.mean(0)
        _, s, v = torch.linalg.svd(flat - mean, full_matrices=False)
        self.register_buffer("mean", mean)
        self.register_buffer("basis", v[:latent_dim] * (s[:latent_dim, None] / flat.shape[0] ** 0.5))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.mean + z @ self.basis).view(-1, *self.output_shape)


@pytest.fixture(scope="session")
def fmnist_small() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from manifold_defense.domains import get_domain

    fashion = get_domain("fashion_mnist")
    x_train, y_train = fashion.load("train", limit=2000)
    x_test, y_test = fashion.load("test", limit=64)
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="session")
def trained_mlp(fmnist_small) -> MLP:
    """A small MLP trained for a few seconds on 2,000 Fashion-MNIST images (~75% test accuracy)."""
    x, y, _, _ = fmnist_small
    torch.manual_seed(0)
    model = MLP(hidden=64, depth=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(8):
        for i in range(0, len(x), 100):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def pca_generator(fmnist_small) -> PCAGenerator:
    return PCAGenerator(fmnist_small[0], latent_dim=24).eval()
