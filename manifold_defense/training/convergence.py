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

from typing import Any, Mapping, Sequence

__all__ = ["convergence"]


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
        tolerance`` over at least two points), and ``gradient_free_gap`` (``val_pgd10 - val_worst`` at
        the last point) when the curve holds a gradient-free attack.

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
    moved = float(last[key]) - float(first[key])
    verdict: dict[str, Any] = {
        "key": key, "from_iteration": int(first["iteration"]), "to_iteration": int(last["iteration"]),
        "start": float(first[key]), "end": float(last[key]), "moved": round(moved, 6),
        "converged": first is not last and abs(moved) < tolerance, "tolerance": tolerance}
    if key == "val_worst":
        verdict["gradient_free_gap"] = round(float(last["val_pgd10"]) - float(last["val_worst"]), 6)
    return verdict
