"""Confidence intervals and paired tests for accuracies measured on a finite sample of test images."""

from __future__ import annotations

import math

__all__ = ["wilson_interval", "format_accuracy", "mcnemar_p"]


def wilson_interval(correct: int, n: int, *, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96).

    Raises:
        ValueError: n < 1 or correct outside [0, n].

    Example:
        >>> lo, hi = wilson_interval(15, 100)
        >>> round(lo, 3), round(hi, 3)
        (0.093, 0.233)
    """
    if n < 1 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n >= 1, got correct={correct}, n={n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def format_accuracy(correct: int, n: int) -> str:
    """``'15.0% [9.3, 23.3]'``: the accuracy and its 95% Wilson interval, in percent."""
    lo, hi = wilson_interval(correct, n)
    return f"{100 * correct / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for a paired comparison: b images robust only under one
    configuration, c only under the other (a binomial test of b against b + c fair coin flips)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)
