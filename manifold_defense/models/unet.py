"""A compact UNet noise predictor eps_theta(x_t, t) for small images (DDPM, Ho et al. 2020).

Two resolutions below the input (28 -> 14 -> 7 for Fashion-MNIST), one residual block per level on
the way down and on the way up, GroupNorm + SiLU, the timestep added to every block through a
sinusoidal embedding and a small MLP; skip connections by concatenation. With ``num_classes > 0`` a
learned class embedding is added to the timestep's (index ``num_classes`` is the "no label" token of
classifier-free guidance, Ho & Salimans 2022). It is deliberately small
(about 0.3 M parameters at ``width=16``) so that it trains and is differentiated through many
sampler steps on a CPU.

Shape:
    x (N, C, H, W) with H and W divisible by 4, t (N,) integer timesteps, optional labels y (N,)
    in [0, num_classes] -> (N, C, H, W).

Example:
    >>> import torch
    >>> from manifold_defense.models import UNetSmall
    >>> net = UNetSmall(width=8)
    >>> net(torch.rand(2, 1, 28, 28), torch.tensor([1, 500])).shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["UNetSmall", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (the Transformer's, as in DDPM): (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x))) + self.time(emb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


class UNetSmall(nn.Module):
    """eps_theta(x_t, t): the noise in a diffused image (see the module docstring).

    Args:
        in_channels: image channels.
        image_size: side of the (square) images, divisible by 4.
        width: channels at full resolution (2x and 4x below it).
        num_classes: 0 for an unconditional network; else the number of classes it is conditioned on
            (labels ``num_classes`` and ``None`` mean "unconditional").

    Raises:
        ValueError: an image size not divisible by 4, a width < 1 or num_classes < 0.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 16, num_classes: int = 0) -> None:
        super().__init__()
        if image_size % 4 != 0:
            raise ValueError(f"UNetSmall needs an image size divisible by 4, got {image_size}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.in_channels, self.image_size, self.width, self.num_classes = in_channels, image_size, width, num_classes
        c1, c2, c3, t_dim = width, 2 * width, 4 * width, 4 * width
        self.t_dim = t_dim
        self.time_mlp = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.label_emb = nn.Embedding(num_classes + 1, t_dim) if num_classes > 0 else None
        self.stem = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.down1 = _ResBlock(c1, c1, t_dim)
        self.pool1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # 28 -> 14
        self.down2 = _ResBlock(c2, c2, t_dim)
        self.pool2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)  # 14 -> 7
        self.mid = _ResBlock(c3, c3, t_dim)
        self.up2 = nn.ConvTranspose2d(c3, c2, 4, stride=2, padding=1)  # 7 -> 14
        self.dec2 = _ResBlock(2 * c2, c2, t_dim)
        self.up1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)  # 14 -> 28
        self.dec1 = _ResBlock(2 * c1, c1, t_dim)
        last = nn.Conv2d(c1, in_channels, 3, padding=1)
        nn.init.zeros_(last.weight)  # start by predicting zero noise
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        self.out = nn.Sequential(_norm(c1), nn.SiLU(), last)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.t_dim))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise ValueError("labels were given to an unconditional UNetSmall (num_classes=0)")
        h1 = self.down1(self.stem(x), emb)
        h2 = self.down2(self.pool1(h1), emb)
        h = self.mid(self.pool2(h2), emb)
        h = self.dec2(torch.cat([self.up2(h), h2], dim=1), emb)
        h = self.dec1(torch.cat([self.up1(h), h1], dim=1), emb)
        return self.out(h)

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        config = {"in_channels": self.in_channels, "image_size": self.image_size, "width": self.width}
        return {**config, "num_classes": self.num_classes} if self.num_classes else config
