"""Robust training on the manifold: harden a classifier on G(z) (Ilyas et al. 2017, "The Robust
Manifold Defense"), optionally with ordinary PGD adversarial training (Madry et al. 2018).

Each step's loss is a weighted sum of
  * clean:       CE(C(x), y) on data;
  * projection:  CE(C(G(z_x)), y), z_x the projection of x (amortised: the encoder's E(x) refined by
                 a few projection steps, so that the classifier sees what the defense will feed it);
  * on-manifold: CE(C(G(z')), y) for z' found by the on-manifold attack within ||G(z') - G(z_x)|| <= eta;
  * pgd:         CE(C(x_pgd), y) for Linf PGD examples (weight 0 turns it off).

    python -m manifold_defense.training.robust --out manifold_defense/weights/fashion_mnist/classifier_robust
    python -m manifold_defense.training.robust --pgd-weight 1 --manifold-weight 0 --projection-weight 0 \
        --out manifold_defense/weights/fashion_mnist/classifier_pgd          # plain Madry PGD training
    torchrun --nproc_per_node 2 -m manifold_defense.training.robust --quick  # data-parallel (DDP)

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
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..checkpoint import load_model, save_model
from ..data import load_idx_split
from ..models import build
from ..projection import ProjectionConfig, project
from .cli import parse_config, resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class RobustConfig:
    """Robust (on-manifold and/or PGD) training configuration."""

    generator: str = "manifold_defense/weights/fashion_mnist/generator"
    encoder: str = "manifold_defense/weights/fashion_mnist/encoder"  # empty: random restarts only
    init: str = "manifold_defense/weights/fashion_mnist/classifier"  # empty: train from scratch
    architecture: str = "model_a"
    data_dir: str = ""
    out: str = "runs/classifier_robust"
    iterations: int = 1500
    batch_size: int = 64
    lr: float = 5e-4
    clean_weight: float = 1.0
    projection_weight: float = 1.0
    manifold_weight: float = 1.0
    pgd_weight: float = 0.0
    eta: float = 2.0  # L2 bound of the on-manifold pairs
    manifold_steps: int = 10
    projection_steps: int = 10
    pgd_eps: float = 0.1
    pgd_steps: int = 7
    train_limit: int = 0
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def quick(self) -> dict[str, Any]:
        return {"iterations": 4, "batch_size": 8, "manifold_steps": 2, "projection_steps": 2, "pgd_steps": 2,
                "train_limit": 256, "out": "runs/classifier_robust_quick"}


def _on_manifold_pairs(C: nn.Module, G: nn.Module, z: torch.Tensor, y: torch.Tensor, eta: float, steps: int,
                       gen: torch.Generator) -> torch.Tensor:
    """z' with ||G(z') - G(z)|| <= eta maximising CE(C(G(z')), y) (the standard on-manifold attack, label-aware)."""
    from attacks.on_manifold import OnManifoldAttack  # the attack package; imported lazily (library -> attacks)

    del y  # the attack moves away from C's own label at G(z), which for data z is (mostly) y
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    return OnManifoldAttack(eta=eta, steps=steps, variant="standard", seed=seed)(C, G, z).z_prime


def _pgd(C: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    from attacks.pgd import LinfPGD

    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    return LinfPGD(eps=eps, steps=steps, rel_stepsize=2.5 / steps, seed=seed)(C, x, y).adversarial


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


def train(config: RobustConfig) -> nn.Module:
    """Run robust training (one process, or one DDP rank under torchrun); rank 0 saves the classifier."""
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
    G = load_model(config.generator, map_location=device) if on_manifold else None
    E = load_model(config.encoder, map_location=device) if on_manifold and config.encoder else None
    for module in (G, E):
        for p in (module.parameters() if module is not None else []):
            p.requires_grad_(False)  # our own loaded copies: frozen
    x_all, y_all = load_idx_split("train", config.data_dir or None, limit=config.train_limit or None)
    x_all, y_all = x_all.to(device), y_all.to(device)
    C = load_model(config.init, map_location=device) if config.init else build(config.architecture)
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
            if config.manifold_weight > 0:
                C.eval()
                z_adv = _on_manifold_pairs(C, G, z, y, config.eta, config.manifold_steps, gen)
                C.train()
                with torch.no_grad():
                    x_adv = G(z_adv)
                losses["manifold"] = config.manifold_weight * F.cross_entropy(model(x_adv), y)
        if config.pgd_weight > 0:
            C.eval()
            x_pgd = _pgd(C, x, y, config.pgd_eps, config.pgd_steps, gen)
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

        x_test, y_test = load_idx_split("test", config.data_dir or None, limit=2000)
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


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(RobustConfig, argv)
    train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"saved {config.out}.safetensors and {config.out}.json")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
