"""The projection engine's entry points: :func:`project` (validated images or measurements in, a
:class:`ProjectionResult` out) over the batched loop of :mod:`.loop`, with restarts drawn once per
image, chunks of at most ``max_batch`` rows, an optional encoder warm start and, with
``create_graph=True`` and ``checkpoint_every``, the exact gradient of :mod:`.exact_gradient`.

Example:
    >>> import torch
    >>> from manifold_defense.models import WGANGenerator
    >>> from manifold_defense.projection import ProjectionConfig, project
    >>> G = WGANGenerator(dim=8).eval()
    >>> x = G(torch.randn(4, 128)).detach()
    >>> out = project(G, x, ProjectionConfig(restarts=2, steps=20), rng=torch.Generator().manual_seed(0))
    >>> out.x_hat.shape, out.z.shape, out.residual.shape
    (torch.Size([4, 1, 28, 28]), torch.Size([4, 128]), torch.Size([4]))
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..utils.validation import check_images, module_device_dtype
from .exact_gradient import checkpointed_projection
from .loop import ProjectionConfig, ProjectionLoop, ProjectionResult, latent_dim_of
from .operators import Identity

__all__ = ["project", "project_checked"]


def project(
    generator: nn.Module,
    x: torch.Tensor | None,
    config: ProjectionConfig | None = None,
    *,
    operator: nn.Module | None = None,
    encoder: nn.Module | None = None,
    rng: torch.Generator | None = None,
    latent_dim: int | None = None,
    create_graph: bool = False,
    checkpoint_every: int | None = None,
    measurements: torch.Tensor | None = None,
) -> ProjectionResult:
    """Find z* for each image of ``x`` and return G(z*) with diagnostics.

    Args:
        generator: G: (n, k) -> (n, C, H, W); its parameters are never modified.
        x: images (N, C, H, W) in ``config.pixel_range``, on the generator's device and dtype.
        config: optimisation settings (default ``ProjectionConfig()``).
        operator: measurement operator A (default identity).
        encoder: optional E: images -> (N, k); with ``config.use_encoder`` restart 0 starts at E(x).
        rng: CPU ``torch.Generator`` for the restarts (overrides ``config.seed``). Restarts are drawn
            on the CPU and then moved, so a seed gives the same restarts on every device.
        latent_dim: k, if the generator has no ``latent_dim`` attribute.
        create_graph: make ``x_hat`` carry the exact gradient of the whole optimisation with respect
            to x (and the encoder's warm start); otherwise the result carries no gradient to x.
        checkpoint_every: with ``create_graph``, keep only the optimiser state every this many steps
            and recompute each segment in the backward pass (same gradient, memory of one segment;
            see :mod:`manifold_defense.projection.exact_gradient`). None keeps every step in the graph, which
            also gives gradients to the generator's parameters.
        measurements: y = A(x) given directly (inverse problems); then ``x`` may be None.

    Returns:
        :class:`ProjectionResult`.

    Shape:
        x (N, C, H, W) -> x_hat (N, C, H, W), z (N, k), residual (N,), loss (N,).

    Raises:
        TypeError, ValueError: bad images (see :func:`manifold_defense.utils.validation.check_images`),
            or a generator without ``latent_dim``.
    """
    config = config or ProjectionConfig()
    if measurements is None and x is not None:
        device, dtype = module_device_dtype(generator)
        check_images(x, pixel_range=config.pixel_range, device=device, dtype=dtype)
    return project_checked(generator, x, config, operator=operator, encoder=encoder, rng=rng, latent_dim=latent_dim,
                           create_graph=create_graph, checkpoint_every=checkpoint_every, measurements=measurements)


def project_checked(
    generator: nn.Module,
    x: torch.Tensor | None,
    config: ProjectionConfig,
    *,
    operator: nn.Module | None = None,
    encoder: nn.Module | None = None,
    rng: torch.Generator | None = None,
    latent_dim: int | None = None,
    create_graph: bool = False,
    checkpoint_every: int | None = None,
    measurements: torch.Tensor | None = None,
) -> ProjectionResult:
    """:func:`project` for images the caller has already validated (so that a model's own check,
    which also knows G's output shape, runs once per call, not twice)."""
    operator = operator if operator is not None else Identity()
    k = latent_dim_of(generator, latent_dim)
    device, dtype = module_device_dtype(generator)
    if measurements is None:
        if x is None:
            raise ValueError("project needs images x or measurements")
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            y = operator(x)
        n_images, ref = x.shape[0], x
    else:
        if not isinstance(measurements, torch.Tensor) or not measurements.is_floating_point():
            raise TypeError("measurements must be a floating-point torch.Tensor")
        if not bool(torch.isfinite(measurements).all()):
            raise ValueError("measurements contain NaN or infinite values")
        if device is not None and measurements.device != device:
            raise ValueError(f"measurements are on {measurements.device} but the generator is on {device}")
        y, n_images, ref = measurements, measurements.shape[0], measurements
    if not create_graph:
        y = y.detach()
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1 step or None, got {checkpoint_every}")
    checkpointed = create_graph and checkpoint_every is not None and torch.is_grad_enabled()

    if rng is None and config.seed is not None:
        rng = torch.Generator().manual_seed(config.seed)
    std = config.init_std if config.init_std is not None else 1.0 / math.sqrt(k)
    # Drawn restart-major, so restart r of image i is the same draw whatever R is: more restarts
    # only add candidates (and a seed gives the same restarts on every device).
    z0 = torch.randn(config.restarts, n_images, k, generator=rng).transpose(0, 1)
    z0 = (z0 * std).to(device=ref.device, dtype=ref.dtype)
    if encoder is not None and config.use_encoder:
        if x is None:
            raise ValueError("an encoder warm start needs the images x, not only measurements")
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            z_enc = encoder(x)
        if tuple(z_enc.shape) != (n_images, k):
            raise ValueError(f"encoder returned shape {tuple(z_enc.shape)}, expected {(n_images, k)}")
        z0 = torch.cat([z_enc.unsqueeze(1).to(z0.dtype), z0[:, 1:]], dim=1)

    chunk = max(1, config.max_batch // config.restarts)
    parts = []
    calls = 0
    loop = ProjectionLoop(generator, operator, config)
    with torch.set_grad_enabled(torch.is_grad_enabled()):  # restores the caller's grad mode, even on error
        for start in range(0, n_images, chunk):
            sl = slice(start, start + chunk)
            if checkpointed and checkpoint_every is not None:
                *part, c = checkpointed_projection(loop, y[sl], z0[sl], checkpoint_every)
            else:
                *part, c = loop(y[sl], z0[sl], create_graph)
            parts.append(part)
            calls += c
    x_hat, z, residual, loss = (torch.cat(t) for t in zip(*parts))
    if not create_graph:
        x_hat, z, residual, loss = x_hat.detach(), z.detach(), residual.detach(), loss.detach()
    return ProjectionResult(x_hat=x_hat, z=z, residual=residual, loss=loss, generator_calls=calls)
