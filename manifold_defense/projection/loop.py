"""The projection loop: z* = argmin_z ||A(G(z)) - A(x)||^2 + lambda ||z||^2, batched.

Every image gets R restarts, and all images x restarts of a chunk are optimised as one
(rows, k) tensor: one generator call per step for the whole chunk, never a Python loop per image.
The optimiser (momentum SGD or Adam) is written out on tensors so that it can

* drop rows: per-sample early stopping freezes a row whose loss stopped improving, and successive
  halving keeps only the better half of each image's restarts at chosen points; frozen or dropped
  rows cost nothing in later steps;
* be differentiated: with ``create_graph=True`` every update stays in the autograd graph (the
  "unrolled" adaptive attack differentiates through the whole optimisation).

Only z is optimised: gradients are taken with ``torch.autograd.grad`` with respect to z alone, so
the generator's parameters never accumulate ``.grad`` and are never modified.

The entry point that draws the restarts and chunks the images is :func:`manifold_defense.projection.project`.

Example:
    >>> from manifold_defense.projection import ProjectionConfig
    >>> paper = ProjectionConfig.defense_gan()
    >>> (paper.restarts, paper.steps, paper.optimizer), ProjectionConfig().use_encoder
    ((10, 200, 'momentum'), True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["ProjectionConfig", "ProjectionLoop", "ProjectionResult", "latent_dim_of"]


@dataclass(frozen=True)
class ProjectionConfig:
    """How to solve min_z ||A(G(z)) - A(x)||^2 + latent_penalty * ||z||^2.

    The loss per restart is the mean squared error over measurement entries (per-pixel MSE for the
    identity operator) plus the penalty, as in Defense-GAN.

    The defaults are the fastest setting that matched Defense-GAN's reconstruction error in
    ``benchmarks/projection.py`` (about 60x its throughput on CPU): one restart warm-started at the
    encoder's E(x), 50 Adam steps. Without an encoder, use random restarts, e.g.
    ``ProjectionConfig(restarts=10, steps=100, init_std=1.0)``, or :meth:`defense_gan`.

    Args:
        restarts: R, random initialisations per image; the one with the lowest final loss wins.
        steps: L, gradient steps per restart (an upper bound when early stopping or halving is on).
        optimizer: ``"momentum"`` (heavy-ball SGD, Defense-GAN's) or ``"adam"``.
        lr: step size.
        momentum: momentum coefficient (SGD) or beta1 (Adam).
        beta2: Adam's second-moment decay.
        lr_decay: factor applied to lr at each point of ``decay_at``.
        decay_at: fractions of ``steps`` at which lr is multiplied by ``lr_decay`` (step decay).
        latent_penalty: lambda; 0 disables the penalty.
        init_std: std of the Gaussian restarts; None means 1/sqrt(k) (Defense-GAN's initialiser).
        halving_at: fractions of ``steps`` at which each image keeps its better half of restarts.
        early_stop_tol: > 0 turns on per-sample early stopping: a row stops when its loss has not
            fallen by this relative amount for ``patience`` consecutive steps.
        patience: see ``early_stop_tol``.
        use_encoder: when the caller supplies an encoder E, restart 0 starts at E(x).
        max_batch: at most this many rows (images x restarts) are optimised at once (memory bound).
        seed: with no ``rng`` passed to :func:`project`, a fixed seed makes restarts reproducible;
            None draws from torch's global RNG (so ``torch.manual_seed`` reproduces them).
        pixel_range: inclusive range inputs must lie in.

    Raises:
        ValueError: any out-of-range hyperparameter.
    """

    restarts: int = 1
    steps: int = 50
    optimizer: Literal["momentum", "adam"] = "adam"
    lr: float = 0.05
    momentum: float = 0.7
    beta2: float = 0.999
    lr_decay: float = 0.3
    decay_at: tuple[float, ...] = (0.6,)
    latent_penalty: float = 0.0
    init_std: float | None = None
    halving_at: tuple[float, ...] = ()
    early_stop_tol: float = 0.0
    patience: int = 10
    use_encoder: bool = True
    max_batch: int = 4096
    seed: int | None = None
    pixel_range: tuple[float, float] = field(default=(0.0, 1.0))

    def __post_init__(self) -> None:
        checks = [
            (self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}"),
            (self.steps >= 0, f"steps must be >= 0, got {self.steps}"),
            (self.optimizer in ("momentum", "adam"), f"optimizer must be 'momentum' or 'adam', got {self.optimizer!r}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.beta2 < 1, f"beta2 must be in [0, 1), got {self.beta2}"),
            (self.lr_decay > 0, f"lr_decay must be > 0, got {self.lr_decay}"),
            (all(0 <= f <= 1 for f in self.decay_at), f"decay_at fractions must be in [0, 1], got {self.decay_at}"),
            (all(0 <= f <= 1 for f in self.halving_at), f"halving_at fractions must be in [0, 1], got {self.halving_at}"),
            (self.latent_penalty >= 0, f"latent_penalty must be >= 0, got {self.latent_penalty}"),
            (self.init_std is None or self.init_std > 0, f"init_std must be > 0, got {self.init_std}"),
            (self.early_stop_tol >= 0, f"early_stop_tol must be >= 0, got {self.early_stop_tol}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.max_batch >= 1, f"max_batch must be >= 1, got {self.max_batch}"),
            (self.pixel_range[0] < self.pixel_range[1], f"pixel_range must be (low, high), got {self.pixel_range}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        object.__setattr__(self, "decay_at", tuple(self.decay_at))
        object.__setattr__(self, "halving_at", tuple(self.halving_at))
        object.__setattr__(self, "pixel_range", tuple(self.pixel_range))

    @classmethod
    def defense_gan(cls, **overrides: Any) -> "ProjectionConfig":
        """Defense-GAN's reference settings (Samangouei et al. 2018, ``models/gan.py``): R=10, L=200,
        momentum 0.7, lr 10 decayed x0.1 at 80% of the steps, z0 ~ N(0, 1/k)."""
        reference = dict(restarts=10, steps=200, optimizer="momentum", lr=10.0, momentum=0.7, lr_decay=0.1,
                         decay_at=(0.8,), init_std=None, halving_at=(), early_stop_tol=0.0, use_encoder=False)
        return cls(**{**reference, **overrides})

    def replace(self, **changes: Any) -> "ProjectionConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        d = dataclasses.asdict(self)
        d["decay_at"], d["halving_at"], d["pixel_range"] = list(self.decay_at), list(self.halving_at), list(self.pixel_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProjectionConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ProjectionConfig fields: {sorted(unknown)}")
        d = dict(d)
        for key in ("decay_at", "halving_at", "pixel_range"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class ProjectionResult:
    """What a projection returns.

    Attributes:
        x_hat: G(z*), shape (N, C, H, W).
        z: z*, shape (N, k).
        residual: mean squared measurement error ||A(G(z*)) - A(x)||^2 / m per image, shape (N,).
        loss: residual + latent_penalty * ||z*||^2, shape (N,).
        generator_calls: rows x forward passes spent (for throughput accounting).
    """

    x_hat: torch.Tensor
    z: torch.Tensor
    residual: torch.Tensor
    loss: torch.Tensor
    generator_calls: int


def latent_dim_of(generator: nn.Module, latent_dim: int | None = None) -> int:
    """``latent_dim`` if given, else ``generator.latent_dim``.

    Raises:
        ValueError: neither is available.
    """
    k = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
    if not isinstance(k, int) or k < 1:
        raise ValueError("the generator has no integer attribute latent_dim; pass latent_dim=k explicitly")
    return k


def _milestones(fractions: tuple[float, ...], steps: int) -> list[int]:
    return sorted({min(steps, max(0, round(f * steps))) for f in fractions})


class ProjectionLoop(nn.Module):
    """The optimisation itself, for one chunk of images: TorchScript-compatible, so that the library
    runs it eagerly and :mod:`manifold_defense.export` scripts the very same code.

    The loop is split so that it can be resumed: :meth:`init_state` builds the optimiser state from
    the starting points, :meth:`advance` runs steps ``[start, stop)`` on a state, :meth:`finish` picks
    the best restart. ``forward`` is the three in a row; the checkpointed exact gradient
    (:func:`manifold_defense.projection.exact_gradient.checkpointed_projection`) runs the same three methods
    segment by segment and recomputes each segment in the backward pass.

    The state is the tuple (z, m1, m2, active, best, stale, last_loss, owner): rows of latent codes,
    the optimiser's moments, which rows still step, early-stopping bookkeeping, the last loss per row,
    and which image each row belongs to.

    Args:
        generator: G.
        operator: A.
        config: the settings (copied into plain attributes).

    Shape:
        forward(y (b, ...), z0 (b, R, k), create_graph) -> x_hat (b, C, H, W), z (b, k),
        residual (b,), loss (b,), rows x forward passes spent (int).
    """

    def __init__(self, generator: nn.Module, operator: nn.Module, config: ProjectionConfig) -> None:
        super().__init__()
        self.generator = generator
        self.operator = operator
        self.steps = config.steps
        self.adam = config.optimizer == "adam"
        self.lr = config.lr
        self.beta1 = config.momentum
        self.beta2 = config.beta2
        self.lr_decay = config.lr_decay
        # Each list ends with the sentinel steps + 1, which no step reaches: TorchScript cannot
        # infer the element type of an empty list.
        self.decay_steps = _milestones(config.decay_at, config.steps) + [config.steps + 1]
        self.halving_steps = [s for s in _milestones(config.halving_at, config.steps) if s > 0] + [config.steps + 1]
        self.penalty = config.latent_penalty
        self.early_stop_tol = config.early_stop_tol
        self.patience = config.patience

    def row_loss(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_hat, residual, loss) for rows z against measurements y (one row of y per row of z)."""
        x_hat = self.generator(z)
        residual = (self.operator(x_hat) - y).flatten(1).pow(2).mean(1)
        loss = residual + self.penalty * z.pow(2).sum(1) if self.penalty > 0 else residual
        return x_hat, residual, loss

    def lr_at(self, step: int) -> float:
        lr = self.lr
        for s in self.decay_steps:
            if step >= s:
                lr = lr * self.lr_decay
        return lr

    def init_state(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The state before step 0 for starting points z0 (b, R, k); rows grouped per image."""
        b, restarts, k = z0.shape[0], z0.shape[1], z0.shape[2]
        z = z0.reshape(b * restarts, k)
        owner = torch.arange(b, device=z.device).repeat_interleave(restarts)
        active = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
        best = torch.full([z.shape[0]], float("inf"), device=z.device, dtype=z.dtype)
        stale = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
        last_loss = torch.full([z.shape[0]], float("inf"), device=z.device, dtype=z.dtype)
        return z, torch.zeros_like(z), torch.zeros_like(z), active, best, stale, last_loss, owner

    def advance(
        self, y: torch.Tensor, z: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, active: torch.Tensor,
        best: torch.Tensor, stale: torch.Tensor, last_loss: torch.Tensor, owner: torch.Tensor,
        b: int, restarts: int, start: int, stop: int, create_graph: bool,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                     torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], int]:
        """Run optimisation steps ``start`` .. ``stop - 1`` on a state; returns the new state and the
        rows x forward passes spent. With ``create_graph`` every update stays in the autograd graph."""
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)  # a function call, not a context manager: TorchScript accepts it
        calls = 0
        for step in range(start, stop):
            if step in self.halving_steps and restarts > 1:
                # Keep the better half of each image's surviving restarts.
                per_image = z.shape[0] // b
                keep = max(1, per_image // 2)
                order = last_loss.view(b, per_image).argsort(dim=1)[:, :keep]
                rows = (order + torch.arange(b, device=z.device).unsqueeze(1) * per_image).reshape(-1)
                z, m1, m2, active = z[rows], m1[rows], m2[rows], active[rows]
                best, stale, owner, last_loss = best[rows], stale[rows], owner[rows], last_loss[rows]
            # Without early stopping every row stays active: the common path indexes nothing and
            # never asks the device how many rows are left (no host synchronisation per step).
            subset = self.early_stop_tol > 0
            idx = active.nonzero().squeeze(1) if subset else owner  # owner: a placeholder, unused
            if subset and idx.numel() == 0:
                break
            z_act = z[idx] if subset else z
            if not create_graph:
                z_act = z_act.detach()
            if not z_act.requires_grad:
                z_act = z_act.detach().requires_grad_(True)
            _, _, loss = self.row_loss(z_act, y[owner[idx]] if subset else y[owner])
            grad = torch.autograd.grad([loss.sum()], [z_act], create_graph=create_graph)[0]
            if grad is None:
                raise RuntimeError("the projection loss does not depend on z")
            calls += z_act.shape[0]
            lr = self.lr_at(step)
            m1_act = m1[idx] if subset else m1
            if self.adam:
                t = step + 1
                new_m1 = self.beta1 * m1_act + (1 - self.beta1) * grad
                new_m2 = self.beta2 * (m2[idx] if subset else m2) + (1 - self.beta2) * grad * grad
                m1 = m1.index_copy(0, idx, new_m1) if subset else new_m1
                m2 = m2.index_copy(0, idx, new_m2) if subset else new_m2
                update = (new_m1 / (1 - self.beta1**t)) / ((new_m2 / (1 - self.beta2**t)).sqrt() + 1e-8)
            else:
                new_m1 = self.beta1 * m1_act + grad
                m1 = m1.index_copy(0, idx, new_m1) if subset else new_m1
                update = new_m1
            z = z.index_copy(0, idx, z_act - lr * update) if subset else z_act - lr * update
            loss_now = loss.detach()
            last_loss = last_loss.index_copy(0, idx, loss_now) if subset else loss_now
            if subset:
                improved = loss_now < best[idx] * (1 - self.early_stop_tol)
                best = best.index_copy(0, idx, torch.where(improved, loss_now, best[idx]))
                stale = stale.index_copy(0, idx, torch.where(improved, torch.zeros_like(stale[idx]), stale[idx] + 1))
                active = active & (stale < self.patience)
        torch.set_grad_enabled(grad_was_enabled)
        return (z, m1, m2, active, best, stale, last_loss, owner), calls

    def finish(
        self, y: torch.Tensor, z: torch.Tensor, owner: torch.Tensor, b: int, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Evaluate every surviving row, then keep the best restart per image."""
        grad_was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(create_graph)
        x_hat, residual, loss = self.row_loss(z if create_graph else z.detach(), y[owner])
        torch.set_grad_enabled(grad_was_enabled)
        per_image = z.shape[0] // b
        pick = loss.detach().view(b, per_image).argmin(dim=1) + torch.arange(b, device=z.device) * per_image
        return x_hat[pick], z[pick], residual[pick], loss[pick], z.shape[0]

    def forward(
        self, y: torch.Tensor, z0: torch.Tensor, create_graph: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
        b, restarts = z0.shape[0], z0.shape[1]
        z, m1, m2, active, best, stale, last_loss, owner = self.init_state(z0)
        state, calls = self.advance(y, z, m1, m2, active, best, stale, last_loss, owner, b, restarts, 0, self.steps,
                                    create_graph)
        x_hat, z_best, residual, loss, final_calls = self.finish(y, state[0], state[7], b, create_graph)
        return x_hat, z_best, residual, loss, calls + final_calls
