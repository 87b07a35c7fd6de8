"""foolbox 3 behind the common call signature ``attack(model, x, y) -> AttackResult``.

Covers the gradient attacks (LinfPGD, L2PGD, ...) and the decision-based, gradient-free ones
(HopSkipJump, Boundary), which only query labels and so are immune to gradient masking: a white-box
attack that does worse than these is a red flag for the evaluation.

Example:
    >>> from attacks import FoolboxAttack
    >>> hsj = FoolboxAttack("HopSkipJumpAttack", eps=0.1, steps=20)    # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

from .base import AttackResult, Model, Norm, check_attack_inputs, check_eps, distance, predict

__all__ = ["FoolboxAttack", "FOOLBOX_NORMS"]

os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # foolbox imports GitPython, which wants a git binary

FOOLBOX_NORMS: dict[str, Norm] = {
    "LinfPGD": "linf", "L2PGD": "l2", "FGSM": "linf", "LinfBasicIterativeAttack": "linf",
    "HopSkipJumpAttack": "linf", "BoundaryAttack": "l2", "L2CarliniWagnerAttack": "l2",
    "LinfDeepFoolAttack": "linf", "L2DeepFoolAttack": "l2",
}


class FoolboxAttack:
    """A foolbox attack by class name.

    Args:
        name: class name in ``foolbox.attacks`` (see :data:`FOOLBOX_NORMS`).
        eps: budget in the attack's norm; minimum-distance attacks are clipped to it.
        bounds: the images' pixel range (the domain's ``pixel_range``).
        **kwargs: the attack's own hyperparameters (``steps``, ``rel_stepsize``, ``constraint``...).
            HopSkipJump defaults to ``constraint="linf"``.

    Raises:
        ValueError: unknown name or negative eps.
    """

    def __init__(self, name: str, *, eps: float, bounds: tuple[float, float] = (0.0, 1.0), **kwargs: Any) -> None:
        if not float(bounds[0]) < float(bounds[1]):
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
        self.bounds = (float(bounds[0]), float(bounds[1]))
        if name not in FOOLBOX_NORMS:
            raise ValueError(f"unsupported foolbox attack {name!r}; supported: {sorted(FOOLBOX_NORMS)}")
        self.name, self.eps, self.kwargs = name, check_eps(eps), dict(kwargs)
        if name == "HopSkipJumpAttack":
            self.kwargs.setdefault("constraint", "linf")
            self.norm: Norm = "linf" if self.kwargs["constraint"] == "linf" else "l2"
        else:
            self.norm = FOOLBOX_NORMS[name]

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *, judge: Model | None = None) -> AttackResult:
        """Run the attack on ``model`` (an ``nn.Module`` in eval mode returning logits)."""
        import foolbox as fb

        if not isinstance(model, nn.Module):
            raise TypeError("foolbox needs an nn.Module model")
        check_attack_inputs(x, y, self.bounds)
        fmodel = fb.PyTorchModel(model, bounds=self.bounds, device=x.device)
        attack = getattr(fb.attacks, self.name)(**self.kwargs)
        _, clipped, _ = attack(fmodel, x.detach().clone(), y.clone(), epsilons=self.eps)
        adv = clipped.detach().clamp(*self.bounds)
        success = predict(judge or model, adv) != y
        eps = self.eps if math.isfinite(self.eps) else math.inf
        return AttackResult(adv, success, distance(adv, x.detach(), self.norm), self.norm, eps)
