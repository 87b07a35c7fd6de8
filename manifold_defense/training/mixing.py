"""Batches that mix real and generated images in a fixed proportion (Gowal et al. 2021; Wang et al.
2023 use 30% real, 70% generated in every batch).

Each iteration takes exactly ``round(fraction * batch_size)`` generated images and the rest real
ones. Both parts walk through seeded permutations epoch by epoch, each rank taking its own slice of
the global batch, so the batches are a pure function of the seed and the iteration (a resumed run
sees the same ones), and under DDP the ranks' images of one step are disjoint.

The training loop makes the first ``ae_frac`` of a batch adversarial: :func:`stratified_order` puts
real and generated images in that part in the batch's own proportion, so neither source is left
clean (concatenated as [real; generated], the first part would be real images only).

Example:
    >>> real, gen = mixed_indices(0, batch_size=10, fraction=0.7, n_real=100, n_generated=1000, seed=0)
    >>> len(real), len(gen)
    (3, 7)
"""

from __future__ import annotations

import torch

__all__ = ["split_batch", "epoch_slice", "mixed_indices", "stratified_order"]


def split_batch(batch_size: int, fraction: float) -> tuple[int, int]:
    """(real, generated) counts of one batch: the generated count is ``round(fraction * batch_size)``.

    Raises:
        ValueError: fraction outside [0, 1], or a batch size < 1.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the generated fraction must be in [0, 1], got {fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generated = int(round(fraction * batch_size))
    return batch_size - generated, generated


def epoch_slice(it: int, per_rank: int, n: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's ``per_rank`` indices into ``n`` items at iteration ``it``: the ``it``-th global batch
    of ``world * per_rank`` items of a permutation fixed by ``seed`` and the epoch (the last incomplete
    batch of an epoch is skipped).

    Raises:
        ValueError: the global batch exceeds ``n``.
    """
    if per_rank == 0:
        return torch.zeros(0, dtype=torch.long)
    step = per_rank * world
    per_epoch = n // step
    if per_epoch < 1:
        raise ValueError(f"a batch of {per_rank} x {world} processes exceeds the {n} images it draws from")
    epoch, k = divmod(it, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    start = k * step + rank * per_rank
    return perm[start:start + per_rank]


def mixed_indices(it: int, *, batch_size: int, fraction: float, n_real: int, n_generated: int, seed: int,
                  rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(real indices, generated indices) of this rank's batch at iteration ``it`` (see the module docstring)."""
    real, generated = split_batch(batch_size, fraction)
    return (epoch_slice(it, real, n_real, seed, rank, world),
            epoch_slice(it, generated, n_generated, seed + 7_919, rank, world))


def stratified_order(n_real: int, n_generated: int, n_first: int) -> torch.Tensor:
    """An order of a batch concatenated as [real; generated] whose first ``n_first`` items hold
    ``round(n_first * n_real / (n_real + n_generated))`` real images and the rest generated ones, and
    whose remainder keeps the same proportion as closely as integers allow.

    Raises:
        ValueError: ``n_first`` outside [0, n_real + n_generated].

    Example:
        >>> stratified_order(2, 6, 4).tolist()
        [0, 2, 3, 4, 1, 5, 6, 7]
    """
    total = n_real + n_generated
    if not 0 <= n_first <= total:
        raise ValueError(f"n_first must be in [0, {total}], got {n_first}")
    k = round(n_first * n_real / total) if total else 0
    k = min(max(k, n_first - n_generated), n_real, n_first)
    real, gen = torch.arange(n_real), n_real + torch.arange(n_generated)
    return torch.cat([real[:k], gen[:n_first - k], real[k:], gen[n_first - k:]])
