"""How close generated images are to real ones, measured in a classifier's feature space: the
Frechet distance between the penultimate-layer features of two sets (an FID whose feature extractor
is a classifier of the domain instead of Inception), and the class coverage of samples.

Example:
    >>> import numpy as np
    >>> a = np.random.default_rng(0).normal(size=(500, 4))
    >>> round(frechet_distance(a, a), 6)
    0.0
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["frechet_distance", "penultimate_features", "class_coverage"]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two (n, d) feature sets.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(2000, 3))
        >>> round(frechet_distance(x, x), 6), frechet_distance(x, x + 1.0) > 2.9
        (0.0, True)
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (S_a S_b)^(1/2) = sum of sqrt eigenvalues of the symmetric PSD S_a^(1/2) S_b S_a^(1/2): stable
    # where sqrtm of the non-symmetric product warns about (near-)singular covariances
    w, v = np.linalg.eigh(cov_a)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh(half @ cov_b @ half), 0, None)).sum())
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * trace_root)
    return max(value, 0.0)


@torch.no_grad()
def penultimate_features(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The input of the classifier's last linear layer, and its softmax output, for every image.

    Raises:
        ValueError: the classifier has no linear layer.
    """
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(classifier).__name__} has no nn.Linear layer whose input could serve as features")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_pre_hook(lambda _m, inputs: captured.append(inputs[0].detach().cpu()))
    probs = []
    try:
        for i in range(0, len(x), batch_size):
            probs.append(torch.softmax(classifier(x[i:i + batch_size]), 1).cpu())
    finally:
        handle.remove()
    return torch.cat(captured).double().numpy(), torch.cat(probs).numpy()


def class_coverage(probs: np.ndarray) -> dict[str, float]:
    """Evenness, confidence and classes covered of samples' class probabilities (see the module docstring).

    Example:
        >>> class_coverage(np.eye(4)[[0, 1, 2, 3]])
        {'evenness': 1.0, 'confidence': 1.0, 'classes_covered': 4}
    """
    k = probs.shape[1]
    hist = np.bincount(probs.argmax(1), minlength=k) / len(probs)
    nonzero = hist[hist > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    return {"evenness": round(float(np.exp(entropy)) / k, 4), "confidence": round(float(probs.max(1).mean()), 4),
            "classes_covered": int((hist >= 0.5 / k).sum())}
