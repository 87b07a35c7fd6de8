"""Does the fast projection setting cost robustness? The shipped defense with the default (fast)
ProjectionConfig and with Defense-GAN's reference settings, under the same attacks on the same images.

    python -m benchmarks.defense_accuracy       # 20 test images, eps 0.1: clean, BPDA-PGD, exact-gradient APGD-DLR
    python -m benchmarks.defense_accuracy --quick

The reference projection costs ~40x more per projection, and the exact-gradient attack differentiates
all of it, so this runs on fewer images than the main evaluation. The reference setting is
randomised (fresh restarts per call), so its rows carry worst-of-N and majority-vote verdicts too.
Writes benchmarks/results/defense_accuracy_cpu.json.
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

import torch

from eval.suite import SuiteConfig, run_suite, worst_case
from manifold_defense import ProjectionConfig
from manifold_defense.data import load_idx_split

from .record import write_record
from manifold_defense.pretrained import defended_fashion_mnist


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--apgd-steps", type=int, default=20)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/defense_accuracy_cpu.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.pgd_steps, args.apgd_steps, args.draws = 4, 2, 2, 2
    x, y = load_idx_split("test", limit=args.n)
    cfg = SuiteConfig(eps=args.eps, pgd_steps=args.pgd_steps, apgd_steps=args.apgd_steps, draws=args.draws,
                      eot_samples=1, attacks=("clean", "bpda_pgd", "exact_apgd_dlr"), models=("defended",),
                      batch_size=args.n, seed=args.seed)
    settings = {
        "fast (default)": defended_fashion_mnist().eval(),
        "Defense-GAN reference (R=10, L=200)": defended_fashion_mnist(ProjectionConfig.defense_gan(), use_encoder=False).eval(),
    }
    record: dict = {"command": "python -m benchmarks.defense_accuracy", "n": args.n, "eps": args.eps,
                    "suite": cfg.to_dict(),
                    "threads": torch.get_num_threads(), "settings": {}}
    for name, defended in settings.items():
        start = time.monotonic()
        rows = [r for r in run_suite(defended.classifier, defended, x, y, cfg) if r.model == "defended"]
        worst = worst_case(rows, "defended")
        rows += [worst] if worst is not None else []
        record["settings"][name] = {"projection": defended.config.to_dict(), "encoder": defended.encoder is not None,
                                    "rows": [r.to_dict() for r in rows],
                                    "seconds": round(time.monotonic() - start, 1)}
        print(f"{name}: " + ", ".join(f"{r.attack} {100 * r.accuracy:.0f}%" for r in rows)
              + f" ({record['settings'][name]['seconds']} s)")
    write_record(record, args.out)
    return record


if __name__ == "__main__":
    main()
