"""TRADES' inner maximisation (Zhang et al. 2019, "Theoretically Principled Trade-off between
Robustness and Accuracy", Algorithm 1): find x' in the Linf ball around x that maximises
KL(C(x) || C(x')), the divergence of the model's prediction from its own clean prediction.

It needs no label (the clean prediction is the target), which is why TRADES training uses it
instead of label-driven PGD:

    x' <- x + 0.001 N(0, I)
    repeat: x' <- clip_{B(x, eps) and bounds}( x' + alpha sign(grad_x' KL(C(x) || C(x'))) )

Example:
    >>> import torch
    >>> from manifold_defense.models import MLP
    >>> x = torch.rand(4, 1, 28, 28)
    >>> x_adv = TradesPGD(eps=0.1, steps=5, seed=0)(MLP().eval(), x)
    >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from manifold_defense.utils import clip_to_ball

from .base import Model, check_attack_inputs, check_eps

__all__ = ["TradesPGD"]


class TradesPGD:
    """Args:
        eps: Linf budget (pixel units).
        steps: sign-gradient steps.
        rel_stepsize: alpha as a fraction of eps (TRADES: 0.007 / 0.031 ~ 0.23 with 10 steps).
        bounds: pixel bounds.
        seed: seed of the small random start (None: torch's global RNG).

    Raises:
        ValueError: negative eps or steps < 1.
    """

    def __init__(self, *, eps: float, steps: int = 10, rel_stepsize: float = 0.25,
                 bounds: tuple[float, float] = (0.0, 1.0), seed: int | None = None) -> None:
        self.eps = check_eps(eps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.steps, self.alpha, self.bounds, self.seed = int(steps), rel_stepsize * self.eps, bounds, seed

    def __call__(self, model: Model, x: torch.Tensor) -> torch.Tensor:
        """The KL-maximising point x' (N, C, H, W) for clean images x; x is not modified."""
        check_attack_inputs(x, torch.zeros(x.shape[0], dtype=torch.int64, device=x.device), self.bounds)
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        x0 = x.detach()
        with torch.no_grad():
            target = F.log_softmax(model(x0), dim=1)  # log space: no 0 * log 0 for saturated predictions
        x_adv = clip_to_ball(x0 + 0.001 * torch.randn(x0.shape, generator=gen).to(x0), x0, self.eps, "linf", self.bounds)
        for _ in range(self.steps):
            x_in = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                kl = F.kl_div(F.log_softmax(model(x_in), dim=1), target, reduction="sum", log_target=True)
                (grad,) = torch.autograd.grad(kl, x_in)
            x_adv = clip_to_ball(x_adv + self.alpha * grad.sign(), x0, self.eps, "linf", self.bounds)
        return x_adv.detach()
