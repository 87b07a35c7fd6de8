"""The convergence rule over trained checkpoints: one row per robust-training run, read from the
learning curve its JSON holds (:func:`manifold_defense.training.convergence.convergence`).

    python -m eval.convergence_table                       # every shipped robust-training run (RUNS)
    python -m eval.convergence_table eval/resume/lenetwide_control manifold_defense/weights/fashion_mnist/classifier_lenet_at
    python -m eval.convergence_table --update docs/training.md    # rewrites its `convergence` block

A row gives the accuracy the rule reads (held-out PGD-10, or the per-image worst case of PGD-10
and Square for runs trained with ``--val-square-queries``), its value at the start and end of the
last quarter of training, the change and the verdict (converged: moved by less than one point).
Passing the rule on PGD-10 alone does not rule out gradient masking; the suite's reports decide.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from manifold_defense.models import read_config
from manifold_defense.training.convergence import convergence
from manifold_defense.utils import ToolParser, real, run

from .report.page import update_file

__all__ = ["RUNS", "convergence_table", "main"]

RUNS = (
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at",
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at_pgd10",
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at_pgd10_ddpm24k",
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at_pgd10_wgan24k",
    "eval/resume/lenet_ddpm48k_f0.5",
    "eval/resume/lenet_ddpm48k_f0.7",
    "eval/resume/lenetwide_control",
    "eval/resume/lenetwide_ddpm48k_f0.7",
    "manifold_defense/weights/fashion_mnist/classifier_pgd_at",
    "manifold_defense/weights/fashion_mnist/classifier_trades",
    "manifold_defense/weights/fashion_mnist/classifier_amortised_at",
)


def _row(path: str, tail: float, tolerance: float) -> dict[str, Any]:
    metadata = read_config(Path(path))["metadata"]
    curve = metadata.get("learning_curve") or []
    try:
        verdict = convergence(curve, tail=tail, tolerance=tolerance)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return {"run": path, "iterations": metadata.get("iterations_done"), **verdict}


def convergence_table(paths: Sequence[str], *, tail: float = 0.25, tolerance: float = 0.01) -> str:
    """A Markdown table of the rule's verdict for each checkpoint (a path without ``.json``).

    Args:
        tail, tolerance: as in :func:`manifold_defense.training.convergence.convergence`.

    Raises:
        ValueError: a checkpoint without a held-out robust learning curve.
        FileNotFoundError: a path with no checkpoint JSON.
    """
    span = "last quarter" if tail == 0.25 else f"last {100 * tail:g}%"
    lines = [f"| run | read | {span} (iterations) | start | end | moved | verdict |",
             "|---|---|---|---|---|---|---|"]
    for path in paths:
        r = _row(path, tail, tolerance)
        gap = f"; Square adds {100 * r['gradient_free_gap']:.1f}" if "gradient_free_gap" in r else ""
        lines.append(f"| {r['run']} | {r['key']} | {r['from_iteration']:,} -> {r['to_iteration']:,} | "
                     f"{100 * r['start']:.1f}% | {100 * r['end']:.1f}% | {100 * r['moved']:+.1f} | "
                     f"{'converged' if r['converged'] else 'not converged'}{gap} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = ToolParser(prog="python -m eval.convergence_table", description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", default=list(RUNS),
                        help="checkpoints (paths without .json); default: the shipped robust-training runs")
    parser.add_argument("--tail", type=real(0.0, 1.0, low_open=True), default=0.25,
                        help="the share of training the rule reads (default 0.25: the last quarter)")
    parser.add_argument("--tolerance", type=real(0.0, 100.0, low_open=True), default=1.0,
                        help="the largest change, in points, that counts as converged (default 1)")
    parser.add_argument("--update", default="", metavar="PAGE",
                        help="also write the table between <!-- convergence:begin --> and <!-- convergence:end --> of PAGE")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    table = convergence_table(args.runs, tail=args.tail, tolerance=args.tolerance / 100)
    if args.update:
        update_file(args.update, {"convergence": table})
    print(table)
    return table


if __name__ == "__main__":
    run(main)
