"""Per-example losses that attacks maximise (one place, shared by every gradient attack)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["Loss", "LOSSES", "attack_loss", "check_loop_arguments"]

Loss = Literal["ce", "margin", "dlr"]
LOSSES: tuple[str, ...] = ("ce", "margin", "dlr")


def attack_loss(logits: torch.Tensor, y: torch.Tensor, kind: Loss) -> torch.Tensor:
    """Per-example loss to maximise.

    * ``"ce"``: cross-entropy;
    * ``"margin"``: the CW logit margin max_{j != y} z_j - z_y (> 0 iff misclassified);
    * ``"dlr"``: the Difference of Logits Ratio of Croce & Hein 2020,
      -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3): the margin made invariant to the logits' scale.

    Shape:
        logits (N, K), y (N,) -> (N,).

    Raises:
        ValueError: unknown kind, or DLR with fewer than 3 classes.
    """
    if kind == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if kind not in ("margin", "dlr"):
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -math.inf).amax(1)
    if kind == "margin":
        return other - true
    if logits.shape[1] < 3:
        raise ValueError("the DLR loss needs at least 3 classes")
    top = logits.sort(dim=1, descending=True).values
    return (other - true) / (top[:, 0] - top[:, 2] + 1e-12)


def check_loop_arguments(*, steps: int, restarts: int, eot_samples: int, loss: str) -> None:
    """The checks every iterative gradient attack shares.

    Raises:
        ValueError: steps, restarts or eot_samples not an integer >= 1; an unknown loss.
    """
    for name, value in (("steps", steps), ("restarts", restarts), ("eot_samples", eot_samples)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
