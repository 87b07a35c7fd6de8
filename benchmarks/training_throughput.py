"""Training and sampling throughput: what the generated-data pipeline costs per device.

    python -m benchmarks.training_throughput                 # CPU
    python -m benchmarks.training_throughput --device cuda   # on a GPU
    python -m benchmarks.training_throughput --quick         # smoke sizes

Three measurements, each after warm-up iterations, wall-clock with the device synchronised:

* **DDPM training**: iterations/s of the class-conditional noise predictor (width 16 and 32, the
  simple loss, Adam) at ``--ddpm-batch``;
* **DDPM sampling**: labelled images/s of ``DDPM.sample`` with classifier-free guidance in
  ``--sample-steps`` DDIM steps (both guidance terms in one batched forward);
* **adversarial training**: samples/s of PGD-10 adversarial training (the attack's 10 forward +
  backward passes and the training step) and ms per plain forward + backward, per classifier
  architecture.

Writes ``benchmarks/results/training_throughput_{device}.json``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from attacks import LinfPGD
from manifold_defense.models import DDPM, build
from manifold_defense.utils import ToolParser, integer, run

from .record import write_record


def build_parser() -> argparse.ArgumentParser:
    """This benchmark's command line."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ddpm-batch", type=integer(1), default=256)
    parser.add_argument("--sample-batch", type=integer(1), default=1000)
    parser.add_argument("--sample-steps", type=integer(1), default=25)
    parser.add_argument("--at-batch", type=integer(1), default=128)
    parser.add_argument("--iters", type=integer(1), default=20, help="timed iterations of each measurement")
    parser.add_argument("--threads", type=integer(0), default=0, help="> 0: torch.set_num_threads")
    parser.add_argument("--out", default=None, help="default benchmarks/results/training_throughput_{device}.json")
    parser.add_argument("--quick", action="store_true", help="tiny batches, 2 iterations")
    return parser


def _timed(step: Callable[[], Any], iters: int, device: torch.device, warmup: int = 2) -> float:
    """Seconds per call of ``step`` (after ``warmup`` calls), the device synchronised around the timing."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / iters


def ddpm_training(width: int, batch: int, iters: int, device: torch.device) -> dict[str, float]:
    """Iterations/s of conditional DDPM training at ``width`` and ``batch``."""
    model = DDPM(width=width, num_classes=10).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 11, (batch,), device=device)

    def step() -> None:
        loss = model.loss(x, torch.randint(1, 1001, (batch,), device=device), torch.randn_like(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = _timed(step, iters, device)
    return {"width": width, "batch": batch, "iterations_per_second": round(1 / seconds, 2),
            "parameters": sum(p.numel() for p in model.parameters())}


def ddpm_sampling(batch: int, steps: int, iters: int, device: torch.device) -> dict[str, float]:
    """Guided samples/s of a width-16 conditional DDPM."""
    model = DDPM(width=16, num_classes=10).to(device).eval()
    labels = torch.arange(batch) % 10
    seconds = _timed(lambda: model.sample(labels, steps=steps, guidance=2.0), max(1, iters // 4), device, warmup=1)
    return {"width": 16, "batch": batch, "steps": steps, "images_per_second": round(batch / seconds, 1)}


def adversarial_training(architecture: str, batch: int, iters: int, device: torch.device) -> dict[str, float]:
    """PGD-10 adversarial-training samples/s and plain forward + backward ms of ``architecture``."""
    model = build(architecture).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    attack = LinfPGD(eps=0.1, steps=10, rel_stepsize=0.25, seed=0)

    def plain() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def adversarial() -> None:
        model.eval()
        x_adv = attack(model, x, y).adversarial
        model.train()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x_adv), y).backward()
        opt.step()

    ms = 1000 * _timed(plain, iters, device)
    seconds = _timed(adversarial, max(1, iters // 2), device)
    return {"architecture": architecture, "batch": batch, "ms_per_forward_backward": round(ms, 3),
            "pgd10_at_samples_per_second": round(batch / seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.ddpm_batch, args.sample_batch, args.sample_steps, args.at_batch, args.iters = 8, 8, 3, 8, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    record: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.training_throughput", *(sys.argv[1:] if argv is None else argv)]),
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "ddpm_training": [ddpm_training(w, args.ddpm_batch, args.iters, device) for w in ((16,) if args.quick else (16, 32))],
        "ddpm_sampling": ddpm_sampling(args.sample_batch, args.sample_steps, args.iters, device),
        "adversarial_training": [adversarial_training(a, args.at_batch, args.iters, device)
                                 for a in ("lenet_small", "lenet_wide", "model_a", "resnet_small")],
    }
    write_record(record, args.out or f"benchmarks/results/training_throughput_{device.type}.json")
    return record


if __name__ == "__main__":
    run(main)
