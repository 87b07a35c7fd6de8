"""Train an image classifier (``model_a``, ``lenet_small``, ``resnet_small``, ``mlp``) on an MNIST-format data set.

    python -m manifold_defense.training.classifier --out manifold_defense/weights/fashion_mnist/classifier
    python -m manifold_defense.training.classifier --quick

Base classifiers for randomized smoothing (Cohen et al. 2019) train on x + sigma e (``--noise-sigma``);
``--consistency-weight`` adds consistency regularisation over ``--consistency-copies`` noisy copies
(Jeong & Shin 2020: lambda * mean KL(p_mean || p_i) + ``--consistency-entropy`` * H(p_mean));
``--denoiser amortised|diffusion`` trains on denoised noisy images D(x + sigma e) instead (the
classifier adapted to a generative denoiser, the cheap variant of Salman et al. 2020's denoised
smoothing), usually from ``--init`` an existing classifier; ``--smoothadv-eps`` trains on SmoothAdv's
adversarial noisy images instead of the clean noisy ones (Salman et al. 2019: ``--smoothadv-steps`` PGD
steps on the smoothed soft classifier under the batch's own noise draws, eps warmed up over
``--smoothadv-warmup`` epochs; with the consistency term its copies are the draws, else one draw):

    python -m manifold_defense.training.classifier --architecture lenet_small --noise-sigma 0.5 \
        --consistency-weight 10 --epochs 30 --out runs/lenet_consistency_0.5
    python -m manifold_defense.training.classifier --architecture lenet_small --noise-sigma 0.5 \
        --smoothadv-eps 1.0 --epochs 30 --out runs/lenet_smoothadv_0.5
    python -m manifold_defense.training.classifier --architecture lenet_small --init classifier_lenet \
        --denoiser diffusion --noise-sigma 0.5 --epochs 5 --out runs/lenet_on_ddpm_0.5

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

from ..domains.registry import resolve_domain
from ..models import build
from ..models.checkpoint import save_model
from ..pretrained import load_ddpm, load_named
from ..purify import OneShotDenoiser
from .cli import command_line, config_parser, device_facts, parse_config, resolve_device, seed_everything
from .smooth_adv import smoothadv_inputs, warmup_eps

log = logging.getLogger(__name__)


@dataclass
class ClassifierConfig:
    """Supervised training configuration."""

    BOUNDS: ClassVar[dict[str, tuple[Any, Any, bool]]] = {  # numeric fields not named here: >= 0
        "epochs": (1, None, False), "batch_size": (1, None, False), "lr": (0.0, None, True),
        "consistency_copies": (2, None, False), "smoothadv_steps": (1, None, False)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"denoiser": ("none", "amortised", "diffusion")}

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
    consistency_weight: float = 0.0  # > 0: Jeong & Shin 2020's consistency term over noisy copies (needs noise_sigma)
    consistency_copies: int = 2  # noisy copies of each image for the consistency term
    consistency_entropy: float = 0.5  # weight of the entropy of the copies' mean prediction
    smoothadv_eps: float = 0.0  # > 0: SmoothAdv training at this L2 radius (Salman et al. 2019; needs noise_sigma)
    smoothadv_steps: int = 2  # T, PGD steps of the SmoothAdv attack (step 2 eps / T)
    smoothadv_warmup: int = 10  # epochs over which eps grows linearly to smoothadv_eps (0: none)
    denoiser: str = "none"  # none | amortised (G(E(x)) of --encoder) | diffusion (the DDPM --ddpm in one shot)
    encoder: str = "encoder"  # the encoder of the amortised denoiser (a shipped name or a checkpoint path)
    ddpm: str = "ddpm"  # the DDPM of the diffusion denoiser
    init: str = ""  # empty: a fresh classifier; else a shipped name or checkpoint path to fine-tune
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


class _AmortisedDenoiser(nn.Module):
    """G(E(clip(x))): the generator's amortised projection as a Gaussian denoiser (frozen)."""

    def __init__(self, generator: nn.Module, encoder: nn.Module, pixel_range: tuple[float, float]) -> None:
        super().__init__()
        self.generator, self.encoder, self.pixel_range = generator, encoder, pixel_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(self.encoder(x.clamp(*self.pixel_range)))


def consistency_loss(logits: torch.Tensor, y: torch.Tensor, weight: float, entropy: float) -> torch.Tensor:
    """Jeong & Shin 2020's objective on m noisy copies: mean CE + weight * mean_i KL(p_mean || p_i)
    + entropy * H(p_mean).

    Shape:
        logits (m, N, K), y (N,) -> scalar.

    Example:
        >>> z = torch.zeros(2, 3, 4)
        >>> round(float(consistency_loss(z, torch.zeros(3, dtype=torch.long), 10.0, 0.0)), 4)  # log 4, no KL
        1.3863
    """
    m, n, k = logits.shape
    log_p = F.log_softmax(logits, -1)
    ce = F.nll_loss(log_p.reshape(m * n, k), y.repeat(m))
    p_mean = log_p.exp().mean(0)
    log_mean = p_mean.clamp_min(1e-12).log()
    kl = (p_mean[None] * (log_mean[None] - log_p)).sum(-1).mean()
    ent = -(p_mean * log_mean).sum(-1).mean()
    return ce + weight * kl + entropy * ent


def _denoiser(config: ClassifierConfig, domain: Any, device: torch.device) -> nn.Module | None:
    """The frozen denoiser D that the classifier is trained behind (None: none)."""
    if config.denoiser == "none":
        return None
    if config.noise_sigma <= 0:
        raise ValueError(f"--denoiser {config.denoiser} denoises noisy images: set --noise-sigma > 0")
    module: nn.Module
    if config.denoiser == "diffusion":
        module = OneShotDenoiser(load_ddpm(config.ddpm, domain), config.noise_sigma)
    else:
        module = _AmortisedDenoiser(load_named("generator", domain), load_named(config.encoder, domain), domain.pixel_range)
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def train(config: ClassifierConfig, command: str | None = None) -> nn.Module:
    """Train, evaluate on the test split, save; returns the model in eval mode.

    Raises:
        ValueError: a consistency term, SmoothAdv or a denoiser without noise; SmoothAdv behind a denoiser.
    """
    gen = seed_everything(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    domain = resolve_domain(config.domain, config.data_dir)
    x, y = domain.load("train", limit=config.train_limit or None)
    x_test, y_test = domain.load("test")
    x, y, x_test, y_test = x.to(device), y.to(device), x_test.to(device), y_test.to(device)
    if config.consistency_weight > 0 and config.noise_sigma <= 0:
        raise ValueError("--consistency-weight compares noisy copies: set --noise-sigma > 0")
    if config.smoothadv_eps > 0 and config.noise_sigma <= 0:
        raise ValueError("--smoothadv-eps attacks the smoothed classifier: set --noise-sigma > 0")
    if config.smoothadv_eps > 0 and config.denoiser != "none":
        raise ValueError("--smoothadv-eps trains the classifier itself: use it with --denoiser none")
    denoiser = _denoiser(config, domain, device)
    channels, size = domain.image_shape[0], domain.image_shape[-1]
    model = (load_named(config.init, domain, map_location=device).float() if config.init else
             build(config.architecture, in_channels=channels, image_size=size, num_classes=domain.num_classes)).to(device)
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
            copies = config.consistency_copies if config.consistency_weight > 0 else 1
            inputs = x[idx].repeat(copies, 1, 1, 1)
            if config.noise_sigma > 0:  # Gaussian augmentation, no clipping (as the reference code)
                noise = config.noise_sigma * torch.randn(inputs.shape, generator=gen).to(device)
                if config.smoothadv_eps > 0:
                    eps = warmup_eps(config.smoothadv_eps, epoch, config.smoothadv_warmup)
                    adv = smoothadv_inputs(model, x[idx], y[idx], noise.view(copies, *x[idx].shape), eps=eps,
                                           steps=config.smoothadv_steps, bounds=domain.pixel_range)
                    inputs = adv.repeat(copies, 1, 1, 1)
                inputs = inputs + noise
            if denoiser is not None:
                with torch.no_grad():
                    inputs = denoiser(inputs)
            logits = model(inputs)
            if copies > 1:
                loss = consistency_loss(logits.view(copies, len(idx), -1), y[idx], config.consistency_weight,
                                        config.consistency_entropy)
            else:
                loss = F.cross_entropy(logits, y[idx])
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
        **({"command": command} if command else {}),
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
    train(config, command_line("manifold_defense.training.classifier", argv))
    print(f"saved {config.out}.safetensors and {config.out}.json")


if __name__ == "__main__":
    from ..utils.cli import run

    run(main)
