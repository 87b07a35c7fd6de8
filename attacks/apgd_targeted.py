"""APGD-T: Auto-PGD with the targeted DLR loss, one run per target class (Croce & Hein 2020,
"Reliable evaluation of adversarial robustness...", Section 4; the strongest white-box member of
AutoAttack's standard ensemble).

For each of the ``targets`` classes the model ranks highest after the true one at the clean input,
APGD (:class:`attacks.APGD`, same step-size rule and checkpoints) maximises

    DLR_t(x) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2),

which pushes the target logit z_t above the true one; examples broken by an earlier target are not
attacked again. An example counts as broken when any iterate of any target run is misclassified
(as any class, not only the target).

Example:
    >>> import torch
    >>> from attacks import APGDTargeted
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    >>> x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    >>> result = APGDTargeted(eps=0.1, steps=10, targets=3, seed=0)(model, x, y)
    >>> bool((result.distance <= 0.1 + 1e-6).all())
    True
"""

from __future__ import annotations

import torch

from .apgd import APGD, keep_best
from .base import AttackResult, Model, check_attack_inputs, distance, predict

__all__ = ["APGDTargeted", "targeted_dlr"]


def targeted_dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) per example (> 0 iff the target beats the true class).

    Shape:
        logits (N, K) with K >= 4, y (N,), target (N,) -> (N,).

    Raises:
        ValueError: fewer than 4 classes.
    """
    if logits.shape[1] < 4:
        raise ValueError("the targeted DLR loss needs at least 4 classes")
    top = logits.sort(dim=1, descending=True).values
    gap = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    return -gap / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


class _TowardTarget(APGD):
    """One APGD run whose loss is the targeted DLR toward fixed per-example targets."""

    def __init__(self, base: APGD, target: torch.Tensor) -> None:
        super().__init__(eps=base.eps, steps=base.steps, loss=base.loss, eot_samples=base.eot_samples, rho=base.rho,
                         alpha=base.alpha, bounds=base.bounds)
        self.target = target

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return targeted_dlr(logits, y, self.target)


class APGDTargeted:
    """APGD-T, Linf.

    Args:
        eps: Linf budget (pixel units).
        steps: APGD iterations per target (AutoAttack: 100).
        targets: how many target classes, the highest-ranked wrong classes at the clean input
            (AutoAttack: 9; at most the number of classes - 1).
        eot_samples: gradients averaged per step, for randomised defenses.
        bounds: pixel bounds.
        seed: seed of the random starts (None: torch's global RNG).

    Raises:
        ValueError: negative eps, steps/eot_samples < 1, targets < 1.
    """

    norm = "linf"

    def __init__(self, *, eps: float, steps: int = 100, targets: int = 9, eot_samples: int = 1,
                 bounds: tuple[float, float] = (0.0, 1.0), seed: int | None = None) -> None:
        if int(targets) != targets or targets < 1:
            raise ValueError(f"targets must be an integer >= 1, got {targets}")
        self.base = APGD(eps=eps, steps=steps, loss="dlr", eot_samples=eot_samples, bounds=bounds)
        self.eps, self.steps, self.targets, self.bounds, self.seed = self.base.eps, int(steps), int(targets), bounds, seed

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *, judge: Model | None = None) -> AttackResult:
        """Attack ``model`` on (x, y); ``judge`` (optional) decides success as in :class:`attacks.APGD`.

        Raises:
            ValueError: bad images or labels, or a model with fewer than ``targets + 1`` classes.
        """
        check_attack_inputs(x, y, self.bounds)
        gen = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        x0 = x.detach()
        with torch.no_grad():
            logits = model(x0)
        if self.targets > logits.shape[1] - 1:
            raise ValueError(f"targets={self.targets} but the model has only {logits.shape[1]} classes")
        ranked = logits.masked_fill(torch.nn.functional.one_hot(y, logits.shape[1]).bool(), -float("inf"))
        ranked = ranked.argsort(dim=1, descending=True)  # wrong classes first, most likely first
        adv = x0.clone()
        broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
        if self.eps > 0:
            for t in range(self.targets):
                todo = (~broken).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                run = _TowardTarget(self.base, ranked[todo, t])
                keep_best(adv, broken, best_loss, todo, *run._run(model, x0[todo], y[todo], judge, gen))
        success = predict(judge or model, adv) != y
        return AttackResult(adv, success, distance(adv, x0, "linf"), "linf", self.eps)
