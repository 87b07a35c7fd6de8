"""The exact gradient of the projection as deployed, in bounded memory (gradient checkpointing).

The projection is a finite loop of gradient steps in z, so G(z*(x)) is a differentiable function of
x (through y = A(x) and, with an encoder, through the warm start E(x)). Keeping every step in the
autograd graph (``project(..., create_graph=True)``) costs memory linear in the number of steps x
rows, which is out of reach for Defense-GAN's 10 restarts x 200 steps on a CPU.

:func:`checkpointed_projection` runs the *same* loop (:class:`~manifold_defense.projection.ProjectionLoop`,
the deployed code) without a graph, keeping only the optimiser state at the start of every segment
of ``segment`` steps. The backward pass recomputes one segment at a time with the graph on and
back-propagates through it (Griewank's checkpointing; ``torch.utils.checkpoint`` does the same for
ordinary layers). Peak memory is one segment's graph; compute is about one extra forward. When no
restart is dropped along the way (no halving, no early stopping) the backward pass recomputes only
the restart that won for each image: the others have zero gradient at every step.

The gradient is that of the defense as computed: discrete choices (the best restart, successive
halving, early stopping) are piecewise constant, exactly as autograd through the unrolled loop
treats them. Gradients reach y and z0 (so x, and the encoder's parameters through z0), never the
generator's parameters.

Example:
    >>> import torch
    >>> from manifold_defense.models import WGANGenerator
    >>> from manifold_defense.projection import ProjectionConfig, project
    >>> G = WGANGenerator(dim=8).eval()
    >>> x = torch.rand(2, 1, 28, 28, requires_grad=True)
    >>> out = project(G, x, ProjectionConfig(restarts=2, steps=20), create_graph=True, checkpoint_every=5)
    >>> out.x_hat.sum().backward()
    >>> x.grad.shape
    torch.Size([2, 1, 28, 28])
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.checkpoint import checkpoint

from .loop import ProjectionLoop

__all__ = ["checkpointed_projection", "checkpointed_loop"]

_State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class _CheckpointedProjection(torch.autograd.Function):
    """x_hat = loop(y, z0); backward by segment-wise recomputation (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, loop: ProjectionLoop, segment: int, y: torch.Tensor, z0: torch.Tensor) -> Any:
        y, z0 = y.detach(), z0.detach()
        b, restarts = z0.shape[0], z0.shape[1]
        state: _State = loop.init_state(z0)
        boundaries: list[tuple[int, int, _State]] = []
        calls = 0
        for start in range(0, loop.steps, segment):
            stop = min(loop.steps, start + segment)
            boundaries.append((start, stop, state))
            state, c = loop.advance(y, *state, b, restarts, start, stop, False)
            calls += c
        x_hat, z, residual, loss, c = loop.finish(y, state[0], state[7], b, False)
        ctx.loop, ctx.b, ctx.restarts, ctx.k = loop, b, restarts, z0.shape[2]
        ctx.boundaries, ctx.final = boundaries, (state[0], state[7])
        ctx.save_for_backward(y)
        ctx.mark_non_differentiable(z, residual, loss)
        return x_hat, z, residual, loss, calls + c

    @staticmethod
    def backward(ctx: Any, grad_x_hat: torch.Tensor, *_: Any) -> Any:
        (y,) = ctx.saved_tensors
        loop: ProjectionLoop = ctx.loop
        b, restarts = ctx.b, ctx.restarts
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            z_final, owner = ctx.final
            z_in = z_final.detach().requires_grad_(True)
            x_hat = loop.finish(y_in, z_in, owner, b, True)[0]
            g_z, g_y = torch.autograd.grad(x_hat, [z_in, y_in], grad_x_hat, allow_unused=True)
            g_y_total = _or_zeros(g_y, y)
            g_m1: torch.Tensor | None = None
            g_m2: torch.Tensor | None = None
            # Rows never mix when no restart is dropped (no halving, no early stopping): a row whose
            # gradient at the end is zero (a restart that lost) has zero gradient at every step, so
            # only the winning rows are recomputed (Defense-GAN's 10 restarts: a tenth of the work).
            rows: torch.Tensor | None = None
            if g_z is not None and len(loop.halving_steps) == 1 and loop.early_stop_tol <= 0:
                rows = g_z.ne(0).any(1).nonzero().squeeze(1)
                g_z = g_z[rows]
            for start, stop, full_state in reversed(ctx.boundaries):
                state = full_state if rows is None else tuple(t[rows] for t in full_state)
                z, m1, m2 = (t.detach().requires_grad_(True) for t in state[:3])
                active, best, stale, last_loss, owner_in = state[3:]
                out, _calls = loop.advance(y_in, z, m1, m2, active, best, stale, last_loss, owner_in, b, restarts, start,
                                      stop, True)
                grads = torch.autograd.grad(
                    out[:3], [z, m1, m2, y_in],
                    [_or_zeros(g_z, out[0]), _or_zeros(g_m1, out[1]), _or_zeros(g_m2, out[2])],
                    allow_unused=True,
                )
                g_z, g_m1, g_m2 = grads[0], grads[1], grads[2]
                g_y_total = g_y_total + _or_zeros(grads[3], y)
        g_rows = _or_zeros(g_z, z_final if rows is None else z_final[rows])
        g_z0 = (g_rows if rows is None else torch.zeros_like(z_final).index_copy(0, rows, g_rows)).reshape(b, restarts, ctx.k)
        return None, None, g_y_total, g_z0


def _or_zeros(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def checkpointed_projection(
    loop: ProjectionLoop, y: torch.Tensor, z0: torch.Tensor, segment: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``loop(y, z0, create_graph=False)`` whose ``x_hat`` carries the exact gradient to y and z0.

    Args:
        loop: the projection loop (generator, operator, settings).
        y: measurements A(x), (b, ...).
        z0: starting points (b, R, k).
        segment: steps per checkpointed segment (>= 1); memory is one segment's graph.

    Returns:
        x_hat (differentiable), z, residual, loss (not differentiable), rows x forward passes spent.

    Raises:
        ValueError: segment < 1.
    """
    if segment < 1:
        raise ValueError(f"checkpoint segment must be >= 1 step, got {segment}")
    x_hat, z, residual, loss, calls = _CheckpointedProjection.apply(loop, segment, y, z0)
    return x_hat, z, residual, loss, int(calls)


def _run_steps(step: Callable[[int, torch.Tensor], torch.Tensor], start: int, stop: int,
               state: torch.Tensor) -> torch.Tensor:
    for i in range(start, stop):
        state = step(i, state)
    return state


def checkpointed_loop(step: Callable[[int, torch.Tensor], torch.Tensor], state: torch.Tensor, num_steps: int, *,
                      segment: int = 1) -> torch.Tensor:
    """``state = step(i, state)`` for i = 0..num_steps-1, differentiable exactly in bounded memory.

    The generic mechanism behind the exact gradient of any iterative purifier (a diffusion sampler,
    a user's loop): with gradients on, each segment of ``segment`` steps runs under
    ``torch.utils.checkpoint`` (non-reentrant), so only the state at segment boundaries is kept and a
    segment's graph is rebuilt in the backward pass; the CPU and device RNG state at the start of a
    segment is saved and restored for the recomputation, so random draws inside ``step`` (fresh
    noise of a stochastic sampler, drawn with torch's global RNG) are replayed exactly and the
    gradient is that of the forward pass that was actually run. Without gradients it is a plain loop.

    Args:
        step: (i, state) -> next state; may draw from torch's global RNG (not from a private
            ``torch.Generator``, whose draws would not be replayed).
        state: the starting state.
        num_steps: steps to run (>= 0).
        segment: steps per recomputed segment (>= 1): memory is the boundary states plus one
            segment's graph; compute is about one extra forward.

    Raises:
        ValueError: num_steps < 0 or segment < 1.

    Example:
        >>> import torch
        >>> x = torch.ones(3, requires_grad=True)
        >>> out = checkpointed_loop(lambda i, s: torch.sin(s) + 0.1 * torch.randn_like(s), x, 8, segment=2)
        >>> out.sum().backward(); x.grad.shape
        torch.Size([3])
    """
    if num_steps < 0:
        raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    if segment < 1:
        raise ValueError(f"segment must be >= 1, got {segment}")
    if not (torch.is_grad_enabled() and state.requires_grad):
        return _run_steps(step, 0, num_steps, state)
    for start in range(0, num_steps, segment):
        stop = min(num_steps, start + segment)
        state = checkpoint(_run_steps, step, start, stop, state, use_reentrant=False, preserve_rng_state=True)
    return state
