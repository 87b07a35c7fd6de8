"""``DefendedClassifier``: classify the projection of the input onto the generator's range.

Example:
    >>> import torch
    >>> from manifold_defense import DefendedClassifier, ProjectionConfig
    >>> from manifold_defense.models import MLP, WGANGenerator
    >>> defended = DefendedClassifier(MLP(), WGANGenerator(dim=8), ProjectionConfig(restarts=2, steps=10)).eval()
    >>> defended(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from .projection import ProjectionConfig, ProjectionResult, latent_dim_of, project_checked
from .validation import check_images, module_device_dtype

__all__ = ["DefendedClassifier", "GradientMode"]

GradientMode = Literal["detached", "bpda", "exact", "unrolled"]


class DefendedClassifier(nn.Module):
    """C(G(z*(x))): a classifier behind a projection onto a generator's range (Defense-GAN).

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
            steps (:mod:`manifold_defense.exact_gradient`): what an adaptive attacker uses;
            ``"unrolled"``: the same gradient with every step kept in the graph (memory grows with
            steps x restarts; also reaches the generator's parameters).
        checkpoint_every: steps per recomputed segment in ``"exact"`` mode.

    The wrapped modules become submodules (so ``.to()``, ``.eval()`` and ``state_dict`` reach them),
    but the wrapper itself never changes their mode, device or weights.

    Shape:
        input (N, C, H, W) matching G's output; output (N, num_classes).

    Raises:
        ValueError: unknown ``gradient``, a generator without latent size, a generator whose
            declared ``output_range`` reaches outside ``config.pixel_range``, a generator whose output is not
            (n, C, H, W), or ``config.steps == 0`` (the amortised projection G(E(x))) without an encoder.
    """

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
        super().__init__()
        if not isinstance(classifier, nn.Module) or not isinstance(generator, nn.Module):
            raise TypeError("classifier and generator must be torch.nn.Module instances")
        if gradient not in ("detached", "bpda", "exact", "unrolled"):
            raise ValueError(f"gradient must be 'detached', 'bpda', 'exact' or 'unrolled', got {gradient!r}")
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        self.classifier = classifier
        self.generator = generator
        self.operator = operator
        self.encoder = encoder
        self.config = config or ProjectionConfig()
        self.latent_dim = latent_dim_of(generator, latent_dim)
        self.gradient: GradientMode = gradient
        self.checkpoint_every = checkpoint_every
        out_range = getattr(generator, "output_range", None)
        lo, hi = self.config.pixel_range
        if out_range is not None and not (lo <= float(out_range[0]) and float(out_range[1]) <= hi):
            raise ValueError(
                f"the generator outputs pixels in {tuple(out_range)} but the projection expects images in "
                f"{tuple(self.config.pixel_range)}: wrap it, RangeAdapter(G, from_range={tuple(out_range)}, "
                f"to_range={tuple(self.config.pixel_range)}) (manifold_defense.generator_contract)"
            )
        self._image_shape: tuple[int, ...] | None = getattr(generator, "output_shape", None)
        if self.config.steps == 0 and (encoder is None or not self.config.use_encoder):
            raise ValueError("a projection with steps=0 is the amortised projection G(E(x)) and needs an encoder "
                             "(encoder=..., config.use_encoder=True); without one it would classify a random G(z)")
        if encoder is None and self.config.restarts == 1 and self.config.steps > 0:
            warnings.warn(
                "projecting with one random restart and no encoder warm start is a weak defense; pass an encoder "
                "or use more restarts, e.g. ProjectionConfig(restarts=10, steps=100, init_std=1.0)",
                stacklevel=2,
            )

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(C, H, W) of G's output (probed once with one latent vector if G does not declare it)."""
        if self._image_shape is None:
            device, dtype = module_device_dtype(self.generator)
            with torch.no_grad():
                out = self.generator(torch.zeros(1, self.latent_dim, device=device, dtype=dtype))
            if out.dim() != 4:
                raise ValueError(f"generator output must be (n, C, H, W), got {tuple(out.shape)}")
            self._image_shape = tuple(out.shape[1:])
        return self._image_shape

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a batch for this model (see :func:`manifold_defense.validation.check_images`)."""
        device, dtype = module_device_dtype(self.generator)
        return check_images(x, shape=self.image_shape, pixel_range=self.config.pixel_range, device=device, dtype=dtype)

    def project(
        self, x: torch.Tensor, *, rng: torch.Generator | None = None, create_graph: bool = False,
        config: ProjectionConfig | None = None, checkpoint_every: int | None = None,
    ) -> ProjectionResult:
        """Project x onto G's range; see :func:`manifold_defense.projection.project`.

        Args:
            x: images (N, C, H, W).
            rng: CPU generator for the restarts (default: ``config.seed`` or torch's global RNG).
            create_graph: give ``x_hat`` the exact gradient of the optimisation with respect to x.
            config: override the model's projection settings for this call.
            checkpoint_every: with ``create_graph``, recompute segments of this many steps in the
                backward pass instead of keeping every step (same gradient, bounded memory).
        """
        cfg = config or self.config
        device, dtype = module_device_dtype(self.generator)
        # The one validation of this call (project_checked does not repeat it).
        check_images(x, shape=self.image_shape, pixel_range=cfg.pixel_range, device=device, dtype=dtype)
        return project_checked(
            self.generator, x, cfg, operator=self.operator, encoder=self.encoder,
            rng=rng, latent_dim=self.latent_dim, create_graph=create_graph, checkpoint_every=checkpoint_every,
        )

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = self.purify(x)
        try:
            return self.classifier(x_hat)
        except RuntimeError as exc:
            raise ValueError(
                f"the classifier rejected the generator's images of shape {tuple(x_hat.shape[1:])} (C, H, W): "
                f"classifier and generator do not match ({exc})"
            ) from exc

    def extra_repr(self) -> str:
        c = self.config
        return f"restarts={c.restarts}, steps={c.steps}, optimizer={c.optimizer}, gradient={self.gradient}"
