"""Attacks on classifiers and on manifold (projection) defenses.

Every image attack is a stateless object called as ``attack(model, x, y, judge=None) -> AttackResult``.

* Off-manifold, own loop: :class:`FGSM`, :class:`LinfPGD`, :class:`L2PGD` (EOT and restarts built in).
* Off-manifold, libraries: :class:`TorchAttack` (FGSM, PGD, PGDL2, CW, APGD, AutoAttack, Square),
  :class:`FoolboxAttack` (LinfPGD, L2PGD, HopSkipJump, Boundary).
* Off-manifold, parameter-free: :class:`APGD` (Croce & Hein 2020; CE, DLR or margin loss, EOT, every
  iterate checked) and :class:`APGDTargeted` (APGD-T, targeted DLR over the top classes).
* Adaptive, as gradient surrogates for any attack above: :class:`ExactGradient` (the deployed
  projection's exact, checkpointed gradient: the default), :class:`BPDA` (identity, amortised G(E(x))
  or short-unroll approximations), :class:`ImplicitGradient` (the implicit-function derivative of the
  projection's optimum, Gauss-Newton), :class:`EOT`, :class:`Unrolled`.
* Adaptive, in latent space: :class:`LatentAttack`.
* On-manifold: :class:`OnManifoldAttack` (overpowered and standard variants).
* On smoothed classifiers: :class:`SmoothAdv` (L2 PGD on the smoothed soft classifier, Salman et al. 2019).
* For training: :class:`TradesPGD` (TRADES' KL-maximising inner step).
"""

from .apgd import APGD
from .apgd_targeted import APGDTargeted
from .base import AttackResult
from .bpda import BPDA
from .eot import EOT
from .exact import ExactGradient
from .fgsm import FGSM
from .implicit import ImplicitGradient
from .foolbox_adapter import FoolboxAttack
from .latent import LatentAttack
from .on_manifold import OnManifoldAttack, OnManifoldResult
from .pgd import L2PGD, LinfPGD
from .torchattacks_adapter import TorchAttack
from .smooth_adv import SmoothAdv
from .trades import TradesPGD
from .unrolled import Unrolled

__all__ = [
    "APGD", "APGDTargeted", "AttackResult", "BPDA", "EOT", "ExactGradient", "FGSM", "FoolboxAttack", "ImplicitGradient", "LatentAttack", "LinfPGD", "L2PGD",
    "OnManifoldAttack", "OnManifoldResult", "SmoothAdv", "TorchAttack", "TradesPGD", "Unrolled",
]
