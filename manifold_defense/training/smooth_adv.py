"""SmoothAdv training's inner attack (Salman et al. 2019, "Provably Robust Deep Learning via Adversarially
Trained Smoothed Classifiers", Hadisalman/smoothing-adversarial ``train_pgd.py``).

Each batch draws its noise e_1..e_m once; L2 PGD from x (no random start, step 2 eps / T, T steps, kept
in the pixel range and the eps-ball) maximises -log (1/m) sum_i softmax(f(x' + e_i))_y, the loss of the
smoothed *soft* classifier under those draws; the classifier then trains on x' + e_i with the same draws.
The classifier is put in eval mode for the attack and its parameters get no gradient from it.

The evaluation attack (fresh draws at every step, many more steps) is ``attacks.SmoothAdv``; this one is
the training variant, kept in the library because ``manifold_defense`` never imports ``attacks``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["smoothadv_inputs", "warmup_eps"]


def warmup_eps(eps: float, epoch: int, warmup: int) -> float:
    """Salman et al.'s linear warm-up: min(eps, (epoch + 1) * eps / warmup) at 0-based ``epoch``
    (``warmup`` 0: eps from the start).

    Example:
        >>> [warmup_eps(1.0, e, 4) for e in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    return eps if warmup <= 0 else min(eps, (epoch + 1) * eps / warmup)


def smoothadv_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, *, eps: float,
                     steps: int, bounds: tuple[float, float]) -> torch.Tensor:
    """The SmoothAdv adversarial images x' for the fixed noise draws ``noise`` (x itself is not modified).

    Args:
        model: the base classifier f (its mode is restored afterwards; its parameters get no gradient).
        x: clean images; y: labels.
        noise: the draws sigma * e_i, one per copy.
        eps: L2 radius (0: x is returned).
        steps: T, PGD steps of size 2 eps / T.
        bounds: pixel range that x' stays in.

    Shape:
        x (N, C, H, W), y (N,), noise (m, N, C, H, W) -> (N, C, H, W).

    Raises:
        ValueError: ``noise`` is not m copies of x's shape, eps < 0 or steps < 1.

    Example:
        >>> import torch
        >>> f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(5, 1, 2, 2), torch.zeros(5, dtype=torch.long)
        >>> adv = smoothadv_inputs(f, x, y, 0.5 * torch.randn(2, 5, 1, 2, 2), eps=0.3, steps=2, bounds=(0.0, 1.0))
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.3 + 1e-5).all())
        True
    """
    if noise.dim() != x.dim() + 1 or noise.shape[1:] != x.shape:
        raise ValueError(f"noise must have shape (m, *x.shape) = (m, {tuple(x.shape)}), got {tuple(noise.shape)}")
    if eps < 0 or steps < 1:
        raise ValueError(f"eps must be >= 0 and steps >= 1, got eps={eps}, steps={steps}")
    x = x.detach()
    if eps == 0:
        return x.clone()
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        m, n = noise.shape[:2]
        step = 2 * eps / steps
        delta = torch.zeros_like(x)
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = model((x + delta).unsqueeze(0).add(noise).flatten(0, 1))
            probs = F.softmax(logits, dim=-1).view(m, n, -1).mean(0)
            loss = F.nll_loss(probs.clamp_min(1e-20).log(), y)
            (grad,) = torch.autograd.grad(loss, delta)
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
            delta = delta.detach() + step * grad / norm
            delta = (x + delta).clamp(*bounds) - x
            scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
            delta = delta * scale.view(-1, *[1] * (x.dim() - 1))
        return (x + delta).detach()
    finally:
        model.train(was_training)
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
