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

__all__ = ["ModelA", "LeNetSmall", "MLP", "ResNetSmall"]


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
    ``width`` multiplies the channels and the hidden units (16w, 32w, 100w); 1 is the reference.

    Args:
        width: the multiplier of channels and hidden units (>= 1).

    Raises:
        ValueError: ``width < 1``.

    Shape:
        input (N, in_channels, image_size, image_size); output (N, num_classes).

    Example:
        >>> LeNetSmall()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 1) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.in_channels, self.image_size, self.num_classes, self.width = in_channels, image_size, num_classes, width
        side = -(-(-(-image_size // 2)) // 2)  # ceil(ceil(size / 2) / 2), as TensorFlow's 'same'
        c1, c2, hidden = 16 * width, 32 * width, 100 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        for m in self.modules():  # He initialisation, zero biases (the reference code's)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "num_classes": self.num_classes,
                "width": self.width}


class LeNetWide(LeNetSmall):
    """:class:`LeNetSmall` at twice the channels and hidden units (32, 64, 200): 0.66 M parameters, four
    times the reference's 0.17 M, at about 2.3 times its training time on one CPU core. The larger
    architecture of the generated-data ablation that the CPU can train (``resnet_small`` runs PGD-10
    adversarial training about 30 times slower than LeNetSmall there).

    Shape:
        input (N, in_channels, image_size, image_size); output (N, num_classes).

    Example:
        >>> LeNetWide()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 2) -> None:
        super().__init__(in_channels, image_size, num_classes, width)


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


class _PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(x))
        shortcut = self.skip(h) if self.skip is not None else x
        return self.conv2(torch.relu(self.bn2(self.conv1(h)))) + shortcut


class ResNetSmall(nn.Module):
    """A pre-activation ResNet (He et al. 2016) sized for 28x28 images: a 3x3 stem, three stages of
    ``blocks`` residual blocks at widths w, 2w, 4w (strides 1, 2, 2), global average pooling and a
    linear head. The larger architecture beside LeNetSmall for adversarial training on generated data
    (gains from generated data grow with capacity: Gowal et al. 2021, Wang et al. 2023); about 0.3 M
    parameters at ``width=32, blocks=1`` (LeNetSmall: 0.17 M), 1.2 M at ``width=64``.

    Shape:
        input (N, in_channels, image_size, image_size); output (N, num_classes).

    Example:
        >>> ResNetSmall(width=8)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 32,
                 blocks: int = 1) -> None:
        super().__init__()
        if width < 1 or blocks < 1:
            raise ValueError(f"width and blocks must be >= 1, got {width} and {blocks}")
        self.in_channels, self.image_size, self.num_classes = in_channels, image_size, num_classes
        self.width, self.blocks = width, blocks
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)]
        c = width
        for stage, stride in enumerate((1, 2, 2)):
            for b in range(blocks):
                layers.append(_PreActBlock(c, width * 2 ** stage, stride if b == 0 else 1))
                c = width * 2 ** stage
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def config(self) -> dict[str, int]:
        """Constructor arguments that rebuild this architecture."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "num_classes": self.num_classes,
                "width": self.width, "blocks": self.blocks}
