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

from ..suite import Row, spec_of

__all__ = ["Check", "falls_to_chance", "more_effort_is_stable", "whitebox_beats_gradient_free",
           "breaks_undefended", "gradient_health", "families_agree"]


@dataclass
class Check:
    """One check: its name, whether it passed, and the numbers behind the verdict."""

    name: str
    passed: bool
    detail: str
    skipped: bool = False  # not run (on request): neither passed nor failed

    def line(self) -> str:
        if self.skipped:
            return f"SKIPPED {self.name}: {self.detail}"
        return f"{'ok     ' if self.passed else 'WARNING'} {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def falls_to_chance(accuracy_at_large_eps: float, large_eps: float, *, chance: float, tol: float = 0.05) -> Check:
    """At a budget that can erase the image, a sound attack must bring accuracy to chance
    (``chance`` = 1 / classes: the domain's ``chance``)."""
    ok = accuracy_at_large_eps <= chance + tol
    return Check("accuracy falls to chance at large eps", ok,
                 f"{100 * accuracy_at_large_eps:.1f}% at eps {large_eps:g} (chance {100 * chance:.0f}%, tolerance {100 * tol:.0f} points)")


EFFORT_CHECK = "doubling the attacks' iterations does not change robust accuracy"


def more_effort_is_stable(accuracy: float, accuracy_doubled: float, *, tol: float = 0.02) -> Check:
    """Doubling the attacks' iterations must move robust accuracy by less than ``tol``."""
    ok = round(accuracy - accuracy_doubled, 9) < tol  # rounded: 0.16 - 0.14 must count as 2 points, not 1.99...
    return Check(EFFORT_CHECK, ok,
                 f"{100 * accuracy:.1f}% -> {100 * accuracy_doubled:.1f}% with 2x effort (tolerance {100 * tol:.0f} points)")


def _rows_where(rows: list[Row], model: str, flag: str) -> list[Row]:
    return [r for r in rows if r.model == model and (s := spec_of(r)) is not None and s.worst_case and getattr(s, flag)]


def whitebox_beats_gradient_free(rows: list[Row], model: str, *, tol: float = 0.02) -> Check:
    """Examples a gradient-free attack breaks but every white-box attack misses point at masked gradients."""
    gf = _rows_where(rows, model, "gradient_free")
    wb = [r for r in rows if r.model == model and (s := spec_of(r)) is not None and s.worst_case
          and not s.gradient_free and s.family != "none"]
    if not gf or not wb:
        return Check(f"white-box beats gradient-free ({model})", True, "skipped: needs a gradient-free and a white-box attack")
    wb_correct = torch.stack([r.correct for r in wb]).all(0)
    gf_correct = torch.stack([r.correct for r in gf]).all(0)
    only_gf = (wb_correct & ~gf_correct).float().mean().item()
    return Check(f"white-box beats gradient-free ({model})", only_gf <= tol,
                 f"{100 * only_gf:.1f}% of examples broken only by the gradient-free attack (tolerance {100 * tol:.0f}%)")


def breaks_undefended(rows: list[Row], *, tol: float = 0.1, robust_training: str | None = None) -> Check:
    """The white-box attacks must break the undefended classifier, when it is a standard one.

    ``robust_training`` names how the classifier was adversarially trained (from its checkpoint);
    then the check does not apply (a robust classifier is meant to survive) and is skipped.
    """
    if robust_training:
        return Check("attack breaks the undefended classifier", True,
                     f"not applicable: the classifier was adversarially trained ({robust_training})", skipped=True)
    mine = [r for r in rows if r.model == "undefended" and (s := spec_of(r)) is not None and s.worst_case
            and s.iterative and not s.gradient_free]
    if not mine:
        return Check("attack breaks the undefended classifier", True, "skipped: no white-box attack on the undefended model")
    acc = float(torch.stack([r.correct for r in mine]).all(0).float().mean())
    return Check("attack breaks the undefended classifier", acc <= tol,
                 f"undefended accuracy under the white-box attacks {100 * acc:.1f}% (must be <= {100 * tol:.0f}%)")


def families_agree(rows: list[Row], model: str, *, tol: float = 0.03) -> Check:
    """The adaptive white-box families (exact gradient, each BPDA surrogate, latent) should find the
    same robust accuracy: a family more than ``tol`` above the strongest one is a weak surrogate (the
    suite is converged only if the strongest family is), and a family *below* the exact gradient means
    the exact-gradient attack itself is not converged. (Gradient-free attacks have their own check.)"""
    families: dict[str, list[Row]] = {}
    for r in rows:
        s = spec_of(r)
        if r.model == model and s is not None and s.worst_case and s.adaptive:
            families.setdefault(s.family, []).append(r)
    name = f"attack families agree within {100 * tol:.0f} points ({model})"
    if len(families) < 2:
        return Check(name, True, "skipped: fewer than two attack families ran")
    acc = {f: float(torch.stack([r.correct for r in rs]).all(0).float().mean()) for f, rs in families.items()}
    strongest = min(acc.values())
    detail = ", ".join(f"{f} {100 * a:.1f}%" for f, a in sorted(acc.items(), key=lambda kv: kv[1]))
    exact = acc.get("exact-gradient")
    below_exact = exact is not None and strongest < exact - tol
    return Check(name, max(acc.values()) - strongest <= tol,
                 detail + ("; the exact gradient is not the strongest: raise its budget" if below_exact else ""))


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
