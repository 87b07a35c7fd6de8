"""Robust training on the manifold: harden a classifier on G(z) (Ilyas et al. 2017, "The Robust
Manifold Defense"), optionally with ordinary PGD adversarial training (Madry et al. 2018).

Each step's loss is a weighted sum of
  * clean:       CE(C(x), y) on data;
  * projection:  CE(C(G(z_x)), y), z_x the projection of x (amortised: the encoder's E(x) refined by
                 a few projection steps, so that the classifier sees what the defense will feed it);
  * on-manifold: CE(C(G(z')), y) for z' found by the on-manifold attack within ||G(z') - G(z_x)|| <= eta;
  * pgd:         CE(C(x_pgd), y) for Linf PGD examples (weight 0 turns it off).

The loop needs two attacks (PGD examples, on-manifold pairs); it receives them as
:class:`Adversaries` and never imports the ``attacks`` package (the core depends on nothing above
it). The command-line script that builds them from ``attacks`` is ``eval.train_robust``:

    python -m eval.train_robust --out manifold_defense/weights/fashion_mnist/classifier_robust
    python -m eval.train_robust --pgd-weight 1 --manifold-weight 0 --projection-weight 0 \
        --out manifold_defense/weights/fashion_mnist/classifier_pgd          # plain Madry PGD training
    torchrun --nproc_per_node 2 -m eval.train_robust --quick                 # data-parallel (DDP)

Checkpoints are safetensors + JSON (the config is stored); ``--resume`` continues from the
``OUT.state`` files (weights, Adam moments, step, RNG seed schedule).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..checkpoint import load_model, save_model
from ..domains import resolve_domain, weights_path
from ..models import build
from ..projection import ProjectionConfig, project
from .cli import resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class RobustConfig:
    """Robust (on-manifold and/or PGD) training configuration."""

    domain: str = "fashion_mnist"
    generator: str = "shipped"  # a checkpoint path; "shipped": the domain's generator
    encoder: str = "shipped"  # a checkpoint path; "shipped": the domain's encoder; empty: random restarts only
    init: str = "shipped"  # a checkpoint path; "shipped": the domain's classifier; empty: train from scratch
    architecture: str = "model_a"
    data_dir: str = ""  # empty: the domain's own files
    out: str = "runs/classifier_robust"
    iterations: int = 1500
    batch_size: int = 64
    lr: float = 5e-4
    clean_weight: float = 1.0
    projection_weight: float = 1.0
    manifold_weight: float = 1.0
    pgd_weight: float = 0.0
    eta: float = -1.0  # L2 bound of the on-manifold pairs; < 0: the domain's budget
    manifold_steps: int = 10
    projection_steps: int = 10
    pgd_eps: float = -1.0  # < 0: the domain's Linf budget
    pgd_steps: int = 7
    train_limit: int = 0
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def quick(self) -> dict[str, Any]:
        return {"iterations": 4, "batch_size": 8, "manifold_steps": 2, "projection_steps": 2, "pgd_steps": 2,
                "train_limit": 256, "out": "runs/classifier_robust_quick"}


ExampleAttack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int, int], torch.Tensor]
"""(C, x, y, eps, steps, seed) -> adversarial images in the eps-ball around x."""
PairAttack = Callable[[nn.Module, nn.Module, torch.Tensor, float, int, int], torch.Tensor]
"""(C, G, z, eta, steps, seed) -> z' with ||G(z') - G(z)|| <= eta."""


@dataclass(frozen=True)
class Adversaries:
    """The attacks the loop trains against, given by the caller (``eval.train_robust`` builds them
    from the ``attacks`` package).

    Attributes:
        pgd: makes the PGD examples (needed when ``pgd_weight`` > 0).
        on_manifold: makes the on-manifold pairs (needed when ``manifold_weight`` > 0).
    """

    pgd: ExampleAttack | None = None
    on_manifold: PairAttack | None = None


def _seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, config: RobustConfig) -> None:
    """Weights + Adam moments as safetensors, step and config as JSON (no pickle)."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"opt.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    save_file(tensors, str(path.with_suffix(".state.safetensors")))
    path.with_suffix(".state.json").write_text(json.dumps({"step": step, "config": dataclasses.asdict(config)}, indent=2))


def _load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> int:
    tensors = load_file(str(path.with_suffix(".state.safetensors")))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = opt.state_dict()
    restored: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, key = k.split(".", 2)
            restored.setdefault(int(i), {})[key] = v
    state["state"] = restored
    opt.load_state_dict(state)
    return int(json.loads(path.with_suffix(".state.json").read_text())["step"])


def train(config: RobustConfig, adversaries: Adversaries | None = None) -> nn.Module:
    """Run robust training (one process, or one DDP rank under torchrun); rank 0 saves the classifier.

    Raises:
        ValueError: a loss weight that needs an attack ``adversaries`` does not provide.
    """
    adversaries = adversaries or Adversaries()
    if config.pgd_weight > 0 and adversaries.pgd is None:
        raise ValueError("pgd_weight > 0 needs Adversaries(pgd=...); eval.train_robust builds it")
    if config.manifold_weight > 0 and adversaries.on_manifold is None:
        raise ValueError("manifold_weight > 0 needs Adversaries(on_manifold=...); eval.train_robust builds it")
    domain = resolve_domain(config.domain, config.data_dir)
    eta = config.eta if config.eta >= 0 else domain.budgets.on_manifold_eta
    pgd_eps = config.pgd_eps if config.pgd_eps >= 0 else domain.budgets.linf_eps

    def checkpoint(path: str, name: str) -> str | Path:
        return weights_path(domain, name) if path == "shipped" else path

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    gen = seed_everything(config.seed + rank)  # each rank draws its own batches and attack seeds
    torch.manual_seed(config.seed)  # ... but every replica starts from the same weights
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    on_manifold = config.projection_weight > 0 or config.manifold_weight > 0
    G = load_model(checkpoint(config.generator, "generator"), map_location=device) if on_manifold else None
    E = load_model(checkpoint(config.encoder, "encoder"), map_location=device) if on_manifold and config.encoder else None
    for module in (G, E):
        for p in (module.parameters() if module is not None else []):
            p.requires_grad_(False)  # our own loaded copies: frozen
    x_all, y_all = domain.load("train", limit=config.train_limit or None)
    x_all, y_all = x_all.to(device), y_all.to(device)
    channels, size = domain.image_shape[0], domain.image_shape[-1]
    C = (load_model(checkpoint(config.init, "classifier"), map_location=device) if config.init
         else build(config.architecture, in_channels=channels, image_size=size, num_classes=domain.num_classes))
    C = C.to(device).train()
    model: nn.Module = nn.parallel.DistributedDataParallel(C) if world > 1 else C
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    step0 = _load_state(out, C, opt) if config.resume and out.with_suffix(".state.json").is_file() else 0
    proj_cfg = ProjectionConfig(restarts=1, steps=config.projection_steps, optimizer="adam", lr=0.05,
                                decay_at=(0.6,), lr_decay=0.3)
    start = time.monotonic()
    bar = tqdm(range(step0, config.iterations), desc="robust training", unit="it", disable=rank != 0)
    for it in bar:
        idx = torch.randint(0, len(x_all), (config.batch_size,), generator=gen).to(device)
        x, y = x_all[idx], y_all[idx]
        losses: dict[str, torch.Tensor] = {}
        if config.clean_weight > 0:
            losses["clean"] = config.clean_weight * F.cross_entropy(model(x), y)
        if G is not None:
            z = project(G, x, proj_cfg, encoder=E, rng=gen).z
            if config.projection_weight > 0:
                with torch.no_grad():
                    x_proj = G(z)
                losses["projection"] = config.projection_weight * F.cross_entropy(model(x_proj), y)
            if config.manifold_weight > 0 and adversaries.on_manifold is not None:
                C.eval()
                z_adv = adversaries.on_manifold(C, G, z, eta, config.manifold_steps, _seed(gen))
                C.train()
                with torch.no_grad():
                    x_adv = G(z_adv)
                losses["manifold"] = config.manifold_weight * F.cross_entropy(model(x_adv), y)
        if config.pgd_weight > 0 and adversaries.pgd is not None:
            C.eval()
            x_pgd = adversaries.pgd(C, x, y, pgd_eps, config.pgd_steps, _seed(gen))
            C.train()
            losses["pgd"] = config.pgd_weight * F.cross_entropy(model(x_pgd), y)
        loss = torch.stack(list(losses.values())).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if rank == 0 and it % 10 == 0:
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
        if rank == 0 and (it + 1) % 250 == 0:
            _save_state(out, C, opt, it + 1, config)
    C.eval()
    if rank == 0:
        from .classifier import accuracy

        x_test, y_test = domain.load("test", limit=2000)
        test_acc = accuracy(C, x_test.to(device), y_test.to(device))
        log.info("clean test accuracy (first 2000 test images) %.4f", test_acc)
        _save_state(out, C, opt, config.iterations, config)
        save_model(C, out, metadata={
            "trained_by": "manifold_defense.training.robust",
            "config": dataclasses.asdict(config),
            "world_size": world,
            "test_accuracy_first_2000": test_acc,
            "train_seconds": round(time.monotonic() - start, 1),
        })
    if world > 1:
        dist.barrier()
    return C
