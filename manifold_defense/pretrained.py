"""The checkpoints shipped with the package (trained by the scripts in ``manifold_defense.training``),
found through their domain's ``weights_dir``.

Example:
    >>> from manifold_defense.pretrained import defended_pretrained
    >>> model = defended_pretrained("fashion_mnist").eval()          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, load_model
from .defended import DefendedClassifier
from .domains import Domain, get_domain
from .projection import ProjectionConfig

__all__ = ["WEIGHTS_DIR", "available", "load_pretrained", "defended_pretrained", "defended_fashion_mnist"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def _dir(domain: str | Domain) -> Path | None:
    return get_domain(domain).weights_dir


def available(domain: str | Domain = "fashion_mnist") -> list[str]:
    """Names of the shipped checkpoints of ``domain`` (empty if it ships none)."""
    root = _dir(domain)
    return sorted(p.stem for p in root.glob("*.json")) if root is not None else []


def load_pretrained(name: str, domain: str | Domain = "fashion_mnist", *,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a shipped checkpoint by name (``classifier``, ``generator``, ``encoder``, ...).

    Raises:
        ValueError: unknown domain.
        CheckpointError: no such shipped checkpoint (the message lists those there are).
    """
    root = _dir(domain)
    d = get_domain(domain).name
    if root is None or not (root / name).with_suffix(".json").is_file():
        raise CheckpointError(f"no shipped checkpoint {d}/{name}; available: {available(domain)}")
    return load_model(root / name, map_location=map_location)


def defended_pretrained(
    domain: str | Domain = "fashion_mnist",
    config: ProjectionConfig | None = None,
    *,
    classifier: str | nn.Module = "classifier",
    use_encoder: bool = True,
    map_location: str | torch.device = "cpu",
) -> DefendedClassifier:
    """A domain's shipped classifier behind its shipped generator (and encoder, if shipped), with the
    domain's pixel range.

    Args:
        classifier: a shipped classifier's name, or your own classifier module (put behind the
            shipped generator and encoder as it is).

    Raises:
        ValueError: unknown domain; CheckpointError: missing checkpoints.
    """
    dom = get_domain(domain)
    config = config or ProjectionConfig(pixel_range=dom.pixel_range)
    encoder = None
    if use_encoder and "encoder" in available(dom):
        encoder = load_pretrained("encoder", dom, map_location=map_location)
    if isinstance(classifier, str):
        classifier = load_pretrained(classifier, dom, map_location=map_location)
    return DefendedClassifier(
        classifier,
        load_pretrained("generator", dom, map_location=map_location),
        config,
        encoder=encoder,
    )


def defended_fashion_mnist(
    config: ProjectionConfig | None = None,
    *,
    classifier: str | nn.Module = "classifier",
    use_encoder: bool = True,
    map_location: str | torch.device = "cpu",
) -> DefendedClassifier:
    """``defended_pretrained("fashion_mnist", ...)``."""
    return defended_pretrained("fashion_mnist", config, classifier=classifier, use_encoder=use_encoder,
                               map_location=map_location)
