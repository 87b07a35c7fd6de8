"""Extending and folding reports: the verdicts of an earlier report on the same defense are kept, only
the new images (or the survivors of earlier reports) are attacked, and :func:`defense_difference`
says why two reports are not of the same defense.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import torch

from manifold_defense import ProjectionConfig
from manifold_defense.domains import Domain

from ..suite import Row, SuiteConfig, WORST
from .judging import candidate_key
from .options import ReportOptions

__all__ = ["defense_difference", "extended_reports"]


def _changed(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any]) -> str | None:
    """The first setting that differs between an old record and this run (None: the same run). A
    setting the old record lacks (added to the code after it was written) must be at its default."""
    for key in sorted(set(old) | set(new)):
        was = old[key] if key in old else defaults.get(key, "<absent>")
        if was != new.get(key, "<absent>"):
            return key
    return None


def _defense_pairs(old: dict[str, Any], described: dict[str, Any]) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """(old, new, defaults) of a report's defense description and its projection settings, for
    :func:`_changed` (a key an older report lacks must be at its default)."""
    return {"defense": ({k: v for k, v in old.items() if k != "projection"},
                        {k: v for k, v in described.items() if k != "projection"}, {"kind": "projection"}),
            "projection": (old.get("projection", {}), described.get("projection", {}), ProjectionConfig().to_dict())}


def defense_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first setting in which two reports' ``defense`` descriptions differ (None: the same
    defense). A key one of them lacks (written before the key existed) must be at its default."""
    for name, (one, two, defaults) in _defense_pairs(a, b).items():
        key = _changed({**defaults, **one}, {**defaults, **two}, defaults)
        if key is not None:
            return f"{name}.{key}" if name == "projection" else key
    return None


def extended_reports(path: str | Path) -> list[str]:
    """The report directory ``path`` and every report it continues through ``--extend`` (newest first):
    their per-example results are the first images of ``path``'s, so either stands for the other on
    those images.

    Args:
        path: a report directory (its ``robustness.json`` is read if there).

    Returns:
        The paths as each report recorded them; a missing report or a loop ends the chain.

    Example:
        >>> extended_reports("eval/reports/converged_diffpure_t100_200")[-1]
        'eval/reports/converged_diffpure_t100'
    """
    chain, seen = [str(path)], {Path(path).name}
    while True:
        file = Path(chain[-1]) / "robustness.json"
        if not file.is_file():
            return chain
        parent = json.loads(file.read_text()).get("extends", {}).get("report")
        if parent is None or Path(parent).name in seen:
            return chain
        chain.append(str(parent))
        seen.add(Path(parent).name)


def _same_sources(old: Sequence[str], new: Sequence[str]) -> bool:
    """Whether ``new`` survivors_of reports are ``old``'s, each the same report or one that extends it
    (same verdicts on the old images, more images): an extended run attacks the same first images."""
    if len(old) != len(new):
        return False
    return all(Path(o).name in {Path(c).name for c in extended_reports(n)} for o, n in zip(old, new))


def _without(suite: dict[str, Any], rebatch: bool) -> dict[str, Any]:
    return {k: v for k, v in suite.items() if k != "batch_size"} if rebatch else suite


def _previous_report(path: str | Path, domain: Domain, eps_list: list[float], base: SuiteConfig,
                     described: dict[str, Any], *, rebatch: bool = False) -> dict[str, Any]:
    """The report ``extend`` continues, after checking that it ran this same evaluation.

    With ``rebatch`` (a survivors_of run, whose attacked images form their own batches) the batch
    size may differ from the extended report's; it changes which images share a batch and seed,
    not what is attacked.

    Raises:
        ValueError: no such report, no per-example results, a different setting (named), or a
            number of images that is not a whole number of batches.
    """
    file = Path(path) / "robustness.json"
    if not file.is_file():
        raise ValueError(f"--extend {path}: no robustness.json there")
    old: dict[str, Any] = json.loads(file.read_text())
    if "per_example" not in old:
        raise ValueError(f"--extend {path}: the report has no per-example results to keep")
    pairs = {"dataset": (old.get("dataset"), domain.name, None), "eps": (old.get("eps"), eps_list, None),
             "seed": (old.get("seed"), base.seed, None),
             "suite": (_without(old.get("suite", {}), rebatch), _without(base.to_dict(), rebatch),
                       _without(SuiteConfig(domain=base.domain).to_dict(), rebatch)),
             **_defense_pairs(old.get("defense", {}), described)}
    for name, (was, now, defaults) in pairs.items():
        key = _changed(was, now, defaults) if defaults is not None else (None if was == now else name)
        if key is not None:
            where = name if key == name else f"{name}.{key}"
            raise ValueError(f"--extend {path}: its {where} differs from this run's "
                             f"({(was.get(key) if isinstance(was, dict) else was)!r} against "
                             f"{(now.get(key) if isinstance(now, dict) else now)!r})")
    if old["n"] % base.batch_size and not rebatch:
        raise ValueError(f"--extend {path}: its {old['n']} images are not whole batches of --batch-size {base.batch_size}")
    return old


def _prepend(rows: list[Row], previous: dict[str, Any], eps: float,
             candidates: dict[str, torch.Tensor] | None = None) -> list[Row]:
    """Each row with the extended report's per-example verdicts (and candidates, from its
    ``candidates.npz`` when it has them; a row without them keeps none) for the first images in front."""
    bits = previous["per_example"][str(eps)]
    seconds = {(r["model"], r["attack"]): r.get("seconds", 0.0) for r in previous["results"][str(eps)]}

    def before(row: Row, protocol: str, new: torch.Tensor) -> torch.Tensor:
        key = _key(row, protocol)
        if key not in bits:
            raise ValueError(f"--extend: the extended report has no per-example results for {key!r}")
        return torch.cat([torch.tensor([c == "1" for c in bits[key]], dtype=torch.bool), new.bool().cpu()])

    def earlier(row: Row) -> torch.Tensor | None:
        old = (candidates or {}).get(candidate_key(eps, row.attack))
        return None if row.candidates is None or old is None else torch.cat([old, row.candidates.cpu()])

    return [dataclasses.replace(
        r, correct=before(r, "one-shot", r.correct),
        correct_all=None if r.correct_all is None else before(r, "worst-of-N", r.correct_all),
        correct_vote=None if r.correct_vote is None else before(r, "majority of N", r.correct_vote),
        seconds=r.seconds + seconds.get((r.model, r.attack), 0.0), candidates=earlier(r)) for r in rows]


def _survivors(paths: Sequence[str], domain: Domain, eps_list: list[float], base: SuiteConfig, opts: ReportOptions,
               described: dict[str, Any], n: int) -> torch.Tensor:
    """Which of the first ``n`` images the combined per-example worst case of the reports ``paths``
    (the minimum over reports, per protocol) still classifies correctly under some protocol: the
    only images an attack can still lower.

    Raises:
        ValueError: more than one eps, the undefended model, checks asked for, or a report that is
            missing, of another defense or data set, without this eps or covering fewer images.
    """
    if len(eps_list) != 1:
        raise ValueError(f"survivors_of needs one eps (each eps has its own survivors), got {eps_list}")
    if "undefended" in base.models:
        raise ValueError("survivors_of attacks the defended model's survivors: run models=('defended',) (--models defended)")
    if opts.checks:
        raise ValueError("survivors_of attacks only some images but the checks need every one: pass checks=False "
                         "(--no-checks)")
    eps = str(eps_list[0])
    mine = json.loads(json.dumps(described))  # tuples as the JSON of a report holds them
    worst: dict[str, torch.Tensor] = {}
    for path in paths:
        file = Path(path) / "robustness.json"
        if not file.is_file():
            raise ValueError(f"survivors_of {path}: no robustness.json there")
        old: dict[str, Any] = json.loads(file.read_text())
        if old.get("dataset", "").replace("-", "_") != domain.name:
            raise ValueError(f"survivors_of {path}: its data set is {old.get('dataset')!r}, not {domain.name!r}")
        differs = defense_difference(old.get("defense", {}), mine)
        if differs is not None:
            raise ValueError(f"survivors_of {path}: it evaluated another defense (it differs in {differs!r}: "
                             f"{old.get('defense')!r}, this run's {mine!r})")
        if old.get("n", 0) < n:
            raise ValueError(f"survivors_of {path}: it covers {old.get('n')} images, fewer than the {n} asked for")
        bits = old.get("per_example", {}).get(eps)
        if bits is None:
            raise ValueError(f"survivors_of {path}: no per-example results at eps {eps}")
        rows = {key: value for key, value in bits.items() if key.split(" | ")[:2] == ["defended", WORST]}
        if not rows:
            raise ValueError(f"survivors_of {path}: no per-example worst case of the defended model at eps {eps}")
        for key, value in rows.items():
            correct = torch.tensor([c == "1" for c in value[:n]], dtype=torch.bool)
            worst[key] = correct if key not in worst else worst[key] & correct
    return torch.stack(list(worst.values())).any(dim=0)


def _scatter(row: Row, where: torch.Tensor, size: int) -> Row:
    """A row of the attacked images spread over ``size`` images: the others count as broken (0)."""

    def spread(bits: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(size, dtype=torch.bool)
        out[where] = bits.bool().cpu()
        return out

    def spread_candidates(deltas: torch.Tensor) -> torch.Tensor:  # the others keep the clean image
        out = torch.zeros((size, *deltas.shape[1:]), dtype=deltas.dtype)
        out[where] = deltas.cpu()
        return out

    return dataclasses.replace(row, correct=spread(row.correct),
                               correct_all=None if row.correct_all is None else spread(row.correct_all),
                               correct_vote=None if row.correct_vote is None else spread(row.correct_vote),
                               candidates=None if row.candidates is None else spread_candidates(row.candidates))


def _key(row: Row, protocol: str) -> str:
    """'model | attack' for one-shot results, 'model | attack | protocol' for the others."""
    return f"{row.model} | {row.attack}" + ("" if protocol == "one-shot" else f" | {protocol}")
