"""Image classifiers for square images of any size and channel count (defaults: 1x28x28, 10 classes).

Example:
    >>> import torch
    >>> from manifold_defense.models import ModelA
    >>> ModelA()(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ModelA", "LeNetSmall", "MLP"]


class ModelA(nn.Module):
    """Defense-GAN's "model A" CNN (Samangouei et al. 2018, Table 6; after Tramer et al. 2018).

    Conv(64, 5x5, stride 1) - ReLU - Conv(64, 5x5, stride 2) - ReLU - Dropout(0.25) - FC(128) - ReLU
    - Dropout(0.5) - FC(num_classes). Inputs are pixels in [0, 1]; outputs are logits.

    Shape:
        input (N, in_channels, image_size, image_size); output (N, num_classes).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes, self.width = in_channels, image_size, num_classes, width
        side = ((image_size - 4) - 5) // 2 + 1
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 5), nn.ReLU(),
            nn.Conv2d(width, width, 5, stride=2), nn.ReLU(),
            nn.Dropout(0.25), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(width * side * side, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "num_classes": self.num_classes, "width": self.width}


class LeNetSmall(nn.Module):
    """The small CNN of Croce, Andriushchenko & Hein (AISTATS 2019, ``LeNetSmall`` in
    max-andr/provable-robustness-max-linear-regions), whose adversarially trained Fashion-MNIST
    model is the published reference at Linf 0.1.

    Conv(16, 4x4, stride 2, 'same') - ReLU - Conv(32, 4x4, stride 2, 'same') - ReLU - FC(100) - ReLU
    - FC(num_classes). TensorFlow's 'same' padding for a 4x4 kernel at stride 2 on an even side pads
    one pixel on each side, so 28 -> 14 -> 7. Inputs are pixels in [0, 1]; outputs are logits.

    Shape:
        input (N, in_channels, image_size, image_size); output (N, num_classes).

    Example:
        >>> LeNetSmall()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        side = -(-(-(-image_size // 2)) // 2)  # ceil(ceil(size / 2) / 2), as TensorFlow's 'same'
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * side * side, 100), nn.ReLU(), nn.Linear(100, num_classes))
        for m in self.modules():  # He initialisation, zero biases (the reference code's)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "num_classes": self.num_classes}


class MLP(nn.Module):
    """A small fully connected classifier: Flatten - (Linear - ReLU) x depth - Linear.

    Shape:
        input (N, in_channels, image_size, image_size); output (N, num_classes).
    """

    def __init__(
        self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden: int = 256, depth: int = 2
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size, self.num_classes, self.hidden, self.depth = (
            in_channels, image_size, num_classes, hidden, depth,
        )
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {
            "in_channels": self.in_channels, "image_size": self.image_size, "num_classes": self.num_classes,
            "hidden": self.hidden, "depth": self.depth,
        }
