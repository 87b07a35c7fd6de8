"""On-manifold adversarial examples (Ilyas, Jalal, Asteri, Daskalakis, Dimakis 2017, "The Robust
Manifold Defense: Adversarial Training using Generative Models").

Projection cannot remove an adversarial example that lies on G's range. The "overpowered" attack
looks for the classifier's disagreement anywhere on the range:

    max_{z, z'}  D(z, z')   subject to   ||G(z) - G(z')||_2 <= eta,

with D(z, z') = CE(C(G(z')), l) - CE(C(G(z)), l), l the class C gives G(z) at the start, solved by
gradient ascent on the Lagrangian D - lambda (||G(z) - G(z')||^2 - eta^2) with one multiplier per
pair updated by dual ascent. The "standard" variant keeps z fixed (e.g. z = z*(x), the projection
of a data point) and moves z' only. After the ascent every pair is made feasible by bisection on the
segment from z to z' in latent space, so returned pairs always satisfy the constraint.

Example:
    >>> from attacks import OnManifoldAttack
    >>> result = OnManifoldAttack(eta=2.0)(classifier, generator, torch.randn(64, 128))   # doctest: +SKIP
    >>> result.success_rate                                                              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_eps

__all__ = ["OnManifoldAttack", "OnManifoldResult"]


@dataclass
class OnManifoldResult:
    """Pairs found by :class:`OnManifoldAttack`.

    Attributes:
        z, z_prime: latent pairs (N, k).
        x, x_prime: G(z), G(z') (N, C, H, W).
        distance: ||G(z) - G(z')||_2 per pair (N,), always <= eta.
        label, label_prime: classes C assigns to x and x' (N,).
        success: label != label_prime (N,).
    """

    z: torch.Tensor
    z_prime: torch.Tensor
    x: torch.Tensor
    x_prime: torch.Tensor
    distance: torch.Tensor
    label: torch.Tensor
    label_prime: torch.Tensor
    success: torch.Tensor

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())


class OnManifoldAttack:
    """Args:
        eta: L2 bound on ||G(z) - G(z')|| (pixel units).
        steps: ascent steps.
        lr: Adam step size in latent space.
        dual_lr: step size of the multipliers' dual ascent.
        init_noise: std of the initial offset z' - z.
        variant: ``"overpowered"`` (z and z' move) or ``"standard"`` (z fixed).
        bisection_steps: feasibility repair steps.
        seed: seed of the initial offsets (None: torch's global RNG).

    Raises:
        ValueError: eta < 0, steps < 1, unknown variant.
    """

    def __init__(
        self,
        *,
        eta: float,
        steps: int = 100,
        lr: float = 0.1,
        dual_lr: float = 0.1,
        init_noise: float = 0.05,
        variant: Literal["overpowered", "standard"] = "overpowered",
        bisection_steps: int = 12,
        seed: int | None = None,
    ) -> None:
        self.eta = check_eps(eta, "eta")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if variant not in ("overpowered", "standard"):
            raise ValueError(f"variant must be 'overpowered' or 'standard', got {variant!r}")
        self.steps, self.lr, self.dual_lr, self.init_noise = steps, lr, dual_lr, init_noise
        self.variant, self.bisection_steps, self.seed = variant, bisection_steps, seed

    def __call__(self, classifier: nn.Module, generator: nn.Module, z: torch.Tensor) -> OnManifoldResult:
        """Search pairs starting at latent codes ``z`` (N, k); nothing passed in is modified."""
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or not z.is_floating_point():
            raise ValueError(f"z must be a floating (N, k) tensor, got {getattr(z, 'shape', type(z))}")
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        z_a = z.detach().clone().requires_grad_(self.variant == "overpowered")
        z_b = (z.detach() + self.init_noise * torch.randn(z.shape, generator=gen).to(z)).requires_grad_(True)
        params = [z_b] + ([z_a] if self.variant == "overpowered" else [])
        opt = torch.optim.Adam(params, lr=self.lr)
        lam = torch.zeros(z.shape[0], device=z.device)  # grows only while the constraint is violated
        with torch.no_grad():
            label = classifier(generator(z_a)).argmax(1)
        # The first feasible disagreeing pair found for each start is kept: more steps never hurt.
        found = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        keep_a, keep_b = z.detach().clone(), z.detach().clone()
        with torch.enable_grad():
            for _ in range(self.steps):
                x_a, x_b = generator(z_a), generator(z_b)
                sq = (x_a - x_b).flatten(1).pow(2).sum(1)
                logits_b = classifier(x_b)
                gain = F.cross_entropy(logits_b, label, reduction="none")
                label_a = label
                if self.variant == "overpowered":
                    logits_a = classifier(x_a)
                    gain = gain - F.cross_entropy(logits_a, label, reduction="none")
                    label_a = logits_a.argmax(1)
                with torch.no_grad():
                    new = ~found & (sq <= self.eta**2) & (logits_b.argmax(1) != label_a)
                    keep_a[new], keep_b[new] = z_a.detach()[new], z_b.detach()[new]
                    found |= new
                lagrangian = gain - lam * (sq - self.eta**2)
                opt.zero_grad(set_to_none=True)
                (-lagrangian.sum()).backward(inputs=params)
                opt.step()
                with torch.no_grad():
                    lam = (lam + self.dual_lr * (sq - self.eta**2)).clamp_min(0.0)
                    # Pull infeasible pairs back towards the constraint along the latent segment
                    # (a one-evaluation approximation of the projection; bisection makes it exact at the end).
                    dist = (generator(z_a) - generator(z_b)).flatten(1).norm(dim=1)
                    shrink = (self.eta / dist.clamp_min(1e-12)).clamp(max=1.0)[:, None]
                    z_b.copy_(z_a + shrink * (z_b - z_a))
        with torch.no_grad():
            z_a = torch.where(found[:, None], keep_a, z_a.detach())
            z_b = torch.where(found[:, None], keep_b, self._feasible(generator, z_a, z_b.detach()))
            x_a, x_b = generator(z_a), generator(z_b)
            dist = (x_a - x_b).flatten(1).norm(dim=1)
            la, lb = classifier(x_a).argmax(1), classifier(x_b).argmax(1)
        return OnManifoldResult(z_a, z_b, x_a, x_b, dist, la, lb, la != lb)

    def _feasible(self, generator: nn.Module, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Move z_b towards z_a along the segment until ||G(z_a) - G(z_b)|| <= eta (bisection, batched)."""
        x_a = generator(z_a)

        def dist(t: torch.Tensor) -> torch.Tensor:
            return (generator(z_a + t[:, None] * (z_b - z_a)) - x_a).flatten(1).norm(dim=1)

        ones = torch.ones(z_a.shape[0], device=z_a.device)
        ok = dist(ones) <= self.eta
        lo, hi = torch.zeros_like(ones), ones.clone()
        for _ in range(self.bisection_steps):
            mid = (lo + hi) / 2
            inside = dist(mid) <= self.eta
            lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
        t = torch.where(ok, ones, lo)
        return z_a + t[:, None] * (z_b - z_a)
