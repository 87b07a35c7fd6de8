"""How good is each gradient surrogate? The same attack (APGD-DLR, same steps and seed) through the
exact gradient of the deployed defense and through each BPDA approximation, judged on the deployed
defense, on the same images: robust accuracy (lower = stronger attack) and seconds.

    python -m eval.surrogates --num-images 100 --out eval/reports/surrogates
    python -m eval.surrogates --quick

Writes ``OUT/surrogates.json`` (per-example results included) and ``OUT/surrogates.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from attacks import APGD, BPDA, ExactGradient
from attacks.base import predict
from manifold_defense import DefendedClassifier
from manifold_defense.utils import ToolParser, integer, real, run
from manifold_defense.domains import get_domain
from manifold_defense.pretrained import defended_pretrained

from .suite.stats import format_accuracy


@dataclass(frozen=True)
class Surrogate:
    """A named way to get gradients of the defense."""

    key: str
    description: str
    build: Callable[[DefendedClassifier], nn.Module]


SURROGATES = (
    Surrogate("exact", "exact gradient of the deployed projection (checkpointed every 10 steps)",
              lambda d: ExactGradient(d, checkpoint_every=10)),
    Surrogate("bpda_identity", "BPDA, identity (straight-through)", lambda d: BPDA.from_defense(d)),
    Surrogate("bpda_amortised", "BPDA, amortised G(E(x))", lambda d: BPDA.from_defense(d, approximation="amortised")),
    Surrogate("bpda_unroll10", "BPDA, exact gradient of a 10-step unroll",
              lambda d: BPDA.from_defense(d, approximation="unroll", unroll_steps=10)),
)


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="classifier", help="shipped classifier behind the default projection")
    parser.add_argument("--num-images", type=integer(1), default=100)
    parser.add_argument("--domain", default="fashion_mnist", help="a registered domain with shipped weights")
    parser.add_argument("--eps", type=real(0.0, low_open=True), default=None, help="Linf budget (default: the domain's)")
    parser.add_argument("--steps", type=integer(1), default=100, help="APGD iterations")
    parser.add_argument("--batch-size", type=integer(1), default=50)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (models and images move there)")
    parser.add_argument("--out", default="results/surrogates")
    parser.add_argument("--quick", action="store_true", help="8 images, 5 steps")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.num_images, args.steps, args.batch_size = 8, 5, 8
    torch.manual_seed(args.seed)
    domain = get_domain(args.domain)
    args.eps = domain.budgets.linf_eps if args.eps is None else args.eps
    defended = defended_pretrained(domain, defense="projection", classifier=args.classifier).eval().to(args.device)
    x, y = domain.load("test", limit=args.num_images)
    x, y = x.to(args.device), y.to(args.device)
    clean = predict(defended, x) == y
    rows = []
    for s in tqdm(SURROGATES, desc="surrogates"):
        model = s.build(defended)
        attack = APGD(eps=args.eps, steps=args.steps, loss="dlr", bounds=domain.pixel_range, seed=args.seed)
        start = time.monotonic()
        correct = torch.cat([predict(defended, attack(model, x[i:i + args.batch_size], y[i:i + args.batch_size]).adversarial)
                             == y[i:i + args.batch_size] for i in range(0, len(x), args.batch_size)])
        seconds = time.monotonic() - start
        rows.append({**{k: v for k, v in asdict(s).items() if k != "build"}, "accuracy": float(correct.float().mean()),
                     "correct": int(correct.sum()), "seconds": round(seconds, 1),
                     "seconds_per_step_per_image": seconds / (args.steps * len(x)),
                     "per_example": "".join("1" if c else "0" for c in correct.tolist())})
    exact = next(r for r in rows if r["key"] == "exact")
    lines = [f"Command: `python -m eval.surrogates {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"APGD-DLR, {args.steps} steps, Linf eps {args.eps:g}, first {len(x)} Fashion-MNIST test images, "
             f"classifier `{args.classifier}` behind the default projection; every row judged on the deployed defense "
             f"(clean {format_accuracy(int(clean.sum()), len(x))}).", "",
             "| gradient source | robust accuracy [95% CI] | seconds | cost vs exact |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['description']} | {format_accuracy(r['correct'], len(x))} | {r['seconds']:.0f} | "
                     f"{r['seconds'] / exact['seconds']:.2f}x |")
    record = {"command": lines[0][10:-1], "n": len(x), "eps": args.eps, "steps": args.steps, "seed": args.seed,
              "classifier": args.classifier, "projection": defended.config.to_dict(), "threads": torch.get_num_threads(), "device": args.device,
              "clean": float(clean.float().mean()), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "surrogates.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "surrogates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return record


if __name__ == "__main__":
    run(main)
