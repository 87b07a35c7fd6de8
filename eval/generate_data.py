"""Generate labelled training data from a generative model, in shards, and measure how good it is.

    python -m eval.generate_data --generator ddpm_cfg --n 100000 --out data/generated/ddpm_cfg
    python -m eval.generate_data --generator generator --labeler classifier --n 100000 --out data/generated/wgan
    torchrun --nproc_per_node 2 -m eval.generate_data --generator ddpm_cfg --num-samples 100000 --out data/generated/ddpm_cfg
    python -m eval.generate_data --quick --out runs/generated_quick

Two kinds of generator (a shipped name or a checkpoint path):

* a **class-conditional DDPM** (``num_classes > 0``): labels are balanced (sample i of the set has
  class i mod classes) and each image is sampled for its label with classifier-free guidance
  (``--guidance``) in ``--steps`` DDIM steps (Gowal et al. 2021; Wang et al. 2023);
* an **unconditional generator** (the WGAN-GP generator, or an unconditional DDPM trained on every
  timestep): images are labelled by ``--labeler``, the best standard classifier (pseudo-labels,
  Sehwag et al. 2022's cheap alternative).

Shard i holds samples i * shard_size ... and is drawn from its own seed (``--seed``, i), so a set is
the same whatever the number of processes and however often it was resumed: a rerun of the same
command skips every complete shard, and under torchrun rank r writes shards r, r + world, ...
``--max-minutes`` stops after the shard in progress.

When every shard is there, rank 0 writes ``OUT/generated.json``: the command, seconds and samples per
second of this run, and the quality of the first ``--quality-n`` samples against the test set in the
labeler's penultimate features (the Frechet distance of :mod:`eval.ambient_quality`), the class
histogram, and how often the labeler agrees with the conditioning label (conditional generators).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from manifold_defense.domains import get_domain, load_generated, save_shard, shard_complete, shard_path
from manifold_defense.models import DDPM
from manifold_defense.pretrained import load_named
from manifold_defense.utils import ToolParser, integer, real, run

from .report.generative import frechet_distance, penultimate_features

__all__ = ["build_parser", "main", "sample_shard"]


def build_parser() -> argparse.ArgumentParser:
    """This command's line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", default="ddpm_cfg", help="a shipped name or a checkpoint path (DDPM or GAN generator)")
    parser.add_argument("--labeler", default="classifier", help="the standard classifier that labels and judges samples")
    parser.add_argument("--num-samples", "--n", dest="n", type=integer(1), default=100_000,
                        help="samples in the set (under torchrun write --num-samples: torchrun takes --n for its own)")
    parser.add_argument("--shard-size", type=integer(1), default=10_000, help="samples per shard file")
    parser.add_argument("--batch-size", type=integer(1), default=1000, help="samples generated at once")
    parser.add_argument("--steps", type=integer(1), default=25, help="DDIM steps of a DDPM")
    parser.add_argument("--guidance", type=real(0.0), default=2.0, help="classifier-free guidance scale (conditional DDPM)")
    parser.add_argument("--quality-n", type=integer(0), default=10_000, help="samples measured against the test set (0: none)")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--domain", default="fashion_mnist")
    parser.add_argument("--max-minutes", type=real(0.0), default=0.0, help="> 0: stop after the shard in progress")
    parser.add_argument("--out", default="data/generated/ddpm_cfg", help="the folder of shards and generated.json")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: a tiny conditional DDPM, 40 samples")
    return parser


@torch.no_grad()
def sample_shard(generator: nn.Module, labeler: nn.Module, index: int, size: int, *, first: int, seed: int, steps: int,
                 guidance: float, batch_size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shard ``index`` (``size`` samples, the first being sample ``first`` of the set): (images,
    labels), drawn from its own CPU seed.

    A conditional DDPM gets balanced labels (sample j of the set: class j mod ``num_classes``); any
    other generator's samples are labelled by ``labeler``.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
    device = next(labeler.parameters()).device
    conditional = isinstance(generator, DDPM) and generator.num_classes > 0
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for start in range(0, size, batch_size):
        count = min(batch_size, size - start)
        y = torch.zeros(0, dtype=torch.long)
        if isinstance(generator, DDPM) and generator.num_classes > 0:
            y = (torch.arange(count) + first + start) % num_classes
            x = generator.sample(y, steps=steps, guidance=guidance, generator=gen)
        elif isinstance(generator, DDPM):
            x = generator.sample(n=count, steps=steps, generator=gen)
        else:
            z = torch.randn(count, int(getattr(generator, "latent_dim")), generator=gen).to(device)
            x = generator(z)
        images.append(x.cpu())
        labels.append(y if conditional else labeler(x.to(device)).argmax(1).cpu())
    return torch.cat(images), torch.cat(labels)


def _quick_generator() -> nn.Module:
    torch.manual_seed(0)
    return DDPM(width=4, timesteps=20, num_classes=10).eval()


def _quality(root: Path, labeler: nn.Module, domain_name: str, n: int, num_classes: int, conditional: bool) -> dict[str, Any]:
    x, y = load_generated(root, limit=n)
    x_test, _ = get_domain(domain_name).load("test", limit=max(len(x), 2))
    device = next(labeler.parameters()).device
    with torch.no_grad():
        gen_features, probs = penultimate_features(labeler, x.to(device))
        test_features, _ = penultimate_features(labeler, x_test.to(device))
    predicted = probs.argmax(1)
    record: dict[str, Any] = {
        "quality_n": len(x),
        "frechet_distance_classifier_features": round(frechet_distance(gen_features, test_features), 3),
        "class_histogram": np.bincount(y.numpy(), minlength=num_classes).tolist(),
    }
    if conditional:
        record["labeler_agreement"] = round(float((predicted == y.numpy()).mean()), 4)
    return record


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Generate (or resume) the set, then measure it; returns the record on rank 0 once every shard is there."""
    args = build_parser().parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.n, args.shard_size, args.batch_size, args.steps, args.quality_n = 40, 20, 20, 3, 40
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=1))
    rank = dist.get_rank() if dist.is_initialized() else 0
    domain = get_domain(args.domain)
    out = Path(args.out)
    device = torch.device(args.device)
    generator = (_quick_generator() if args.quick else load_named(args.generator, domain)).to(device).eval()
    labeler = load_named(args.labeler, domain).to(device).eval()
    for module in (generator, labeler):
        for p in module.parameters():
            p.requires_grad_(False)
    conditional = isinstance(generator, DDPM) and generator.num_classes > 0
    if not conditional and not isinstance(generator, DDPM) and not isinstance(getattr(generator, "latent_dim", None), int):
        raise ValueError(f"--generator {args.generator!r} is neither a DDPM nor a generator with an integer latent_dim")
    shards = (args.n + args.shard_size - 1) // args.shard_size
    mine = [i for i in range(shards) if i % world == rank]
    size_of = {i: min(args.shard_size, args.n - i * args.shard_size) for i in range(shards)}
    todo = [i for i in mine if not shard_complete(shard_path(out, i), size_of[i])]
    start, made = time.monotonic(), 0
    for i in tqdm(todo, desc=f"shards (rank {rank})", unit="shard", disable=not todo):
        x, y = sample_shard(generator, labeler, i, size_of[i], first=i * args.shard_size, seed=args.seed, steps=args.steps,
                               guidance=args.guidance, batch_size=args.batch_size, num_classes=domain.num_classes)
        save_shard(shard_path(out, i), x, y, seed=args.seed, pixel_range=domain.pixel_range)
        made += size_of[i]
        if args.max_minutes > 0 and time.monotonic() - start > 60 * args.max_minutes:
            break
    seconds = time.monotonic() - start
    if dist.is_initialized():
        counts = torch.tensor([made, seconds], dtype=torch.float64)
        dist.all_reduce(counts)  # samples of every rank; seconds summed, so divided by world below
        made, seconds = int(counts[0]), float(counts[1]) / world
    missing = [i for i in range(shards) if not shard_complete(shard_path(out, i), size_of[i])]
    if rank != 0:
        return None
    if missing:
        print(f"{len(missing)} of {shards} shards still to generate: rerun the same command to resume")
        return None
    record: dict[str, Any] = {
        "command": " ".join(["python -m eval.generate_data", *argv_list]),
        "generator": "quick tiny DDPM" if args.quick else args.generator, "labeler": args.labeler,
        "conditional": conditional, "n": args.n, "shards": shards, "shard_size": args.shard_size,
        "steps": args.steps, "guidance": args.guidance if conditional else None, "seed": args.seed,
        "device": str(device), "world_size": world, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "seconds_this_run": round(seconds, 1), "samples_this_run": made,
        "samples_per_second": round(made / seconds, 1) if made and seconds > 0 else None,
    }
    if args.quality_n:
        record.update(_quality(out, labeler, args.domain, args.quality_n, domain.num_classes, conditional))
    (out / "generated.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "class_histogram"}))
    return record


if __name__ == "__main__":
    run(main)
