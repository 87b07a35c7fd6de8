"""Room 4b, ``inverse``: inverse problems on the same engine: recovery of x from y = A(x) + noise by
projection onto G's range (Bora et al. 2017, CSGM) beside the Lasso and deep-image-prior baselines
(:mod:`.recovery`), and AmbientGAN's random measurement families (:mod:`.ambient`).

May import: ``utils``, ``domains``, ``models``, ``projection`` (not ``purify`` or ``certify``).
"""

from .ambient import (FAMILIES, BlurNoise, Measurement, MeasurementFamily, RandomBlock, RandomDropout, RandomProjection,
                      parse_family)
from .recovery import deep_image_prior, lasso_dct, lasso_wavelet, operator_matrix, recover

__all__ = ["recover", "lasso_dct", "lasso_wavelet", "deep_image_prior", "operator_matrix", "Measurement",
           "MeasurementFamily", "RandomDropout", "RandomBlock", "BlurNoise", "RandomProjection", "parse_family", "FAMILIES"]
