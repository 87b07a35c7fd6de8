"""torchattacks behind the common call signature ``attack(model, x, y) -> AttackResult``.

The library does the work; this adapter builds the attack at call time (attacks stay stateless),
copies nothing back into the caller's tensors, keeps the result inside the eps-ball and pixel
bounds, and judges success afresh.

Example:
    >>> from attacks import TorchAttack
    >>> pgd = TorchAttack("PGD", eps=0.1, alpha=0.01, steps=40)        # doctest: +SKIP
    >>> square = TorchAttack("Square", eps=0.1, n_queries=1000)       # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import AttackResult, Model, Norm, check_attack_inputs, check_eps, distance, predict

__all__ = ["TorchAttack", "TORCHATTACKS_NORMS"]

# Attack name -> norm of its eps (None: a minimum-distance attack without a budget).
TORCHATTACKS_NORMS: dict[str, Norm | None] = {
    "FGSM": "linf", "PGD": "linf", "APGD": "linf", "APGDT": "linf", "Square": "linf", "AutoAttack": "linf",
    "EOTPGD": "linf", "MIFGSM": "linf", "PGDL2": "l2", "CW": None, "DeepFool": None,
}


def _clip_to_ball(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    d = adv - x
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        d = d * torch.clamp(eps / n.clamp_min(1e-12), max=1.0)
    return (x + d).clamp(0.0, 1.0)


class TorchAttack:
    """A torchattacks attack by name, with its own keyword arguments.

    Args:
        name: class name in ``torchattacks`` (see :data:`TORCHATTACKS_NORMS` for the supported ones).
        **kwargs: the attack's own hyperparameters (``eps``, ``alpha``, ``steps``, ``n_queries``...).
            ``norm`` is passed on for AutoAttack/APGD/Square (``"Linf"`` or ``"L2"``).

    Raises:
        ValueError: unknown attack name, or a negative eps.
        TypeError: torchattacks rejects a keyword argument (raised when the attack runs).
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        if name not in TORCHATTACKS_NORMS:
            raise ValueError(f"unsupported torchattacks attack {name!r}; supported: {sorted(TORCHATTACKS_NORMS)}")
        self.name = name
        self.kwargs = dict(kwargs)
        norm = TORCHATTACKS_NORMS[name]
        if str(kwargs.get("norm", "")).upper() == "L2":
            norm = "l2"
        self.norm: Norm = norm or "l2"
        self.eps = check_eps(kwargs["eps"]) if "eps" in kwargs else math.inf
        if norm is None:
            self.eps = math.inf

    def __call__(self, model: Model, x: torch.Tensor, y: torch.Tensor, *, judge: Model | None = None) -> AttackResult:
        """Run the attack on ``model`` (an ``nn.Module`` returning logits for [0, 1] images)."""
        import torchattacks

        if not isinstance(model, nn.Module):
            raise TypeError("torchattacks needs an nn.Module model")
        check_attack_inputs(x, y)
        attack = getattr(torchattacks, self.name)(model, **self.kwargs)
        adv = attack(x.detach().clone(), y.clone()).detach()
        if math.isfinite(self.eps):
            adv = _clip_to_ball(adv, x.detach(), self.eps, self.norm)
        else:
            adv = adv.clamp(0.0, 1.0)
        success = predict(judge or model, adv) != y
        return AttackResult(adv, success, distance(adv, x.detach(), self.norm), self.norm, self.eps)
