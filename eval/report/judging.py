"""A randomised defense's report judged on independent draws (issue #45).

The suite's rows of a randomised defense keep one candidate adversarial example per image and attack
family (:attr:`eval.suite.Row.candidates`). :func:`judge_rows` adds the clean image as candidate 0,
chooses each image's candidate on ``select_draws`` draws of the defense and judges the chosen one on
``judge_draws`` independent draws (:func:`eval.suite.judge.select_and_judge`). From the same judgement
draws come the expected one-shot accuracy (with its 95% interval over images), majority of N and
worst-of-N: one figure per question, none of them a worst-of-k over attack runs that falls with
every extra run by draw luck alone. Folding reports (``python -m eval.judged --fold REPORT,...``) means
choosing again among all their candidates.

Example:
    >>> import torch
    >>> from eval.suite import Row
    >>> class Coin(torch.nn.Module):  # right with probability 0.75 whatever the input
    ...     def forward(self, x):
    ...         right = torch.rand(x.shape[0]) < 0.75
    ...         return torch.stack([right.float(), (~right).float()], 1)
    >>> x, y = torch.zeros(400, 1, 2, 2), torch.zeros(400, dtype=torch.long)
    >>> row = Row("defended", "an attack", "Linf 0.1", torch.ones(400, dtype=torch.bool),
    ...           candidates=torch.full((400, 1, 2, 2), 127, dtype=torch.int8))
    >>> record = judge_rows(Coin(), x, y, [row], eps=0.1, bounds=(0.0, 1.0), select_draws=4, judge_draws=64,
    ...                     votes=10, seed=0)
    >>> abs(record["expected_one_shot"] - 0.75) < 0.03
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..suite import Row
from ..suite.judge import JUDGE, correct_counts, dequantise, select_and_judge

__all__ = ["judge_rows", "judged_line", "candidate_key", "load_candidates"]


def candidate_key(eps: float, attack: str) -> str:
    """The name of a defended row's candidates in a report's ``candidates.npz``."""
    return f"{float(eps)!r} | {attack}"


def load_candidates(path: str | Path) -> dict[str, torch.Tensor]:
    """A report directory's stored candidates (int8 perturbations per 'eps | attack'); {} when it has none."""
    file = Path(path) / "candidates.npz"
    if not file.is_file():
        return {}
    with np.load(file) as data:
        return {name: torch.from_numpy(data[name]) for name in data.files}


def judge_rows(defended: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: list[Row], *, eps: float,
               bounds: tuple[float, float], select_draws: int, judge_draws: int, votes: int, seed: int,
               batch_size: int = 256) -> dict[str, Any] | None:
    """Choose among the defended rows' candidates (and the clean image) and judge on fresh draws.

    Args:
        defended: the deployed randomised defense (eval mode).
        x, y: the report's images and labels, in order.
        rows: one eps's rows; those of the defended model with candidates take part.
        eps: the Linf budget the candidates were stored at.
        bounds: the pixel range.
        select_draws, judge_draws: draws that choose, and the M independent draws that judge.
        votes: N of majority-of-N and worst-of-N.
        seed: the root of the draws' seed streams.

    Returns:
        The JSON section (figures, k of M per image, the chosen candidate per image and the candidate
        names), or None when no row kept candidates.

    Raises:
        ValueError: candidates that do not cover the images.
    """
    mine = [r for r in rows if r.model == "defended" and r.candidates is not None]
    if not mine:
        return None
    for r in mine:
        if r.candidates is not None and tuple(r.candidates.shape) != tuple(x.shape):
            raise ValueError(f"the candidates of {r.attack!r} are {tuple(r.candidates.shape)}, the images {tuple(x.shape)}")
    deltas = torch.stack([torch.zeros(x.shape, dtype=torch.int8)] + [r.candidates.cpu() for r in mine])  # type: ignore[union-attr]
    judgement = select_and_judge(defended, dequantise(deltas, x, eps, bounds), y, select_draws=select_draws,
                                 judge_draws=judge_draws, seed=seed, batch_size=batch_size)
    clean = correct_counts(defended, x, y, draws=judge_draws, seed=seed + 1, purpose=JUDGE, batch_size=batch_size)
    names = ["clean"] + [r.attack for r in mine]
    return {"candidates": names, "select_draws": select_draws, "votes": votes,
            "clean_expected": round(float(clean.double().mean()) / judge_draws, 4),
            **judgement.to_dict(votes), "chosen_candidate": judgement.chosen.tolist()}


def judged_line(section: dict[str, Any]) -> str:
    """One Markdown line of a judged section."""
    n = section["votes"]
    lo, hi = section["interval"]
    return (f"expected one-shot {100 * section['expected_one_shot']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}], "
            f"majority of {n} {100 * section[f'majority_of_{n}']:.1f}%, worst-of-{n} "
            f"{100 * section[f'worst_of_{n}']:.1f}% (clean {100 * section['clean_expected']:.1f}%; "
            f"{len(section['candidates'])} candidates per image chosen on {section['select_draws']} draws, "
            f"judged on {section['judge_draws']} independent draws)")
