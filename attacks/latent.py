"""Latent reparameterisation attack on a projection defense (Athalye, Carlini, Wagner 2018, section 5.3,
against Defense-GAN).

Instead of perturbing x and hoping the projection follows, search the generator's range directly:
start from z0 = z*(x), the defense's own projection, and find z with G(z) misclassified by C while
G(z) stays in the eps-ball around x:

    max_z  L(C(G(z)), y) - c * ||relu(|G(z) - x| - eps)||^2        (Linf; the L2 excess for L2)

The adversarial image is G(z) pulled back into the ball and the pixel bounds. A point on (or near)
G's range projects (nearly) to itself, so the defense hands C the image the attack chose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from manifold_defense import DefendedClassifier

from manifold_defense.utils import clip_to_ball

from .base import AttackResult, Model, Norm, check_attack_inputs, check_eps, distance, predict

__all__ = ["LatentAttack"]


class LatentAttack:
    """Args:
        eps: budget (pixel units) in ``norm``.
        norm: ``"linf"`` or ``"l2"``.
        steps: Adam steps in z.
        lr: Adam step size in z.
        penalty: c, weight of the ball-violation term.

    Raises:
        ValueError: negative eps, steps < 1, lr <= 0, unknown norm.
    """

    def __init__(self, *, eps: float, norm: Norm = "linf", steps: int = 100, lr: float = 0.05, penalty: float = 100.0) -> None:
        self.eps = check_eps(eps)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if steps < 1 or lr <= 0 or penalty < 0:
            raise ValueError(f"need steps >= 1, lr > 0, penalty >= 0; got {steps}, {lr}, {penalty}")
        self.norm: Norm = norm
        self.steps, self.lr, self.penalty = steps, lr, penalty

    def __call__(self, defended: DefendedClassifier, x: torch.Tensor, y: torch.Tensor, *, judge: Model | None = None) -> AttackResult:
        """Attack a :class:`manifold_defense.DefendedClassifier` (uses its ``project``, ``generator``, ``classifier``).

        ``judge`` decides success (default: the defended model itself). The pixel bounds are the
        defense's own (``defended.config.pixel_range``).
        """
        bounds = defended.config.pixel_range
        check_attack_inputs(x, y, bounds)
        judge = judge or defended
        x0 = x.detach()
        G, C = defended.generator, defended.classifier
        z = defended.project(x0).z.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        best = x0.clone()
        with torch.enable_grad():
            for _ in range(self.steps):
                img = G(z)
                diff = img - x0
                if self.norm == "linf":
                    excess = F.relu(diff.abs() - self.eps).pow(2).flatten(1).sum(1)
                else:
                    excess = F.relu(diff.flatten(1).norm(dim=1) - self.eps).pow(2)
                logits = C(img)
                objective = F.cross_entropy(logits, y, reduction="none") - self.penalty * excess
                opt.zero_grad(set_to_none=True)
                (-objective.sum()).backward(inputs=[z])
                opt.step()
                with torch.no_grad():
                    candidate = clip_to_ball(img.detach(), x0, self.eps, self.norm, bounds)
                    fooled = C(candidate).argmax(1) != y
                    best[fooled] = candidate[fooled]
        with torch.no_grad():
            last = clip_to_ball(G(z), x0, self.eps, self.norm, bounds)
            unfooled = (best == x0).flatten(1).all(1)
            best[unfooled] = last[unfooled]
        success = predict(judge, best) != y
        return AttackResult(best, success, distance(best, x0, self.norm), self.norm, self.eps)
