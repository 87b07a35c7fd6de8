"""The implicit gradient of a projection defense: differentiate the optimum, not the optimiser.

A projection defense returns x_hat = G(z*(x)) with z*(x) = argmin_z (1/m) ||A(G(z)) - A(x)||^2 +
lambda ||z||^2 (m measurement entries per image). At a minimum the gradient in z vanishes, and the
implicit function theorem gives the derivative of z* in x without the optimisation's path. With the
Gauss-Newton Hessian (exact when G(z*) fits the measurements; the usual approximation otherwise),

    d x_hat / d x = J (J_A^T J_A + m lambda I)^{-1} J_A^T A,      J = dG/dz at z*,  J_A = A J,

which for A = I and lambda = 0 is the orthogonal projector onto the tangent space of G's range at
G(z*). This is a BPDA surrogate (Athalye, Carlini & Wagner 2018, section 4.1) whose backward pass
is the derivative of the defense's *intended* map: a second adaptive family beside the exact
gradient, meant for settings such as Defense-GAN's, whose exact gradient through 10 x 200 momentum
steps with lr 10 explodes (|grad| ~1e5 to 1e17 in ``benchmarks/exact_gradient.py``). It costs one
projection (the forward pass) plus k Jacobian-vector products. It is not shown to be stronger than
the exact gradient on any saved report; run both.

Example:
    >>> import torch
    >>> from attacks import APGD, ImplicitGradient
    >>> from manifold_defense import DefendedClassifier, ProjectionConfig
    >>> from manifold_defense.models import MLP, WGANGenerator
    >>> G, C = WGANGenerator(latent_dim=8, dim=4).eval(), MLP(hidden=16, depth=1).eval()
    >>> defended = DefendedClassifier(C, G, ProjectionConfig(restarts=2, steps=5, init_std=1.0, seed=0))
    >>> x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    >>> APGD(eps=0.1, steps=2)(ImplicitGradient(defended), x, y).adversarial.shape
    torch.Size([3, 1, 28, 28])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from manifold_defense import DefendedClassifier
from manifold_defense.projection.operators import Identity

__all__ = ["ImplicitGradient"]


class _ImplicitProjection(torch.autograd.Function):
    """Forward: x_hat (already computed). Backward: the Gauss-Newton implicit VJP (module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor, generator: nn.Module,
                operator: nn.Module, damping: float) -> torch.Tensor:
        ctx.generator, ctx.operator, ctx.damping = generator, operator, damping
        ctx.save_for_backward(x, z)
        return x_hat.clone()

    @staticmethod
    def backward(ctx: Any, v: torch.Tensor) -> Any:
        x, z = ctx.saved_tensors
        b, k = z.shape
        basis = torch.eye(k, dtype=z.dtype, device=z.device).repeat(b, 1)  # (b k, k): one tangent per column
        with torch.no_grad():
            jac = torch.func.jvp(ctx.generator, (z.repeat_interleave(k, 0),), (basis,))[1]
            jac_a = ctx.operator(jac)                                     # A J, column by column (A linear)
            jt = jac.reshape(b, k, -1)                                    # J^T per image: (b, k, D)
            jat = jac_a.reshape(b, k, -1)                                 # (A J)^T: (b, k, M)
            gram = jat @ jat.transpose(1, 2)                              # J_A^T J_A: (b, k, k)
            scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)
            ridge = ctx.damping + 10 * torch.finfo(z.dtype).eps * scale   # m lambda, plus a tiny ridge
            gram = gram + ridge[:, None, None] * torch.eye(k, dtype=z.dtype, device=z.device)
            w = jt @ v.reshape(b, -1, 1)                                  # J^T v: (b, k, 1)
            a = torch.linalg.solve(gram, w)
            u = (jat.transpose(1, 2) @ a).reshape(ctx.operator(x).shape)  # J_A a, in measurement space
        with torch.enable_grad():
            probe = x.detach().requires_grad_(True)
            (grad_x,) = torch.autograd.grad(ctx.operator(probe), probe, u)  # A^T u (A linear)
        return grad_x, None, None, None, None, None


class ImplicitGradient(nn.Module):
    """C(G(z*(x))) as deployed; the backward pass differentiates the optimum z*(x) implicitly.

    Args:
        defended: a projection defense (:class:`manifold_defense.DefendedClassifier`) with a linear
            measurement operator (the identity by default). Each call runs its projection as
            deployed (fresh restarts for a randomised one: combine with EOT).

    Shape:
        input (N, C, H, W); output (N, num_classes).

    Raises:
        ValueError: ``defended`` is not a projection defense, or its operator is not linear.
    """

    def __init__(self, defended: DefendedClassifier) -> None:
        super().__init__()
        if not isinstance(defended, DefendedClassifier):
            raise ValueError(f"the implicit gradient needs a projection defense (DefendedClassifier), got "
                             f"{type(defended).__name__}")
        operator = defended.operator if defended.operator is not None else Identity()
        if not getattr(operator, "linear", True):
            raise ValueError(f"the implicit gradient needs a linear measurement operator; {type(operator).__name__} "
                             "is not linear")
        self.defended = defended
        self.operator = operator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            result = self.defended.project(x.detach())
        if not (torch.is_grad_enabled() and x.requires_grad):
            return self.defended.classifier(result.x_hat)
        m = self.operator(x[:1].detach()).numel()
        damping = m * self.defended.config.latent_penalty
        x_hat = _ImplicitProjection.apply(x, result.x_hat, result.z.detach(), self.defended.generator,
                                          self.operator, damping)
        return self.defended.classifier(x_hat)
