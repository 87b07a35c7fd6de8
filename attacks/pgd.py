"""Projected gradient descent in the Linf and L2 balls (Madry et al. 2018, "Towards Deep Learning
Models Resistant to Adversarial Attacks").

x_{t+1} = Proj_{B(x, eps)}( x_t + alpha * normalize(grad_x L(f(x_t), y)) ), clipped to the pixel bounds,
with normalize = sign for Linf and division by the L2 norm for L2.

Example:
    >>> import torch
    >>> from attacks import LinfPGD
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    >>> x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    >>> result = LinfPGD(eps=0.1, steps=10)(model, x, y)
    >>> bool((result.distance <= 0.1 + 1e-6).all())
    True
"""

from __future__ import annotations

from .gradient_descent import GradientAttack, L2Mixin, LinfMixin

__all__ = ["LinfPGD", "L2PGD"]


class LinfPGD(LinfMixin, GradientAttack):
    """PGD in the Linf ball (default 40 steps of eps/10 from a random start); see :class:`GradientAttack`."""


class L2PGD(L2Mixin, GradientAttack):
    """PGD in the L2 ball; see :class:`GradientAttack` for all arguments."""
