"""Certified L2 robustness by randomized smoothing (Cohen et al. 2019's CERTIFY), for a classifier
alone or behind a generative denoiser (denoised smoothing, Salman et al. 2020): certified accuracy at
L2 radii, the average certified radius, per-example radius and counts.

    python -m eval.certify --classifier runs/noise_0.5 --sigma 0.5 --num-images 500 --n 10000 \\
        --out eval/reports/certify_noise_0.5            # a base model trained with Gaussian noise
    python -m eval.certify --classifier classifier --denoiser amortised --sigma 0.25,0.5,1.0 \\
        --out eval/reports/certify_amortised            # the standard classifier behind G(E(x))
    torchrun --nproc_per_node 2 -m eval.certify ...     # sharded over the images
    python -m eval.certify ... --cache runs/certify_cache   # rerun after a kill: finished batches are read back

A certificate is a lower bound: with probability at least 1 - alpha over the noise, the smoothed
classifier's prediction is constant on the L2 ball of the certified radius. A smaller ``--n`` (10,000
instead of Cohen et al.'s 100,000, for CPU budgets) lowers the certificates; it never inflates them.
The report records the n it used.

A denoiser sees the noisy image clipped to the pixel range first (the base classifier of smoothing
may be any function of the noisy input; clipping is part of it). ``--denoiser projection`` runs the
50-step projection on every noisy draw: about 50 times the cost of ``amortised``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from manifold_defense import ProjectionConfig
from manifold_defense.checkpoint import load_model
from manifold_defense.cli import ToolParser, integer, real, reals, run
from manifold_defense.domains import Domain, resolve_domain
from manifold_defense.pretrained import available, defended_pretrained, load_pretrained
from manifold_defense.smoothing import ABSTAIN, SmoothedClassifier

from .batch_cache import code_fingerprint, model_fingerprint

__all__ = ["certified_accuracy", "average_certified_radius", "build_base", "main"]

RADII = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
DENOISERS = ("none", "amortised", "projection")


class ClampInput(nn.Module):
    """f(u) = model(clamp(u, low, high)): a denoiser's input kept in its pixel range."""

    def __init__(self, model: nn.Module, pixel_range: tuple[float, float]) -> None:
        super().__init__()
        self.model, self.low, self.high = model, float(pixel_range[0]), float(pixel_range[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.clamp(self.low, self.high))


def build_base(classifier: str, denoiser: str, domain: Domain) -> nn.Module:
    """The base classifier f of smoothing: ``classifier`` (a shipped name or a checkpoint path) alone,
    or behind the shipped generator's amortised projection G(E(x)) or iterative projection.

    Raises:
        ValueError: an unknown denoiser.
        CheckpointError: no such classifier.
    """
    if denoiser not in DENOISERS:
        raise ValueError(f"denoiser must be one of {DENOISERS}, got {denoiser!r}")
    clf = (load_pretrained(classifier, domain) if classifier in available(domain) else load_model(classifier)).eval()
    if denoiser == "none":
        return clf
    config = (ProjectionConfig(restarts=1, steps=0, use_encoder=True, pixel_range=domain.pixel_range)
              if denoiser == "amortised" else None)
    defended = defended_pretrained(domain, config, defense="projection", classifier=clf).eval()
    return ClampInput(defended, domain.pixel_range).eval()


def certified_accuracy(correct: Sequence[bool], radii: Sequence[float], radius: float) -> float:
    """The fraction of images certified correct at L2 ``radius`` (abstentions count as wrong).

    Example:
        >>> certified_accuracy([True, True, False], [0.6, 0.3, 0.9], 0.5)
        0.3333333333333333
    """
    return sum(1 for c, r in zip(correct, radii) if c and r >= radius) / max(1, len(correct))


def average_certified_radius(correct: Sequence[bool], radii: Sequence[float]) -> float:
    """The mean over images of the certified radius, 0 for a wrong or abstaining prediction (Zhai et al. 2020).

    Example:
        >>> average_certified_radius([True, False], [1.0, 2.0])
        0.5
    """
    return sum(r for c, r in zip(correct, radii) if c) / max(1, len(correct))


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="classifier", help="a shipped classifier's name or a checkpoint path")
    parser.add_argument("--denoiser", default="none", choices=DENOISERS,
                        help="none: the classifier alone; amortised: behind G(E(x)); projection: behind the 50-step projection")
    parser.add_argument("--sigma", type=reals(0.0, low_open=True), default=[0.25, 0.5, 1.0], help="noise levels")
    parser.add_argument("--num-images", type=integer(1), default=500, help="the first N test images")
    parser.add_argument("--n0", type=integer(1), default=100, help="draws that select the class")
    parser.add_argument("--n", type=integer(1), default=100_000, help="draws that estimate its probability")
    parser.add_argument("--alpha", type=real(0.0, 1.0, low_open=True), default=0.001, help="failure probability")
    parser.add_argument("--radii", type=reals(0.0), default=list(RADII), help="L2 radii of the certified-accuracy table")
    parser.add_argument("--images-per-batch", type=integer(1), default=10,
                        help="images certified together (the unit of sharding and of the cache)")
    parser.add_argument("--batch-size", type=integer(1), default=2000, help="noisy images per forward pass")
    parser.add_argument("--domain", default="fashion_mnist")
    parser.add_argument("--data", default=None, help="test images from elsewhere (IDX directory, .npz, ImageFolder)")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--cache", default=None, help="keep finished batches here; rerunning the command resumes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/certify")
    parser.add_argument("--quick", action="store_true", help="8 images, n0 10, n 200")
    return parser


def _certify_batch(smoothed: SmoothedClassifier, x: torch.Tensor, args: argparse.Namespace, seed: int,
                   cache_dir: Path | None, fingerprint: str) -> dict[str, Any]:
    key = hashlib.sha256(json.dumps([fingerprint, smoothed.sigma, args.n0, args.n, args.alpha, seed]).encode())
    key.update(x.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir / f"{key.hexdigest()}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return dict(json.loads(path.read_text()))
        except json.JSONDecodeError:
            pass  # a damaged file is recomputed
    gen = torch.Generator(device=x.device).manual_seed(seed)
    start = time.monotonic()
    labels, radii = smoothed.certify(x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                                     generator=gen)
    result = {"label": labels.tolist(), "radius": [round(float(r), 6) for r in radii.tolist()],
              "seconds": round(time.monotonic() - start, 3)}
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    argv_list = list(argv) if argv is not None else None
    if args.quick:
        args.num_images, args.n0, args.n = min(args.num_images, 8), 10, 200
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    domain = resolve_domain(args.domain, args.data)
    base = build_base(args.classifier, args.denoiser, domain).to(args.device)
    x, y = domain.load("test", limit=args.num_images)
    x, y = x.to(args.device), y.to(args.device)
    fingerprint = model_fingerprint(base) + code_fingerprint() + args.denoiser
    cache_dir = Path(args.cache) if args.cache else None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    per_batch = args.images_per_batch
    batches = list(range((len(x) + per_batch - 1) // per_batch))
    mine = batches[rank::world]
    start = time.monotonic()
    results: dict[str, Any] = {}
    for sigma in args.sigma:
        smoothed = SmoothedClassifier(base, num_classes=domain.num_classes, sigma=sigma)
        done: dict[int, dict[str, Any]] = {}
        for b in tqdm(mine, desc=f"certify sigma {sigma:g}", unit="batch", disable=rank != 0):
            xb = x[b * per_batch:(b + 1) * per_batch]
            done[b] = _certify_batch(smoothed, xb, args, args.seed * 1_000_003 + b, cache_dir, fingerprint)
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, done)
            done = {k: v for part in gathered for k, v in part.items()}
        labels = [lab for b in batches for lab in done[b]["label"]]
        radii = [r for b in batches for r in done[b]["radius"]]
        truth = y.tolist()
        correct = [lab == t and lab != ABSTAIN for lab, t in zip(labels, truth)]
        seconds = sum(float(done[b]["seconds"]) for b in batches)
        results[f"{sigma:g}"] = {
            "certified_accuracy": {f"{r:g}": certified_accuracy(correct, radii, r) for r in [0.0, *args.radii]},
            "average_certified_radius": average_certified_radius(correct, radii),
            "abstain_rate": sum(1 for lab in labels if lab == ABSTAIN) / len(labels),
            "seconds_per_image": seconds / len(labels),
            "per_example": {"label": labels, "radius": radii, "correct": correct},
        }
    if rank != 0:
        dist.barrier()
        return None
    record = {
        "command": " ".join(["python -m eval.certify", *(sys.argv[1:] if argv_list is None else argv_list)]),
        "classifier": args.classifier, "denoiser": args.denoiser, "dataset": domain.name, "num_images": len(x),
        "n0": args.n0, "n": args.n, "alpha": args.alpha, "seed": args.seed, "radii": list(args.radii),
        "world_size": world, "threads": torch.get_num_threads(), "seconds": round(time.monotonic() - start, 1),
        "results": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "certify.json").write_text(json.dumps(record, indent=2) + "\n")
    header = "| sigma | " + " | ".join(f"r = {r:g}" for r in [0.0, *args.radii]) + " | ACR | abstain | s / image |"
    lines = [f"Command: `{record['command']}`", "",
             f"Certified accuracy (Cohen et al. CERTIFY, n0 = {args.n0}, n = {args.n}, alpha = {args.alpha:g}) of "
             f"{args.classifier}{'' if args.denoiser == 'none' else ' behind the ' + args.denoiser + ' denoiser'} on the "
             f"first {len(x)} {domain.title} test images; r = 0 is the smoothed classifier's clean accuracy.", "",
             header, "|" + "---|" * (len(args.radii) + 5)]
    for sigma, res in results.items():
        cells = " | ".join(f"{100 * v:.1f}%" for v in res["certified_accuracy"].values())
        lines.append(f"| {sigma} | {cells} | {res['average_certified_radius']:.3f} | {100 * res['abstain_rate']:.1f}% | "
                     f"{res['seconds_per_image']:.2f} |")
    (out / "certify.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return record


if __name__ == "__main__":
    run(main)
