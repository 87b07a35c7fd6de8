"""Measurement operators A for the projection engine: y = A(x).

Each operator is a small ``nn.Module``: ``forward(x)`` (also ``A(x)``) measures a batch of images, and
linear operators provide ``adjoint(y)`` (also ``A_adjoint(y)``). State (masks, matrices, kernels)
lives in buffers, so ``.to()`` moves it and nothing else does. Operators compose: ``Compose(a, b)``
measures ``b(a(x))``, and ``a @ b`` means ``a(b(x))``.

Example:
    >>> import torch
    >>> from manifold_defense.projection import PixelMask, Downsample
    >>> x = torch.rand(2, 1, 28, 28)
    >>> A = Downsample(2) @ PixelMask(torch.rand(1, 28, 28) > 0.5)
    >>> A(x).shape
    torch.Size([2, 1, 14, 14])
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Operator", "Identity", "PixelMask", "GaussianMeasurement", "Downsample", "GaussianBlur",
    "AdditiveNoise", "Compose", "Lambda",
]


class Operator(nn.Module):
    """Base class: subclasses implement ``forward`` and, if linear, ``adjoint``."""

    linear: bool = True

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """The measurement A(x) (same as calling the module)."""
        return self(x)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """A^T y for linear operators."""
        raise NotImplementedError(f"{type(self).__name__} is not linear: it has no adjoint")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`adjoint` (deepinv's name)."""
        return self.adjoint(y)

    def __matmul__(self, other: "Operator") -> "Compose":
        """``(a @ b)(x) == a(b(x))``."""
        return Compose(other, self)


class Identity(Operator):
    """A(x) = x: plain projection onto the generator's range (the defense's default)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y


class PixelMask(Operator):
    """Inpainting: A(x) = x * mask, observed pixels 1, missing 0.

    Args:
        mask: bool or {0,1} tensor broadcastable to one image (C, H, W) or (H, W).

    Raises:
        ValueError: the mask has more than 3 dimensions or values other than 0 and 1.
    """

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        if mask.dim() > 3:
            raise ValueError(f"mask must be (C, H, W) or (H, W), got shape {tuple(mask.shape)}")
        m = mask.detach().to(torch.float32)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask values must be 0 or 1")
        self.register_buffer("mask", m.clone())

    @classmethod
    def random(cls, shape: tuple[int, ...], keep: float, *, generator: torch.Generator | None = None) -> "PixelMask":
        """A mask keeping each pixel independently with probability ``keep``."""
        if not 0.0 <= keep <= 1.0:
            raise ValueError(f"keep must be in [0, 1], got {keep}")
        return cls(torch.rand(shape, generator=generator) < keep)

    @classmethod
    def block(cls, shape: tuple[int, ...], top: int, left: int, size: int) -> "PixelMask":
        """A mask hiding one ``size`` x ``size`` square (block inpainting)."""
        m = torch.ones(shape)
        m[..., top:top + size, left:left + size] = 0
        return cls(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x.dtype)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.mask.to(y.dtype)


class GaussianMeasurement(Operator):
    """Compressed sensing: A(x) = W vec(x), W of shape (m, n) with i.i.d. N(0, 1/m) entries.

    Args:
        m: number of measurements.
        image_shape: (C, H, W) of the images, n = C*H*W.
        generator: optional ``torch.Generator`` for a reproducible matrix.

    Shape:
        input (N, C, H, W); output (N, m).
    """

    matrix: torch.Tensor

    def __init__(self, m: int, image_shape: tuple[int, int, int], *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if m < 1:
            raise ValueError(f"number of measurements m must be >= 1, got {m}")
        self.image_shape = tuple(image_shape)
        n = math.prod(self.image_shape)
        self.register_buffer("matrix", torch.randn(m, n, generator=generator) / math.sqrt(m))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.matrix.to(x.dtype).T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return (y @ self.matrix.to(y.dtype)).view(-1, *self.image_shape)


class Downsample(Operator):
    """Super-resolution: average each ``factor`` x ``factor`` block.

    Shape:
        input (N, C, H, W) with H, W divisible by ``factor``; output (N, C, H/factor, W/factor).
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by factor {self.factor}")
        return F.avg_pool2d(x, self.factor)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return F.interpolate(y, scale_factor=self.factor, mode="nearest") / self.factor**2


class GaussianBlur(Operator):
    """Deblurring: per-channel convolution with a normalised Gaussian kernel (zero padding, same size).

    Args:
        sigma: standard deviation in pixels.
        size: odd kernel width (default: 2 * ceil(3 sigma) + 1).
    """

    kernel: torch.Tensor

    def __init__(self, sigma: float, size: int | None = None) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        size = size or 2 * math.ceil(3 * sigma) + 1
        if size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {size}")
        t = torch.arange(size, dtype=torch.float32) - size // 2
        g = torch.exp(-(t**2) / (2 * sigma**2))
        k2 = torch.outer(g, g)
        self.register_buffer("kernel", (k2 / k2.sum())[None, None])

    def _weight(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernel.to(x.dtype).expand(x.shape[1], 1, -1, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self._weight(x), padding=self.kernel.shape[-1] // 2, groups=x.shape[1])

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(y, self._weight(y), padding=self.kernel.shape[-1] // 2, groups=y.shape[1])


class AdditiveNoise(Operator):
    """y = x + sigma * noise, noise ~ N(0, I): the measurement noise of an inverse problem.

    Random, hence not linear and without an adjoint; use it to *simulate* measurements
    (``Compose(A, AdditiveNoise(0.01))``), not inside the operator handed to ``recover``.

    Args:
        sigma: noise standard deviation (>= 0).
        generator: optional CPU ``torch.Generator`` for reproducible noise.
    """

    linear = False

    def __init__(self, sigma: float, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        return x + self.sigma * noise


class Compose(Operator):
    """Apply operators in order: ``Compose(a, b)(x) == b(a(x))``; the adjoint runs in reverse."""

    def __init__(self, *operators: Operator) -> None:
        super().__init__()
        if not operators:
            raise ValueError("Compose needs at least one operator")
        self.ops = nn.ModuleList(operators)
        self.linear = all(getattr(op, "linear", False) for op in operators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.ops:
            x = op(x)
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        if not self.linear:
            raise NotImplementedError("a composition with a nonlinear operator has no adjoint")
        for op in reversed(self.ops):
            y = op.adjoint(y)  # type: ignore[operator]
        return y


class Lambda(Operator):
    """Any differentiable function of the images as a (nonlinear) measurement, e.g. ``torch.tanh``."""

    linear = False

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"Lambda needs a callable, got {type(fn).__name__}")
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)
