"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, "Certified Adversarial Robustness via
Randomized Smoothing"): the smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c), its
Monte Carlo prediction with abstention, and its certified L2 radius.

The algorithms are those of the reference implementation (locuslab/smoothing, ``code/core.py``):

* ``PREDICT``: draw n noisy copies, count the base classifier's votes; return the top class unless a
  two-sided binomial test of its count against the runner-up's gives p > alpha (then abstain).
* ``CERTIFY``: pick the top class cA from n0 draws, estimate its probability from n fresh draws, take
  the one-sided (1 - alpha) Clopper-Pearson lower bound pA; abstain if pA < 1/2, else certify the
  radius sigma * PhiInverse(pA). With probability at least 1 - alpha over the draws, g is constant on
  the L2 ball of that radius.

``f`` can be any classifier, or a defended model (a purifier in front of a classifier: denoised
smoothing, Salman et al. 2020). All images and all their noise draws of one chunk go through the
model as one batch; a ``torch.Generator`` makes the draws reproducible.

Example:
    >>> import torch
    >>> from manifold_defense.certify import SmoothedClassifier
    >>> base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> smoothed = SmoothedClassifier(base, num_classes=3, sigma=0.25)
    >>> gen = torch.Generator().manual_seed(0)
    >>> labels, radii = smoothed.certify(torch.rand(2, 1, 2, 2), n0=10, n=100, alpha=0.001, generator=gen)
    >>> labels.shape, radii.shape
    (torch.Size([2]), torch.Size([2]))
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..utils.validation import check_images, module_device_dtype

__all__ = ["SmoothedClassifier", "SoftSmoothed", "ABSTAIN", "clopper_pearson_lower", "binomial_p_value"]

ABSTAIN = -1
"""The label :meth:`SmoothedClassifier.predict` and :meth:`SmoothedClassifier.certify` return when they abstain."""


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion (the
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`` of Cohen et al.'s code).

    Raises:
        ValueError: trials < 1, successes outside [0, trials], or alpha outside (0, 1).

    Example:
        >>> round(clopper_pearson_lower(100, 100, 0.001), 4)
        0.9333
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if successes == 0:
        return 0.0
    from scipy.stats import beta

    return float(beta.ppf(alpha, successes, trials - successes + 1))


def binomial_p_value(successes: int, trials: int) -> float:
    """Two-sided p-value of ``successes`` in ``trials`` fair coin flips (scipy's ``binomtest``)."""
    if trials < 1:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(successes, trials, 0.5).pvalue)


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class SmoothedClassifier(nn.Module):
    """g(x) = argmax_c P(base(x + N(0, sigma^2 I)) = c) with Cohen et al.'s PREDICT and CERTIFY.

    Args:
        base: any classifier (logits out), or a defended model (a purifier in front of one).
        num_classes: the number of classes.
        sigma: the noise level, in pixel units of the images' range.

    Shape:
        ``forward``: (N, C, H, W) -> (N, num_classes) logits of the base classifier on one noisy draw
        (what noise-augmented training and an EOT attack use). ``predict``: -> (N,) labels, ``ABSTAIN``
        where it abstains; ``certify``: -> ((N,) labels, (N,) certified L2 radii, 0 where it abstains).

    Raises:
        ValueError: sigma <= 0 (or not finite), num_classes < 2.
    """

    def __init__(self, base: nn.Module, num_classes: int, sigma: float) -> None:
        super().__init__()
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.base, self.num_classes, self.sigma = base, num_classes, float(sigma)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        device, dtype = module_device_dtype(self.base)
        return check_images(x, pixel_range=None, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x + self.sigma * torch.randn_like(x))

    @torch.no_grad()
    def counts(self, x: torch.Tensor, num: int, *, batch_size: int = 1000,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Votes of the base classifier over ``num`` noisy copies of each image.

        Args:
            x: (N, C, H, W) images on the base classifier's device (not modified).
            num: draws per image.
            batch_size: noisy images per forward pass (all images' draws share the batches).
            generator: the source of the noise (on ``x``'s device; None: torch's global RNG).

        Returns:
            (N, num_classes) int64 counts; each row sums to ``num``.

        Raises:
            ValueError: num or batch_size < 1, or bad images (see :func:`check_images`).
        """
        x = self._check(x)
        _check_positive_int(num, "num")
        _check_positive_int(batch_size, "batch_size")
        was_training = self.base.training
        self.base.eval()
        n_images = x.shape[0]
        counts = torch.zeros(n_images, self.num_classes, dtype=torch.long, device=x.device)
        total = n_images * num
        owner = torch.arange(n_images, device=x.device).repeat_interleave(num)  # draw i belongs to image owner[i]
        try:
            for start in range(0, total, batch_size):
                who = owner[start:start + batch_size]
                clean = x[who]
                noise = torch.randn(clean.shape, generator=generator, device=x.device, dtype=x.dtype)
                labels = self.base(clean + self.sigma * noise).argmax(1)
                if int(labels.max()) >= self.num_classes:
                    raise ValueError(f"the base classifier predicted class {int(labels.max())} but num_classes is "
                                     f"{self.num_classes}")
                counts.index_put_((who, labels), torch.ones_like(labels), accumulate=True)
        finally:
            self.base.train(was_training)
        return counts

    def predict(self, x: torch.Tensor, *, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Cohen et al.'s PREDICT: the top class of ``n`` draws, or ``ABSTAIN`` when a two-sided
        binomial test of the top two counts gives p > alpha.

        Raises:
            ValueError: n or batch_size < 1, alpha outside (0, 1), bad images.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        counts = self.counts(x, n, batch_size=batch_size, generator=generator).cpu()
        top2 = counts.topk(2, dim=1)
        labels = top2.indices[:, 0].clone()
        for i in range(len(labels)):  # one scalar test per image: the draws above were batched
            a, b = int(top2.values[i, 0]), int(top2.values[i, 1])
            if binomial_p_value(a, a + b) > alpha:
                labels[i] = ABSTAIN
        return labels.to(x.device)

    def certify(self, x: torch.Tensor, *, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                batch_size: int = 1000, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cohen et al.'s CERTIFY: select the top class from ``n0`` draws, lower-bound its probability
        pA from ``n`` fresh draws (Clopper-Pearson, confidence 1 - alpha), and return it with the
        certified L2 radius sigma * PhiInverse(pA); ``ABSTAIN`` and radius 0 when pA < 1/2.

        A smaller ``n`` can only lower the certificates (a looser bound on pA), never inflate them.

        Raises:
            ValueError: n0, n or batch_size < 1, alpha outside (0, 1), bad images.
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        _check_positive_int(n0, "n0")
        selection = self.counts(x, n0, batch_size=batch_size, generator=generator).argmax(1)
        estimation = self.counts(x, n, batch_size=batch_size, generator=generator)
        n_a = estimation.gather(1, selection[:, None])[:, 0].cpu()
        labels = selection.cpu().clone()
        radii = torch.zeros(len(labels), dtype=torch.float64)
        normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
        for i in range(len(labels)):
            p_a = clopper_pearson_lower(int(n_a[i]), n, alpha)
            if p_a < 0.5:
                labels[i] = ABSTAIN
            else:
                radii[i] = self.sigma * float(normal.icdf(torch.tensor(p_a, dtype=torch.float64)))
        return labels.to(x.device), radii.to(x.device)


class SoftSmoothed(nn.Module):
    """log( (1/m) sum_i softmax(f(x + sigma * e_i)) ), e_i ~ N(0, I) drawn afresh at every call: the
    Monte Carlo estimate of the smoothed *soft* classifier that SmoothAdv attacks and trains against
    (Salman et al. 2019, "Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers").

    The output is a log-probability vector, so cross-entropy on it is -log of the smoothed
    probability of the label; its gradient with respect to x is the one their attack uses.

    Args:
        smoothed: the smoothed classifier (its base f and sigma).
        samples: m, noise draws per image and call (all images' draws go through f as one batch).

    Shape:
        (N, C, H, W) -> (N, num_classes) log-probabilities.

    Raises:
        ValueError: samples < 1.

    Example:
        >>> import torch
        >>> from manifold_defense.certify import SmoothedClassifier, SoftSmoothed
        >>> base = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> soft = SoftSmoothed(SmoothedClassifier(base, num_classes=3, sigma=0.5), samples=8)
        >>> out = soft(torch.rand(2, 1, 2, 2))
        >>> out.shape, bool(torch.allclose(out.exp().sum(1), torch.ones(2)))
        (torch.Size([2, 3]), True)
    """

    def __init__(self, smoothed: SmoothedClassifier, samples: int) -> None:
        super().__init__()
        if not isinstance(smoothed, SmoothedClassifier):
            raise TypeError(f"smoothed must be a SmoothedClassifier, got {type(smoothed).__name__}")
        self.smoothed, self.samples = smoothed, _check_positive_int(samples, "samples")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = x.shape[0], self.samples
        noisy = x.repeat_interleave(m, dim=0)
        noisy = noisy + self.smoothed.sigma * torch.randn_like(noisy)
        probs = torch.softmax(self.smoothed.base(noisy), dim=1).view(n, m, -1).mean(1)
        return probs.clamp_min(1e-12).log()
