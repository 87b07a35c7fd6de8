"""Random measurement families for AmbientGAN (Bora, Price & Dimakis, ICLR 2018): learn a generator
from corrupted measurements only. The critic compares A(x_real) with A(G(z)) for operators A drawn
from a known family; the generator still learns the clean distribution when the family is rich enough.

Each family draws a fresh operator per image (per batch for projections) from a ``torch.Generator``
and returns image-shaped measurements, so the ordinary convolutional critic reads them:

* ``dropout:P``: every pixel zeroed independently with probability P (the paper's headline case, P = 0.9);
* ``block:K``: one K x K block zeroed at a random place per image;
* ``blur_noise:S``: a Gaussian blur (sigma 1 pixel) then additive Gaussian noise of std S;
* ``projection:M``: M random Gaussian projections y = A x (A of N(0, 1/M) entries, one per batch),
  shown to the critic as A^T y (a fixed linear map of y, so the critic still sees only y).

:meth:`MeasurementFamily.invert` is the paper's "unmeasured" baseline: a simple inversion (inpainting
by normalised blurring of the observed pixels, Wiener deconvolution, the pseudo-inverse), after
which an ordinary GAN is trained on the inverted images.

Example:
    >>> import torch
    >>> family = parse_family("dropout:0.9")
    >>> m = family.measure(torch.ones(2, 1, 28, 28), torch.Generator().manual_seed(0))
    >>> 0.85 < float((m.y == 0).float().mean()) < 0.95
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Measurement", "MeasurementFamily", "RandomDropout", "RandomBlock", "BlurNoise", "RandomProjection",
           "parse_family", "FAMILIES"]


@dataclass
class Measurement:
    """Measured images ``y`` (image-shaped) and what the inversion needs: the observed-pixel mask, or
    the projection matrix of the batch."""

    y: torch.Tensor
    mask: torch.Tensor | None = None
    matrix: torch.Tensor | None = None


class MeasurementFamily:
    """A distribution over measurement operators; :meth:`measure` draws one per image and applies it."""

    name = "family"

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Measurement:
        raise NotImplementedError

    def invert(self, m: Measurement) -> torch.Tensor:
        """The "unmeasured" baseline's estimate of x from its measurement."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.measure(x, generator).y


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    size = 2 * math.ceil(3 * sigma) + 1
    t = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (torch.outer(g, g) / torch.outer(g, g).sum())[None, None].expand(x.shape[1], 1, -1, -1)
    return F.conv2d(x, kernel, padding=size // 2, groups=x.shape[1])


def _inpaint(y: torch.Tensor, mask: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Observed pixels kept; missing ones the normalised blur of the observed ones (0 where none is near)."""
    filled = _blur(y * mask, sigma) / _blur(mask, sigma).clamp_min(1e-3)
    return torch.where(mask.bool(), y, filled.clamp(0, 1))


class RandomDropout(MeasurementFamily):
    """Each pixel zeroed independently with probability ``p`` (fresh per image)."""

    def __init__(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.name = float(p), f"dropout:{p:g}"

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Measurement:
        mask = (torch.rand(x.shape, generator=generator).to(x.device) >= self.p).to(x.dtype)
        return Measurement(x * mask, mask=mask)

    def invert(self, m: Measurement) -> torch.Tensor:
        if m.mask is None:
            raise ValueError("a dropout measurement needs its mask to be inverted")
        return _inpaint(m.y, m.mask)


class RandomBlock(MeasurementFamily):
    """One ``size`` x ``size`` block zeroed at a uniformly random place per image."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"block size must be >= 1, got {size}")
        self.size, self.name = int(size), f"block:{size}"

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Measurement:
        n, _, h, w = x.shape
        if self.size > min(h, w):
            raise ValueError(f"block size {self.size} exceeds the {h}x{w} images")
        top = torch.randint(0, h - self.size + 1, (n,), generator=generator)
        left = torch.randint(0, w - self.size + 1, (n,), generator=generator)
        rows, cols = torch.arange(h), torch.arange(w)
        inside = (((rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + self.size))[:, :, None]
                  & ((cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + self.size))[:, None, :])
        mask = (~inside)[:, None].expand(x.shape).to(x.device, x.dtype)
        return Measurement(x * mask, mask=mask)

    def invert(self, m: Measurement) -> torch.Tensor:
        if m.mask is None:
            raise ValueError("a block measurement needs its mask to be inverted")
        return _inpaint(m.y, m.mask, sigma=3.0)


class BlurNoise(MeasurementFamily):
    """A Gaussian blur of ``blur`` pixels, then Gaussian noise of std ``noise`` (fresh per image)."""

    def __init__(self, noise: float, blur: float = 1.0) -> None:
        if noise < 0 or blur <= 0:
            raise ValueError(f"need noise >= 0 and blur > 0, got noise {noise}, blur {blur}")
        self.noise, self.blur, self.name = float(noise), float(blur), f"blur_noise:{noise:g}"

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Measurement:
        noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        return Measurement(_blur(x, self.blur) + self.noise * noise)

    def invert(self, m: Measurement) -> torch.Tensor:
        """Wiener deconvolution (circular, with the noise-to-signal ratio noise^2 / 0.1)."""
        h, w = m.y.shape[-2:]
        impulse = torch.zeros(1, 1, h, w, dtype=m.y.dtype, device=m.y.device)
        impulse[..., 0, 0] = 1
        size = 2 * math.ceil(3 * self.blur) + 1
        kernel = torch.roll(_blur(torch.roll(impulse, (size // 2, size // 2), (-2, -1)), self.blur),
                            (-(size // 2), -(size // 2)), (-2, -1))
        transfer = torch.fft.fft2(kernel)
        ratio = max(self.noise**2 / 0.1, 1e-3)
        estimate = torch.fft.ifft2(torch.fft.fft2(m.y) * transfer.conj() / (transfer.abs() ** 2 + ratio)).real
        return estimate.clamp(0, 1)


class RandomProjection(MeasurementFamily):
    """``m`` random Gaussian projections of each image, one matrix per batch (entries N(0, 1/m)),
    shown as A^T A x (image-shaped; a fixed linear map of the measurements y = A x)."""

    def __init__(self, m: int) -> None:
        if m < 1:
            raise ValueError(f"the number of projections must be >= 1, got {m}")
        self.m, self.name = int(m), f"projection:{m}"

    def measure(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Measurement:
        d = x[0].numel()
        a = (torch.randn(self.m, d, generator=generator) / math.sqrt(self.m)).to(x.device, x.dtype)
        y = x.flatten(1) @ a.T
        return Measurement((y @ a).view_as(x), matrix=a)

    def invert(self, m: Measurement) -> torch.Tensor:
        """The minimum-norm solution A^T (A A^T)^-1 y of A x = y."""
        if m.matrix is None:
            raise ValueError("a projection measurement needs its matrix to be inverted")
        a, shown = m.matrix.double(), m.y.flatten(1).double()  # float64: a random A can be ill-conditioned
        inverse = torch.linalg.pinv(a)  # (d, m)
        y = shown @ inverse  # the shown A^T y back to y (A has full row rank)
        return (y @ inverse.T).view_as(m.y).to(m.y.dtype).clamp(0, 1)


FAMILIES = ("dropout", "block", "blur_noise", "projection")


def parse_family(spec: str) -> MeasurementFamily:
    """``"dropout:0.9"``, ``"block:14"``, ``"blur_noise:0.1"`` or ``"projection:50"``.

    Raises:
        ValueError: an unknown family or a bad parameter (named).
    """
    name, _, value = spec.partition(":")
    try:
        if name == "dropout":
            return RandomDropout(float(value))
        if name == "block":
            return RandomBlock(int(value))
        if name == "blur_noise":
            return BlurNoise(float(value))
        if name == "projection":
            return RandomProjection(int(value))
    except ValueError as exc:
        raise ValueError(f"measurement {spec!r}: {exc}") from None
    raise ValueError(f"unknown measurement family {spec!r}: use one of {[f + ':VALUE' for f in FAMILIES]}")
