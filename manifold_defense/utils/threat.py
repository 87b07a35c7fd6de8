"""Threat-model geometry: the one eps-ball projection every attack and training loop uses.

Example:
    >>> import torch
    >>> from manifold_defense.utils.threat import clip_to_ball
    >>> x = torch.full((1, 1, 2, 2), 0.5)
    >>> clip_to_ball(x + 0.3, x, 0.1, "linf", (0.0, 1.0)).max().item() <= 0.6 + 1e-6
    True
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["Norm", "clip_to_ball", "project_delta"]

Norm = Literal["linf", "l2"]


def project_delta(delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """The closest perturbation to ``delta`` in the eps-ball of ``norm`` (per example).

    Shape:
        delta (N, ...) -> (N, ...).

    Raises:
        ValueError: unknown norm.
    """
    if norm == "linf":
        return delta.clamp(-eps, eps)
    if norm == "l2":
        norms = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
        return delta * torch.clamp(eps / norms.clamp_min(1e-12), max=1.0)
    raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")


def clip_to_ball(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm,
                 bounds: tuple[float, float]) -> torch.Tensor:
    """``adv`` pulled into the eps-ball around ``x`` and then into the pixel ``bounds``.

    Clipping to the bounds after the ball keeps the point inside the ball (x itself is in bounds).

    Shape:
        adv, x (N, C, H, W) -> (N, C, H, W).
    """
    lo, hi = bounds
    if norm == "linf":
        return torch.min(torch.max(adv, x - eps), x + eps).clamp(lo, hi)
    return (x + project_delta(adv - x, eps, norm)).clamp(lo, hi)
