"""SmoothAdv (Salman et al. 2019, "Provably Robust Deep Learning via Adversarially Trained Smoothed
Classifiers", Sec. 3): L2 PGD on the smoothed soft classifier.

The smoothed classifier g has no useful gradient (it is an argmax of counts), so the attack ascends

    J(x') = -log( (1/m) sum_{i=1..m} softmax(f(x' + sigma * e_i))_y ),   e_i ~ N(0, I),

with m fresh draws at every step (their Monte Carlo gradient of the smoothed soft classifier,
:class:`manifold_defense.certify.SoftSmoothed`), T steps of size 2 eps / T from x itself, projected
onto the L2 ball of radius eps and the pixel bounds. The returned images are judged by whatever the
caller chooses; certification reports judge them with the smoothed classifier's PREDICT.

Example:
    >>> import torch
    >>> from attacks import SmoothAdv
    >>> from manifold_defense.certify import SmoothedClassifier
    >>> base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    >>> smoothed = SmoothedClassifier(base, num_classes=10, sigma=0.25)
    >>> x, y = torch.rand(3, 1, 28, 28), torch.randint(0, 10, (3,))
    >>> result = SmoothAdv(eps=0.5, steps=5, samples=4, seed=0)(smoothed, x, y)
    >>> bool((result.distance <= 0.5 + 1e-5).all())
    True
"""

from __future__ import annotations

import torch

from manifold_defense.certify import SmoothedClassifier, SoftSmoothed

from .base import AttackResult, check_eps
from .pgd import L2PGD

__all__ = ["SmoothAdv"]


class SmoothAdv:
    """L2 PGD on the smoothed soft classifier (Salman et al. 2019's SmoothAdv_PGD).

    Args:
        eps: L2 radius (pixel units).
        steps: T, gradient steps (step size 2 eps / T, their setting).
        samples: m, noise draws per step and image.
        bounds: pixel bounds.
        seed: seed of torch's global RNG for the noise draws (None: leave it as it is).

    Raises:
        ValueError: negative eps, steps or samples < 1.
    """

    def __init__(self, *, eps: float, steps: int = 20, samples: int = 16, bounds: tuple[float, float] = (0.0, 1.0),
                 seed: int | None = None) -> None:
        self.eps = check_eps(eps)
        for value, name in ((steps, "steps"), (samples, "samples")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.steps, self.samples, self.bounds, self.seed = steps, samples, bounds, seed

    def __call__(self, smoothed: SmoothedClassifier, x: torch.Tensor, y: torch.Tensor) -> AttackResult:
        """Attack the smoothed classifier on (x, y); ``success`` is judged on one Monte Carlo estimate
        of the soft classifier (the caller's PREDICT is the verdict that counts).

        Raises:
            TypeError: ``smoothed`` is not a :class:`SmoothedClassifier`.
            ValueError: bad images or labels (see :func:`attacks.base.check_attack_inputs`).
        """
        if self.seed is not None:
            torch.manual_seed(self.seed)
        soft = SoftSmoothed(smoothed, self.samples)
        pgd = L2PGD(eps=self.eps, steps=self.steps, abs_stepsize=2 * self.eps / self.steps, random_start=False,
                    loss="ce", bounds=self.bounds)
        was_training = smoothed.base.training
        smoothed.base.eval()
        try:
            return pgd(soft, x, y)
        finally:
            smoothed.base.train(was_training)
