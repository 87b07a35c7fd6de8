"""The exact gradient of a projection defense as deployed: the adaptive attacker's default surrogate.

``ExactGradient(defended)`` computes the deployed defense's logits C(G(z*(x))) with the very same
projection (config, restarts, encoder warm start, step decay, early stopping, halving, chunking,
operator) and gives autograd the true derivative of that computation, every optimisation step
included; memory is bounded by recomputing segments of ``checkpoint_every`` steps
(:mod:`manifold_defense.projection.exact_gradient`). Its forward values are the deployed defense's, so an
attack may check success on its own logits at every iterate.

Nothing is approximated: if this gradient is small or useless, the defense itself is shattered
there, and the surrogates of :class:`attacks.BPDA` are the next thing to try (Athalye et al. 2018;
Tramer et al. 2020).

Example:
    >>> from attacks import APGD, ExactGradient
    >>> result = APGD(eps=0.1, loss="dlr")(ExactGradient(defended), x, y)   # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from manifold_defense import PurifiedClassifier

__all__ = ["ExactGradient"]


class ExactGradient(nn.Module):
    """C(P(x)) for the deployed purifier P, differentiable exactly (checkpointed).

    Args:
        defended: the defended model as deployed (a :class:`manifold_defense.PurifiedClassifier`, of
            which :class:`manifold_defense.DefendedClassifier` is the projection case; its purifier
            is used unchanged and its own ``gradient`` mode is ignored). Any purifier gives its own
            exact gradient (:meth:`manifold_defense.purify.Purifier.exact`).
        checkpoint_every: steps per recomputed segment (projection steps; sampler steps of a
            diffusion purifier), memory vs ~1 extra forward.

    Shape:
        input (N, C, H, W); output (N, num_classes).

    Raises:
        ValueError: checkpoint_every < 1.
    """

    def __init__(self, defended: PurifiedClassifier, *, checkpoint_every: int = 10) -> None:
        super().__init__()
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
        self.defended = defended
        self.checkpoint_every = checkpoint_every

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.defended.classifier(self.defended.purify_exact(x, checkpoint_every=self.checkpoint_every))
