"""The purifier contract: any input purification the defended wrapper and the honest suite accept.

A purifier is an ``nn.Module`` mapping images (N, C, H, W) in the domain's pixel range to purified
images of the same shape and range, that declares

* ``randomized``: whether two runs on the same input can differ (then the suite attacks it with EOT
  and judges it one-shot, worst-of-N and by majority vote);
* ``pixel_range``: the range of its inputs and outputs;

and whose ``forward``, with gradients on, carries the exact derivative of the computation it deploys
(an iterative purifier bounds its memory with
:func:`manifold_defense.projection.exact_gradient.checkpointed_loop`). ``exact(x, checkpoint_every=...)`` is
the same with the attacker's choice of recomputation segment where the purifier has one.

The purifiers of this package: :class:`ProjectionPurifier` (the iterative projection onto a
generator's range, Defense-GAN's setting with :meth:`ProjectionConfig.defense_gan`, and the
amortised G(E(x)) with ``steps=0``), :class:`manifold_defense.purify.DiffusionPurifier`
(DiffPure), and :func:`as_purifier` for a user's own module (an autoencoder, their own code).

Example:
    >>> import torch
    >>> from manifold_defense.purify import as_purifier
    >>> blur = as_purifier(torch.nn.AvgPool2d(3, stride=1, padding=1), randomized=False)
    >>> blur(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..projection import ProjectionConfig, ProjectionResult, latent_dim_of, project_checked
from ..utils.validation import check_images, module_device_dtype

__all__ = ["Purifier", "ModulePurifier", "ProjectionPurifier", "as_purifier"]


class Purifier(nn.Module):
    """Base class of the contract (see the module docstring).

    Args:
        randomized: two runs on one input can differ.
        pixel_range: the inclusive range of inputs and outputs.

    Raises:
        ValueError: an empty pixel range.
    """

    def __init__(self, *, randomized: bool, pixel_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        lo, hi = float(pixel_range[0]), float(pixel_range[1])
        if not lo < hi:
            raise ValueError(f"pixel_range must be (low, high) with low < high, got {pixel_range}")
        self._randomized = bool(randomized)
        self._pixel_range = (lo, hi)

    @property
    def randomized(self) -> bool:
        """Whether two runs on the same input can differ."""
        return self._randomized

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The inclusive range of inputs and outputs."""
        return self._pixel_range

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a batch (see :func:`manifold_defense.utils.validation.check_images`): (N, C, H, W), finite,
        in the pixel range, on the purifier's device and dtype. Raises TypeError or ValueError."""
        device, dtype = module_device_dtype(self)
        return check_images(x, pixel_range=self.pixel_range, device=device, dtype=dtype)

    def exact(self, x: torch.Tensor, *, checkpoint_every: int | None = None) -> torch.Tensor:
        """The purified images with the exact gradient of the deployed computation (``checkpoint_every``:
        recomputation segment, where the purifier has one; ignored otherwise)."""
        return self(x)

    def shortened(self, steps: int) -> "Purifier | None":
        """A cheaper version of an iterative purifier (``steps`` iterations), whose exact gradient an
        attacker may use as a BPDA surrogate; None for a purifier without iterations (the default)."""
        return None


class ModulePurifier(Purifier):
    """A user's module as a purifier: its output is checked against the contract on every call.

    Args:
        module: images -> images (the gradient of its forward is what the exact-gradient attacks use).
        randomized: whether it draws randomness.
        pixel_range: inputs' and outputs' range.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.
        ValueError (at call time): an output of another shape, non-finite values, or pixels outside
            ``pixel_range`` (clamp inside your module if it can overshoot).
    """

    def __init__(self, module: nn.Module, *, randomized: bool, pixel_range: tuple[float, float] = (0.0, 1.0)) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"a purifier must be a torch.nn.Module, got {type(module).__name__}")
        super().__init__(randomized=randomized, pixel_range=pixel_range)
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(self.check_input(x))
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the purifier {type(self.module).__name__} returned {shape} for input {tuple(x.shape)}; "
                             "a purifier maps images to images of the same shape")
        lo, hi = self.pixel_range
        with torch.no_grad():
            if not torch.isfinite(out).all():
                raise ValueError(f"the purifier {type(self.module).__name__} returned non-finite pixels")
            if out.numel() and (float(out.min()) < lo - 1e-5 or float(out.max()) > hi + 1e-5):
                raise ValueError(f"the purifier {type(self.module).__name__} returned pixels in "
                                 f"[{float(out.min()):.3g}, {float(out.max()):.3g}], outside the pixel range {self.pixel_range}; "
                                 "clamp its output")
        return out

    def extra_repr(self) -> str:
        return f"randomized={self.randomized}, pixel_range={self.pixel_range}"


def as_purifier(module: nn.Module, *, randomized: bool | None = None,
                pixel_range: tuple[float, float] = (0.0, 1.0)) -> Purifier:
    """``module`` under the purifier contract (returned as it is if it already is a :class:`Purifier`).

    Args:
        module: images -> images.
        randomized: required for a plain module (whether it draws randomness); must agree with a
            purifier's own declaration if given.
        pixel_range: the images' range.

    Raises:
        TypeError: not an ``nn.Module``.
        ValueError: ``randomized`` missing for a plain module, or contradicting a purifier's.
    """
    if isinstance(module, Purifier):
        if randomized is not None and bool(randomized) != module.randomized:
            raise ValueError(f"{type(module).__name__} declares randomized={module.randomized}, "
                             f"but randomized={randomized} was passed")
        return module
    if randomized is None:
        raise ValueError("say whether the purifier draws randomness: as_purifier(module, randomized=True or False); "
                         "a randomised one is attacked with EOT and judged worst-of-N")
    return ModulePurifier(module, randomized=randomized, pixel_range=pixel_range)


class ProjectionPurifier(Purifier):
    """G(z*(x)), z* = argmin_z ||A(G(z)) - A(x)||^2 + lambda ||z||^2 (Defense-GAN's projection; the
    amortised G(E(x)) when ``config.steps == 0``).

    Args:
        generator: G, (n, k) -> images; must expose ``latent_dim`` or pass ``latent_dim``.
        config: projection settings (:class:`ProjectionConfig`).
        operator: measurement operator A (identity by default).
        encoder: optional E, images -> z, the warm start (restart 0).
        latent_dim: k, when G has no ``latent_dim`` attribute.
        checkpoint_every: projection steps per recomputed segment of the exact gradient; None keeps
            every step in the graph (the "unrolled" gradient, memory linear in steps x restarts).

    Raises:
        TypeError: a generator that is not an ``nn.Module``.
        ValueError: a generator without latent size, a generator whose declared ``output_range``
            reaches outside ``config.pixel_range``, or ``config.steps == 0`` without an encoder.
    """

    def __init__(self, generator: nn.Module, config: ProjectionConfig | None = None, *,
                 operator: nn.Module | None = None, encoder: nn.Module | None = None, latent_dim: int | None = None,
                 checkpoint_every: int | None = 10) -> None:
        if not isinstance(generator, nn.Module):
            raise TypeError("generator must be a torch.nn.Module")
        config = config or ProjectionConfig()
        super().__init__(randomized=False, pixel_range=config.pixel_range)
        if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
            raise ValueError(f"checkpoint_every must be an integer >= 1 or None, got {checkpoint_every!r}")
        self.generator, self.operator, self.encoder = generator, operator, encoder
        self.config = config
        self.latent_dim = latent_dim_of(generator, latent_dim)
        self.checkpoint_every = checkpoint_every
        out_range = getattr(generator, "output_range", None)
        lo, hi = config.pixel_range
        if out_range is not None and not (lo <= float(out_range[0]) and float(out_range[1]) <= hi):
            raise ValueError(
                f"the generator outputs pixels in {tuple(out_range)} but the projection expects images in "
                f"{tuple(config.pixel_range)}: wrap it, RangeAdapter(G, from_range={tuple(out_range)}, "
                f"to_range={tuple(config.pixel_range)}) (manifold_defense.models)"
            )
        self._image_shape: tuple[int, ...] | None = getattr(generator, "output_shape", None)
        if config.steps == 0 and (encoder is None or not config.use_encoder):
            raise ValueError("a projection with steps=0 is the amortised projection G(E(x)) and needs an encoder "
                             "(encoder=..., config.use_encoder=True); without one it would classify a random G(z)")
        if encoder is None and config.restarts == 1 and config.steps > 0:
            warnings.warn(
                "projecting with one random restart and no encoder warm start is a weak defense; pass an encoder "
                "or use more restarts, e.g. ProjectionConfig(restarts=10, steps=100, init_std=1.0)",
                stacklevel=3,
            )

    @property
    def randomized(self) -> bool:
        """Random restarts without a fixed seed (restart 0 at E(x) is not random)."""
        c = self.config
        if c.seed is not None:
            return False
        warm = self.encoder is not None and c.use_encoder
        return c.restarts > (1 if warm else 0)

    @property
    def pixel_range(self) -> tuple[float, float]:
        return self.config.pixel_range

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
        """Validate a batch for this projection (see :func:`manifold_defense.utils.validation.check_images`)."""
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
            config: override the projection settings for this call.
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

    def exact(self, x: torch.Tensor, *, checkpoint_every: int | None = None) -> torch.Tensor:
        graph = torch.is_grad_enabled() and x.requires_grad
        every = self.checkpoint_every if checkpoint_every is None else checkpoint_every
        return self.project(x, create_graph=graph, checkpoint_every=every).x_hat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exact(x)

    def shortened(self, steps: int) -> "ProjectionPurifier":
        """The same projection with ``steps`` steps (no halving, no early stopping)."""
        short = self.config.replace(steps=steps, halving_at=(), early_stop_tol=0.0)
        return ProjectionPurifier(self.generator, short, operator=self.operator, encoder=self.encoder,
                                  latent_dim=self.latent_dim, checkpoint_every=None)

    def extra_repr(self) -> str:
        c = self.config
        return f"restarts={c.restarts}, steps={c.steps}, optimizer={c.optimizer}"
