"""Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy 2015): x' = clip(x + eps * sign(grad_x L(f(x), y))).

One step of size eps from x, no random start: :class:`attacks.LinfPGD` with ``steps=1``.
"""

from __future__ import annotations

from typing import Any

from .gradient_descent import GradientAttack, LinfMixin

__all__ = ["FGSM"]


class FGSM(LinfMixin, GradientAttack):
    """FGSM. Args: ``eps`` (Linf budget), ``eot_samples``, ``loss``, ``bounds`` (see :class:`GradientAttack`).

    Raises:
        ValueError: negative eps; TypeError: a PGD-only argument (steps, restarts, random_start, stepsizes).
    """

    def __init__(self, *, eps: float, **kwargs: Any) -> None:
        for name in ("steps", "restarts", "random_start", "rel_stepsize", "abs_stepsize", "seed"):
            if name in kwargs:
                raise TypeError(f"FGSM takes no argument {name!r} (it is one step of size eps from x)")
        super().__init__(eps=eps, steps=1, rel_stepsize=1.0, random_start=False, restarts=1, **kwargs)
