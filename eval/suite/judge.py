"""Judging a randomised defense without selection bias: choose on some draws, judge on others.

A randomised purifier (DiffPure, Defense-GAN's random restarts) classifies one input differently
from run to run. If the draw that decided an attack's success also grades it, a lucky draw counts as
a success, and taking the worst verdict over several runs turns "one-shot accuracy" into a worst-of-k
that falls with every extra run whatever the attack does. The standard (Athalye et al. 2018, EOT;
Lee & Kim 2023) separates the two:

1. **selection**: every candidate adversarial example of an image (one per attack run, restart or
   folded report) is scored on ``select_draws`` draws of the defense, and the candidate the defense
   gets right least often is chosen;
2. **judgement**: the chosen example is classified on ``judge_draws`` (M >= 64) *independent* draws,
   and the image keeps k, the number of them that were correct.

Every draw runs under its own seed from a stream that depends on (seed, purpose, index), so selection
and judgement never share draws, and a rerun reproduces both. From k of M, per image:

* expected one-shot accuracy: k / M (its mean over images, with a normal interval over images);
* worst-of-N: C(k, N) / C(M, N), the unbiased estimate of p^N (all N runs correct);
* majority of N: P(more than N / 2 of N draws correct), the hypergeometric tail, unbiased for the
  binomial one.

Folding runs means adding their candidates and selecting again: a candidate that cannot fool the
defense more often does not lower the estimate (tested).

Example:
    >>> import torch
    >>> class Coin(torch.nn.Module):  # right with probability 0.75 on every input
    ...     def forward(self, x):
    ...         right = torch.rand(x.shape[0]) < 0.75
    ...         return torch.stack([right.float(), (~right).float()], 1)
    >>> x, y = torch.zeros(500, 1, 2, 2), torch.zeros(500, dtype=torch.long)
    >>> j = select_and_judge(Coin(), x[None], y, select_draws=4, judge_draws=64, seed=0)
    >>> abs(j.expected() - 0.75) < 0.02
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Judgement", "correct_counts", "select_and_judge", "draw_seed", "quantise", "dequantise", "SELECT", "JUDGE"]

SELECT, JUDGE = 1, 2  # the purposes of draws: their seed streams never meet


def draw_seed(seed: int, purpose: int, index: int) -> int:
    """The seed of draw ``index`` for ``purpose`` (:data:`SELECT` or :data:`JUDGE`): distinct
    (seed, purpose, index) give distinct seeds below 2**63."""
    return ((seed * 4 + purpose) * 1_000_003 + index) % (2**63 - 1)


def quantise(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """A perturbation inside the Linf ``eps``-ball as int8 steps of eps / 127 (CPU): how candidate
    adversarial examples are stored. What is stored is what is judged (:func:`dequantise`)."""
    return (delta.detach() / eps * 127).round().clamp(-127, 127).to(torch.int8).cpu()


def dequantise(deltas: torch.Tensor, x: torch.Tensor, eps: float, bounds: tuple[float, float]) -> torch.Tensor:
    """The candidates x + deltas * eps / 127 clipped to the pixel range: (..., N, C, H, W) on x's device,
    inside the eps-ball of x."""
    return (x + deltas.to(x.device, torch.float32) * (eps / 127)).clamp(*bounds)


@torch.no_grad()
def correct_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, draws: int, seed: int, purpose: int,
                   offset: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """How many of ``draws`` runs of ``model`` classify each image correctly: (N,) int64.

    Draw d of an image batch runs under ``torch.manual_seed(draw_seed(seed, purpose, offset + d))``
    (the global RNG is restored afterwards), so the randomness is reproducible and never shared
    between purposes.
    """
    counts = torch.zeros(x.shape[0], dtype=torch.long, device=y.device)
    devices = [x.device] if x.device.type == "cuda" else []
    for d in range(draws):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(draw_seed(seed, purpose, offset + d))
            for start in range(0, x.shape[0], batch_size):
                sl = slice(start, start + batch_size)
                counts[sl] += (model(x[sl]).argmax(1) == y[sl]).long()
    return counts


@dataclass(frozen=True)
class Judgement:
    """Per image, k correct of M judgement draws of the chosen example.

    Attributes:
        correct: (N,) int64, k per image.
        draws: M.
        chosen: (N,) int64, the index of the candidate chosen for each image.
    """

    correct: torch.Tensor
    draws: int
    chosen: torch.Tensor

    def fractions(self) -> torch.Tensor:
        """k / M per image."""
        return self.correct.double() / self.draws

    def expected(self) -> float:
        """Expected one-shot accuracy: the mean of k / M over images."""
        return float(self.fractions().mean())

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """A normal interval for the expected one-shot accuracy over the images (clipped to [0, 1])."""
        f = self.fractions()
        half = z * float(f.std(unbiased=True)) / math.sqrt(len(f)) if len(f) > 1 else 0.5
        return max(0.0, self.expected() - half), min(1.0, self.expected() + half)

    def worst_of(self, n: int) -> float:
        """Mean over images of C(k, n) / C(M, n): robust only if n runs are all correct.

        Raises:
            ValueError: n outside [1, M].
        """
        if not 1 <= n <= self.draws:
            raise ValueError(f"n must be in [1, {self.draws}], got {n}")
        return sum(math.comb(int(k), n) for k in self.correct.tolist()) / (len(self.correct) * math.comb(self.draws, n))

    def majority_of(self, n: int) -> float:
        """Mean over images of P(more than n / 2 of n draws, taken from the M, are correct).

        Raises:
            ValueError: n outside [1, M].
        """
        if not 1 <= n <= self.draws:
            raise ValueError(f"n must be in [1, {self.draws}], got {n}")
        total = math.comb(self.draws, n)
        return sum(sum(math.comb(int(k), j) * math.comb(self.draws - int(k), n - j) for j in range(n // 2 + 1, n + 1))
                   for k in self.correct.tolist()) / (len(self.correct) * total)

    def to_dict(self, n: int = 10) -> dict[str, object]:
        lo, hi = self.interval()
        return {"judge_draws": self.draws, "expected_one_shot": round(self.expected(), 4),
                "interval": [round(lo, 4), round(hi, 4)], f"majority_of_{n}": round(self.majority_of(n), 4),
                f"worst_of_{n}": round(self.worst_of(n), 4), "correct_of_draws": self.correct.tolist()}


def select_and_judge(model: nn.Module, candidates: torch.Tensor, y: torch.Tensor, *, select_draws: int,
                     judge_draws: int, seed: int, batch_size: int = 1024) -> Judgement:
    """Choose each image's candidate on selection draws, judge it on independent judgement draws.

    Args:
        model: the deployed (randomised) defense, in eval mode.
        candidates: (K, N, C, H, W): K candidate adversarial examples of each of N images.
        y: (N,) labels.
        select_draws: draws that score each candidate (ties: the earlier candidate).
        judge_draws: M, the independent draws that judge the chosen one.
        seed: the root of both seed streams.

    Raises:
        ValueError: candidates not (K, N, ...), K < 1, or draws < 1.
    """
    if candidates.dim() < 2 or candidates.shape[0] < 1 or candidates.shape[1] != y.shape[0]:
        raise ValueError(f"candidates must be (K >= 1, N, ...) with N = {y.shape[0]}, got {tuple(candidates.shape)}")
    if select_draws < 1 or judge_draws < 1:
        raise ValueError(f"select_draws and judge_draws must be >= 1, got {select_draws} and {judge_draws}")
    k, n = candidates.shape[:2]
    if k == 1:
        chosen = torch.zeros(n, dtype=torch.long, device=y.device)
    else:
        scores = torch.stack([correct_counts(model, candidates[i], y, draws=select_draws, seed=seed, purpose=SELECT,
                                             offset=i * select_draws, batch_size=batch_size) for i in range(k)])
        chosen = scores.argmin(0)  # the first of equals
    picked = candidates[chosen.to(candidates.device), torch.arange(n, device=candidates.device)]
    correct = correct_counts(model, picked, y, draws=judge_draws, seed=seed, purpose=JUDGE, batch_size=batch_size)
    return Judgement(correct=correct.cpu(), draws=judge_draws, chosen=chosen.cpu())
