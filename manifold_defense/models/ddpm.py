"""A small DDPM (Ho et al. 2020): a noise predictor eps_theta with its linear beta schedule.

Images enter in the domain's pixel range and are mapped to [-1, 1] inside; ``alpha_bar`` (a buffer)
holds the cumulative products of (1 - beta) for t = 0..T. The purifier built on it is
:class:`manifold_defense.purify.DiffusionPurifier`; the training script is
``python -m manifold_defense.training.ddpm``. With ``num_classes > 0`` the noise predictor is
class-conditional and :meth:`DDPM.sample` generates labelled images with classifier-free guidance
(Ho & Salimans 2022) in DDIM steps (Song et al. 2021).

Example:
    >>> import torch
    >>> from manifold_defense.models import DDPM
    >>> ddpm = DDPM(width=8, timesteps=100)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> ddpm.loss(x, torch.tensor([1, 50]), torch.randn(2, 1, 28, 28)).shape
    torch.Size([])
    >>> cond = DDPM(width=4, timesteps=100, num_classes=10).eval()
    >>> cond.sample(torch.tensor([3, 7]), steps=4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .unet import UNetSmall

__all__ = ["DDPM"]


class DDPM(nn.Module):
    """eps_theta(x_t, t) with a linear beta schedule (DDPM's: 1e-4 to 0.02 over 1000 steps).

    Args:
        in_channels: image channels.
        image_size: image side (divisible by 4).
        width: the UNet's channels at full resolution.
        timesteps: T.
        beta_start: beta_1.
        beta_end: beta_T.
        max_t: the largest timestep the network was trained on (a purifier may not diffuse further);
            default T.
        pixel_range: the images' range, mapped to [-1, 1] for the network.
        num_classes: 0 (unconditional) or the number of classes the noise predictor is conditioned on.

    Shape:
        ``forward(x_t, t, y=None)``: (N, C, H, W) in [-1, 1] scale, (N,) int, optional labels (N,) ->
        predicted noise (N, C, H, W).

    Raises:
        ValueError: timesteps < 1, betas outside (0, 1) or decreasing, max_t outside [1, T].
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 16, timesteps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, max_t: int | None = None,
                 pixel_range: tuple[float, float] = (0.0, 1.0), num_classes: int = 0) -> None:
        super().__init__()
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        max_t = timesteps if max_t is None else int(max_t)
        if not 1 <= max_t <= timesteps:
            raise ValueError(f"max_t must be in [1, {timesteps}], got {max_t}")
        self.in_channels, self.image_size, self.width = in_channels, image_size, width
        self.timesteps, self.beta_start, self.beta_end, self.max_t = timesteps, beta_start, beta_end, max_t
        self.pixel_range = (float(pixel_range[0]), float(pixel_range[1]))
        self.num_classes = int(num_classes)
        self.net = UNetSmall(in_channels, image_size, width, self.num_classes)
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        # alpha_bar[t] for t = 0..T: alpha_bar[0] = 1 is the clean image; timestep t uses beta[t - 1].
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        self.alpha_bar: torch.Tensor
        self.register_buffer("alpha_bar", alpha_bar.float())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x_t, t, y)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in ``pixel_range`` -> [-1, 1]."""
        lo, hi = self.pixel_range
        return (x - lo) / (hi - lo) * 2 - 1

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> pixels in ``pixel_range`` (clipped)."""
        lo, hi = self.pixel_range
        return ((x.clamp(-1, 1) + 1) / 2 * (hi - lo) + lo).clamp(lo, hi)

    def diffuse(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) sampled with the given noise; x0 in [-1, 1] scale, t (N,) in [0, T]."""
        a = self.alpha_bar[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def loss(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """DDPM's simple loss, mean ||e - eps_theta(x_t, t, y)||^2 (x in pixel range, t in [1, T];
        ``y`` labels, ``num_classes`` or None for the unconditional token)."""
        return F.mse_loss(self(self.diffuse(self.to_model(x), t, noise), t, y), noise)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor | None = None, *, n: int | None = None, steps: int = 25,
               guidance: float = 1.0, eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Generate images from pure noise at t = T in ``steps`` DDIM steps (``eta`` 0: deterministic
        given the initial noise; 1: DDPM-like), guided towards ``labels`` by classifier-free guidance
        eps = eps(x, none) + guidance * (eps(x, y) - eps(x, none)) (1: plain conditional; one batched
        forward for both terms). Noise is drawn on the CPU from ``generator`` (reproducible on any device).

        Args:
            labels: (N,) class labels, or None for ``n`` unconditional samples.
            n: the number of samples when ``labels`` is None.
            steps: reverse steps from T to 0.
            guidance: the guidance scale (ignored without labels).
            eta: DDIM's stochasticity in [0, 1].
            generator: a CPU generator for the noise.

        Shape:
            -> (N, C, H, W) in ``pixel_range``.

        Raises:
            ValueError: labels on an unconditional model or outside [0, num_classes), neither or both
                of labels and n, steps < 1, max_t below T (the model cannot start from noise),
                eta outside [0, 1], guidance < 0.
        """
        if self.max_t < self.timesteps:
            raise ValueError(f"this DDPM was trained on t <= {self.max_t} < T = {self.timesteps}: it cannot sample from noise")
        if (labels is None) == (n is None):
            raise ValueError("give exactly one of labels and n")
        if labels is not None:
            if self.num_classes == 0:
                raise ValueError("labels were given to an unconditional DDPM (num_classes=0)")
            labels = torch.as_tensor(labels).long()
            if labels.dim() != 1 or bool(((labels < 0) | (labels >= self.num_classes)).any()):
                raise ValueError(f"labels must be a 1-D tensor of classes in [0, {self.num_classes})")
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        n = int(labels.shape[0]) if labels is not None else int(n or 0)
        device = self.alpha_bar.device
        shape = (n, self.in_channels, self.image_size, self.image_size)
        x = torch.randn(shape, generator=generator).to(device)
        y = None if labels is None else labels.to(device)
        null = torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        times = torch.linspace(self.timesteps, 0, steps + 1).round().long().tolist()
        for t, t_prev in zip(times[:-1], times[1:]):
            tt = torch.full((n,), t, dtype=torch.long, device=device)
            if y is None or guidance == 1.0:
                eps = self(x, tt, y if y is not None else (null if self.num_classes else None))
            else:
                both = self(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null]))
                eps_c, eps_u = both[:n], both[n:]
                eps = eps_u + guidance * (eps_c - eps_u)
            ab, ab_prev = self.alpha_bar[t], self.alpha_bar[t_prev]
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
            if t_prev == 0:
                x = x0
                break
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp_min(0).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp_min(0).sqrt() * eps
            if eta > 0:
                x = x + sigma * torch.randn(shape, generator=generator).to(device)
        return self.from_model(x)

    def config(self) -> dict[str, object]:
        """Constructor arguments that rebuild this architecture."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "width": self.width,
                "timesteps": self.timesteps, "beta_start": self.beta_start, "beta_end": self.beta_end,
                "max_t": self.max_t, "pixel_range": list(self.pixel_range),
                **({"num_classes": self.num_classes} if self.num_classes else {})}
