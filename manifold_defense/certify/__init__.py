"""Room 4c, ``certify``: randomized smoothing (Cohen et al. 2019): the Monte-Carlo smoothed classifier
with its certified L2 radius, the soft smoothed classifier that SmoothAdv attacks, and the
binomial bounds they rest on. Any denoiser (the DDPM's one-shot, G(E(x))) goes in front as a module.

May import: ``utils``, ``domains``, ``models`` (not ``purify`` or ``inverse``).
"""

from .smoothing import ABSTAIN, SmoothedClassifier, SoftSmoothed, binomial_p_value, clopper_pearson_lower

__all__ = ["SmoothedClassifier", "SoftSmoothed", "ABSTAIN", "clopper_pearson_lower", "binomial_p_value"]
