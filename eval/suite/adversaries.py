"""The attacks robust training runs against, built from the ``attacks`` package: the training loop
(:mod:`manifold_defense.training.robust`) receives them as :class:`Adversaries` and never imports
``attacks`` itself. Shared by ``eval.train_robust`` and ``eval.convergence_table``.

Example:
    >>> from manifold_defense.training.robust import RobustConfig
    >>> attacks = adversaries(RobustConfig())
    >>> attacks.pgd is not None and attacks.gradient_free is not None
    True
"""

from __future__ import annotations

import torch
from torch import nn

from attacks import LinfPGD, OnManifoldAttack, TorchAttack, TradesPGD
from manifold_defense.domains import resolve_domain
from manifold_defense.training.robust import Adversaries, RobustConfig

__all__ = ["adversaries"]


def adversaries(config: RobustConfig) -> Adversaries:
    """Madry PGD examples (step ``pgd_step_factor`` * eps / steps, random start), on-manifold pairs, TRADES KL-maximising
    examples and Square (the learning curve's gradient-free check), within the domain's pixel range."""
    bounds = resolve_domain(config.domain, config.data_dir).pixel_range

    def pgd(C: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int) -> torch.Tensor:
        return LinfPGD(eps=eps, steps=steps, rel_stepsize=config.pgd_step_factor / steps, bounds=bounds, seed=seed)(C, x, y).adversarial

    def on_manifold(C: nn.Module, G: nn.Module, z: torch.Tensor, eta: float, steps: int, seed: int) -> torch.Tensor:
        return OnManifoldAttack(eta=eta, steps=steps, variant="standard", seed=seed)(C, G, z).z_prime

    def trades(C: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int) -> torch.Tensor:
        return TradesPGD(eps=eps, steps=steps, bounds=bounds, seed=seed)(C, x)

    def square(C: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int, seed: int) -> torch.Tensor:
        # torchattacks' Square reseeds the global RNG: keep the training run's stream as it was
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            return TorchAttack("Square", eps=eps, n_queries=queries, seed=seed, bounds=bounds)(C, x, y).adversarial

    return Adversaries(pgd=pgd, on_manifold=on_manifold, trades=trades, gradient_free=square)
