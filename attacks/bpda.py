"""Backward Pass Differentiable Approximation (Athalye, Carlini, Wagner 2018, "Obfuscated Gradients
Give a False Sense of Security", section 4.1).

A preprocessing defense f(x) = C(P(x)) whose P (here the projection onto G's range) has no useful
gradient is attacked through a surrogate: the forward pass computes C(P(x)) exactly, the backward
pass replaces P by the identity (P(x) ~ x), so d f / d x ~ grad C at P(x).

Example:
    >>> from attacks import BPDA, LinfPGD
    >>> surrogate = BPDA.from_defense(defended)                       # doctest: +SKIP
    >>> result = LinfPGD(eps=0.1)(surrogate, x, y, judge=defended)    # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from manifold_defense import DefendedClassifier

__all__ = ["BPDA"]


class BPDA(nn.Module):
    """C(P(x)) on the forward pass, straight through P on the backward pass.

    Args:
        preprocess: P, images -> images of the same shape (any callable; not differentiated).
        classifier: C, images -> logits.

    Shape:
        input (N, C, H, W); output (N, num_classes).

    Raises:
        ValueError: P changes the shape of its input.
    """

    def __init__(self, preprocess: Callable[[torch.Tensor], torch.Tensor], classifier: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.classifier = classifier

    @classmethod
    def from_defense(cls, defended: DefendedClassifier) -> "BPDA":
        """BPDA for a :class:`manifold_defense.DefendedClassifier` (P = its projection)."""
        return cls(lambda x: defended.project(x).x_hat, defended.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            purified = self.preprocess(x.detach())
        if purified.shape != x.shape:
            raise ValueError(f"preprocess changed the shape {tuple(x.shape)} to {tuple(purified.shape)}")
        return self.classifier(x + (purified - x).detach())
