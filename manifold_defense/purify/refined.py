"""A denoiser refined by a learned residual head: D'(x) = D(x) + h([D(x), x]) (issue #46 (b))."""

from __future__ import annotations

import torch
from torch import nn

from ..models.residual_head import ResidualHead

__all__ = ["RefinedDenoiser"]


class RefinedDenoiser(nn.Module):
    """A frozen or trainable denoiser ``denoiser`` whose estimate a :class:`ResidualHead` corrects.

    Args:
        denoiser: any module mapping noisy images to estimates of the same shape (e.g.
            :class:`~manifold_defense.purify.OneShotDenoiser`).
        head: the correction h, fed the estimate and the noisy input.

    Shape:
        (N, C, H, W) noisy images -> (N, C, H, W) refined estimates.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from manifold_defense.models import ResidualHead
        >>> refined = RefinedDenoiser(nn.Identity(), ResidualHead(channels=1, width=4))
        >>> x = torch.rand(2, 1, 28, 28)
        >>> torch.equal(refined(x), x)  # a fresh head leaves the denoiser as it was
        True
    """

    def __init__(self, denoiser: nn.Module, head: ResidualHead) -> None:
        super().__init__()
        self.denoiser, self.head = denoiser, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        estimate = self.denoiser(x)
        return estimate + self.head(estimate, x)
