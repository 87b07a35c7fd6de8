"""A small DDPM (Ho et al. 2020): a noise predictor eps_theta with its linear beta schedule.

Images enter in the domain's pixel range and are mapped to [-1, 1] inside; ``alpha_bar`` (a buffer)
holds the cumulative products of (1 - beta) for t = 0..T. The purifier built on it is
:class:`manifold_defense.diffusion.DiffusionPurifier`; the training script is
``python -m manifold_defense.training.ddpm``.

Example:
    >>> import torch
    >>> from manifold_defense.models import DDPM
    >>> ddpm = DDPM(width=8, timesteps=100)
    >>> x = torch.rand(2, 1, 28, 28)
    >>> ddpm.loss(x, torch.tensor([1, 50]), torch.randn(2, 1, 28, 28)).shape
    torch.Size([])
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

    Shape:
        ``forward(x_t, t)``: (N, C, H, W) in [-1, 1] scale, (N,) int -> predicted noise (N, C, H, W).

    Raises:
        ValueError: timesteps < 1, betas outside (0, 1) or decreasing, max_t outside [1, T].
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 16, timesteps: int = 1000,
                 beta_start: float = 1e-4, beta_end: float = 0.02, max_t: int | None = None,
                 pixel_range: tuple[float, float] = (0.0, 1.0)) -> None:
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
        self.net = UNetSmall(in_channels, image_size, width)
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        # alpha_bar[t] for t = 0..T: alpha_bar[0] = 1 is the clean image; timestep t uses beta[t - 1].
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        self.alpha_bar: torch.Tensor
        self.register_buffer("alpha_bar", alpha_bar.float())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x_t, t)

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

    def loss(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDPM's simple loss, mean ||e - eps_theta(x_t, t)||^2 (x in pixel range, t in [1, T])."""
        return F.mse_loss(self(self.diffuse(self.to_model(x), t, noise), t), noise)

    def config(self) -> dict[str, object]:
        """Constructor arguments that rebuild this architecture."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "width": self.width,
                "timesteps": self.timesteps, "beta_start": self.beta_start, "beta_end": self.beta_end,
                "max_t": self.max_t, "pixel_range": list(self.pixel_range)}
