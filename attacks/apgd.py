"""Auto-PGD in the Linf ball (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks", Algorithm 1).

PGD without a step-size to tune: the step starts at 2 eps, a momentum term (alpha = 0.75) mixes the
last two iterates,

    z_{k+1} = P(x_k + eta_k sign(grad_k)),
    x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha) (x_k - x_{k-1})),

and at checkpoints w_j (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)) the
step is halved and the iterate reset to the best point so far when fewer than rho = 75% of the
last steps increased the loss, or when neither the step nor the best loss changed since the last
checkpoint. Losses: ``"ce"``, ``"dlr"`` (the paper's scale-invariant margin) or ``"margin"``.

Every iterate is checked, and the point returned for an example is the iterate that fooled the
largest share of the ``eot_samples`` forward passes made there (ties: the higher mean loss); an
example counts as broken when that share is at least a half. Against a deterministic model the
share is 0 or 1: an example misclassified at any step is broken (and its highest-loss misclassified
iterate returned), for the others the highest-loss point. Against a randomised one this is what
matters: a point where one lucky draw erred is not kept in place of a later one that most draws
get wrong (first-success early stopping returned such points; on DiffPure it cost the attack
3 to 7 points of the 100 first test images). The check uses the gradient model's own logits, or
``judge``'s when given (one extra forward per step) - so a surrogate whose forward pass *is* the
deployed defense (:class:`attacks.ExactGradient`, :class:`attacks.BPDA`) needs no judge to be
judged on the deployed defense.

Example:
    >>> import torch
    >>> from attacks import APGD
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    >>> x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    >>> result = APGD(eps=0.1, steps=20, loss="dlr", seed=0)(model, x, y)
    >>> bool((result.distance <= 0.1 + 1e-6).all())
    True
"""

from __future__ import annotations

import torch

from manifold_defense.utils import clip_to_ball

from .base import AttackResult, Model, check_attack_inputs, check_eps, distance, predict
from .losses import Loss, attack_loss, check_loop_arguments

__all__ = ["APGD", "apgd_checkpoints", "keep_best", "selection_score"]


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ceil(p_j * steps) at which APGD may halve its step (w_0 = 0 excluded)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({min(steps, max(1, int(-(-q * steps // 1)))) for q in p[1:] if q <= 1})


def keep_best(adv: torch.Tensor, broken: torch.Tensor, best_loss: torch.Tensor, todo: torch.Tensor,
              found: torch.Tensor, hit: torch.Tensor, loss: torch.Tensor) -> None:
    """Merge one run on the examples ``todo`` into the running result, in place: an example broken
    by this run keeps its adversarial (score +inf), an unbroken one keeps the higher-scoring point
    (``loss``: the run's selection score, see :func:`selection_score`)."""
    keep = hit | (loss > best_loss[todo])
    adv[todo[keep]] = found[keep]
    best_loss[todo[keep]] = torch.where(hit, torch.full_like(loss, float("inf")), loss)[keep]
    broken[todo] |= hit


def selection_score(wrong: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """How adversarial an iterate is: the share of forward passes that misclassify it (in [0, 1]),
    ties broken by the mean loss (squashed into (-1e-3, 1e-3), below any step of the share)."""
    return wrong + 1e-3 * loss / (1 + loss.abs())


class APGD:
    """Auto-PGD, Linf.

    Args:
        eps: Linf budget (pixel units).
        steps: iterations per restart.
        restarts: independent random starts; later restarts only attack examples not yet broken.
        loss: ``"ce"``, ``"dlr"`` or ``"margin"`` (see :mod:`attacks.losses`).
        eot_samples: gradients (and losses) averaged over this many forward passes per step, for
            randomised defenses (EOT).
        rho: the fraction of increasing steps below which the step is halved.
        alpha: momentum of the update.
        bounds: pixel bounds.
        seed: seed of the random starts (None: torch's global RNG).

    Raises:
        ValueError: negative eps, steps/restarts/eot_samples < 1, unknown loss, rho or alpha outside (0, 1].
    """

    norm = "linf"

    def __init__(self, *, eps: float, steps: int = 100, restarts: int = 1, loss: Loss = "dlr", eot_samples: int = 1,
                 rho: float = 0.75, alpha: float = 0.75, bounds: tuple[float, float] = (0.0, 1.0),
                 seed: int | None = None) -> None:
        self.eps = check_eps(eps)
        check_loop_arguments(steps=steps, restarts=restarts, eot_samples=eot_samples, loss=loss)
        if not (0 < rho <= 1 and 0 < alpha <= 1):
            raise ValueError(f"rho and alpha must be in (0, 1], got {rho}, {alpha}")
        self.steps, self.restarts, self.eot_samples = int(steps), int(restarts), int(eot_samples)
        self.loss: Loss = loss
        self.rho, self.alpha, self.bounds, self.seed = rho, alpha, bounds, seed

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The per-example loss the iterates climb (subclasses change it, e.g. APGD-T's targeted DLR)."""
        return attack_loss(logits, y, self.loss)

    def _grad(self, model: Model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """EOT-averaged loss gradient, per-example loss and share of the draws that misclassify x."""
        grad, total = torch.zeros_like(x), torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        wrong = torch.zeros_like(total)
        with torch.enable_grad():
            for _ in range(self.eot_samples):
                x_in = x.detach().requires_grad_(True)
                logits = model(x_in)
                loss = self._loss(logits, y)
                (g,) = torch.autograd.grad(loss.sum(), x_in)
                grad, total = grad + g, total + loss.detach()
                wrong += (logits.detach().argmax(1) != y).to(total.dtype)
        return grad / self.eot_samples, total / self.eot_samples, wrong / self.eot_samples

    def _score(self, wrong: torch.Tensor, loss: torch.Tensor, judge: Model | None, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
        """The iterate's :func:`selection_score`; with a judge, its verdict replaces the draws' share."""
        if judge is not None:
            wrong = (predict(judge, x) != y).to(loss.dtype)
        return selection_score(wrong, loss)

    def _run(self, model: Model, x: torch.Tensor, y: torch.Tensor, judge: Model | None,
             gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One restart: (adversarial, broken, its :func:`selection_score`)."""
        lo, hi = self.bounds
        eps = self.eps
        n = x.shape[0]

        def proj(v: torch.Tensor) -> torch.Tensor:
            return clip_to_ball(v, x, eps, "linf", (lo, hi))

        t = (torch.rand(x.shape, generator=gen) * 2 - 1).to(x)
        x_adv = proj(x + eps * t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1))
        grad, loss, wrong = self._grad(model, x_adv, y)
        found, found_score = x_adv.clone(), self._score(wrong, loss, judge, x_adv, y)
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        step = torch.full((n, 1, 1, 1), 2.0 * eps, device=x.device, dtype=x.dtype)
        checkpoints = set(apgd_checkpoints(self.steps))
        last_check, increases = 0, torch.zeros(n, device=x.device)
        loss_best_at_check = loss_best.clone()
        halved_at_check = torch.ones(n, dtype=torch.bool, device=x.device)  # no "no improvement" reset at w_1
        x_prev, loss_prev = x_adv.clone(), loss.clone()
        for k in range(self.steps):
            a = self.alpha if k > 0 else 1.0
            z = proj(x_adv + step * grad.sign())
            x_new = proj(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev))
            x_prev, x_adv = x_adv, x_new
            grad, loss, wrong = self._grad(model, x_adv, y)
            score = self._score(wrong, loss, judge, x_adv, y)
            more = score > found_score
            found[more], found_score[more] = x_adv[more], score[more]
            increases += (loss > loss_prev).float()
            loss_prev = loss
            better = loss > loss_best
            x_best[better], loss_best[better], grad_best[better] = x_adv[better], loss[better], grad[better]
            if k + 1 in checkpoints:
                oscillating = increases <= self.rho * (k + 1 - last_check)
                stuck = ~halved_at_check & (loss_best <= loss_best_at_check)
                halve = oscillating | stuck
                step[halve] /= 2
                x_adv[halve], grad[halve] = x_best[halve], grad_best[halve]
                x_prev[halve] = x_best[halve]
                halved_at_check, loss_best_at_check = halve, loss_best.clone()
                last_check, increases = k + 1, torch.zeros_like(increases)
        return found, found_score >= 0.5, found_score

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *, judge: Model | None = None) -> AttackResult:
        """Attack ``model`` on (x, y).

        Args:
            model: gives the gradients (and, without ``judge``, the per-iterate success checks).
            x: clean images (N, C, H, W) within ``bounds``.
            y: true labels (N,).
            judge: the model whose predictions decide success at every iterate and at the end.

        Returns:
            :class:`AttackResult`; ``success`` is judged afresh on the returned images.
        """
        check_attack_inputs(x, y, self.bounds)
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        x0 = x.detach()
        adv = x0.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
        if self.eps > 0:
            for _ in range(self.restarts):
                todo = (~broken).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                keep_best(adv, broken, best_loss, todo, *self._run(model, x0[todo], y[todo], judge, gen))
        success = predict(judge or model, adv) != y
        return AttackResult(adv, success, distance(adv, x0, "linf"), "linf", self.eps)
