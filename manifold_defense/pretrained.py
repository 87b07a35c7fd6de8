"""The checkpoints shipped with the package (trained by the scripts in ``manifold_defense.training``),
found through their domain's ``weights_dir``.

A domain's defended configurations are explicit :class:`ShippedDefense` entries of
:data:`SHIPPED_DEFENSES` (which checkpoints, how many projection steps); :data:`DEFAULT_DEFENSE` is
the one ``defended_pretrained`` returns unless told otherwise, chosen by the README's comparison
table (the defended configuration with the highest honest worst case).

Example:
    >>> from manifold_defense.pretrained import defended_pretrained
    >>> model = defended_pretrained("fashion_mnist").eval()                           # doctest: +SKIP
    >>> literature = defended_pretrained("fashion_mnist", defense="projection")       # doctest: +SKIP
    >>> diffpure = diffpure_pretrained("fashion_mnist", t_star=100, steps=10).eval()  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .models.checkpoint import CheckpointError, checkpoint_paths, load_model
from .purify.defended import DefendedClassifier, PurifiedClassifier
from .purify.diffusion import DiffusionPurifier
from .domains.registry import Domain, get_domain
from .models import DDPM
from .projection.loop import ProjectionConfig

__all__ = ["WEIGHTS_DIR", "ShippedDefense", "SHIPPED_DEFENSES", "DEFAULT_DEFENSE", "available", "load_named", "load_pretrained",
           "load_ddpm", "defended_pretrained", "diffpure_pretrained", "defended_fashion_mnist"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ShippedDefense:
    """A defended configuration made of a domain's shipped checkpoints.

    Attributes:
        name: the registry key.
        classifier: the shipped classifier's checkpoint name.
        encoder: the shipped encoder's checkpoint name (the projection's warm start).
        projection_steps: gradient steps of the projection after the warm start; 0 means the
            amortised projection G(E(x)) alone (fully differentiable, no optimisation at test time).
        description: one line for reports and the README.
    """

    name: str
    classifier: str
    encoder: str
    projection_steps: int
    description: str


SHIPPED_DEFENSES: dict[str, ShippedDefense] = {
    "projection": ShippedDefense(
        name="projection", classifier="classifier", encoder="encoder", projection_steps=ProjectionConfig.steps,
        description="standard classifier behind the iterative projection (encoder warm start + 50 Adam steps), "
                    "the Defense-GAN pipeline"),
    "amortised_at": ShippedDefense(
        name="amortised_at", classifier="classifier_amortised_at", encoder="encoder_amortised_at",
        projection_steps=0,
        description="C(G(E(x))): classifier and encoder adversarially trained together through the frozen "
                    "generator against the pipeline's exact gradient (train_robust --train-encoder)"),
}
DEFAULT_DEFENSE = "amortised_at"


def _dir(domain: str | Domain) -> Path | None:
    return get_domain(domain).weights_dir


def available(domain: str | Domain = "fashion_mnist") -> list[str]:
    """Names of the shipped checkpoints of ``domain`` (empty if it ships none)."""
    root = _dir(domain)
    return sorted(p.stem for p in root.glob("*.json")) if root is not None else []


def load_named(name: str, domain: str | Domain = "fashion_mnist", *,
               map_location: str | torch.device = "cpu") -> nn.Module:
    """A shipped checkpoint of ``domain`` by name, or else a checkpoint at the path ``name``.

    Raises:
        CheckpointError: neither a shipped checkpoint nor a readable checkpoint path.
    """
    if name in available(domain):
        return load_pretrained(name, domain, map_location=map_location)
    if not checkpoint_paths(name)[1].is_file():
        raise CheckpointError(f"no checkpoint {name!r}: neither a shipped one of {get_domain(domain).name} "
                              f"({', '.join(available(domain))}) nor a path to NAME.json + NAME.safetensors")
    return load_model(name, map_location=map_location)


def load_pretrained(name: str, domain: str | Domain = "fashion_mnist", *,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a shipped checkpoint by name (``classifier``, ``generator``, ``encoder``, ...).

    Raises:
        ValueError: unknown domain.
        CheckpointError: no such shipped checkpoint (the message lists those there are).
    """
    root = _dir(domain)
    d = get_domain(domain).name
    if root is None or not checkpoint_paths(root / name)[1].is_file():
        raise CheckpointError(f"no shipped checkpoint {d}/{name}; available: {available(domain)}")
    return load_model(root / name, map_location=map_location)


def load_ddpm(name: str = "ddpm", domain: str | Domain = "fashion_mnist", *,
              map_location: str | torch.device = "cpu") -> DDPM:
    """A DDPM checkpoint: a shipped one of ``domain`` by name, or else one at the path ``name``.

    Raises:
        ValueError: the checkpoint holds another kind of model.
        CheckpointError: no such checkpoint.
    """
    model = load_named(name, domain, map_location=map_location)
    if not isinstance(model, DDPM):
        raise ValueError(f"checkpoint {name!r} holds a {type(model).__name__}, not a DDPM")
    return model


def diffpure_pretrained(
    domain: str | Domain = "fashion_mnist",
    *,
    t_star: int,
    steps: int | None = None,
    eta: float = 1.0,
    checkpoint_every: int = 1,
    classifier: str | nn.Module = "classifier",
    ddpm: str = "ddpm",
    map_location: str | torch.device = "cpu",
) -> PurifiedClassifier:
    """``classifier`` behind DiffPure (:class:`manifold_defense.purify.DiffusionPurifier`) with the
    DDPM ``ddpm``: diffuse to ``t_star``, denoise back in ``steps`` reverse steps (default t_star).

    Args:
        classifier: a shipped classifier's name, a checkpoint path, or your own classifier module.
        ddpm: a shipped DDPM's name or a checkpoint path.

    Raises:
        ValueError: ``ddpm`` is not a DDPM, or a t_star / steps / eta it cannot run;
            CheckpointError: missing checkpoints.
    """
    purifier = DiffusionPurifier(load_ddpm(ddpm, domain, map_location=map_location).eval(), t_star=t_star,
                                 steps=steps, eta=eta, checkpoint_every=checkpoint_every)
    chosen = load_named(classifier, domain, map_location=map_location) if isinstance(classifier, str) else classifier
    return PurifiedClassifier(chosen, purifier)


def defended_pretrained(
    domain: str | Domain = "fashion_mnist",
    config: ProjectionConfig | None = None,
    *,
    defense: str = DEFAULT_DEFENSE,
    classifier: str | nn.Module | None = None,
    encoder: str | nn.Module | None = None,
    use_encoder: bool = True,
    map_location: str | torch.device = "cpu",
) -> DefendedClassifier:
    """A shipped defended configuration of ``domain`` (see :data:`SHIPPED_DEFENSES`), with the
    domain's pixel range.

    Args:
        config: projection settings (default: the configuration's own number of steps).
        defense: a key of :data:`SHIPPED_DEFENSES`; the default is :data:`DEFAULT_DEFENSE`.
        classifier: replaces the configuration's classifier: a shipped classifier's name, or your own
            classifier module (put behind the shipped generator and encoder as it is).
        encoder: replaces the configuration's encoder in the same way: a shipped encoder's name (e.g.
            ``encoder_noise_0.5``, fine-tuned for Gaussian noise) or your own module.
        use_encoder: False drops the encoder warm start (random restarts only).

    Raises:
        ValueError: unknown domain or defense, an ``encoder`` with ``use_encoder=False``, or a
            configuration with no projection steps and no encoder; CheckpointError: missing checkpoints.
    """
    if defense not in SHIPPED_DEFENSES:
        raise ValueError(f"unknown shipped defense {defense!r}; choose one of {sorted(SHIPPED_DEFENSES)}")
    if encoder is not None and not use_encoder:
        raise ValueError("an encoder was given with use_encoder=False: drop one of the two")
    spec = SHIPPED_DEFENSES[defense]
    dom = get_domain(domain)
    config = config or ProjectionConfig(steps=spec.projection_steps, pixel_range=dom.pixel_range)
    enc: nn.Module | None = None
    if use_encoder:
        wanted = spec.encoder if encoder is None else encoder
        enc = load_pretrained(wanted, dom, map_location=map_location) if isinstance(wanted, str) else wanted
    chosen = spec.classifier if classifier is None else classifier
    if isinstance(chosen, str):
        chosen = load_pretrained(chosen, dom, map_location=map_location)
    return DefendedClassifier(
        chosen,
        load_pretrained("generator", dom, map_location=map_location),
        config,
        encoder=enc,
    )


def defended_fashion_mnist(
    config: ProjectionConfig | None = None,
    *,
    defense: str = DEFAULT_DEFENSE,
    classifier: str | nn.Module | None = None,
    use_encoder: bool = True,
    map_location: str | torch.device = "cpu",
) -> DefendedClassifier:
    """``defended_pretrained("fashion_mnist", ...)``."""
    return defended_pretrained("fashion_mnist", config, defense=defense, classifier=classifier,
                               use_encoder=use_encoder, map_location=map_location)
