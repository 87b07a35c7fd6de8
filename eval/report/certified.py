"""Figures of a certification report: certified accuracy at a radius, the average certified radius,
the soundness count (no certified image broken by the attack inside its radius) and the per-image
summary a report stores; shared by ``python -m eval.certify`` and ``python -m eval.certify_table``.

Example:
    >>> certified_accuracy([True, True, False], [0.5, 1.2, 2.0], radius=1.0)
    0.3333333333333333
"""

from __future__ import annotations

from typing import Any, Sequence

from manifold_defense.certify import ABSTAIN

__all__ = ["certified_accuracy", "average_certified_radius", "soundness", "summarise", "base_label"]


def certified_accuracy(correct: Sequence[bool], radii: Sequence[float], radius: float) -> float:
    """The fraction of images certified correct at L2 ``radius`` (abstentions count as wrong).

    Example:
        >>> certified_accuracy([True, True, False], [0.6, 0.3, 0.9], 0.5)
        0.3333333333333333
    """
    return sum(1 for c, r in zip(correct, radii) if c and r >= radius) / max(1, len(correct))


def average_certified_radius(correct: Sequence[bool], radii: Sequence[float]) -> float:
    """The mean over images of the certified radius, 0 for a wrong or abstaining prediction (Zhai et al. 2020).

    Example:
        >>> average_certified_radius([True, False], [1.0, 2.0])
        0.5
    """
    return sum(r for c, r in zip(correct, radii) if c) / max(1, len(correct))


def soundness(correct: Sequence[bool], radii: Sequence[float], labels: Sequence[int], after: Sequence[int],
              radius: float) -> dict[str, int]:
    """Of the examples certified correct at >= ``radius``, how many kept their label under an attack of
    that radius (``held``), how many PREDICT abstained on (``abstained``: allowed, PREDICT is a test),
    and how many changed to another class (``changed``: a certificate contradicted; PREDICT errs so
    with probability at most alpha).

    Example:
        >>> soundness([True, True, False], [1.2, 0.3, 2.0], [3, 4, 5], [3, 1, 0], 1.0)
        {'tried': 1, 'held': 1, 'abstained': 0, 'changed': 0}
    """
    tried = [(lab, p) for c, r, lab, p in zip(correct, radii, labels, after) if c and r >= radius]
    held = sum(1 for lab, p in tried if p == lab)
    abstained = sum(1 for _, p in tried if p == ABSTAIN)
    return {"tried": len(tried), "held": held, "abstained": abstained, "changed": len(tried) - held - abstained}


def summarise(labels: Sequence[int], radii: Sequence[float], truth: Sequence[int], attacked: dict[str, list[int]],
              table_radii: Sequence[float]) -> dict[str, Any]:
    """One sigma's figures from its per-example results: certified accuracy at r = 0 and each of
    ``table_radii``, the average certified radius, the abstain rate, the empirical accuracy and the
    soundness count at each attacked radius (keys of ``attacked``: the labels PREDICT gave the
    SmoothAdv adversarials), and the per-example results themselves.

    Args:
        labels: the smoothed prediction per image (``ABSTAIN`` = -1).
        radii: the certified L2 radius per image.
        truth: the true class per image.

    Raises:
        ValueError: lists of different lengths.

    Example:
        >>> s = summarise([3, -1], [0.8, 0.0], [3, 2], {"0.5": [3, 2]}, [0.5])
        >>> s["certified_accuracy"], s["empirical_accuracy"], s["soundness"]["0.5"]["held"]
        ({'0': 0.5, '0.5': 0.5}, {'0.5': 1.0}, 1)
    """
    if not len(labels) == len(radii) == len(truth) or any(len(v) != len(truth) for v in attacked.values()):
        raise ValueError(f"per-example lists of different lengths: {len(labels)} labels, {len(radii)} radii, "
                         f"{len(truth)} true labels, attacked {[len(v) for v in attacked.values()]}")
    correct = [lab == t and lab != ABSTAIN for lab, t in zip(labels, truth)]
    return {
        "certified_accuracy": {f"{r:g}": certified_accuracy(correct, radii, r) for r in [0.0, *table_radii]},
        "average_certified_radius": average_certified_radius(correct, radii),
        "abstain_rate": sum(1 for lab in labels if lab == ABSTAIN) / max(1, len(labels)),
        "empirical_accuracy": {r: sum(1 for p, t in zip(after, truth) if p == t) / max(1, len(truth))
                               for r, after in attacked.items()},
        "soundness": {r: soundness(correct, radii, labels, after, float(r)) for r, after in attacked.items()},
        "per_example": {"label": list(labels), "radius": list(radii), "correct": correct, "truth": list(truth),
                        "attacked": attacked},
    }


def base_label(record: dict[str, Any]) -> str:
    """The base model of a certification record in words, e.g. ``classifier_lenet behind the amortised
    denoiser (encoder encoder_noise_0.5)`` or ``classifier_lenet behind the diffusion denoiser (refined by
    the head ddpm_head_1.0)``."""
    denoiser = record.get("denoiser", "none")
    encoder = (f" (encoder {record['encoder']})" if record.get("encoder") else
               f" (refined by the head {record['head']})" if record.get("head") else "")
    return record["classifier"] + ("" if denoiser == "none" else f" behind the {denoiser} denoiser{encoder}")
