"""An exponential moving average of a model's weights (Polyak averaging; the EMA of Gowal et al.
2021 and Wang et al. 2023 that is evaluated and shipped instead of the last iterate).

Example:
    >>> import torch
    >>> net = torch.nn.Linear(2, 2)
    >>> ema = WeightEMA(net, decay=0.9)
    >>> with torch.no_grad():
    ...     _ = net.weight.add_(1.0)
    >>> ema.update(net)
    >>> bool((ema.module.weight < net.weight).all())
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """theta_ema <- d theta_ema + (1 - d) theta after every step, with d = min(decay, (1 + t) / (10 + t))
    (a short warm-up, so early weights do not dominate); buffers (BatchNorm statistics) are copied.

    Args:
        model: the model being trained (copied; the copy never requires gradients).
        decay: the long-run decay in [0, 1).

    Raises:
        ValueError: decay outside [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay, self.updates = float(decay), 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current weights into the average."""
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for p_ema, p in zip(self.module.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.updates += 1
