"""Expectation over Transformation (Athalye, Engstrom, Ilyas, Kwok 2018; Athalye et al. 2018, section 4.3).

A randomised defense (here: random restarts of the projection) is attacked by the gradient of the
expected loss, estimated by averaging over k draws. Two ways to use it:

* ``LinfPGD(eps=..., eot_samples=k)``: the attack loop averages k loss gradients per step (exact EOT);
* ``EOT(model, samples=k)``: a module whose logits are the mean of k draws, for library attacks
  (torchattacks, foolbox) that call a model once per step.

For the draws to differ, the defense must not fix its seed (``ProjectionConfig(seed=None)``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EOT"]


class EOT(nn.Module):
    """Mean logits of ``samples`` forward passes of a randomised ``model``.

    Args:
        model: a randomised model (e.g. ``BPDA.from_defense(defended)`` or a defended model).
        samples: k >= 1 draws per forward.

    Raises:
        ValueError: samples < 1.
    """

    def __init__(self, model: nn.Module, samples: int = 8) -> None:
        super().__init__()
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.model = model
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)
