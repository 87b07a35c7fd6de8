"""Backward Pass Differentiable Approximation (Athalye, Carlini, Wagner 2018, "Obfuscated Gradients
Give a False Sense of Security", section 4.1).

A preprocessing defense f(x) = C(P(x)) is attacked through a surrogate: the forward pass computes
C(P(x)) exactly, the backward pass replaces P by a differentiable g with g(x) ~ P(x):

    forward  C(P(x)),        backward  d C(g(x)) / d x   at the point P(x).

``approximation`` chooses g for a projection defense:

* ``"identity"``: g(x) = x (straight-through; the paper's choice when P(x) ~ x);
* ``"amortised"``: g(x) = G(E(x)), the encoder's one-shot projection (needs an encoder);
* ``"unroll"``: g(x) = the purifier shortened to ``unroll_steps`` iterations (projection steps, reverse
  diffusion steps), differentiated exactly.

The exact gradient (:class:`attacks.ExactGradient`) is the reference; ``eval.surrogates`` measures
each surrogate's strength and cost against it.

Example:
    >>> from attacks import BPDA, LinfPGD
    >>> surrogate = BPDA.from_defense(defended, approximation="amortised")   # doctest: +SKIP
    >>> result = LinfPGD(eps=0.1)(surrogate, x, y, judge=defended)           # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import nn

from manifold_defense import DefendedClassifier, PurifiedClassifier

__all__ = ["BPDA", "Approximation"]

Approximation = Literal["identity", "amortised", "unroll"]


class BPDA(nn.Module):
    """C(P(x)) on the forward pass; the backward pass differentiates C(g(x)) instead.

    Args:
        preprocess: P, images -> images of the same shape (any callable; not differentiated).
        classifier: C, images -> logits.
        approximation: g, a differentiable callable images -> images (default: the identity).

    Shape:
        input (N, C, H, W); output (N, num_classes).

    Raises:
        ValueError: P or g changes the shape of its input.
    """

    def __init__(self, preprocess: Callable[[torch.Tensor], torch.Tensor], classifier: nn.Module,
                 approximation: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.classifier = classifier
        self.approximation = approximation

    @classmethod
    def from_defense(cls, defended: PurifiedClassifier, *, approximation: Approximation = "identity",
                     unroll_steps: int = 10) -> "BPDA":
        """BPDA for a defended model (P = its purifier as deployed; any purifier for ``"identity"``,
        an iterative one for ``"unroll"``, a projection with an encoder for ``"amortised"``).

        Raises:
            ValueError: unknown approximation; ``"unroll"`` for a purifier without iterations;
                ``"amortised"`` for a purifier that is not a projection, or without an encoder;
                unroll_steps < 1.
        """
        if approximation not in ("identity", "amortised", "unroll"):
            raise ValueError(f"approximation must be 'identity', 'amortised' or 'unroll', got {approximation!r}")
        purifier = defended.purifier
        if approximation == "identity":
            return cls(purifier, defended.classifier, None)
        if approximation == "unroll":
            if unroll_steps < 1:
                raise ValueError(f"unroll_steps must be >= 1, got {unroll_steps}")
            short = purifier.shortened(unroll_steps)
            if short is None:
                raise ValueError(f"the 'unroll' approximation needs an iterative purifier; {type(purifier).__name__} "
                                 "has no shortened version")
            return cls(purifier, defended.classifier, short.exact)
        if not isinstance(defended, DefendedClassifier):
            raise ValueError(f"the {approximation!r} approximation needs a projection defense (DefendedClassifier), "
                             f"not a {type(purifier).__name__}")
        encoder = defended.encoder
        if encoder is None:
            raise ValueError("the amortised approximation G(E(x)) needs a defense with an encoder")
        return cls(purifier, defended.classifier, lambda x: defended.generator(encoder(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            purified = self.preprocess(x.detach())
        if purified.shape != x.shape:
            raise ValueError(f"preprocess changed the shape {tuple(x.shape)} to {tuple(purified.shape)}")
        if self.approximation is None or not (torch.is_grad_enabled() and x.requires_grad):
            approx = x
        else:
            approx = self.approximation(x)
            if approx.shape != x.shape:
                raise ValueError(f"approximation changed the shape {tuple(x.shape)} to {tuple(approx.shape)}")
        return self.classifier(approx + (purified - approx).detach())
