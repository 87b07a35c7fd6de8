"""Loading a defense by name, as the command lines take it: a shipped configuration (its classifier
replaceable by a shipped name or a checkpoint path), the shipped projection in front of any
classifier, or a bundle directory; and what a classifier's checkpoint says about its training.

Example:
    >>> from manifold_defense.domains import get_domain
    >>> classifier_name("amortised_at", None)
    'classifier_amortised_at'
    >>> robust_training("classifier_pgd_at", get_domain("fashion_mnist"))
    'pgd_weight 1'
"""

from __future__ import annotations

from pathlib import Path

import torch

from manifold_defense import DefendedClassifier, ProjectionConfig, load
from manifold_defense.domains import Domain, weights_path
from manifold_defense.models import CheckpointError, checkpoint_paths, load_model, read_config
from manifold_defense.pretrained import SHIPPED_DEFENSES, available, defended_pretrained

__all__ = ["load_defense", "robust_training", "classifier_name"]


def load_defense(spec: str, classifier: str | None, projection: str, domain: Domain, channels_last: bool = False) -> DefendedClassifier:
    """``spec`` "shipped": ``classifier`` (default: the standard ``classifier``) behind the domain's
    shipped iterative projection; a key of ``SHIPPED_DEFENSES`` (e.g. "amortised_at", the library's
    default defense): that shipped configuration, its classifier replaced by ``classifier`` if given;
    any other spec: a bundle directory.

    Raises:
        ValueError: the defense's images do not have the domain's shape, or a classifier given with a bundle.
    """
    if classifier is not None and spec != "shipped" and spec not in SHIPPED_DEFENSES:
        raise ValueError(f"--classifier replaces a shipped configuration's classifier; the bundle {spec!r} brings its own")
    name = classifier_name(spec, classifier)
    if name is not None:
        # A checkpoint path (stem of a .safetensors/.json pair) replaces the configuration's classifier.
        own = name not in available(domain) and checkpoint_paths(name)[1].is_file()
        clf: str | torch.nn.Module = load_model(name).eval() if own else name
        defended = defended_pretrained(domain, defense="projection" if spec == "shipped" else spec, classifier=clf).eval()
    else:
        defended = load(spec)
    if tuple(defended.image_shape) != tuple(domain.image_shape):
        raise ValueError(f"the defense's generator makes images of shape {tuple(defended.image_shape)} but the "
                         f"{domain.name} images are {domain.image_shape}")
    if projection == "defense_gan":
        defended.config, defended.encoder = ProjectionConfig.defense_gan(pixel_range=domain.pixel_range), None
    if channels_last:
        # The same float32 arithmetic in another memory layout (the generator was loaded here, so
        # changing it in place touches nothing a caller owns): ~25% faster projection on CPU.
        defended.generator.to(memory_format=torch.channels_last)
    return defended


def robust_training(classifier: str | None, domain: Domain) -> str | None:
    """How a classifier checkpoint was adversarially trained, from the training config in its JSON
    (None: standard training, or no config to read)."""
    if classifier is None:
        return None
    stem = weights_path(domain, classifier) if classifier in available(domain) else Path(classifier)
    try:
        config = read_config(stem).get("metadata", {}).get("config", {})
    except CheckpointError:
        return None
    terms = [f"{k} {config[k]:g}" for k in ("pgd_weight", "trades_beta", "defense_weight") if config.get(k, 0) > 0]
    if config.get("train_encoder"):
        terms.append("through the amortised defense")
    return ", ".join(terms) or None


def classifier_name(spec: str, classifier: str | None) -> str | None:
    """The classifier a report ran (None for a bundle: its own)."""
    if classifier is not None:
        return classifier
    if spec == "shipped":
        return "classifier"
    return SHIPPED_DEFENSES[spec].classifier if spec in SHIPPED_DEFENSES else None
