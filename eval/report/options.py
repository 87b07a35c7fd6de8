"""What a report is asked for (:class:`ReportOptions`) and what it holds (:class:`Report`: rows,
per-example results, checks, timings; JSON, Markdown and figures).
"""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from manifold_defense import PurifiedClassifier

from . import checks
from ..suite import Row, WORST, format_table
from .figures import _figures
from .judging import candidate_key, judged_line

__all__ = ["DEFAULT_ATTACKS", "ReportOptions", "Report"]


DEFAULT_ATTACKS = ("clean", "fgsm", "pgd", "pgd_l2", "bpda_pgd", "bpda_apgd_amortised", "eot_pgd", "exact_apgd_ce",
                   "exact_apgd_dlr", "implicit_apgd", "latent", "square", "on_manifold")


@dataclass
class ReportOptions:
    """What the report does besides the attacks (their budgets are the :class:`SuiteConfig`).

    Attributes:
        checks: run the sanity checks after the suite.
        effort_check: include the costliest check, the 2x-effort rerun (reported SKIPPED otherwise).
        check_n: images the checks use (the first ones).
        large_eps: budget of the falls-to-chance check (None: half the pixel range).
        cache: a directory that keeps finished (attack, batch) verdicts: the same call resumes.
        extend: an earlier report directory of the same evaluation on the first k images: its
            verdicts are kept and only images k.. are attacked (each batch keeps its seed).
        partial_out: write the suite's results here before the checks start (they can take hours).
        progress: progress bars (rank 0 only).
        name: the defense's name in the report (the CLI's ``--defense``).
        classifier_name: the classifier's name in the report (None: not recorded).
        robust_training: how the classifier was adversarially trained (the breaks-undefended check
            is skipped for such a classifier); None: standard training.
        command: the command recorded in the report (default: a description of this call).
        channels_last: recorded only (the generator's memory format).
        survivors_of: earlier report directories of this same defense (AutoAttack's rule: attack only
            what is not yet broken): only the images that some protocol of their combined per-example
            worst case still classifies correctly are attacked; every other image counts as broken (0)
            in every row, so a row reads "this attack after those reports". Fold the result into those
            reports with ``eval.reference_table --column TITLE=R1+R2+THIS:defended``. Needs one eps,
            the defended model only and ``checks=False``.
        select_draws: against a randomised defense, the draws that choose each image's candidate
            among the attack families' adversarial examples (:mod:`eval.report.judging`).
        judge_draws: the M >= 64 independent draws that judge the chosen candidate (0: no judging).
    """

    checks: bool = True
    effort_check: bool = True
    check_n: int = 100
    large_eps: float | None = None
    cache: str | Path | None = None
    extend: str | Path | None = None
    partial_out: str | Path | None = None
    progress: bool = True
    name: str = "python"
    classifier_name: str | None = None
    robust_training: str | None = None
    command: str | None = None
    channels_last: bool = False
    survivors_of: tuple[str | Path, ...] = ()
    select_draws: int = 16
    judge_draws: int = 64


@dataclass
class Report:
    """The result of :func:`evaluate`: ``record`` is the JSON document (every setting, versions, per-attack
    and worst-case accuracy, per-example results, checks, timings); ``rows`` the suite's rows per eps."""

    record: dict[str, Any]
    rows: dict[float, list[Row]]
    checks: list[checks.Check]
    defended: PurifiedClassifier
    sample: tuple[torch.Tensor, torch.Tensor]  # the first images, for the figures

    @property
    def main_eps(self) -> float:
        """The middle budget of the eps list (the one the checks and figures use)."""
        eps = sorted(self.rows)
        return eps[len(eps) // 2]

    def robust_accuracy(self, eps: float | None = None, model: str = "defended") -> float:
        """The per-example worst case over the Linf attacks (``model``: "defended" or "undefended").

        Raises:
            KeyError: no such eps or model in the report.
        """
        rows = self.rows[self.main_eps if eps is None else eps]
        for row in rows:
            if row.model == model and row.attack == WORST:
                return row.accuracy
        raise KeyError(f"no worst case for {model!r} in the report (its models: {sorted({r.model for r in rows})})")

    def per_example(self) -> dict[str, dict[str, str]]:
        """Per eps and 'model | attack [| protocol]': one character per image, 1 = still correct."""
        return dict(self.record["per_example"])

    def markdown(self) -> str:
        """The report as Markdown: the command, the setting, one table per eps, the checks."""
        record = self.record
        lines = [f"Command: `{record['command']}`", "",
                 f"n = {record['n']} {record['domain']['title']} test images (the first n), seed {record['seed']}; "
                 f"{record['seconds']:.0f} s on {record['threads']} CPU threads x {record['world_size']} process(es). "
                 "Brackets: 95% Wilson confidence intervals.", ""]
        if "extends" in record:
            ext = record["extends"]
            lines[2:2] = [f"The first {ext['images']} images are those of `{ext['report']}` (its command: "
                          f"`{ext['command']}`; {ext['seconds']:.0f} s by its record); the seconds below count only "
                          "the images attacked by this command.", ""]
        if "survivors_of" in record:
            surv = record["survivors_of"]
            sources = " + ".join(f"`{r}`" for r in surv["reports"])
            lines[2:2] = [f"Only {surv['attacked']} of the {surv['images']} images {surv['first']}..{record['n'] - 1} were "
                          f"attacked: those that survived the per-example worst case of {sources} under some protocol. "
                          "Every other image counts as broken (0) in every row, so each row reads \"this attack after "
                          "those reports\", not the attack's strength alone; fold the report into them with "
                          "`python -m eval.reference_table --column TITLE=REPORT+...+THIS:defended`.", ""]
        cost = record.get("exact_gradient_step")
        if cost:
            speed = record.get("seconds_per_prediction", {})
            lines += [f"Cost: {speed.get('defended', float('nan')):.3g} s per defended prediction per image; one "
                      f"exact-gradient attack step {cost['seconds_per_image']:.3g} s per image (batch {cost['batch']}, "
                      f"segments of {cost['checkpoint_every']} steps); peak memory of the process "
                      f"{record.get('peak_rss_mib') or cost.get('peak_rss_mib_after')} MiB.", ""]
        judged = record.get("judged", {})
        for eps_value, rows in self.rows.items():
            lines += [f"### Linf eps = {eps_value:g}", "", format_table(rows), ""]
            section = judged.get(str(eps_value))
            if isinstance(section, dict):
                lines += ["Judged on independent draws (the row of this randomised defense: each image's adversarial "
                          "example chosen among the attacks' on some draws, judged on others): " + judged_line(section),
                          ""]
            elif isinstance(section, str):
                lines += [f"Not judged on independent draws: {section}", ""]
        if self.checks:
            lines += ["### Sanity checks", ""] + [f"- {c.line()}" for c in self.checks] + [""]
        return "\n".join(lines)

    def write(self, out: str | Path, *, figures: bool = True) -> Path:
        """Write ``robustness.json``, ``robustness.md`` and (``figures``) ``accuracy_vs_eps.png`` and
        ``examples.png`` (x / adversarial / projection) into the directory ``out``; returns it.

        A survivors_of report gets no ``examples.png``: its sample (the first images) need not be the
        images it attacked, and the figure's own 20-step exact attack would cost minutes for nothing."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "robustness.json").write_text(json.dumps(self.record, indent=2) + "\n")
        (out / "robustness.md").write_text(self.markdown())
        kept = self.candidates()
        if kept:
            arrays: dict[str, Any] = {k: v.numpy() for k, v in kept.items()}
            np.savez_compressed(out / "candidates.npz", **arrays)
        if figures:
            _figures(out, self.rows, self.defended, *self.sample, self.main_eps,
                     examples="survivors_of" not in self.record)
        return out

    def candidates(self) -> dict[str, torch.Tensor]:
        """The defended rows' candidate adversarial examples (int8 steps of eps / 127) per 'eps | attack'
        (a randomised defense's; empty otherwise): what :meth:`write` saves as ``candidates.npz``."""
        return {candidate_key(e, r.attack): r.candidates.cpu() for e, rows in self.rows.items() for r in rows
                if r.model == "defended" and r.candidates is not None}

    def files(self, *, figures: bool = True) -> list[str]:
        """The names :meth:`write` writes."""
        names = ["robustness.json", "robustness.md"] + (["candidates.npz"] if self.candidates() else [])
        if figures:
            names += ["accuracy_vs_eps.png"] + ([] if "survivors_of" in self.record else ["examples.png"])
        return names
