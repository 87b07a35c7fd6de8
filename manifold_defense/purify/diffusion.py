"""The DiffPure-style purifier (Nie et al. 2022) on a small DDPM (:class:`manifold_defense.models.DDPM`).

:class:`DiffusionPurifier` diffuses an input to timestep t* (x_t* = sqrt(a_t*) x +
sqrt(1 - a_t*) e) and denoises it back to t = 0 in ``steps`` reverse steps of the generalised DDIM
update (Song et al. 2021): ``eta = 1`` with one step per timestep is DDPM's ancestral sampler,
``eta = 0`` is deterministic DDIM after the random diffusion.

The reverse loop runs through :func:`manifold_defense.projection.exact_gradient.checkpointed_loop`: with
gradients on, autograd gets the exact derivative of every denoising step as deployed, in the
memory of ``checkpoint_every`` steps, with each step's random draws replayed in the backward pass.

Example:
    >>> import torch
    >>> from manifold_defense.models import DDPM
    >>> from manifold_defense.purify import DiffusionPurifier
    >>> ddpm = DDPM(width=8, timesteps=100).eval()
    >>> purifier = DiffusionPurifier(ddpm, t_star=20, steps=5)
    >>> x = torch.rand(2, 1, 28, 28, requires_grad=True)
    >>> out = purifier(x)
    >>> out.shape, bool(((out >= 0) & (out <= 1)).all())
    (torch.Size([2, 1, 28, 28]), True)
    >>> out.sum().backward(); x.grad.shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import torch
from torch import nn

from ..projection.exact_gradient import checkpointed_loop
from ..models.ddpm import DDPM
from .purifiers import Purifier

__all__ = ["DDPM", "DiffusionPurifier", "OneShotDenoiser"]


class DiffusionPurifier(Purifier):
    """DiffPure with a DDPM: diffuse to t*, denoise back in ``steps`` reverse steps (see the module docstring).

    Args:
        ddpm: the trained :class:`DDPM` (its weights are never changed).
        t_star: the diffusion timestep (1..ddpm.max_t); larger washes out larger perturbations and
            more of the image.
        steps: reverse steps from t* to 0 (t* for the full ancestral chain; fewer skip timesteps).
        eta: 1 (default) stochastic DDPM-like steps, 0 deterministic DDIM steps after the diffusion.
        checkpoint_every: reverse steps per recomputed segment of the exact gradient.

    Shape:
        (N, C, H, W) in the DDPM's pixel range -> the same.

    Raises:
        TypeError: ``ddpm`` is not a :class:`DDPM`.
        ValueError: t_star outside [1, ddpm.max_t], steps outside [1, t_star], eta outside [0, 1],
            checkpoint_every < 1.
    """

    def __init__(self, ddpm: DDPM, *, t_star: int, steps: int | None = None, eta: float = 1.0,
                 checkpoint_every: int = 1) -> None:
        super().__init__(randomized=True, pixel_range=ddpm.pixel_range if isinstance(ddpm, DDPM) else (0.0, 1.0))
        if not isinstance(ddpm, DDPM):
            raise TypeError(f"ddpm must be a DDPM, got {type(ddpm).__name__}")
        steps = t_star if steps is None else steps
        if not 1 <= t_star <= ddpm.max_t:
            raise ValueError(f"t_star must be in [1, {ddpm.max_t}] (the timesteps the DDPM was trained on), got {t_star}")
        if not 1 <= steps <= t_star:
            raise ValueError(f"steps must be in [1, t_star={t_star}], got {steps}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        self.ddpm, self.t_star, self.steps, self.eta, self.checkpoint_every = ddpm, t_star, steps, eta, checkpoint_every
        times = torch.linspace(t_star, 0, steps + 1).round().long()
        self.times: torch.Tensor
        self.register_buffer("times", times, persistent=False)

    def _step(self, i: int, x_t: torch.Tensor) -> torch.Tensor:
        """One generalised DDIM step from times[i] to times[i + 1]."""
        t, t_prev = int(self.times[i]), int(self.times[i + 1])
        ab, ab_prev = self.ddpm.alpha_bar[t], self.ddpm.alpha_bar[t_prev]
        eps = self.ddpm(x_t, torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long))
        x0 = ((x_t - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
        if t_prev == 0:
            return x0
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise consistent with the clipped x0
        sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp_min(0).sqrt()
        mean = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp_min(0).sqrt() * eps
        return mean + sigma * torch.randn_like(x_t) if self.eta > 0 else mean

    def exact(self, x: torch.Tensor, *, checkpoint_every: int | None = None) -> torch.Tensor:
        """The purified images; with gradients on, the exact gradient through every reverse step in
        segments of ``checkpoint_every`` steps (default: the purifier's own)."""
        x0 = self.ddpm.to_model(self.check_input(x))
        t = torch.full((x.shape[0],), self.t_star, device=x.device, dtype=torch.long)
        x_t = self.ddpm.diffuse(x0, t, torch.randn_like(x0))
        segment = self.checkpoint_every if checkpoint_every is None else checkpoint_every
        return self.ddpm.from_model(checkpointed_loop(self._step, x_t, self.steps, segment=segment))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.exact(x)

    def shortened(self, steps: int) -> "DiffusionPurifier":
        """The same diffusion with ``min(steps, self.steps)`` reverse steps (a cheaper surrogate)."""
        return DiffusionPurifier(self.ddpm, t_star=self.t_star, steps=min(steps, self.steps), eta=self.eta,
                                 checkpoint_every=self.checkpoint_every)

    def extra_repr(self) -> str:
        return f"t_star={self.t_star}, steps={self.steps}, eta={self.eta}"


class OneShotDenoiser(nn.Module):
    """The DDPM as a one-shot Gaussian denoiser for randomized smoothing (Carlini et al. 2023,
    "(Certified!!) Adversarial Robustness for Free!"): an input x + sigma * e (pixel units, not
    clipped) is, in the DDPM's [-1, 1] scale, x' + 2 sigma / (hi - lo) * e; scaled by sqrt(a_t) it is
    exactly x_t for the timestep t whose noise-to-signal ratio sqrt((1 - a_t) / a_t) matches, and one
    noise prediction gives the estimate x_0 = (x_t - sqrt(1 - a_t) eps_theta(x_t, t)) / sqrt(a_t).

    Args:
        ddpm: the trained :class:`DDPM`.
        sigma: the smoothing noise level in pixel units.

    Shape:
        (N, C, H, W) noisy images -> denoised images in the DDPM's pixel range.

    Raises:
        ValueError: sigma <= 0, or a noise level beyond the timesteps the DDPM was trained on.

    Example:
        >>> import torch
        >>> from manifold_defense.purify import OneShotDenoiser
        >>> from manifold_defense.models import DDPM
        >>> denoiser = OneShotDenoiser(DDPM(width=4, timesteps=100).eval(), sigma=0.25)
        >>> denoiser.t, denoiser(torch.rand(2, 1, 28, 28)).shape
        (47, torch.Size([2, 1, 28, 28]))
    """

    def __init__(self, ddpm: DDPM, sigma: float) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        lo, hi = ddpm.pixel_range
        ratio = 2 * sigma / (hi - lo)  # the noise std in the DDPM's [-1, 1] scale
        noise_to_signal = ((1 - ddpm.alpha_bar) / ddpm.alpha_bar).sqrt()
        t = int((noise_to_signal[1:] - ratio).abs().argmin()) + 1
        if t > ddpm.max_t or (t == ddpm.timesteps and float(noise_to_signal[-1]) < ratio):
            raise ValueError(f"sigma {sigma} needs timestep {t}, beyond the DDPM's trained max_t {ddpm.max_t}")
        self.ddpm, self.sigma, self.t = ddpm, float(sigma), t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ab = self.ddpm.alpha_bar[self.t]
        x_t = ab.sqrt() * self.ddpm.to_model(x)
        eps = self.ddpm(x_t, torch.full((x.shape[0],), self.t, device=x.device, dtype=torch.long))
        return self.ddpm.from_model((x_t - (1 - ab).sqrt() * eps) / ab.sqrt())

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, t={self.t}"
