"""Room 4a, ``purify``: the purifier contract (:class:`Purifier`: forward, ``exact``, randomised or
not), the projection purifier over the engine (Defense-GAN, amortised G(E(x))), DiffPure on a DDPM,
the one-shot DDPM denoiser and its learned refinement, and the wrappers C(P(x)) that every
evaluation and export takes.

May import: ``utils``, ``domains``, ``models``, ``projection`` (not its siblings ``inverse`` and ``certify``).
"""

from .defended import DefendedClassifier, GradientMode, PurifiedClassifier
from .diffusion import DiffusionPurifier, OneShotDenoiser
from .purifiers import ModulePurifier, ProjectionPurifier, Purifier, as_purifier
from .refined import RefinedDenoiser

__all__ = ["Purifier", "ModulePurifier", "ProjectionPurifier", "as_purifier", "DiffusionPurifier", "OneShotDenoiser",
           "RefinedDenoiser", "PurifiedClassifier", "DefendedClassifier", "GradientMode"]
