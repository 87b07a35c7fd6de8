"""Train the small DDPM (Ho et al. 2020) behind the diffusion purifier, on an MNIST-format data set.

    python -m manifold_defense.training.ddpm --max-t 400 --out manifold_defense/weights/fashion_mnist/ddpm
    python -m manifold_defense.training.ddpm --quick --out runs/ddpm_quick
    python -m manifold_defense.training.ddpm --conditional true --width 32 --out runs/ddpm_cfg  # a generator

DDPM's simple loss (predict the noise of x_t = sqrt(a_t) x + sqrt(1 - a_t) e), timesteps drawn
uniformly from 1..max_t: a purifier diffuses only to small t* (DiffPure), so ``--max-t`` below T
spends the network's capacity where it is used (the checkpoint records it, and the purifier refuses
a t* beyond it). ``--conditional true`` trains a class-conditional noise predictor over all T
timesteps for generation, dropping each label with probability ``--cond-drop`` so that one network
also predicts the unconditional noise (classifier-free guidance, Ho & Salimans 2022); its held-out
curve is conditional on the true labels. The saved weights are an exponential moving average of the trained ones (DDPM's).
A held-out curve, the loss on the first 1000 test images at fixed timesteps and fixed noise, is
kept in the checkpoint JSON with the config and seconds. ``--max-minutes`` saves the state and stops;
``--resume true`` continues from it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from tqdm import tqdm

from ..domains.registry import resolve_domain
from ..models import DDPM
from .cli import command_line, config_parser, parse_config, resolve_device, seed_everything
from .state import budget_spent, has_state, load_state, outcome, save_final, save_state

log = logging.getLogger(__name__)

EVAL_T = (10, 50, 100, 200, 300, 500, 800)  # timesteps of the held-out curve (those <= max_t)


@dataclass
class DDPMConfig:
    """DDPM training configuration."""

    BOUNDS: ClassVar[dict[str, tuple[Any, Any, bool]]] = {  # numeric fields not named here: >= 0
        "width": (1, None, False), "timesteps": (1, None, False), "beta_start": (0.0, 1.0, True),
        "beta_end": (0.0, 1.0, True), "max_t": (0, None, False), "batch_size": (1, None, False),
        "iterations": (1, None, False), "lr": (0.0, None, True), "ema": (0.0, 1.0, False),
        "eval_every": (1, None, False), "cond_drop": (0.0, 1.0, False)}

    domain: str = "fashion_mnist"
    data_dir: str = ""  # empty: the domain's own files
    out: str = "runs/ddpm"
    width: int = 16
    timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    max_t: int = 0  # 0: all T timesteps; else train on 1..max_t only
    conditional: bool = False  # class-conditional with classifier-free guidance (a generator of labelled data)
    cond_drop: float = 0.1  # probability of training a sample with the "no label" token
    batch_size: int = 128
    iterations: int = 20000
    lr: float = 5e-4
    warmup: int = 200  # linear learning-rate warm-up iterations
    ema: float = 0.999
    eval_every: int = 500
    max_minutes: float = 0.0  # > 0: save the state and stop after this wall-clock budget
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # > 0: torch.set_num_threads

    def quick(self) -> dict[str, Any]:
        return {"iterations": 6, "width": 4, "batch_size": 8, "eval_every": 3, "out": "runs/ddpm_quick"}


@torch.no_grad()
def heldout_loss(model: DDPM, x: torch.Tensor, y: torch.Tensor | None = None, seed: int = 1234) -> dict[str, float]:
    """The simple loss at each timestep of :data:`EVAL_T` (up to ``model.max_t``) with fixed noise
    (conditional on the labels ``y`` when given)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    out = {}
    for t in EVAL_T:
        if t <= model.max_t:
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            out[f"loss_t{t}"] = round(float(model.loss(x, tt, noise, y)), 5)
    return out


def train(config: DDPMConfig, command: str | None = None) -> DDPM | None:
    """Train (or resume), keep the EMA weights, save ``OUT.safetensors`` + ``OUT.json``; returns the EMA
    model, or None when ``max_minutes`` stopped it first (the checkpoint is then the EMA so far, marked
    ``stopped_by_budget``, and the state is saved for ``resume``). ``command``, the command line that
    reproduces the run, goes into the JSON with the device.

    Raises:
        ValueError: max_t above timesteps, or a conditional model trained on t <= max_t < T.
    """
    gen = seed_everything(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    domain = resolve_domain(config.domain, config.data_dir)
    images, labels = domain.load("train")
    held, held_labels = domain.load("test", limit=1000)
    images, labels, held, held_labels = images.to(device), labels.to(device), held.to(device), held_labels.to(device)
    channels, size = domain.image_shape[0], domain.image_shape[-1]
    max_t = config.max_t or config.timesteps
    if max_t > config.timesteps:
        raise ValueError(f"max_t ({max_t}) cannot exceed timesteps ({config.timesteps})")
    if config.conditional and max_t < config.timesteps:
        raise ValueError(f"a conditional DDPM is a generator: train it on all timesteps (max_t {max_t} < {config.timesteps})")
    num_classes = domain.num_classes if config.conditional else 0
    model = DDPM(channels, size, config.width, config.timesteps, config.beta_start, config.beta_end, max_t,
                 domain.pixel_range, num_classes).to(device)
    held_y = held_labels if num_classes else None
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    step, curve, seconds0 = 0, [], 0.0
    if config.resume and has_state(out):
        saved = load_state(out, {"model": model, "ema": ema}, {"opt": opt})
        step, curve, seconds0 = int(saved["step"]), list(saved["learning_curve"]), float(saved["train_seconds"])
        gen.manual_seed(config.seed + step)  # a resumed run draws fresh batches from its own seed
        log.info("resumed at iteration %d", step)
    start = time.monotonic()

    def checkpoint() -> None:
        save_state(out, {"model": model, "ema": ema}, {"opt": opt},
                   {"step": step, "config": dataclasses.asdict(config), "learning_curve": curve,
                    "train_seconds": round(seconds0 + time.monotonic() - start, 1)})

    bar = tqdm(range(step, config.iterations), desc="ddpm", unit="it", initial=step, total=config.iterations)
    model.train()
    for it in bar:
        for group in opt.param_groups:
            group["lr"] = config.lr * min(1.0, (it + 1) / max(1, config.warmup))
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=gen).to(device)
        t = torch.randint(1, max_t + 1, (config.batch_size,), generator=gen).to(device)
        noise = torch.randn((config.batch_size, *images.shape[1:]), generator=gen).to(device)
        y = None
        if num_classes:
            drop = torch.rand(config.batch_size, generator=gen).to(device) < config.cond_drop
            y = torch.where(drop, torch.full_like(labels[idx], num_classes), labels[idx])
        loss = model.loss(images[idx], t, noise, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay = min(config.ema, (1 + it) / (10 + it))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        step = it + 1
        if it % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.eval_every == 0 or step == config.iterations:
            curve.append({"iteration": step, "train_loss": round(loss.item(), 5), **heldout_loss(ema, held, held_y),
                          "seconds": round(seconds0 + time.monotonic() - start, 1)})
            bar.write(f"iteration {step}: " + ", ".join(f"{k} {v}" for k, v in curve[-1].items() if k != "iteration"))
            checkpoint()
        if budget_spent(start, config.max_minutes, step, config.iterations):
            checkpoint()
            break
    finished = save_final(ema, out, trained_by="manifold_defense.training.ddpm", config=config, done=step,
                          total=config.iterations, curve=curve, seconds=seconds0 + time.monotonic() - start,
                          device=device, command=command)
    return ema if finished else None


def build_parser() -> argparse.ArgumentParser:
    """This script's command line: one flag per field of :class:`DDPMConfig` (range-checked)."""
    return config_parser(DDPMConfig)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(DDPMConfig, argv)
    print(outcome(config.out, train(config, command_line("manifold_defense.training.ddpm", argv)) is not None))


if __name__ == "__main__":
    from ..utils.cli import run

    run(main)
