"""Attacks on classifiers and on manifold (projection) defenses.

Every image attack is a stateless object called as ``attack(model, x, y, judge=None) -> AttackResult``.

* Off-manifold, own loop: :class:`FGSM`, :class:`LinfPGD`, :class:`L2PGD` (EOT and restarts built in).
* Off-manifold, libraries: :class:`TorchAttack` (FGSM, PGD, PGDL2, CW, APGD, AutoAttack, Square),
  :class:`FoolboxAttack` (LinfPGD, L2PGD, HopSkipJump, Boundary).
* Adaptive, as gradient surrogates for any attack above: :class:`BPDA`, :class:`EOT`, :class:`Unrolled`.
* Adaptive, in latent space: :class:`LatentAttack`.
* On-manifold: :class:`OnManifoldAttack` (overpowered and standard variants).
"""

from .base import AttackResult
from .bpda import BPDA
from .eot import EOT
from .fgsm import FGSM
from .foolbox_adapter import FoolboxAttack
from .latent import LatentAttack
from .on_manifold import OnManifoldAttack, OnManifoldResult
from .pgd import L2PGD, LinfPGD
from .torchattacks_adapter import TorchAttack
from .unrolled import Unrolled

__all__ = [
    "AttackResult", "BPDA", "EOT", "FGSM", "FoolboxAttack", "LatentAttack", "LinfPGD", "L2PGD",
    "OnManifoldAttack", "OnManifoldResult", "TorchAttack", "Unrolled",
]
