"""Projection throughput vs quality: Defense-GAN's reference settings against faster ones, in one run.

    python -m benchmarks.projection                      # CPU, 256 test images
    python -m benchmarks.projection --device cuda        # on a GPU
    python -m benchmarks.projection --quick              # smoke sizes

Protocol (so the comparison is fair and not tuned on the images it reports):
1. every candidate setting and the reference run on ``--select-n`` *training* images; the fastest
   candidate whose mean per-pixel MSE is <= the reference's is selected;
2. the reference and the selected setting then run on the first ``--n`` *test* images, where
   images/second, mean per-pixel MSE ||G(z*) - x||^2 / 784 and their ratio are reported.
Timings are wall-clock on this machine with ``torch.get_num_threads()`` threads; a JSON record is written.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any, Sequence

import torch

from manifold_defense import ProjectionConfig, project
from manifold_defense.utils import ToolParser, integer, run
from manifold_defense.domains import get_domain
from manifold_defense.pretrained import available, load_pretrained

from .record import write_record

REFERENCE = ProjectionConfig.defense_gan()

# Candidates, cheapest first. "enc" means restart 0 starts at the encoder's guess E(x).
CANDIDATES: dict[str, tuple[ProjectionConfig, bool]] = {
    "enc_R1_L25": (ProjectionConfig(restarts=1, steps=25, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3), True),
    "enc_R2_L30": (ProjectionConfig(restarts=2, steps=30, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3), True),
    "enc_R1_L50": (ProjectionConfig(restarts=1, steps=50, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3), True),
    "enc_R4_L40_halving": (ProjectionConfig(restarts=4, steps=40, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3,
                                            halving_at=(0.15, 0.3)), True),
    "enc_R2_L60": (ProjectionConfig(restarts=2, steps=60, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3), True),
    "R4_L60_halving": (ProjectionConfig(restarts=4, steps=60, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3,
                                        halving_at=(0.15, 0.3), init_std=1.0), False),
    "enc_R4_L100_halving": (ProjectionConfig(restarts=4, steps=100, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3,
                                             halving_at=(0.1, 0.2)), True),
    "R10_L100_adam": (ProjectionConfig(restarts=10, steps=100, optimizer="adam", lr=0.05, decay_at=(0.6,), lr_decay=0.3,
                                       init_std=1.0), False),
}


def measure(G: torch.nn.Module, E: torch.nn.Module | None, x: torch.Tensor, config: ProjectionConfig,
            use_encoder: bool, seed: int) -> dict[str, float]:
    """Project x once; wall-clock images/second and mean per-pixel MSE."""
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = project(G, x, config, encoder=E if use_encoder else None, rng=torch.Generator().manual_seed(seed))
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "images_per_second": x.shape[0] / seconds,
        "seconds": seconds,
        "mse": float((out.x_hat - x).pow(2).mean()),
        "generator_rows_per_image": out.generator_calls / x.shape[0],
    }


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=integer(1), default=256, help="test images reported")
    parser.add_argument("--select-n", type=integer(1), default=128, help="training images used to select the fast setting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--domain", default="fashion_mnist", help="a registered domain with shipped weights")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--out", default="benchmarks/results/projection_cpu.json")
    parser.add_argument("--quick", action="store_true", help="16 images each, 2 candidates")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.n, args.select_n = 16, 16
    device = torch.device(args.device)
    domain = get_domain(args.domain)
    G = load_pretrained("generator", domain, map_location=device)
    E = load_pretrained("encoder", domain, map_location=device) if "encoder" in available(domain) else None
    candidates = {k: v for k, v in CANDIDATES.items() if E is not None or not v[1]}
    if args.quick:
        candidates = dict(list(candidates.items())[:2])
    x_sel, _ = domain.load("train", limit=args.select_n)
    x_test, _ = domain.load("test", limit=args.n)
    x_sel, x_test = x_sel.to(device), x_test.to(device)

    print(f"selection on {args.select_n} training images ({device}, {torch.get_num_threads()} threads)")
    ref_sel = measure(G, E, x_sel, REFERENCE, False, args.seed)
    print(f"  reference (Defense-GAN R=10 L=200): mse {ref_sel['mse']:.5f}  {ref_sel['images_per_second']:.2f} img/s")
    selection: dict[str, dict[str, float]] = {}
    chosen = None
    for name, (config, use_enc) in candidates.items():
        selection[name] = m = measure(G, E, x_sel, config, use_enc, args.seed)
        print(f"  {name:22s} mse {m['mse']:.5f}  {m['images_per_second']:.2f} img/s")
    eligible = [k for k, m in selection.items() if m["mse"] <= ref_sel["mse"]]
    if eligible:
        chosen = max(eligible, key=lambda k: selection[k]["images_per_second"])
    else:
        chosen = min(selection, key=lambda k: selection[k]["mse"])
        print("  no candidate reached the reference MSE; reporting the most accurate one")

    config, use_enc = candidates[chosen]
    print(f"\nreport on the first {args.n} test images: reference vs {chosen}")
    ref = measure(G, E, x_test, REFERENCE, False, args.seed)
    fast = measure(G, E, x_test, config, use_enc, args.seed)
    ratio = fast["images_per_second"] / ref["images_per_second"]
    print(f"  reference: {ref['images_per_second']:.2f} img/s, mse {ref['mse']:.5f}")
    print(f"  {chosen}: {fast['images_per_second']:.2f} img/s, mse {fast['mse']:.5f}")
    print(f"  throughput ratio {ratio:.1f}x at {'equal or lower' if fast['mse'] <= ref['mse'] else 'HIGHER'} MSE")
    record = {
        "command": "python -m benchmarks.projection " + " ".join(argv if argv is not None else []),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "n_test": args.n, "n_select": args.select_n, "seed": args.seed,
        "reference": {"config": REFERENCE.to_dict(), "encoder": False, "selection": ref_sel, "test": ref},
        "candidates": {k: {"config": candidates[k][0].to_dict(), "encoder": candidates[k][1], "selection": v}
                       for k, v in selection.items()},
        "chosen": {"name": chosen, "config": config.to_dict(), "encoder": use_enc, "test": fast},
        "throughput_ratio": ratio,
        "mse_not_higher": fast["mse"] <= ref["mse"],
    }
    write_record(record, args.out)
    return record


if __name__ == "__main__":
    run(main)
