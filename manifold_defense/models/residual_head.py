"""A small residual head that refines a denoiser's estimate (issue #46 (b) for the DDPM denoiser).

Salman et al. 2020 ("Denoised Smoothing") train the denoiser itself with the classification loss
through a fixed classifier. The DDPM is large and trained for every timestep; the cheap variant keeps
it frozen and learns a correction on top of its one-shot estimate: D'(x) = D(x) + h([D(x), x]).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualHead"]


class ResidualHead(nn.Module):
    """h([estimate, noisy input]) -> a correction of the estimate, zero at initialisation (its last
    convolution starts at zero), so a fresh head leaves the denoiser unchanged.

    ``depth`` 3x3 convolutions of ``width`` channels with ReLU between them, 'same' padding; the input
    is the estimate and the noisy image side by side (2 * channels).

    Args:
        channels: image channels.
        width: channels of the hidden convolutions.
        depth: number of convolutions (>= 2).

    Shape:
        estimate (N, C, H, W), noisy (N, C, H, W) -> correction (N, C, H, W).

    Raises:
        ValueError: channels, width < 1 or depth < 2.

    Example:
        >>> head = ResidualHead(channels=1, width=8)
        >>> x = torch.rand(2, 1, 28, 28)
        >>> bool(head(x, x).abs().max() == 0)  # a fresh head corrects nothing
        True
    """

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        if channels < 1 or width < 1 or depth < 2:
            raise ValueError(f"need channels >= 1, width >= 1, depth >= 2; got {channels}, {width}, {depth}")
        self.channels, self.width, self.depth = channels, width, depth
        layers: list[nn.Module] = [nn.Conv2d(2 * channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        last = nn.Conv2d(width, channels, 3, padding=1, bias=False)
        nn.init.zeros_(last.weight)
        self.net = nn.Sequential(*layers, last)

    def forward(self, estimate: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        if estimate.shape != noisy.shape or estimate.dim() != 4 or estimate.shape[1] != self.channels:
            raise ValueError(f"estimate and noisy must both be (N, {self.channels}, H, W); got "
                             f"{tuple(estimate.shape)} and {tuple(noisy.shape)}")
        return self.net(torch.cat([estimate, noisy], 1))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"channels": self.channels, "width": self.width, "depth": self.depth}
