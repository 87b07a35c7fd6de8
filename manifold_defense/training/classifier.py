"""Train an image classifier (``model_a`` or ``mlp``) on an MNIST-format data set.

    python -m manifold_defense.training.classifier --out manifold_defense/weights/fashion_mnist/classifier
    python -m manifold_defense.training.classifier --quick

Writes ``OUT.safetensors`` + ``OUT.json`` (config and measured test accuracy in the JSON).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..models.checkpoint import save_model
from ..domains.registry import resolve_domain
from ..models import build
from .cli import config_parser, device_facts, parse_config, resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class ClassifierConfig:
    """Supervised training configuration."""

    BOUNDS: ClassVar[dict[str, tuple[Any, Any, bool]]] = {  # numeric fields not named here: >= 0
        "epochs": (1, None, False), "batch_size": (1, None, False), "lr": (0.0, None, True)}

    domain: str = "fashion_mnist"  # a registered domain, or the name of the one --data-dir holds
    data_dir: str = ""  # empty: the domain's own files; else an IDX directory, .npz or ImageFolder tree
    out: str = "runs/classifier"
    architecture: str = "model_a"
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    train_limit: int = 0  # > 0: use only the first N training images
    noise_sigma: float = 0.0  # > 0: train on x + N(0, sigma^2) (Cohen et al. 2019's base models for smoothing)
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def quick(self) -> dict[str, Any]:
        return {"epochs": 1, "train_limit": 512, "out": "runs/classifier_quick"}


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on (x, y), in [0, 1]."""
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum()) for i in range(0, len(x), batch_size))
    return correct / len(x)


def train(config: ClassifierConfig) -> nn.Module:
    """Train, evaluate on the test split, save; returns the model in eval mode."""
    gen = seed_everything(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    domain = resolve_domain(config.domain, config.data_dir)
    x, y = domain.load("train", limit=config.train_limit or None)
    x_test, y_test = domain.load("test")
    x, y, x_test, y_test = x.to(device), y.to(device), x_test.to(device), y_test.to(device)
    channels, size = domain.image_shape[0], domain.image_shape[-1]
    model = build(config.architecture, in_channels=channels, image_size=size, num_classes=domain.num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start = time.monotonic()
    curve: list[dict[str, float]] = []
    for epoch in range(config.epochs):
        model.train()
        losses = []
        order = torch.randperm(len(x), generator=gen).to(device)
        bar = tqdm(range(0, len(x), config.batch_size), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
        for i in bar:
            idx = order[i:i + config.batch_size]
            inputs = x[idx]
            if config.noise_sigma > 0:  # Gaussian augmentation, no clipping (as the reference code)
                inputs = inputs + config.noise_sigma * torch.randn(inputs.shape, generator=gen).to(device)
            loss = F.cross_entropy(model(inputs), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        curve.append({"epoch": epoch + 1, "train_loss": round(sum(losses) / len(losses), 4),
                      "test_accuracy": accuracy(model, x_test, y_test), "seconds": round(time.monotonic() - start, 1)})
    test_acc = curve[-1]["test_accuracy"] if curve else accuracy(model, x_test, y_test)
    log.info("test accuracy %.4f", test_acc)
    save_model(model, config.out, metadata={
        "trained_by": "manifold_defense.training.classifier",
        "config": dataclasses.asdict(config),
        "test_accuracy": test_acc,
        "learning_curve": curve,
        "train_seconds": round(time.monotonic() - start, 1),
        **device_facts(device),
    })
    return model


def build_parser() -> argparse.ArgumentParser:
    """This script's command line: one flag per field of :class:`ClassifierConfig` (range-checked)."""
    return config_parser(ClassifierConfig)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(ClassifierConfig, argv)
    train(config)
    print(f"saved {config.out}.safetensors and {config.out}.json")


if __name__ == "__main__":
    from ..utils.cli import run

    run(main)
