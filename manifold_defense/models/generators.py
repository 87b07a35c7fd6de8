"""Generator, critic and encoder of Defense-GAN's MNIST WGAN-GP (Gulrajani et al. 2017, ``gan_mnist.py``).

The generator maps z ~ N(0, I_k) to a (channels, image_size, image_size) image in [0, 1]
(image_size a multiple of 4; Defense-GAN's is 1x28x28). It has no batch
normalisation, so G(z) of one sample never depends on the rest of the batch: projecting a batch of
images with many restarts at once gives exactly what projecting each alone would.

Example:
    >>> import torch
    >>> from manifold_defense.models import WGANGenerator
    >>> G = WGANGenerator()
    >>> G(torch.randn(3, G.latent_dim)).shape
    torch.Size([3, 1, 28, 28])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WGANGenerator", "WGANCritic", "Encoder"]


def _check_size(image_size: int) -> int:
    if not isinstance(image_size, int) or image_size < 8 or image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 and >= 8, got {image_size!r}")
    return image_size


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """A 5x5 transposed convolution that doubles height and width."""
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1)


class WGANGenerator(nn.Module):
    """G: R^latent_dim -> [0, 1]^(channels x image_size x image_size).

    Linear(latent, 4dim*s*s) - ReLU - Deconv(4dim -> 2dim) 2s - ReLU - crop to image_size/4 -
    Deconv(2dim -> dim) - ReLU - Deconv(dim -> channels) image_size - sigmoid, with
    s = ceil(image_size / 8) (for 28x28: 4x4 -> 8x8 -> crop 7x7 -> 14x14 -> 28x28).

    Shape:
        input (N, latent_dim); output (N, channels, image_size, image_size).

    Raises:
        ValueError: image_size not a multiple of 4 (or below 8).
    """

    output_range = (0.0, 1.0)

    def __init__(self, latent_dim: int = 128, dim: int = 64, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.latent_dim, self.dim, self.channels, self.image_size = latent_dim, dim, channels, _check_size(image_size)
        self.output_shape = (channels, image_size, image_size)
        self.quarter, self.start = image_size // 4, -(-image_size // 8)
        self.fc = nn.Linear(latent_dim, 4 * self.start * self.start * dim)
        self.up1, self.up2, self.up3 = _up(4 * dim, 2 * dim), _up(2 * dim, dim), _up(dim, channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(z)).view(-1, 4 * self.dim, self.start, self.start)
        h = torch.relu(self.up1(h))[:, :, :self.quarter, :self.quarter]
        h = torch.relu(self.up2(h))
        return torch.sigmoid(self.up3(h))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"latent_dim": self.latent_dim, "dim": self.dim, "channels": self.channels, "image_size": self.image_size}


class WGANCritic(nn.Module):
    """Critic D: image -> real score. Conv 5x5 stride 2 three times (28 -> 14 -> 7 -> 4), LeakyReLU, Linear.

    Shape:
        input (N, channels, image_size, image_size); output (N,).
    """

    def __init__(self, dim: int = 64, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.dim, self.channels, self.image_size = dim, channels, _check_size(image_size)
        side = -(-image_size // 8)
        self.net = nn.Sequential(
            nn.Conv2d(channels, dim, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(dim, 2 * dim, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * dim, 4 * dim, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(4 * side * side * dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"dim": self.dim, "channels": self.channels, "image_size": self.image_size}


class Encoder(nn.Module):
    """E: image -> latent code, trained to invert a fixed generator (an amortised warm start for projection).

    Conv(4x4, stride 2) twice (28 -> 14 -> 7) with LeakyReLU, Linear(hidden), Linear(latent_dim).

    Shape:
        input (N, channels, image_size, image_size); output (N, latent_dim).
    """

    def __init__(self, latent_dim: int = 128, dim: int = 64, channels: int = 1, hidden: int = 512,
                 image_size: int = 28) -> None:
        super().__init__()
        self.latent_dim, self.dim, self.channels, self.hidden = latent_dim, dim, channels, hidden
        self.image_size = _check_size(image_size)
        self.net = nn.Sequential(
            nn.Conv2d(channels, dim, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(dim, 2 * dim, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * dim * (image_size // 4) ** 2, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"latent_dim": self.latent_dim, "dim": self.dim, "channels": self.channels, "hidden": self.hidden,
                "image_size": self.image_size}
