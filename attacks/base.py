"""What every attack returns, and the argument checks every attack shares.

An attack is a stateless object: hyperparameters are keyword-only constructor arguments, and the
model and data come at call time: ``attack(model, x, y) -> AttackResult``. Inputs are never
modified. ``eps`` is in pixel units of the images' range, and ``bounds`` is that range (the
domain's ``pixel_range``: :mod:`manifold_defense.domains`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from manifold_defense.utils import Norm, check_images

__all__ = ["AttackResult", "Model", "check_attack_inputs", "check_eps", "distance", "predict", "Norm"]

Model = Callable[[torch.Tensor], torch.Tensor] | nn.Module


@dataclass
class AttackResult:
    """An attack's output, enough to audit it.

    Attributes:
        adversarial: adversarial images (N, C, H, W), inside the eps-ball and the pixel bounds.
        success: (N,) bool, the judging model misclassifies the adversarial image.
        distance: (N,) distance to the clean image in the attack's norm.
        norm: ``"linf"`` or ``"l2"``.
        eps: the budget (``inf`` for minimum-distance attacks run without one).
    """

    adversarial: torch.Tensor
    success: torch.Tensor
    distance: torch.Tensor
    norm: Norm
    eps: float

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean())


def check_eps(eps: float, name: str = "eps") -> float:
    """``eps`` as a float >= 0.

    Raises:
        ValueError: negative, NaN or not a number.
    """
    try:
        value = float(eps)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {eps!r}") from exc
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {eps}")
    return value


def check_attack_inputs(x: object, y: object, bounds: tuple[float, float] = (0.0, 1.0)) -> None:
    """Check images (N, C, H, W) within ``bounds`` (the repo's one image validator,
    :func:`manifold_defense.utils.validation.check_images`) and labels (N,) int64 on the same device.

    Raises:
        TypeError: non-tensors, non-floating images, non-integer labels.
        ValueError: wrong shapes, NaN, values out of bounds, mismatched batch sizes or devices.
    """
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"labels y must be a torch.Tensor, got {type(y).__name__}")
    x = check_images(x, pixel_range=bounds)
    if y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"labels y must be integer class indices, got {y.dtype}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"x is on {x.device} but y is on {y.device}")


def distance(a: torch.Tensor, b: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example Linf or L2 distance between two batches."""
    d = (a - b).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


@torch.no_grad()
def predict(model: Model, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """argmax of ``model`` on x, in batches, without gradients."""
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)])
