"""Certified L2 robustness by randomized smoothing (Cohen et al. 2019's CERTIFY), for a classifier
alone or behind a generative denoiser (denoised smoothing, Salman et al. 2020): certified accuracy at
L2 radii, the average certified radius, per-example radius and counts.

    python -m eval.certify --classifier runs/noise_0.5 --sigma 0.5 --num-images 500 --n 10000 \\
        --out eval/reports/certify_noise_0.5            # a base model trained with Gaussian noise
    python -m eval.certify --classifier classifier --denoiser amortised --sigma 0.25,0.5,1.0 \\
        --out eval/reports/certify_amortised            # the standard classifier behind G(E(x))
    torchrun --nproc_per_node 2 -m eval.certify ... --draws 10000   # sharded over the images (torchrun
                                                        # reads --n as its own flag: say --draws)
    python -m eval.certify ... --cache runs/certify_cache   # rerun after a kill: finished batches are read back
    python -m eval.certify ... --start 5000 --num-images 400 --n 1000   # a selection split: choose among
                                                        # variants on images the compared reports do not use

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
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence, cast

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from attacks import SmoothAdv
from .report.certified import average_certified_radius, base_label, certified_accuracy, summarise
from manifold_defense import ProjectionConfig
from manifold_defense.utils import ToolParser, integer, real, reals, run
from manifold_defense.models import ResidualHead
from manifold_defense.purify import OneShotDenoiser, RefinedDenoiser
from manifold_defense.domains import Domain, resolve_domain
from manifold_defense.pretrained import defended_pretrained, load_ddpm, load_named
from manifold_defense.certify import SmoothedClassifier

from .suite.batch_cache import code_fingerprint, model_fingerprint

__all__ = ["certified_accuracy", "average_certified_radius", "build_base", "main"]

RADII = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
DENOISERS = ("none", "amortised", "projection", "diffusion")
ENCODER_DENOISERS = ("amortised", "projection")  # the denoisers built on G(E(x)): they take --encoder


class ClampInput(nn.Module):
    """f(u) = model(clamp(u, low, high)): a denoiser's input kept in its pixel range."""

    def __init__(self, model: nn.Module, pixel_range: tuple[float, float]) -> None:
        super().__init__()
        self.model, self.low, self.high = model, float(pixel_range[0]), float(pixel_range[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.clamp(self.low, self.high))


def build_base(classifier: str, denoiser: str, domain: Domain, sigma: float = 0.5, ddpm: str = "ddpm",
               encoder: str = "encoder", head: str = "") -> nn.Module:
    """The base classifier f of smoothing at noise level ``sigma``: ``classifier`` (a shipped name or a
    checkpoint path) alone, behind the shipped generator's amortised projection G(E(x)) or iterative
    projection with the encoder ``encoder`` (the noisy input clipped to the pixel range first; a
    shipped name or a checkpoint path, e.g. one fine-tuned for noise by ``manifold_defense.training.encoder
    --noise-sigma``), or behind the DDPM of ``ddpm`` as a one-shot denoiser at the matching noise level
    (no clipping: it expects Gaussian noise), its estimate refined by the residual head ``head`` when
    one is named (a checkpoint of ``manifold_defense.training.denoiser_head``, issue #46 (b)).

    Raises:
        ValueError: an unknown denoiser, a ``ddpm`` that is not a DDPM, a sigma beyond its timesteps, a
            ``head`` that is not a residual head or with a denoiser other than diffusion.
        CheckpointError: no such classifier.
    """
    if denoiser not in DENOISERS:
        raise ValueError(f"denoiser must be one of {DENOISERS}, got {denoiser!r}")
    clf = load_named(classifier, domain).eval()
    if denoiser == "none":
        return clf
    if head and denoiser != "diffusion":
        raise ValueError(f"a residual head refines the DDPM's estimate: it needs denoiser 'diffusion', not {denoiser!r}")
    if denoiser == "diffusion":
        one_shot: nn.Module = OneShotDenoiser(load_ddpm(ddpm, domain).eval(), sigma)
        if head:
            refine = load_named(head, domain)
            if not isinstance(refine, ResidualHead):
                raise ValueError(f"--head {head}: not a residual head (manifold_defense.training.denoiser_head)")
            one_shot = RefinedDenoiser(one_shot, refine)
        return nn.Sequential(one_shot, clf).eval()
    config = (ProjectionConfig(restarts=1, steps=0, use_encoder=True, pixel_range=domain.pixel_range)
              if denoiser == "amortised" else None)
    defended = defended_pretrained(domain, config, defense="projection", classifier=clf,
                                   encoder=load_named(encoder, domain)).eval()
    defended.gradient = "exact"  # the attack on the smoothed classifier differentiates through the denoiser
    return ClampInput(defended, domain.pixel_range).eval()


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """What must agree between a report and one that extends it."""
    return {"classifier": args.classifier, "denoiser": args.denoiser, "ddpm": args.ddpm if args.denoiser == "diffusion" else None,
            **({"encoder": args.encoder} if args.denoiser in ENCODER_DENOISERS else {}),
            **({"head": args.head} if args.head else {}),
            "n0": args.n0, "n": args.n, "alpha": args.alpha, "seed": args.seed, "images_per_batch": args.images_per_batch,
            **({"start": args.start} if args.start else {}),
            "sigma": [f"{s:g}" for s in args.sigma],
            "attack": {"radii": list(args.attack_radii), "steps": args.attack_steps, "samples": args.attack_samples,
                       "predict_n": args.attack_n}}


def _which_images(start: int, count: int) -> str:
    """'first 500' or, for a selection split, 'images 5000 to 5399 of the'."""
    return f"first {count}" if not start else f"images {start} to {start + count - 1} of the"


def _previous_batches(path: str, args: argparse.Namespace) -> tuple[int, dict[str, dict[int, dict[str, Any]]]]:
    """The images an earlier report covered and its per-batch results per sigma (for ``--extend``).

    Raises:
        ValueError: no report there, other settings, or no images left to add.
    """
    file = Path(path) / "certify.json"
    if not file.is_file():
        raise ValueError(f"--extend {path}: no certify.json there")
    old = json.loads(file.read_text())
    was = {**old.get("settings", {})} or {"classifier": old["classifier"], "denoiser": old["denoiser"]}
    if int(was.get("start", 0)) != args.start:
        raise ValueError(f"--extend {path}: it starts at test image {was.get('start', 0)}, this run at {args.start}")
    for key, now in _settings(args).items():
        if key in was and was[key] != now:
            raise ValueError(f"--extend {path}: its {key} ({was[key]!r}) differs from this run's ({now!r})")
    k, per = int(old["num_images"]), args.images_per_batch
    if k % per:
        raise ValueError(f"--extend {path}: its {k} images are not whole batches of --images-per-batch {per}")
    if k >= args.num_images:
        raise ValueError(f"--extend {path} already covers {k} images; ask for more with --num-images")
    batches: dict[str, dict[int, dict[str, Any]]] = {}
    for sigma, res in old["results"].items():
        ex = res["per_example"]
        batches[sigma] = {b: {"label": ex["label"][b * per:(b + 1) * per], "radius": ex["radius"][b * per:(b + 1) * per],
                              "attacked": {r: v[b * per:(b + 1) * per] for r, v in ex["attacked"].items()},
                              "seconds": res["seconds_per_image"] * per,
                              "attack_seconds": res["attack_seconds_per_image"] * per} for b in range(k // per)}
    return k, batches


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", default="classifier", help="a shipped classifier's name or a checkpoint path")
    parser.add_argument("--denoiser", default="none", choices=DENOISERS,
                        help="none: the classifier alone; amortised: behind G(E(x)); projection: behind the 50-step "
                             "projection; diffusion: behind the DDPM of --ddpm as a one-shot denoiser")
    parser.add_argument("--ddpm", default="ddpm", help="a shipped DDPM's name or a checkpoint path (--denoiser diffusion)")
    parser.add_argument("--encoder", default="encoder",
                        help="the encoder of G(E(x)) (--denoiser amortised or projection): a shipped name or a checkpoint "
                             "path, e.g. one fine-tuned for noise (python -m manifold_defense.training.encoder --noise-sigma)")
    parser.add_argument("--head", default="",
                        help="a residual head that refines the DDPM's estimate (--denoiser diffusion): a checkpoint of "
                             "python -m manifold_defense.training.denoiser_head")
    parser.add_argument("--sigma", type=reals(0.0, low_open=True), default=[0.25, 0.5, 1.0], help="noise levels")
    parser.add_argument("--num-images", type=integer(1), default=500, help="the first N test images")
    parser.add_argument("--start", type=integer(0), default=0, metavar="K",
                        help="certify test images K to K + N - 1 instead: a selection split, disjoint from the first N "
                             "that reports are compared on, for choosing among variants without looking at those "
                             "(a multiple of --images-per-batch; each batch keeps the seed of its place in the test set)")
    parser.add_argument("--n0", type=integer(1), default=100, help="draws that select the class")
    parser.add_argument("--n", "--draws", dest="n", type=integer(1), default=100_000,
                        help="draws that estimate its probability (under torchrun say --draws: it takes --n as its own)")
    parser.add_argument("--alpha", type=real(0.0, 1.0, low_open=True), default=0.001, help="failure probability")
    parser.add_argument("--radii", type=reals(0.0), default=list(RADII), help="L2 radii of the certified-accuracy table")
    parser.add_argument("--attack-radii", type=reals(0.0, low_open=True), default=[0.5, 1.0],
                        help="L2 radii of the SmoothAdv attack: the empirical accuracy (an upper bound) beside the "
                             "certified one, and the soundness check on the examples certified at least that far")
    parser.add_argument("--attack-steps", type=integer(1), default=20, help="SmoothAdv PGD steps")
    parser.add_argument("--attack-samples", type=integer(1), default=16, help="SmoothAdv noise draws per step")
    parser.add_argument("--attack-n", type=integer(1), default=1000,
                        help="PREDICT draws that judge each adversarial image (abstentions count as wrong)")
    parser.add_argument("--images-per-batch", type=integer(1), default=10,
                        help="images certified together (the unit of sharding and of the cache)")
    parser.add_argument("--batch-size", type=integer(1), default=2000, help="noisy images per forward pass")
    parser.add_argument("--domain", default="fashion_mnist")
    parser.add_argument("--data", default=None, help="test images from elsewhere (IDX directory, .npz, ImageFolder)")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--cache", default=None, help="keep finished batches here; rerunning the command resumes")
    parser.add_argument("--extend", default=None,
                        help="REPORT_DIR of this same command on fewer images (whole batches): keep its per-example "
                             "results and certify only the images after them (each batch keeps its seed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the base classifier for the noise draws of CERTIFY and PREDICT: 1.5x "
                             "faster behind the DDPM on a CPU, no gain for the others (python -m "
                             "benchmarks.certify_throughput); needs a C++ compiler; the SmoothAdv attack runs eagerly")
    parser.add_argument("--out", default="results/certify")
    parser.add_argument("--quick", action="store_true", help="8 images, n0 10, n 200, a 2-step attack judged on 50 draws")
    return parser


def _certify_batch(smoothed: SmoothedClassifier, counting: SmoothedClassifier, x: torch.Tensor, y: torch.Tensor,
                   args: argparse.Namespace, seed: int, cache_dir: Path | None, fingerprint: str,
                   bounds: tuple[float, float]) -> dict[str, Any]:
    """CERTIFY and the SmoothAdv attack on one batch of images (read from the cache when it has them);
    ``counting`` (``smoothed``, or the same smoothed classifier on a compiled base) draws the counts."""
    key = hashlib.sha256(json.dumps([fingerprint, smoothed.sigma, args.n0, args.n, args.alpha, seed, args.attack_radii,
                                     args.attack_steps, args.attack_samples, args.attack_n]).encode())
    key.update(x.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir / f"{key.hexdigest()}.json" if cache_dir else None
    if path is not None and path.is_file():
        try:
            return dict(json.loads(path.read_text()))
        except json.JSONDecodeError:
            pass  # a damaged file is recomputed
    gen = torch.Generator(device=x.device).manual_seed(seed)
    start = time.monotonic()
    labels, radii = counting.certify(x, n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                                     generator=gen)
    seconds = time.monotonic() - start
    attacked: dict[str, list[int]] = {}
    for r in args.attack_radii:  # SmoothAdv at radius r, judged by PREDICT
        adv = SmoothAdv(eps=r, steps=args.attack_steps, samples=args.attack_samples, bounds=bounds,
                        seed=seed)(smoothed, x, y).adversarial
        attacked[f"{r:g}"] = counting.predict(adv, n=args.attack_n, alpha=args.alpha, batch_size=args.batch_size,
                                              generator=gen).tolist()
    result = {"label": labels.tolist(), "radius": [round(float(r), 6) for r in radii.tolist()],
              "seconds": round(seconds, 3), "attacked": attacked,
              "attack_seconds": round(time.monotonic() - start - seconds, 3)}
    if path is not None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    if args.encoder != "encoder" and args.denoiser not in ENCODER_DENOISERS:
        build_parser().error(f"--encoder is the encoder of G(E(x)): it needs --denoiser amortised or projection, "
                             f"not {args.denoiser}")
    if args.head and args.denoiser != "diffusion":
        build_parser().error(f"--head refines the DDPM's estimate: it needs --denoiser diffusion, not {args.denoiser}")
    if args.compile and not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++") if c):
        build_parser().error("--compile needs a C++ compiler for torch.compile (g++ or $CXX); none found on PATH")
    if args.start % args.images_per_batch:
        build_parser().error(f"--start {args.start} is not a multiple of --images-per-batch {args.images_per_batch}")
    argv_list = list(argv) if argv is not None else None
    if args.quick:
        args.num_images, args.n0, args.n = min(args.num_images, 8), 10, 200
        args.attack_steps, args.attack_samples, args.attack_n = 2, 2, 50
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    domain = resolve_domain(args.domain, args.data)
    x, y = domain.load("test", limit=args.start + args.num_images)
    if len(x) <= args.start:
        raise ValueError(f"--start {args.start}: the {domain.name} test set has only {len(x)} images")
    x, y = x[args.start:], y[args.start:]
    x, y = x.to(args.device), y.to(args.device)
    bases = {sigma: build_base(args.classifier, args.denoiser, domain, sigma, args.ddpm, args.encoder,
                                args.head).to(args.device)
             for sigma in args.sigma}
    code = code_fingerprint() + args.denoiser
    cache_dir = Path(args.cache) if args.cache else None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    per_batch = args.images_per_batch
    batches = list(range((len(x) + per_batch - 1) // per_batch))
    first_batch = args.start // per_batch  # batch b's seed is that of its place in the test set
    kept, previous = _previous_batches(args.extend, args) if args.extend else (0, {})
    mine = batches[kept // per_batch:][rank::world]
    start = time.monotonic()
    results: dict[str, Any] = {}
    for sigma in args.sigma:
        smoothed = SmoothedClassifier(bases[sigma], num_classes=domain.num_classes, sigma=sigma)
        compiled = cast(nn.Module, torch.compile(bases[sigma])) if args.compile else None
        counting = smoothed if compiled is None else SmoothedClassifier(compiled, domain.num_classes, sigma)
        fingerprint = model_fingerprint(bases[sigma]) + code
        done: dict[int, dict[str, Any]] = dict(previous.get(f"{sigma:g}", {})) if rank == 0 else {}
        for b in tqdm(mine, desc=f"certify sigma {sigma:g}", unit="batch", disable=rank != 0):
            xb = x[b * per_batch:(b + 1) * per_batch]
            yb = y[b * per_batch:(b + 1) * per_batch]
            done[b] = _certify_batch(smoothed, counting, xb, yb, args, args.seed * 1_000_003 + first_batch + b, cache_dir, fingerprint,
                                     domain.pixel_range)
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, done)
            done = {k: v for part in gathered for k, v in part.items()}
        labels = [lab for b in batches for lab in done[b]["label"]]
        results[f"{sigma:g}"] = {
            **summarise(labels, [r for b in batches for r in done[b]["radius"]], y.tolist(),
                        {f"{r:g}": [p for b in batches for p in done[b]["attacked"][f"{r:g}"]] for r in args.attack_radii},
                        args.radii),
            "seconds_per_image": sum(float(done[b]["seconds"]) for b in batches) / len(labels),
            "attack_seconds_per_image": sum(float(done[b]["attack_seconds"]) for b in batches) / len(labels),
        }
    if rank != 0:
        dist.barrier()
        return None
    record = {
        "command": " ".join(["python -m eval.certify", *(sys.argv[1:] if argv_list is None else argv_list)]),
        "classifier": args.classifier, "denoiser": args.denoiser,
        **({"encoder": args.encoder} if args.encoder != "encoder" and args.denoiser in ENCODER_DENOISERS else {}),
        **({"head": args.head} if args.head else {}),
        "dataset": domain.name, "num_images": len(x), **({"start": args.start} if args.start else {}),
        "n0": args.n0, "n": args.n, "alpha": args.alpha, "seed": args.seed, "radii": list(args.radii),
        "attack": {"name": "SmoothAdv (Salman et al. 2019)", "radii": list(args.attack_radii),
                   "steps": args.attack_steps, "samples": args.attack_samples, "predict_n": args.attack_n},
        "world_size": world, "threads": torch.get_num_threads(), "seconds": round(time.monotonic() - start, 1),
        "device": args.device,
        **({"device_name": torch.cuda.get_device_name(torch.device(args.device))} if args.device.startswith("cuda") else {}),
        "settings": _settings(args), "results": results,
    }
    if args.extend:
        record["extends"] = {"report": args.extend, "images": kept}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "certify.json").write_text(json.dumps(record, indent=2) + "\n")
    header = "| sigma | " + " | ".join(f"r = {r:g}" for r in [0.0, *args.radii]) + " | ACR | abstain | s / image |"
    lines = [f"Command: `{record['command']}`", "",
             f"Certified accuracy (Cohen et al. CERTIFY, n0 = {args.n0}, n = {args.n}, alpha = {args.alpha:g}) of "
             f"{base_label(record)} on the "
             f"{_which_images(args.start, len(x))} {domain.title} test images; r = 0 is the smoothed classifier's clean accuracy.", "",
             header, "|" + "---|" * (len(args.radii) + 5)]
    for sigma, res in results.items():
        cells = " | ".join(f"{100 * v:.1f}%" for v in res["certified_accuracy"].values())
        lines.append(f"| {sigma} | {cells} | {res['average_certified_radius']:.3f} | {100 * res['abstain_rate']:.1f}% | "
                     f"{res['seconds_per_image']:.2f} |")
    lines += ["", f"The sandwich: certified accuracy (a lower bound) beside the accuracy of the smoothed classifier's PREDICT "
              f"(n = {args.attack_n}) on SmoothAdv adversarials ({args.attack_steps} steps, {args.attack_samples} draws "
              f"per step; an upper bound). Soundness: of the examples certified correct at >= r, how many kept their "
              f"label under the attack at r (held / abstained / changed; changed must be about alpha or less).", "",
              "| sigma | L2 radius | certified | empirical (SmoothAdv) | soundness tried | held | abstained | changed |",
              "|---|---|---|---|---|---|---|---|"]
    for sigma, res in results.items():
        for r, emp in res["empirical_accuracy"].items():
            cert = certified_accuracy(res["per_example"]["correct"], res["per_example"]["radius"], float(r))
            sound = res["soundness"][r]
            lines.append(f"| {sigma} | {r} | {100 * cert:.1f}% | {100 * emp:.1f}% | {sound['tried']} | {sound['held']} | "
                         f"{sound['abstained']} | {sound['changed']} |")
    (out / "certify.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return record


if __name__ == "__main__":
    run(main)
