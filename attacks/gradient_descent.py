"""One loop for iterative gradient attacks (after foolbox's ``gradient_descent_base.py``).

Norm families subclass :class:`GradientAttack` and override ``random_start``, ``normalize`` and
``project``; the loop, the loss, EOT averaging, restarts and bookkeeping live here once.
"""

from __future__ import annotations

import torch

from manifold_defense.utils import project_delta

from .base import AttackResult, Model, Norm, check_attack_inputs, check_eps, distance, predict
from .losses import Loss, attack_loss, check_loop_arguments

__all__ = ["GradientAttack", "LinfMixin", "L2Mixin"]

class LinfMixin:
    norm: Norm = "linf"

    def random_start(self, x: torch.Tensor, eps: float, gen: torch.Generator | None) -> torch.Tensor:
        return (torch.rand(x.shape, generator=gen) * 2 - 1).to(x) * eps

    def normalize(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return project_delta(delta, eps, "linf")


class L2Mixin:
    norm: Norm = "l2"

    def random_start(self, x: torch.Tensor, eps: float, gen: torch.Generator | None) -> torch.Tensor:
        # Uniform in the L2 ball: direction uniform on the sphere, radius ~ eps * U^(1/n).
        d = torch.randn(x.shape, generator=gen).to(x)
        n = d[0].numel()
        r = torch.rand(x.shape[0], generator=gen).to(x) ** (1.0 / n)
        return d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * (eps * r).view(-1, 1, 1, 1)

    def normalize(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return project_delta(delta, eps, "l2")


class GradientAttack:
    """Projected gradient ascent on the loss within an eps-ball (Madry et al. 2018).

    Args:
        eps: budget in the family's norm (pixel units).
        steps: gradient steps per restart.
        rel_stepsize: step size as a fraction of eps (ignored when ``abs_stepsize`` is given).
        abs_stepsize: step size in pixel units.
        random_start: start at a uniform point of the ball instead of x.
        restarts: independent runs; an example counts as broken if any run breaks it.
        eot_samples: gradients averaged over this many forward passes per step (EOT, for
            randomised models; Athalye et al. 2018).
        loss: ``"ce"`` (cross-entropy), ``"margin"`` (CW logit margin) or ``"dlr"`` (see :mod:`attacks.losses`).
        bounds: pixel bounds (the domain's ``pixel_range``).
        seed: seed of the random starts (None: torch's global RNG).

    Raises:
        ValueError: negative eps, steps < 1, restarts < 1, eot_samples < 1, unknown loss.
    """

    norm: Norm

    def __init__(
        self,
        *,
        eps: float,
        steps: int = 40,
        rel_stepsize: float = 0.1,
        abs_stepsize: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        eot_samples: int = 1,
        loss: Loss = "ce",
        bounds: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
    ) -> None:
        self.eps = check_eps(eps)
        check_loop_arguments(steps=steps, restarts=restarts, eot_samples=eot_samples, loss=loss)
        self.steps, self.restarts, self.eot_samples, self.loss = int(steps), int(restarts), int(eot_samples), loss
        self.stepsize = check_eps(abs_stepsize, "abs_stepsize") if abs_stepsize is not None else rel_stepsize * self.eps
        self.random_start_enabled = random_start
        self.bounds = bounds
        self.seed = seed

    # Overridden by the norm mixins.
    def random_start(self, x: torch.Tensor, eps: float, gen: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def normalize(self, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        raise NotImplementedError

    def gradient(self, model: Model, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over ``eot_samples`` forward passes of the loss gradient; also the last logits."""
        total = torch.zeros_like(x_adv)
        for _ in range(self.eot_samples):
            x_in = x_adv.detach().requires_grad_(True)
            logits = model(x_in)
            (g,) = torch.autograd.grad(attack_loss(logits, y, self.loss).sum(), x_in)
            total += g
        return total / self.eot_samples, logits.detach()

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *, judge: Model | None = None) -> AttackResult:
        """Attack ``model`` on (x, y).

        Args:
            model: gives the gradients (a plain classifier, or a BPDA/EOT/unrolled wrapper of a defense).
            x: clean images (N, C, H, W) within ``bounds``.
            y: true labels (N,).
            judge: the model whose predictions decide success (default ``model``), e.g. the
                defended model itself when ``model`` is a gradient surrogate.

        Returns:
            :class:`AttackResult` with the strongest adversarial found per example.
        """
        check_attack_inputs(x, y, self.bounds)
        judge = judge or model
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        x0 = x.detach()
        lo, hi = self.bounds
        best = x0.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if self.eps == 0:
            return self._result(judge, x0, best, y)
        for _ in range(self.restarts):
            todo = (~broken).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            xs, ys = x0[todo], y[todo]
            delta = self.random_start(xs, self.eps, gen) if self.random_start_enabled else torch.zeros_like(xs)
            delta = (xs + delta).clamp(lo, hi) - xs
            for _ in range(self.steps):
                grad, _ = self.gradient(model, xs + delta, ys)
                delta = self.project(delta + self.stepsize * self.normalize(grad), self.eps)
                delta = (xs + delta).clamp(lo, hi) - xs
            adv = xs + delta
            fooled = predict(judge, adv) != ys
            best[todo[fooled]] = adv[fooled]
            # Examples never broken keep the last iterate (a valid point of the ball either way).
            best[todo[~fooled]] = adv[~fooled]
            broken[todo] |= fooled
        return self._result(judge, x0, best, y)

    def _result(self, judge: Model, x0: torch.Tensor, adv: torch.Tensor, y: torch.Tensor) -> AttackResult:
        # Success is judged afresh on the returned images (a randomised judge draws again).
        success = predict(judge, adv) != y
        return AttackResult(adv, success, distance(adv, x0, self.norm), self.norm, self.eps)
