"""Room 3, ``projection``: the engine z* = argmin_z ||A(G(z)) - A(x)||^2 shared by Defense-GAN and
compressed sensing: the measurement operators A (:mod:`.operators`), the batched optimisation loop in
z with restarts (:mod:`.loop`), its entry point :func:`project` (:mod:`.engine`) and the exact
gradient of the loop as deployed in bounded memory (:mod:`.exact_gradient`).

May import: ``utils``, ``domains``, ``models``.

Example:
    >>> import torch
    >>> from manifold_defense.models import WGANGenerator
    >>> from manifold_defense.projection import GaussianBlur, ProjectionConfig, project
    >>> G = WGANGenerator(dim=8).eval()
    >>> out = project(G, torch.rand(2, 1, 28, 28), ProjectionConfig(restarts=2, steps=5), operator=GaussianBlur(sigma=1.0))
    >>> out.x_hat.shape
    torch.Size([2, 1, 28, 28])
"""

from .engine import project, project_checked
from .exact_gradient import checkpointed_loop, checkpointed_projection
from .loop import ProjectionConfig, ProjectionLoop, ProjectionResult, latent_dim_of
from .operators import (AdditiveNoise, Compose, Downsample, GaussianBlur, GaussianMeasurement, Identity, Lambda, Operator,
                        PixelMask)

__all__ = ["project", "project_checked", "ProjectionConfig", "ProjectionLoop", "ProjectionResult", "latent_dim_of",
           "checkpointed_loop", "checkpointed_projection", "Operator", "Identity", "PixelMask", "GaussianMeasurement",
           "Downsample", "GaussianBlur", "AdditiveNoise", "Compose", "Lambda"]
