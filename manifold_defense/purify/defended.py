"""The defended wrapper: a classifier behind any purifier (:class:`PurifiedClassifier`), and its
projection form C(G(z*(x))) (:class:`DefendedClassifier`, Defense-GAN).

Example:
    >>> import torch
    >>> from manifold_defense import DefendedClassifier, ProjectionConfig
    >>> from manifold_defense.models import MLP, WGANGenerator
    >>> defended = DefendedClassifier(MLP(), WGANGenerator(dim=8), ProjectionConfig(restarts=2, steps=10)).eval()
    >>> defended(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from ..projection.loop import ProjectionConfig, ProjectionResult
from .purifiers import ProjectionPurifier, Purifier

__all__ = ["PurifiedClassifier", "DefendedClassifier", "GradientMode"]

GradientMode = Literal["detached", "bpda", "exact", "unrolled"]


class PurifiedClassifier(nn.Module):
    """C(P(x)): any classifier behind any purifier (:mod:`manifold_defense.purify`).

    Args:
        classifier: C, images -> logits.
        purifier: P, a :class:`~manifold_defense.purify.Purifier` (wrap a plain module with
            :func:`~manifold_defense.purify.as_purifier`).
        gradient: what ``forward`` gives autograd with respect to x: ``"detached"`` (default; P is
            a constant, what a naive white-box attacker sees), ``"bpda"`` (the backward pass treats P
            as the identity) or ``"exact"`` (P's own exact gradient as deployed: what an adaptive
            attacker uses).

    The wrapped modules become submodules (``.to()``, ``.eval()``, ``state_dict`` reach them); the
    wrapper never changes their mode, device or weights.

    Shape:
        input (N, C, H, W) in the purifier's pixel range; output (N, num_classes).

    Raises:
        TypeError: a classifier that is not an ``nn.Module``, or a purifier that is not a ``Purifier``.
        ValueError: an unknown ``gradient``.

    Example:
        >>> import torch
        >>> from manifold_defense import PurifiedClassifier, as_purifier
        >>> from manifold_defense.models import MLP
        >>> smooth = as_purifier(torch.nn.AvgPool2d(3, stride=1, padding=1), randomized=False)
        >>> PurifiedClassifier(MLP(), smooth).eval()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    GRADIENTS: tuple[str, ...] = ("detached", "bpda", "exact")
    PART = "purifier"  # what error messages call the part in front of the classifier

    def __init__(self, classifier: nn.Module, purifier: Purifier, *, gradient: GradientMode = "detached") -> None:
        super().__init__()
        if not isinstance(classifier, nn.Module):
            raise TypeError("classifier must be a torch.nn.Module")
        if not isinstance(purifier, Purifier):
            raise TypeError(f"purifier must be a manifold_defense.purify.Purifier, got {type(purifier).__name__}; "
                            "wrap your module: as_purifier(module, randomized=...)")
        if gradient not in self.GRADIENTS:
            raise ValueError(f"gradient must be one of {self.GRADIENTS}, got {gradient!r}")
        self.classifier = classifier
        self.purifier = purifier
        self.gradient: GradientMode = gradient

    @property
    def randomized(self) -> bool:
        """Whether two runs of the defense on one input can differ (the purifier's declaration)."""
        return self.purifier.randomized

    @property
    def pixel_range(self) -> tuple[float, float]:
        return self.purifier.pixel_range

    def purify_exact(self, x: torch.Tensor, *, checkpoint_every: int | None = None) -> torch.Tensor:
        """P(x) with the exact gradient of the deployed purifier (whatever ``self.gradient`` says)."""
        return self.purifier.exact(x, checkpoint_every=checkpoint_every)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """P(x), with the gradient behaviour of ``self.gradient``."""
        if self.gradient == "exact":
            return self.purify_exact(x)
        with torch.no_grad():
            x_hat = self.purifier(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            return x_hat
        if self.gradient == "bpda":
            return x + (x_hat - x).detach()  # value P(x), gradient the identity
        return x_hat + 0.0 * x  # in the caller's graph, with zero gradient: the purifier is a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.purify(x)
        try:
            return self.classifier(x_hat)
        except RuntimeError as exc:
            raise ValueError(
                f"the classifier rejected the {self.PART}'s images of shape {tuple(x_hat.shape[1:])} (C, H, W): "
                f"classifier and {self.PART} do not match ({exc})"
            ) from exc

    def extra_repr(self) -> str:
        return f"gradient={self.gradient}, randomized={self.randomized}"


class DefendedClassifier(PurifiedClassifier):
    """C(G(z*(x))): a classifier behind a projection onto a generator's range (Defense-GAN): a
    :class:`PurifiedClassifier` whose purifier is a :class:`~manifold_defense.purify.ProjectionPurifier`.

    Args:
        classifier: C, images -> logits.
        generator: G, (n, k) -> images; must expose ``latent_dim`` or pass ``latent_dim``.
        config: projection settings.
        operator: measurement operator A (identity by default).
        encoder: optional E, images -> z, used as a warm start (restart 0).
        latent_dim: k, when G has no ``latent_dim`` attribute.
        gradient: what ``forward`` gives autograd with respect to x:
            ``"detached"`` (default): the projection is a constant, d logits / d x = 0 (what a naive
            white-box attacker sees; attack it with the adaptive attacks in ``attacks``);
            ``"bpda"``: straight-through, the backward pass treats the projection as the identity
            (Athalye et al. 2018);
            ``"exact"``: the true gradient through every optimisation step of the projection as
            deployed (same config, restarts, warm start), in the memory of ``checkpoint_every``
            steps (:mod:`manifold_defense.projection.exact_gradient`): what an adaptive attacker uses;
            ``"unrolled"``: the same gradient with every step kept in the graph (memory grows with
            steps x restarts; also reaches the generator's parameters).
        checkpoint_every: steps per recomputed segment in ``"exact"`` mode.

    ``generator``, ``encoder``, ``operator``, ``config`` and ``latent_dim`` are the purifier's.

    Shape:
        input (N, C, H, W) matching G's output; output (N, num_classes).

    Raises:
        ValueError: unknown ``gradient``, a generator without latent size, a generator whose
            declared ``output_range`` reaches outside ``config.pixel_range``, a generator whose output is not
            (n, C, H, W), or ``config.steps == 0`` (the amortised projection G(E(x))) without an encoder.
    """

    GRADIENTS = ("detached", "bpda", "exact", "unrolled")
    PART = "generator"
    purifier: ProjectionPurifier

    def __init__(
        self,
        classifier: nn.Module,
        generator: nn.Module,
        config: ProjectionConfig | None = None,
        *,
        operator: nn.Module | None = None,
        encoder: nn.Module | None = None,
        latent_dim: int | None = None,
        gradient: GradientMode = "detached",
        checkpoint_every: int = 10,
    ) -> None:
        if not isinstance(classifier, nn.Module) or not isinstance(generator, nn.Module):
            raise TypeError("classifier and generator must be torch.nn.Module instances")
        if gradient not in self.GRADIENTS:
            raise ValueError(f"gradient must be 'detached', 'bpda', 'exact' or 'unrolled', got {gradient!r}")
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        purifier = ProjectionPurifier(generator, config, operator=operator, encoder=encoder, latent_dim=latent_dim,
                                      checkpoint_every=checkpoint_every)
        super().__init__(classifier, purifier, gradient=gradient)

    # The projection's parts, read and set through the purifier.
    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module.__setattr__ files a module value under the wrapper's own submodules, which would
        # bypass the property below and leave the purifier's encoder in use; route it to the setter.
        if name == "encoder":
            self.purifier.encoder = value
            return
        super().__setattr__(name, value)

    @property
    def generator(self) -> nn.Module:
        return self.purifier.generator

    @property
    def encoder(self) -> nn.Module | None:
        return self.purifier.encoder

    @encoder.setter
    def encoder(self, value: nn.Module | None) -> None:
        self.purifier.encoder = value

    @property
    def operator(self) -> nn.Module | None:
        return self.purifier.operator

    @property
    def config(self) -> ProjectionConfig:
        return self.purifier.config

    @config.setter
    def config(self, value: ProjectionConfig) -> None:
        self.purifier.config = value

    @property
    def latent_dim(self) -> int:
        return self.purifier.latent_dim

    @property
    def checkpoint_every(self) -> int:
        return int(self.purifier.checkpoint_every or 10)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of G's output (probed once with one latent vector if G does not declare it)."""
        return self.purifier.image_shape

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a batch for this model (see :func:`manifold_defense.utils.validation.check_images`)."""
        return self.purifier.check_input(x)

    def project(
        self, x: torch.Tensor, *, rng: torch.Generator | None = None, create_graph: bool = False,
        config: ProjectionConfig | None = None, checkpoint_every: int | None = None,
    ) -> ProjectionResult:
        """Project x onto G's range; see :meth:`ProjectionPurifier.project`."""
        return self.purifier.project(x, rng=rng, create_graph=create_graph, config=config,
                                     checkpoint_every=checkpoint_every)

    def purify(self, x: torch.Tensor, *, rng: torch.Generator | None = None) -> torch.Tensor:
        """The projected images G(z*), with the gradient behaviour of ``self.gradient``."""
        if self.gradient in ("exact", "unrolled"):
            every = self.checkpoint_every if self.gradient == "exact" else None
            return self.project(x, rng=rng, create_graph=torch.is_grad_enabled(), checkpoint_every=every).x_hat
        x_hat = self.project(x, rng=rng).x_hat
        if not (torch.is_grad_enabled() and x.requires_grad):
            return x_hat
        if self.gradient == "bpda":
            return x + (x_hat - x).detach()  # value G(z*), gradient the identity
        return x_hat + 0.0 * x  # in the caller's graph, with zero gradient: the projection is a constant

    def extra_repr(self) -> str:
        c = self.config
        return f"restarts={c.restarts}, steps={c.steps}, optimizer={c.optimizer}, gradient={self.gradient}"
