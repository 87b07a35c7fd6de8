"""The convergence rule of a robust-training run, read off its held-out learning curve.

A run is converged when the last quarter of its training moves held-out robust accuracy by less
than one point (README, "Baselines"). Which robust accuracy matters: PGD-10 alone is passed by a
model that masks its gradients (the LeNetWide runs of issue #44 moved 0.1 points on PGD-10 while
Square, a gradient-free attack, found 10 points more), so when the curve holds the per-image worst
case of PGD-10 and Square (``val_worst``, from ``--val-square-queries``) the rule reads that, and
the report also gives the gap between the two at the last point (a large gap is masking).

Example:
    >>> curve = [{"iteration": i, "val_pgd10": 0.70 + 0.001 * i / 1000} for i in (1000, 2000, 3000, 4000)]
    >>> verdict = convergence(curve)
    >>> verdict["key"], verdict["from_iteration"], verdict["converged"]
    ('val_pgd10', 3000, True)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["MASKING_GAP", "convergence", "curve_point"]

MASKING_GAP = 0.02
"""How far (as a fraction) the worst case of PGD-10 and Square may sit below PGD-10 alone before the
run is flagged as masking its gradients (the suite's "white-box beats gradient-free" tolerance)."""


Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int, int], torch.Tensor]
"""(C, x, y, eps, steps or queries, seed) -> adversarial images (:class:`.robust.Adversaries`' form)."""


@torch.no_grad()
def curve_point(C: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, it: int, lr: float, *,
                pgd: Attack | None, gradient_free: Attack | None = None, queries: int = 0) -> dict[str, float]:
    """One learning-curve point: clean and PGD-10 accuracy of C (in eval mode) on held-out images;
    with ``queries`` > 0 and a gradient-free attack also its accuracy (``val_square``) and the
    per-image worst case of both (``val_worst``), which :func:`convergence` then reads.

    Shape:
        x: (N, C, H, W) held-out images; y: (N,) their classes.
    """
    point = {"iteration": it, "lr": lr, "val_clean": float((C(x).argmax(1) == y).float().mean())}
    if pgd is not None:
        with torch.enable_grad():
            x_adv = pgd(C, x, y, eps, 10, 0)
        right = C(x_adv).argmax(1) == y
        point["val_pgd10"] = float(right.float().mean())
        if queries > 0 and gradient_free is not None:
            right_gf = C(gradient_free(C, x, y, eps, queries, 0)).argmax(1) == y
            point["val_square"] = float(right_gf.float().mean())
            point["val_worst"] = float((right & right_gf).float().mean())
    return point


def convergence(curve: Sequence[Mapping[str, float]], *, tail: float = 0.25, tolerance: float = 0.01) -> dict[str, Any]:
    """Apply the rule: the change of held-out robust accuracy from the first curve point at or after
    ``(1 - tail)`` of the last point's iteration to the last point.

    Args:
        curve: learning-curve points (``iteration`` and ``val_pgd10``, optionally ``val_square`` and
            ``val_worst``), in iteration order.
        tail: the share of training the rule looks at (0.25: the last quarter).
        tolerance: the largest absolute change (as a fraction; 0.01 is one point) that counts as converged.

    Returns:
        ``key`` (the accuracy read: ``val_worst`` when present, else ``val_pgd10``), ``from_iteration``,
        ``to_iteration``, ``start``, ``end``, ``moved`` (end - start), ``converged`` (``|moved| <
        tolerance`` over at least two points), and, when the curve holds a gradient-free attack,
        ``gradient_free_gap`` (``val_pgd10 - val_worst`` at the last point) and ``masking_suspected``
        (that gap >= :data:`MASKING_GAP`).

    Raises:
        ValueError: an empty curve, a curve without ``val_pgd10``, or ``tail`` outside (0, 1].
    """
    if not 0.0 < tail <= 1.0:
        raise ValueError(f"tail must be in (0, 1], got {tail}")
    if not curve:
        raise ValueError("the learning curve is empty (train with --eval-every > 0 and --val-size > 0)")
    last = curve[-1]
    if "val_pgd10" not in last:
        raise ValueError("the learning curve has no held-out robust accuracy (val_pgd10)")
    key = "val_worst" if "val_worst" in last else "val_pgd10"
    points = [p for p in curve if key in p]
    cut = (1.0 - tail) * float(last["iteration"])
    first = next(p for p in points if float(p["iteration"]) >= cut)
    moved = round(float(last[key]) - float(first[key]), 6)  # accuracies stored as float32: 0.752 - 0.742 is 0.00999...
    verdict: dict[str, Any] = {
        "key": key, "from_iteration": int(first["iteration"]), "to_iteration": int(last["iteration"]),
        "start": float(first[key]), "end": float(last[key]), "moved": moved,
        "converged": first is not last and abs(moved) < tolerance, "tolerance": tolerance}
    if key == "val_worst":
        gap = float(last["val_pgd10"]) - float(last["val_worst"])
        verdict["gradient_free_gap"] = round(gap, 6)
        verdict["masking_suspected"] = gap >= MASKING_GAP
    return verdict
