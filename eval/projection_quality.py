"""Mean per-pixel MSE of projecting Fashion-MNIST test images onto the shipped generator's range.

    python -m eval.projection_quality                  # 1,000 test images, the default ProjectionConfig
    python -m eval.projection_quality --defense-gan    # Defense-GAN's reference settings instead
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Sequence

import torch
from tqdm import tqdm

from manifold_defense import ProjectionConfig
from manifold_defense.utils import ToolParser, integer, run
from manifold_defense.domains import get_domain
from manifold_defense.pretrained import SHIPPED_DEFENSES, defended_pretrained



def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=integer(1), default=1000)
    parser.add_argument("--defense-gan", action="store_true", help="R=10, L=200 momentum (no encoder)")
    parser.add_argument("--defense", default="projection", choices=sorted(SHIPPED_DEFENSES),
                        help="which shipped configuration's encoder, classifier and projection steps")
    parser.add_argument("--batch-size", type=integer(1), default=250)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--domain", default="fashion_mnist", help="a registered domain with shipped weights")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (models and images move there)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    args = build_parser().parse_args(argv)
    domain = get_domain(args.domain)
    config = ProjectionConfig.defense_gan(pixel_range=domain.pixel_range) if args.defense_gan else None
    defended = defended_pretrained(domain, config, defense=args.defense, use_encoder=not args.defense_gan).eval().to(args.device)
    x, y = domain.load("test", limit=args.n)
    x, y = x.to(args.device), y.to(args.device)
    rng = torch.Generator().manual_seed(args.seed)
    start = time.monotonic()
    sq_err, correct_clean, correct_def = 0.0, 0, 0
    with torch.no_grad():
        for i in tqdm(range(0, args.n, args.batch_size), desc="projecting", unit="batch"):
            xb, yb = x[i:i + args.batch_size], y[i:i + args.batch_size]
            x_hat = defended.project(xb, rng=rng).x_hat
            sq_err += float((x_hat - xb).pow(2).sum())
            correct_clean += int((defended.classifier(xb).argmax(1) == yb).sum())
            correct_def += int((defended.classifier(x_hat).argmax(1) == yb).sum())
    result = {
        "n": args.n,
        "mse_per_pixel": sq_err / x.numel(),
        "clean_accuracy_undefended": correct_clean / args.n,
        "clean_accuracy_defended": correct_def / args.n,
        "seconds": round(time.monotonic() - start, 1),
        "projection": defended.config.to_dict(),
        "encoder": defended.encoder is not None,
        "defense": args.defense,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    run(main)
