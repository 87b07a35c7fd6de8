"""The README's side-by-side reference table, computed from saved robustness reports.

Every ``robustness.json`` written by :mod:`eval.robustness` keeps, per eps and per (model, attack)
row, whether each test image was still classified correctly. This script reads several reports and
prints one Markdown table with a column per (report, model), over the first ``--first`` test images
that all of them share, so that defenses evaluated with different budgets of images are compared on
the same images. It recomputes nothing but accuracies: the attacks ran in the reports' commands,
which it prints above the table.

    python -m eval.reference_table --first 100 --eps 0.1
    python -m eval.reference_table --column "mine=results/robustness:defended" --first 100
    python -m eval.reference_table --summary --first 200     # one row per configuration (also 500)
    python -m eval.reference_table --headline                # the README's table (--summary of HEADLINE)

Example:
    >>> from eval.reference_table import Column
    >>> Column.parse("undefended=eval/reports/robustness_classifier:undefended").model
    'undefended'
"""

from __future__ import annotations

import argparse

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from manifold_defense.utils import ToolParser, integer, real, run

from .report.tables import (Column, ReportError, attack_markdown, judged_markdown, load_column, load_report, reference_table,
                            summary_markdown, summary_table)
from .suite.stats import mcnemar_p

__all__ = ["Column", "Published", "PUBLISHED", "ReportError", "reference_table", "summary_table", "DEFAULT_COLUMNS", "COMPARISONS",
           "COMPARISON_COLUMNS", "HEADLINE", "mcnemar_p", "main"]


DEFAULT_COLUMNS = (
    "standard classifier, undefended=eval/reports/robustness_projection_200:undefended",
    "PGD-AT (classifier_pgd_at), undefended=eval/reports/robustness_pgd_at_500:undefended",
    "amortised_at (default defense)=eval/reports/robustness_amortised_at:defended",
    "standard classifier + projection=eval/reports/robustness_projection_200:defended",
    "PGD-AT classifier + projection=eval/reports/robustness_pgd_at_projection_200:defended",
)

# --summary --first N: every baseline and defended configuration with a report on at least N images,
# all on the same first N test images (a larger N is a narrower interval for fewer configurations).
# The first entry is the baseline every other row is paired with (McNemar on the worst case).
_ON_200 = (
    "**PGD-AT, Croce et al. 2019's recipe (classifier_lenet_at), undefended: the baseline**=eval/reports/robustness_lenet_at_1000:undefended",
    "PGD-AT, 10 epochs (classifier_pgd_at, model A), undefended=eval/reports/robustness_pgd_at_500:undefended",
    "PGD-AT, 6.7 epochs (convergence check), undefended=eval/reports/robustness_pgd_at_7ep:undefended",
    "PGD-AT, 1,500 iterations (classifier_pgd), undefended=eval/reports/robustness_classifier_pgd_200:undefended",
    "TRADES beta 6, 10 epochs (classifier_trades), undefended=eval/reports/robustness_trades:undefended",
    "TRADES beta 6, 6.7 epochs (convergence check), undefended=eval/reports/robustness_trades_7ep:undefended",
    "TRADES beta 6, 10 + 5 epochs (convergence check), undefended=eval/reports/robustness_trades_15ep:undefended",
    "standard classifier (classifier), undefended=eval/reports/robustness_projection_200:undefended",
    "**amortised_at: C(G(E(x))) trained as a whole (the shipped default defense)**=eval/reports/robustness_amortised_at:defended",
    "amortised_at + 50% more training (convergence check)=eval/reports/robustness_amortised_at_more:defended",
    "classifier_pgd_at + projection=eval/reports/robustness_pgd_at_projection_200:defended",
    "classifier_trades + projection=eval/reports/robustness_trades_projection_200:defended",
    "classifier_pgd + projection=eval/reports/robustness_classifier_pgd_projection_200:defended",
    "on-manifold-robust classifier (classifier_robust) + projection=eval/reports/robustness_classifier_robust_200:defended",
    "standard classifier + projection (`projection`, the Defense-GAN pipeline)=eval/reports/robustness_projection_200:defended",
    "standard classifier + Defense-GAN's own setting (10 restarts x 200 steps, randomised): 5-step APGD-CE, "
    "transfer, exact APGD-CE 25 steps with EOT 2 (50 on the first 50: no change), implicit-gradient APGD-CE "
    "20 steps with EOT 2 (40 on all 200: 1.5 points one-shot, 1 worst-of-10), implicit APGD-DLR on the first 100"
    "=eval/reports/robustness_defense_gan_200+eval/reports/transfer_defense_gan_200"
    "+eval/reports/converged_defense_gan_25_200+eval/reports/converged_defense_gan_50"
    "+eval/reports/implicit_defense_gan_200+eval/reports/implicit_defense_gan_40_200+eval/reports/implicit_dlr_defense_gan_100:defended",
    "standard classifier + DiffPure (our DDPM, t* = 100, 10 reverse steps, randomised): the suite and two 4x exact "
    "APGD-CE runs (200 steps, EOT 8; seeds 0 and 1), the suite's APGD-CE with the new selection, an upper bound"
    "=eval/reports/robustness_diffpure_t100_200+eval/reports/converged_diffpure_t100_200"
    "+eval/reports/converged_diffpure_t100_seed1_200+eval/reports/selection_diffpure_t100_200:defended",
    "the baseline (classifier_lenet_at) + DiffPure (t* = 100, 10 reverse steps, randomised): the suite and three 4x "
    "exact APGD-CE runs on its survivors (seeds 0, 1 and 2), an upper bound"
    "=eval/reports/robustness_diffpure_lenet_at_t100_200+eval/reports/converged_diffpure_lenet_at_t100_200"
    "+eval/reports/converged_diffpure_lenet_at_t100_seed1_200+eval/reports/converged_diffpure_lenet_at_t100_seed2_200:defended",
)
COMPARISONS: dict[int, tuple[str, ...]] = {
    200: _ON_200,
    500: (
        "**PGD-AT, Croce et al. 2019's recipe (classifier_lenet_at), undefended: the baseline**=eval/reports/robustness_lenet_at_1000:undefended",
        "PGD-AT, 10 epochs (classifier_pgd_at, model A), undefended=eval/reports/robustness_pgd_at_500:undefended",
        "**amortised_at (the shipped default defense)**=eval/reports/robustness_amortised_at:defended",
        "amortised_at rebuilt on the baseline (amortised_lenet_at)=eval/reports/robustness_amortised_lenet_at_1000:defended",
    ),
    1000: (
        "**PGD-AT, Croce et al. 2019's recipe (classifier_lenet_at), undefended: the baseline**=eval/reports/robustness_lenet_at_1000:undefended",
        "the same model under Croce et al.'s PGD-40 alone (their protocol)"
        "=eval/reports/robustness_lenet_at_1000:undefended@pgd40_croce",
        "amortised_at rebuilt on the baseline (amortised_lenet_at): C(G(E(x))) from classifier_lenet_at"
        "=eval/reports/robustness_amortised_lenet_at_1000:defended",
        "PGD-10 AT, 40,000 x 128, label smoothing 0.1, EMA (classifier_lenet_at_pgd10), undefended: the control"
        "=eval/reports/robustness_lenet_at_pgd10_1000:undefended",
        "the same recipe with 24,000 class-conditional DDPM samples as half of every batch "
        "(classifier_lenet_at_pgd10_ddpm24k), undefended=eval/reports/robustness_lenet_at_pgd10_ddpm24k_1000:undefended",
        "the same recipe with 24,000 WGAN-GP samples pseudo-labelled by the standard classifier as half of every "
        "batch (classifier_lenet_at_pgd10_wgan24k), undefended=eval/reports/robustness_lenet_at_pgd10_wgan24k_1000:undefended",
        "the same recipe with 48,000 class-conditional DDPM samples as half of every batch "
        "(eval/resume/lenet_ddpm48k_f0.5), undefended=eval/reports/robustness_lenet_at_pgd10_ddpm48k_f0.5_1000:undefended",
        "the same recipe with 48,000 class-conditional DDPM samples as 70% of every batch "
        "(eval/resume/lenet_ddpm48k_f0.7), undefended=eval/reports/robustness_lenet_at_pgd10_ddpm48k_f0.7_1000:undefended",
        "the same recipe on LeNetWide (twice the channels and hidden units, 0.66 M parameters): its control "
        "(eval/resume/lenetwide_control), undefended, the suite + APGD 3 restarts and Square 10,000 and 30,000: an upper bound"
        "=eval/reports/robustness_lenetwide_at_pgd10_1000+eval/reports/robustness_lenetwide_at_pgd10_strong_1000+eval/reports/robustness_lenetwide_at_pgd10_square30k_1000:undefended",
        "LeNetWide's control without label smoothing (eval/resume/lenetwide_control_ls0), undefended, the same attacks: an upper bound"
        "=eval/reports/robustness_lenetwide_at_pgd10_ls0_1000+eval/reports/robustness_lenetwide_at_pgd10_ls0_strong_1000"
        "+eval/reports/robustness_lenetwide_at_pgd10_ls0_square30k_1000:undefended",
        "LeNetWide with 48,000 class-conditional DDPM samples as 70% of every batch "
        "(eval/resume/lenetwide_ddpm48k_f0.7), undefended, the same attacks: an upper bound"
        "=eval/reports/robustness_lenetwide_at_pgd10_ddpm48k_f0.7_1000"
        "+eval/reports/robustness_lenetwide_at_pgd10_ddpm48k_f0.7_strong_1000+eval/reports/robustness_lenetwide_at_pgd10_ddpm48k_f0.7_square30k_1000:undefended",
    ),
}
COMPARISON_COLUMNS = COMPARISONS[200]

# --headline: the README's table (at most 8 rows), on the first 200 test images; the first row is the
# baseline the others are paired with.
HEADLINE = (
    "**PGD-AT, Croce et al.'s recipe (classifier_lenet_at), undefended: the baseline**"
    "=eval/reports/robustness_lenet_at_1000:undefended",
    "**amortised_at: C(G(E(x))) adversarially trained, the shipped default defense**"
    "=eval/reports/robustness_amortised_at:defended",
    "amortised_at rebuilt on the baseline (from classifier_lenet_at)"
    "=eval/reports/robustness_amortised_lenet_at_1000:defended",
    "standard classifier, undefended=eval/reports/robustness_projection_200:undefended",
    "standard classifier + projection (the Defense-GAN pipeline, encoder + 50 steps)"
    "=eval/reports/robustness_projection_200:defended",
    "standard classifier + DiffPure (our DDPM, t* = 100, 10 steps, randomised): the suite + three exact reruns, "
    "an upper bound"
    "=eval/reports/robustness_diffpure_t100_200+eval/reports/converged_diffpure_t100_200"
    "+eval/reports/converged_diffpure_t100_seed1_200+eval/reports/selection_diffpure_t100_200:defended",
    "the baseline (classifier_lenet_at) + DiffPure (t* = 100, 10 steps, randomised): the suite + three 4x exact attacks, "
    "an upper bound"
    "=eval/reports/robustness_diffpure_lenet_at_t100_200+eval/reports/converged_diffpure_lenet_at_t100_200"
    "+eval/reports/converged_diffpure_lenet_at_t100_seed1_200+eval/reports/converged_diffpure_lenet_at_t100_seed2_200:defended",
    "standard classifier + Defense-GAN's own setting (10 x 200, randomised): 5-step APGD, transfer, exact and "
    "implicit-gradient APGD with EOT 2 (doubling the steps: worst-of-10 moves 1 point), an upper bound"
    "=eval/reports/robustness_defense_gan_200+eval/reports/transfer_defense_gan_200"
    "+eval/reports/converged_defense_gan_25_200+eval/reports/converged_defense_gan_50"
    "+eval/reports/implicit_defense_gan_200+eval/reports/implicit_defense_gan_40_200+eval/reports/implicit_dlr_defense_gan_100:defended",
)

# --headline, after the table: the randomised rows judged on independent draws (python -m eval.judged).
JUDGED: tuple[tuple[str, Path], ...] = (
    ("the baseline + DiffPure (t* = 100, 10 steps): 2 exact APGD-CE runs, 100 steps, EOT 4 (first 100; not converged)",
     Path("eval/reports/judged_diffpure_lenet_at_t100_100")),
)


@dataclass(frozen=True)
class Published:
    """A number copied from a paper (not measured here), printed below the measured rows of a summary
    on the same evaluation set."""

    title: str
    clean: float
    robust: float
    kind: str  # "upper bound" (their attacks) or "certified" (a verified lower bound)
    source: str

    def row(self) -> str:
        sign = "<=" if self.kind == "upper bound" else ">="
        return (f"| {self.title} (published: {self.source}; not measured here) | {100 * self.clean:.1f}% | "
                f"**{sign} {100 * self.robust:.1f}%** ({self.kind}) | – | – | – |")


_CROCE = "Croce et al. 2019, Table 1, first 1000 test points"
# --summary --first N prints these below the measured rows (same threat model, same first N images).
PUBLISHED: dict[int, tuple[Published, ...]] = {
    1000: (
        Published("PGD adversarial training, LeNetSmall", 0.8846, 0.785, "upper bound", _CROCE + ", PGD-40 + MIP"),
        Published("MMR + AT, LeNetSmall", 0.855, 0.693, "certified", _CROCE + ", MIP / Kolter-Wong bounds"),
        Published("Kolter-Wong certified training, LeNetSmall", 0.7827, 0.676, "certified", _CROCE + ", verified"),
        Published("plain training, LeNetSmall", 0.905, 0.04, "upper bound", _CROCE + ", PGD-40 + MIP"),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--column", action="append", default=None,
                        help="TITLE=REPORT_DIR:MODEL (repeatable; default: the shipped reports, every configuration with "
                             "--summary); REPORT_DIR+REPORT_DIR2 adds the attack rows of another report of the same "
                             "defense and takes the per-example minimum over both (on the images both cover; a --survivors-of "
                             "report on fewer images lowers only those); MODEL@KEY shows one attack instead of the worst "
                             "case, MODEL@KEY,KEY... the worst case over those attacks alone (and clean); a trailing #N "
                             "keeps that column to its first N images (fewer than --first) and says so")
    parser.add_argument("--first", type=integer(1), default=200, help="use the first N test images")
    parser.add_argument("--eps", type=real(0.0, low_open=True), default=None,
                        help="the Linf budget to tabulate (default: the first report's main one, the middle of its list)")
    parser.add_argument("--protocol", default="one-shot", choices=["one-shot", "worst-of-N", "majority of N"],
                        help="verdict for randomised defenses (deterministic ones have one-shot results only)")
    parser.add_argument("--summary", action="store_true",
                        help="one row per column: clean, worst case and seconds per prediction")
    parser.add_argument("--headline", action="store_true",
                        help="the README's headline table: --summary of the HEADLINE configurations")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    if args.headline:
        if args.column:
            build_parser().error("--headline prints the fixed HEADLINE configurations; drop --column")
        args.summary, args.column = True, list(HEADLINE)
    if args.summary and not args.column and args.first not in COMPARISONS:
        build_parser().error(f"--summary without --column compares the saved reports on the first {sorted(COMPARISONS)} images; "
                     f"got --first {args.first}")
    columns = [Column.parse(spec) for spec in (args.column or (COMPARISONS[args.first] if args.summary else DEFAULT_COLUMNS))]
    records = [load_column(c) for c in columns]
    eps = args.eps if args.eps is not None else float(records[0]["eps"][len(records[0]["eps"]) // 2])
    build = summary_markdown if args.summary else attack_markdown
    table = build(columns, records, first=args.first, eps=eps, protocol=args.protocol)
    if args.summary and not args.headline and args.first in PUBLISHED:
        table += "\n" + "\n".join(p.row() for p in PUBLISHED[args.first])
    commands = {path: f"- `{path}`: `{load_report(path)['command']}`" for c in columns for path in c.reports}.values()
    text = "Reports (each written by the command shown):\n\n" + "\n".join(commands) + "\n\n" + table
    if args.headline and JUDGED:
        text += ("\n\nThe randomised rows judged on independent draws (python -m eval.judged: each image's "
                 "candidate chosen on some draws, judged on others):\n\n" + judged_markdown(JUDGED))
    print(text)
    return text


if __name__ == "__main__":
    run(main)
