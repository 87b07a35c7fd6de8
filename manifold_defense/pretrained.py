"""The checkpoints shipped with the package (trained by the scripts in ``manifold_defense.training``).

Example:
    >>> from manifold_defense.pretrained import defended_fashion_mnist
    >>> model = defended_fashion_mnist().eval()          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, load_model
from .defended import DefendedClassifier
from .projection import ProjectionConfig

__all__ = ["WEIGHTS_DIR", "available", "load_pretrained", "defended_fashion_mnist"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def available(dataset: str = "fashion_mnist") -> list[str]:
    """Names of the shipped checkpoints for ``dataset``."""
    return sorted(p.stem for p in (WEIGHTS_DIR / dataset).glob("*.json"))


def load_pretrained(name: str, dataset: str = "fashion_mnist", *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a shipped checkpoint by name (``classifier``, ``generator``, ``encoder``, ...).

    Raises:
        CheckpointError: no such shipped checkpoint (the message lists those there are).
    """
    stem = WEIGHTS_DIR / dataset / name
    if not stem.with_suffix(".json").is_file():
        raise CheckpointError(f"no shipped checkpoint {dataset}/{name}; available: {available(dataset)}")
    return load_model(stem, map_location=map_location)


def defended_fashion_mnist(
    config: ProjectionConfig | None = None,
    *,
    classifier: str = "classifier",
    use_encoder: bool = True,
    map_location: str | torch.device = "cpu",
) -> DefendedClassifier:
    """The shipped Fashion-MNIST classifier behind the shipped generator (and encoder, if shipped)."""
    encoder = None
    if use_encoder and "encoder" in available("fashion_mnist"):
        encoder = load_pretrained("encoder", map_location=map_location)
    return DefendedClassifier(
        load_pretrained(classifier, map_location=map_location),
        load_pretrained("generator", map_location=map_location),
        config,
        encoder=encoder,
    )
