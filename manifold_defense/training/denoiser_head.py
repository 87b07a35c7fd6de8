"""Train a residual head on the DDPM's one-shot denoiser for the classifier that reads its output.

Issue #46 (b) for the DDPM: Salman et al. 2020 ("Denoised Smoothing", microsoft/denoised-smoothing)
train the denoiser with the classification objective through a fixed classifier. Here the DDPM stays
frozen and a small :class:`~manifold_defense.models.ResidualHead` h learns a correction of its
estimate, D'(x + sigma e) = D(x + sigma e) + h([D(x + sigma e), x + sigma e]), with the loss

    classification_weight * CE(C(D'(x + sigma e)), y)  +  mse_weight * ||D'(x + sigma e) - x||^2 / pixels

and C frozen (a private copy: the classifier passed in is never touched). The head starts at zero, so
iteration 0 is the plain DDPM denoiser. Every batch is drawn from a generator seeded by (seed,
iteration): a run stopped by ``--max-minutes`` and resumed with ``--resume true`` ends with the same
head as one that was never stopped. The held-out curve is C's accuracy behind D' on the last
``--val-size`` training images (never trained on), one fixed noise draw each.

    python -m manifold_defense.training.denoiser_head --classifier classifier_lenet --noise-sigma 1.0 \
        --iterations 2000 --threads 1 --out runs/ddpm_head_1.0
    python -m eval.certify --classifier classifier_lenet --denoiser diffusion --head runs/ddpm_head_1.0 --sigma 1.0 ...
    python -m manifold_defense.training.denoiser_head --quick
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
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..domains.registry import resolve_domain
from ..models import ResidualHead
from ..pretrained import load_ddpm, load_named
from ..purify import OneShotDenoiser, RefinedDenoiser
from .cli import command_line, config_parser, parse_config, resolve_device, seed_everything
from .state import budget_spent, has_state, load_state, outcome, save_final, save_state

log = logging.getLogger(__name__)

__all__ = ["HeadConfig", "train", "main"]


@dataclass
class HeadConfig:
    """Residual-head training configuration."""

    BOUNDS: ClassVar[dict[str, tuple[Any, Any, bool]]] = {  # numeric fields not named here: >= 0
        "noise_sigma": (0.0, None, True), "iterations": (1, None, False), "batch_size": (1, None, False),
        "lr": (0.0, None, True), "width": (1, None, False), "depth": (2, None, False), "eval_every": (1, None, False),
        "val_size": (1, None, False)}

    classifier: str = "classifier_lenet"  # the frozen classifier read after the denoiser
    ddpm: str = "ddpm"  # the DDPM of the one-shot denoiser
    noise_sigma: float = 1.0  # the smoothing noise level (pixel units) the head is trained for
    classification_weight: float = 1.0  # CE(C(D'(x + sigma e)), y) (Salman et al. 2020's classification objective)
    mse_weight: float = 0.0  # per-pixel MSE of D'(x + sigma e) against x (their MSE objective)
    width: int = 32
    depth: int = 3
    domain: str = "fashion_mnist"
    data_dir: str = ""  # empty: the domain's own files
    out: str = "runs/denoiser_head"
    iterations: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    train_limit: int = 0  # > 0: only the first N training images (the held-out ones included)
    val_size: int = 1000  # the last N of the training images: the held-out curve, never trained on
    eval_every: int = 250
    max_minutes: float = 0.0  # > 0: save the state and stop after this wall-clock budget (--resume continues)
    resume: bool = False  # continue from OUT.state.* if it exists
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def quick(self) -> dict[str, Any]:
        return {"iterations": 10, "batch_size": 16, "train_limit": 256, "val_size": 64, "eval_every": 5,
                "width": 8, "out": "runs/denoiser_head_quick"}


def _frozen(module: nn.Module, device: torch.device) -> nn.Module:
    """A private copy of ``module`` on ``device`` in eval mode with no trainable parameter."""
    own = copy.deepcopy(module).to(device).eval()
    for p in own.parameters():
        p.requires_grad_(False)
    return own


@torch.no_grad()
def held_out_accuracy(classifier: nn.Module, denoiser: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                      seed: int, batch_size: int = 500) -> float:
    """C's accuracy behind ``denoiser`` on (x + sigma e, y), e drawn from ``seed`` (the same every call)."""
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        noisy = xb + sigma * torch.randn(xb.shape, generator=gen).to(xb.device)
        correct += int((classifier(denoiser(noisy)).argmax(1) == y[i:i + batch_size]).sum())
    return correct / len(x)


def train(config: HeadConfig, classifier: nn.Module | None = None, command: str = "") -> ResidualHead | None:
    """Train and save the head; returns it (eval mode), or None when ``max_minutes`` stopped the run
    first (the head so far is still saved, marked ``stopped_by_budget``, and the state for ``resume``).

    Args:
        classifier: the frozen classifier as a module (default: load ``config.classifier``); it is
            copied, never modified.
        command: the command line, kept in the checkpoint's JSON.

    Raises:
        ValueError: no weight on either objective, fewer training images than ``val_size`` + 1, or a
            sigma beyond the DDPM's trained timesteps.
    """
    if config.classification_weight <= 0 and config.mse_weight <= 0:
        raise ValueError("set --classification-weight or --mse-weight > 0: the head has nothing to learn")
    seed_everything(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    domain = resolve_domain(config.domain, config.data_dir)
    x_all, y_all = domain.load("train", limit=config.train_limit or None)
    if len(x_all) <= config.val_size:
        raise ValueError(f"{len(x_all)} training images leave none to train on after --val-size {config.val_size}")
    x_all, y_all = x_all.to(device), y_all.to(device)
    x, y = x_all[:-config.val_size], y_all[:-config.val_size]
    x_val, y_val = x_all[-config.val_size:], y_all[-config.val_size:]
    C = _frozen(classifier if classifier is not None else load_named(config.classifier, domain), device)
    D = _frozen(OneShotDenoiser(load_ddpm(config.ddpm, domain), config.noise_sigma), device)
    head = ResidualHead(channels=domain.image_shape[0], width=config.width, depth=config.depth).to(device)
    refined = RefinedDenoiser(D, head)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done, curve, seconds0 = 0, [], 0.0
    if config.resume and has_state(out):
        saved = load_state(out, {"head": head}, {"opt": opt})
        done, curve, seconds0 = int(saved["step"]), list(saved["learning_curve"]), float(saved["train_seconds"])
        log.info("resumed at iteration %d", done)
    if not curve:  # iteration 0: the DDPM denoiser alone
        curve.append({"iteration": 0, "val_accuracy": held_out_accuracy(C, D, x_val, y_val, config.noise_sigma,
                                                                        config.seed + 1)})
    start = time.monotonic()

    def seconds() -> float:
        return round(seconds0 + time.monotonic() - start, 1)

    def checkpoint() -> None:
        save_state(out, {"head": head}, {"opt": opt}, {"step": done, "config": dataclasses.asdict(config),
                                                       "learning_curve": curve, "train_seconds": seconds()})

    losses: list[float] = []
    gen = torch.Generator()
    bar = tqdm(range(done, config.iterations), desc="denoiser head", unit="it", initial=done, total=config.iterations)
    for it in bar:
        gen.manual_seed(config.seed * 1_000_003 + it)  # batch and noise of iteration it, however the run was split
        idx = torch.randint(0, len(x), (config.batch_size,), generator=gen).to(device)
        clean = x[idx]
        noisy = clean + config.noise_sigma * torch.randn(clean.shape, generator=gen).to(device)
        head.train()
        with torch.no_grad():
            estimate = D(noisy)
        refined_x = estimate + head(estimate, noisy)
        loss = torch.zeros((), device=device)
        if config.classification_weight > 0:
            loss = loss + config.classification_weight * F.cross_entropy(C(refined_x), y[idx])
        if config.mse_weight > 0:
            loss = loss + config.mse_weight * F.mse_loss(refined_x, clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        done = it + 1
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if done % config.eval_every == 0 or done == config.iterations:
            head.eval()
            curve.append({"iteration": done, "train_loss": round(sum(losses) / len(losses), 4),
                          "val_accuracy": held_out_accuracy(C, refined, x_val, y_val, config.noise_sigma, config.seed + 1),
                          "seconds": seconds()})
            losses = []
            checkpoint()
        if budget_spent(start, config.max_minutes, done, config.iterations):
            checkpoint()
            break
    finished = save_final(head, config.out, trained_by="manifold_defense.training.denoiser_head", config=config,
                          done=done, total=config.iterations, curve=curve, seconds=seconds(), device=device,
                          command=command, denoiser={"ddpm": config.ddpm, "sigma": config.noise_sigma, "timestep": D.t})
    return head if finished else None


def build_parser() -> argparse.ArgumentParser:
    """This script's command line: one flag per field of :class:`HeadConfig` (range-checked)."""
    return config_parser(HeadConfig)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(HeadConfig, argv)
    print(outcome(config.out, train(config, command=command_line("manifold_defense.training.denoiser_head", argv))
                  is not None))


if __name__ == "__main__":
    from ..utils.cli import run

    run(main)
