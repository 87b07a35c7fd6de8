"""The classic figure of Bora et al. 2017 on Fashion-MNIST: reconstruction error per pixel vs the
number of Gaussian measurements m, for the generator prior, Lasso-DCT, Lasso-wavelet and Deep Image Prior.

    python -m eval.compressed_sensing                 # 10 test images, m = 10 ... 750, noise std 0.01
    python -m eval.compressed_sensing --quick

Writes OUT/compressed_sensing.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from manifold_defense.utils import ToolParser, integer, integers, names, real, run
from manifold_defense.domains import get_domain
from manifold_defense.inverse.recovery import RECOVERY_CONFIG, deep_image_prior, lasso_dct, lasso_wavelet, recover
from manifold_defense.projection import AdditiveNoise, Compose, GaussianMeasurement
from manifold_defense.pretrained import load_pretrained


METHODS = ("generator", "lasso_dct", "lasso_wavelet", "dip")


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=integer(1), default=10, help="first N test images")
    parser.add_argument("--m", type=integers(1), default=[10, 25, 50, 100, 200, 400, 750], help="numbers of measurements")
    parser.add_argument("--noise", type=real(0.0), default=0.01, help="std of additive Gaussian noise per measurement")
    parser.add_argument("--methods", type=names(METHODS), default=METHODS, help=f"comma list of {list(METHODS)}")
    parser.add_argument("--dip-steps", type=integer(1), default=500)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--out", default="eval/reports/compressed_sensing")
    parser.add_argument("--domain", default="fashion_mnist", help="a registered domain with shipped weights")
    parser.add_argument("--device", default="cpu", help="where the generator prior runs (cpu, cuda, ...)")
    parser.add_argument("--quick", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    ms, methods = list(args.m), list(args.methods)
    if args.quick:
        args.n, ms, args.dip_steps = 3, ms[:2], 20
    domain = get_domain(args.domain)
    G = load_pretrained("generator", domain, map_location=args.device)
    x, _ = domain.load("test", limit=args.n)
    shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
    errors: dict[str, dict[int, float]] = {m: {} for m in methods}
    start = time.monotonic()
    for m in tqdm(ms, desc="measurements", unit="m"):
        gen = torch.Generator().manual_seed(args.seed + m)
        A = GaussianMeasurement(m, shape, generator=gen)
        with torch.no_grad():
            y = Compose(A, AdditiveNoise(args.noise, generator=gen))(x)  # A is what recovery knows
        for method in methods:
            if method == "generator":
                # The generator prior runs on --device; the sparse baselines are numpy (CPU).
                x_hat = recover(y.to(args.device), A.to(args.device), G,
                                rng=torch.Generator().manual_seed(args.seed)).x_hat.clamp(*domain.pixel_range).cpu()
            elif method == "lasso_dct":
                x_hat = lasso_dct(y, A, shape)
            elif method == "lasso_wavelet":
                x_hat = lasso_wavelet(y, A, shape)
            elif method == "dip":
                x_hat = deep_image_prior(y, A, shape, steps=args.dip_steps, seed=args.seed)
            else:
                raise ValueError(f"unknown method {method!r}; known: {METHODS}")
            errors[method][m] = float((x_hat - x).pow(2).mean())
    record = {"command": "python -m eval.compressed_sensing", "n": args.n, "m": ms, "noise_std": args.noise,
              "seed": args.seed, "generator_config": RECOVERY_CONFIG.to_dict(), "dip_steps": args.dip_steps,
              "mse_per_pixel": {k: {str(m): v for m, v in d.items()} for k, d in errors.items()},
              "seconds": round(time.monotonic() - start, 1)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compressed_sensing.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["| m | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    lines += [f"| {m} | " + " | ".join(f"{errors[k][m]:.4f}" for k in methods) + " |" for m in ms]
    table = "\n".join(lines)
    (out / "compressed_sensing.md").write_text(table + "\n")
    print(f"per-pixel MSE on {args.n} {domain.title} test images, noise std {args.noise}:\n{table}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for k in methods:
        ax.plot(ms, [errors[k][m] for m in ms], marker="o", label=k)
    ax.set_xscale("log")
    ax.set_xlabel("number of measurements m")
    ax.set_ylabel("reconstruction error per pixel (MSE)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "compressed_sensing.png", dpi=120)
    print(f"wrote {out}/compressed_sensing.json, .md, .png")
    return record


if __name__ == "__main__":
    run(main)
