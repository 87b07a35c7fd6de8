"""Tiny models and data for fast CPU tests (no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

from manifold_defense.models import MLP, ModelA, WGANGenerator

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython
torch.set_num_threads(min(2, torch.get_num_threads()))


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
