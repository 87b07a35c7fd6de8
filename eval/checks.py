"""Checks that expose a broken robustness evaluation (Carlini et al. 2019, "On Evaluating Adversarial
Robustness", section 5's checklist). Each returns a :class:`Check`; a failed one is printed as a
warning line with the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .suite import ATTACKS, Row

__all__ = ["Check", "falls_to_chance", "more_effort_is_stable", "whitebox_beats_gradient_free",
           "breaks_undefended", "gradient_health"]


@dataclass
class Check:
    """One check: its name, whether it passed, and the numbers behind the verdict."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'ok     ' if self.passed else 'WARNING'} {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def falls_to_chance(accuracy_at_large_eps: float, large_eps: float, *, chance: float = 0.1, tol: float = 0.05) -> Check:
    """At a budget that can erase the image, a sound attack must bring accuracy to chance."""
    ok = accuracy_at_large_eps <= chance + tol
    return Check("accuracy falls to chance at large eps", ok,
                 f"{100 * accuracy_at_large_eps:.1f}% at eps {large_eps:g} (chance {100 * chance:.0f}%, tolerance {100 * tol:.0f} points)")


def more_effort_is_stable(accuracy: float, accuracy_doubled: float, *, tol: float = 0.03) -> Check:
    """Doubling steps and restarts must not lower robust accuracy by more than ``tol``."""
    ok = accuracy_doubled >= accuracy - tol
    return Check("doubling steps/restarts does not change robust accuracy", ok,
                 f"{100 * accuracy:.1f}% -> {100 * accuracy_doubled:.1f}% with 2x effort (tolerance {100 * tol:.0f} points)")


def whitebox_beats_gradient_free(rows: list[Row], model: str, *, gradient_free: str = "Square (gradient-free)",
                                 tol: float = 0.02) -> Check:
    """Examples a gradient-free attack breaks but every white-box attack misses point at masked gradients."""
    gf = [r for r in rows if r.model == model and r.attack == gradient_free]
    whitebox_labels = {ATTACKS[k][1] for k in ("fgsm", "pgd", "bpda_pgd", "eot_pgd", "unrolled_pgd", "latent")}
    wb = [r for r in rows if r.model == model and r.attack in whitebox_labels]
    if not gf or not wb:
        return Check(f"white-box beats gradient-free ({model})", True, "skipped: needs a gradient-free and a white-box attack")
    wb_correct = torch.stack([r.correct for r in wb]).all(0)
    only_gf = (wb_correct & ~gf[0].correct).float().mean().item()
    return Check(f"white-box beats gradient-free ({model})", only_gf <= tol,
                 f"{100 * only_gf:.1f}% of examples broken only by the gradient-free attack (tolerance {100 * tol:.0f}%)")


def breaks_undefended(rows: list[Row], *, attack: str = "PGD (naive on defended)", tol: float = 0.1) -> Check:
    """The attack implementation must break the undefended classifier."""
    mine = [r for r in rows if r.model == "undefended" and r.attack == attack]
    if not mine:
        return Check("attack breaks the undefended classifier", True, "skipped: PGD on the undefended model not run")
    acc = mine[0].accuracy
    return Check("attack breaks the undefended classifier", acc <= tol,
                 f"undefended accuracy under PGD {100 * acc:.1f}% (must be <= {100 * tol:.0f}%)")


def gradient_health(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Check:
    """Flag zero or non-finite input gradients of the loss (gradient masking or numerical trouble)."""
    x_in = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(x_in), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_in, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(x_in)
    flat = grad.flatten(1)
    zero = float((flat.abs().amax(1) == 0).float().mean())
    bad = float((~torch.isfinite(flat)).any(1).float().mean())
    return Check(f"gradients of '{name}' are nonzero and finite", zero == 0 and bad == 0,
                 f"{100 * zero:.0f}% of examples have an all-zero gradient, {100 * bad:.0f}% a NaN/inf one")
