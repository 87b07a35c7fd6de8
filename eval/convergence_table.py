"""The convergence rule over trained checkpoints: one row per robust-training run, read from the
learning curve its JSON holds (:func:`manifold_defense.training.convergence.convergence`).

    python -m eval.convergence_table                       # every shipped robust-training run (RUNS)
    python -m eval.convergence_table eval/resume/lenetwide_control manifold_defense/weights/fashion_mnist/classifier_lenet_at
    python -m eval.convergence_table --update docs/training.md    # rewrites its `convergence` block

    python -m eval.convergence_table --square-queries 1000 eval/resume/lenetwide_control   # + the masking check
    python -m eval.convergence_table --square-queries 1000 --out eval/reports/convergence_held_out   # saved

A row gives the accuracy the rule reads (held-out PGD-10, or the per-image worst case of PGD-10
and Square for runs trained with ``--val-square-queries``), its value at the start and end of the
last quarter of training, the change and the verdict (converged: moved by less than one point).
Passing the rule on PGD-10 alone does not rule out gradient masking; the suite's reports decide.
``--square-queries Q`` checks the final weights of runs trained without ``--val-square-queries``:
on the run's own held-out images (its last ``val_size`` training images), the accuracy under the
curve's PGD-10 and under Square with Q queries, and the per-image worst case of both (three more
columns; a worst case 2 points or more below PGD-10, marked "masking?", means the curve the rule
read was blind to masking). Runs that trained the amortised pipeline (``--train-encoder``) get
dashes: their classifier alone is not the deployed model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from manifold_defense.domains import resolve_domain
from manifold_defense.models import load_model, read_config
from manifold_defense.training.convergence import MASKING_GAP, convergence, curve_point
from manifold_defense.training.robust import RobustConfig
from manifold_defense.utils import ToolParser, integer, real, run

from .report.page import update_file
from .suite.adversaries import adversaries

__all__ = ["RUNS", "convergence_table", "held_out_check", "main"]

RUNS = (
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at",
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at_pgd10",
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at_pgd10_ddpm24k",
    "manifold_defense/weights/fashion_mnist/classifier_lenet_at_pgd10_wgan24k",
    "eval/resume/lenet_ddpm48k_f0.5",
    "eval/resume/lenet_ddpm48k_f0.7",
    "eval/resume/lenetwide_control",
    "eval/resume/lenetwide_ddpm48k_f0.7",
    "eval/resume/lenetwide_control_ls0",
    "eval/resume/lenetsmall_pgd10_8k",  # three 8,000-iteration diagnostics with Square on the curve
    "eval/resume/lenetwide_pgd10_8k",
    "eval/resume/lenetwide_pgd40_8k",
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


def held_out_check(path: str, queries: int) -> dict[str, float]:
    """The final weights of a robust-training run on its own held-out images: accuracy under the
    learning curve's PGD-10 (same attack, same seed), under Square with ``queries`` queries, and the
    per-image worst case of both.

    Raises:
        ValueError: the run held out no images (``val_size`` 0).
    """
    config = read_config(Path(path))["metadata"]["config"]
    robust = RobustConfig(**{k: v for k, v in config.items() if k in RobustConfig.__dataclass_fields__})
    if robust.val_size < 1:
        raise ValueError(f"{path}: the run held out no training images (val_size 0)")
    if robust.train_encoder:
        raise ValueError(f"{path}: the run trained the pipeline C(G(E(x))), not the classifier alone; "
                         "check its defense bundle with eval.robustness")
    domain = resolve_domain(robust.domain, robust.data_dir)
    eps = robust.pgd_eps if robust.pgd_eps >= 0 else domain.budgets.linf_eps
    x, y = domain.load("train", limit=robust.train_limit or None)
    x, y = x[-robust.val_size:], y[-robust.val_size:]
    C = load_model(Path(path)).eval()
    attacks = adversaries(robust)
    if attacks.pgd is None or attacks.gradient_free is None:
        raise ValueError("eval.suite.adversaries must provide PGD and Square")
    point = curve_point(C, x, y, eps, 0, 0.0, pgd=attacks.pgd, gradient_free=attacks.gradient_free,
                        queries=queries)  # the learning curve's own measurement, on one batch as it ran
    return {"pgd10": point["val_pgd10"], "square": point["val_square"], "worst": point["val_worst"]}


def convergence_table(paths: Sequence[str], *, tail: float = 0.25, tolerance: float = 0.01, square_queries: int = 0) -> str:
    """A Markdown table of the rule's verdict for each checkpoint (a path without ``.json``).

    Args:
        tail, tolerance: as in :func:`manifold_defense.training.convergence.convergence`.
        square_queries: > 0: add :func:`held_out_check` of the final weights (three columns).

    Raises:
        ValueError: a checkpoint without a held-out robust learning curve.
        FileNotFoundError: a path with no checkpoint JSON.
    """
    span = "last quarter" if tail == 0.25 else f"last {100 * tail:g}%"
    extra = (f" final, held out: PGD-10 | Square {square_queries:,} | worst |" if square_queries > 0 else "")
    lines = [f"| run | read | {span} (iterations) | start | end | moved | verdict |{extra}",
             "|---|---|---|---|---|---|---|" + "---|" * (3 if square_queries > 0 else 0)]
    for path in paths:
        r = _row(path, tail, tolerance)
        gap = (f"; Square adds {100 * r['gradient_free_gap']:.1f}{' (masking?)' if r['masking_suspected'] else ''}"
               if "gradient_free_gap" in r else "")
        line = (f"| {r['run']} | {r['key']} | {r['from_iteration']:,} -> {r['to_iteration']:,} | "
                f"{100 * r['start']:.1f}% | {100 * r['end']:.1f}% | {100 * r['moved']:+.1f} | "
                f"{'converged' if r['converged'] else 'not converged'}{gap} |")
        if square_queries > 0 and read_config(Path(path))["metadata"]["config"].get("train_encoder"):
            line += " – | – | – |"  # the pipeline was trained, not the classifier alone
        elif square_queries > 0:
            check = held_out_check(path, square_queries)
            flag = " (masking?)" if check["pgd10"] - check["worst"] >= MASKING_GAP else ""
            line += f" {100 * check['pgd10']:.1f}% | {100 * check['square']:.1f}% | {100 * check['worst']:.1f}%{flag} |"
        lines.append(line)
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
    parser.add_argument("--square-queries", type=integer(0), default=0,
                        help="> 0: also attack each run's final weights on its held-out images with PGD-10 and Square")
    parser.add_argument("--out", default="", metavar="DIR",
                        help="also save the table as a report: DIR/convergence.md and DIR/convergence.json (command, seconds)")
    parser.add_argument("--update", default="", metavar="PAGE",
                        help="also write the table between <!-- convergence:begin --> and <!-- convergence:end --> of PAGE")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv_list)
    start = time.monotonic()
    table = convergence_table(args.runs, tail=args.tail, tolerance=args.tolerance / 100, square_queries=args.square_queries)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = " ".join(["python -m eval.convergence_table", *argv_list])
        record = {"command": command, "seconds": round(time.monotonic() - start, 1), "threads": torch.get_num_threads(),
                  "world_size": 1, "runs": list(args.runs), "square_queries": args.square_queries, "table": table}
        (out / "convergence.json").write_text(json.dumps(record, indent=2) + "\n")
        (out / "convergence.md").write_text(f"Command: `{command}`\n\n{table}\n")
    if args.update:
        update_file(args.update, {"convergence": table})
    print(table)
    return table


if __name__ == "__main__":
    run(main)
