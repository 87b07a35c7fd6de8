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

from manifold_defense.utils import clip_to_ball

from .base import AttackResult, Model, Norm, check_attack_inputs, check_eps, distance, predict

__all__ = ["TorchAttack", "TORCHATTACKS_NORMS"]

# Attack name -> norm of its eps (None: a minimum-distance attack without a budget).
TORCHATTACKS_NORMS: dict[str, Norm | None] = {
    "FGSM": "linf", "PGD": "linf", "APGD": "linf", "APGDT": "linf", "Square": "linf", "AutoAttack": "linf",
    "EOTPGD": "linf", "MIFGSM": "linf", "PGDL2": "l2", "CW": None, "DeepFool": None,
}


class _UnitRange(nn.Module):
    """model(lo + u * (hi - lo)) for u in [0, 1]: torchattacks assumes [0, 1] images."""

    def __init__(self, model: nn.Module, bounds: tuple[float, float]) -> None:
        super().__init__()
        self.model, self.lo, self.width = model, bounds[0], bounds[1] - bounds[0]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + u * self.width)


class TorchAttack:
    """A torchattacks attack by name, with its own keyword arguments.

    Args:
        name: class name in ``torchattacks`` (see :data:`TORCHATTACKS_NORMS` for the supported ones).
        bounds: the images' pixel range (the domain's ``pixel_range``). torchattacks works on [0, 1]:
            other ranges are mapped there and back, with ``eps`` (and ``alpha``) rescaled.
        **kwargs: the attack's own hyperparameters (``eps``, ``alpha``, ``steps``, ``n_queries``...).
            ``norm`` is passed on for AutoAttack/APGD/Square (``"Linf"`` or ``"L2"``).

    Raises:
        ValueError: unknown attack name, or a negative eps.
        TypeError: torchattacks rejects a keyword argument (raised when the attack runs).
    """

    def __init__(self, name: str, *, bounds: tuple[float, float] = (0.0, 1.0), **kwargs: Any) -> None:
        if not float(bounds[0]) < float(bounds[1]):
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
        self.bounds = (float(bounds[0]), float(bounds[1]))
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
        check_attack_inputs(x, y, self.bounds)
        lo, hi = self.bounds
        kwargs, target, x_in = self.kwargs, model, x.detach().clone()
        if self.bounds != (0.0, 1.0):
            width = hi - lo
            kwargs = {k: (v / width if k in ("eps", "alpha") else v) for k, v in kwargs.items()}
            target, x_in = _UnitRange(model, self.bounds), (x_in - lo) / width
        attack = getattr(torchattacks, self.name)(target, **kwargs)
        adv = attack(x_in, y.clone()).detach()
        if self.bounds != (0.0, 1.0):
            adv = lo + adv * (hi - lo)
        if math.isfinite(self.eps):
            adv = clip_to_ball(adv, x.detach(), self.eps, self.norm, self.bounds)
        else:
            adv = adv.clamp(lo, hi)
        success = predict(judge or model, adv) != y
        return AttackResult(adv, success, distance(adv, x.detach(), self.norm), self.norm, self.eps)
