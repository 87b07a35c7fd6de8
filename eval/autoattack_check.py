"""An independent cross-check of a report's worst case: torchattacks' AutoAttack (standard version:
APGD-CE, APGD-T, FAB-T and Square with 5,000 queries; another implementation than this repo's APGD)
through the exact gradient of the deployed defense, on the first N test images.

    python -m eval.autoattack_check --defense amortised_at --num-images 200 \
        --report eval/reports/robustness_amortised_at --out eval/reports/autoattack_amortised_at
    python -m eval.autoattack_check --defense shipped --classifier classifier_pgd_at --model undefended ...

It writes ``OUT/autoattack.json``: the command, AutoAttack's robust accuracy with a 95% Wilson
interval, the per-example string (1 = still correct), and, with ``--report``, how it compares with
that report's worst case on the same images (robust under one and not the other) and their per-example
minimum. Every adversarial is judged afresh on the deployed model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from attacks import ExactGradient, TorchAttack
from attacks.base import predict
from manifold_defense.utils import ToolParser, integer, real, run
from manifold_defense.domains import resolve_domain

from .report.defenses import load_defense
from .suite.stats import wilson_interval
from .suite import WORST

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defense", default="amortised_at", help="as in eval.robustness: 'shipped', a shipped "
                        "configuration's name, or a bundle directory")
    parser.add_argument("--classifier", default=None, help="as in eval.robustness")
    parser.add_argument("--model", default="defended", choices=["defended", "undefended"],
                        help="the deployed defense (through its exact gradient) or its classifier alone")
    parser.add_argument("--domain", default="fashion_mnist")
    parser.add_argument("--num-images", type=integer(1), default=200)
    parser.add_argument("--eps", type=real(0.0, low_open=True), default=None, help="Linf budget (default: the domain's)")
    parser.add_argument("--batch-size", type=integer(1), default=50)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--report", default=None, help="a robustness report directory to compare with")
    parser.add_argument("--out", default="results/autoattack")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    domain = resolve_domain(args.domain)
    eps = args.eps if args.eps is not None else domain.budgets.linf_eps
    defended = load_defense(args.defense, args.classifier, "default", domain)
    deployed: torch.nn.Module = defended if args.model == "defended" else defended.classifier
    gradient: torch.nn.Module = ExactGradient(defended) if args.model == "defended" else defended.classifier
    attack = TorchAttack("AutoAttack", eps=eps, norm="Linf", version="standard", n_classes=domain.num_classes,
                         seed=args.seed, bounds=domain.pixel_range)
    x, y = domain.load("test", limit=args.num_images)
    start, bits = time.monotonic(), []
    for i in tqdm(range(0, len(x), args.batch_size), desc="AutoAttack", unit="batch"):
        xb, yb = x[i:i + args.batch_size], y[i:i + args.batch_size]
        result = attack(gradient, xb, yb, judge=deployed)
        correct = (predict(deployed, xb) == yb) & ~result.success
        bits += ["1" if c else "0" for c in correct.tolist()]
    per_example = "".join(bits)
    n, k = len(per_example), per_example.count("1")
    record: dict[str, Any] = {
        "command": " ".join(["python -m eval.autoattack_check", *(argv if argv is not None else sys.argv[1:])]),
        "defense": args.defense, "classifier": args.classifier, "model": args.model, "eps": eps, "n": n,
        "seed": args.seed, "attack": "torchattacks.AutoAttack(version='standard') through the exact gradient",
        "accuracy": k / n, "ci95": [round(v, 4) for v in wilson_interval(k, n)], "per_example": per_example,
        "seconds": round(time.monotonic() - start, 1), "threads": torch.get_num_threads(),
    }
    lines = [f"AutoAttack (standard), {args.model} {args.defense}, first {n} test images, Linf eps {eps:g}: "
             f"{100 * k / n:.1f}% [{100 * record['ci95'][0]:.1f}, {100 * record['ci95'][1]:.1f}]"]
    if args.report:
        report = json.loads((Path(args.report) / "robustness.json").read_text())
        worst = report["per_example"][str(float(eps))][f"{args.model} | {WORST}"][:n]
        both = "".join("1" if a == "1" and b == "1" else "0" for a, b in zip(per_example, worst))
        record["report"] = {
            "dir": args.report, "worst_case": worst.count("1") / n,
            "robust_only_under_autoattack": sum(a == "1" and b == "0" for a, b in zip(per_example, worst)),
            "robust_only_under_the_report": sum(a == "0" and b == "1" for a, b in zip(per_example, worst)),
            "minimum_of_both": both.count("1") / n,
        }
        r = record["report"]
        lines.append(f"the report's worst case on the same images: {100 * r['worst_case']:.1f}%; robust only under "
                     f"AutoAttack {r['robust_only_under_autoattack']}, only under the report "
                     f"{r['robust_only_under_the_report']}; per-example minimum {100 * r['minimum_of_both']:.1f}%")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "autoattack.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(lines))
    return record


if __name__ == "__main__":
    run(main)
