"""Train an encoder E: x -> z that inverts a fixed generator (amortised warm start for projection).

Loss per batch (Invert-and-Defend / bidirectional inversion):
    ||E(G(z)) - z||^2 on generated samples  +  ||G(E(x)) - x||^2 (per-pixel MSE) on real images.

With ``--noise-sigma s`` the encoder sees clip(image + s * e), e ~ N(0, I), in both terms while the
targets stay clean: G(E(.)) becomes a Gaussian denoiser for randomized smoothing (Salman et al.
2020's MSE objective, with the generator fixed). ``--init`` starts from an existing encoder
(fine-tuning, e.g. the shipped one). ``--classifier C --classification-weight w`` adds
w * CE(C(G(E(noisy x))), y) with C frozen: the denoiser trained for the classifier that will read its
output (Salman et al. 2020's classification objective; C's weights never change).

    python -m manifold_defense.training.encoder --generator manifold_defense/weights/fashion_mnist/generator \
        --out manifold_defense/weights/fashion_mnist/encoder
    python -m manifold_defense.training.encoder --init encoder --noise-sigma 0.5 --iterations 1500 \
        --out manifold_defense/weights/fashion_mnist/encoder_noise_0.5     # a denoiser for sigma 0.5
    python -m manifold_defense.training.encoder --init encoder_noise_0.5 --noise-sigma 0.5 \
        --classifier classifier_lenet --classification-weight 1 --iterations 1500 --out runs/encoder_clf_0.5
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
from tqdm import tqdm

from ..models.checkpoint import load_model, save_model
from ..domains.registry import resolve_domain, weights_path
from ..models import Encoder
from ..pretrained import load_named
from .cli import config_parser, device_facts, parse_config, resolve_device, seed_everything

log = logging.getLogger(__name__)


@dataclass
class EncoderConfig:
    """Encoder training configuration."""

    BOUNDS: ClassVar[dict[str, tuple[Any, Any, bool]]] = {  # numeric fields not named here: >= 0
        "iterations": (1, None, False), "batch_size": (1, None, False), "lr": (0.0, None, True)}

    generator: str = ""  # empty: the domain's shipped generator
    init: str = ""  # empty: a fresh encoder; else a shipped encoder's name or a checkpoint path to fine-tune
    noise_sigma: float = 0.0  # Gaussian noise (pixel units) on the encoder's inputs; targets stay clean
    classifier: str = ""  # with classification_weight > 0: the frozen classifier read after G(E(.))
    classification_weight: float = 0.0  # weight of CE(C(G(E(noisy x))), y) (Salman et al. 2020)
    domain: str = "fashion_mnist"
    data_dir: str = ""  # empty: the domain's own files
    out: str = "runs/encoder"
    iterations: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    latent_weight: float = 1.0
    pixel_weight: float = 10.0
    seed: int = 0
    device: str = "auto"
    threads: int = 0

    def quick(self) -> dict[str, Any]:
        return {"iterations": 10, "batch_size": 16, "out": "runs/encoder_quick"}


def train(config: EncoderConfig) -> Encoder:
    """Train and save the encoder; returns it in eval mode."""
    gen = seed_everything(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    domain = resolve_domain(config.domain, config.data_dir)
    G = load_model(config.generator or weights_path(domain, "generator"), map_location=device)
    for p in G.parameters():  # our own loaded copy: freezing it touches nothing of the caller's
        p.requires_grad_(False)
    k = int(getattr(G, "latent_dim"))
    if config.classification_weight > 0 and not config.classifier:
        raise ValueError("--classification-weight needs --classifier (the frozen classifier it trains for)")
    C = load_named(config.classifier, domain, map_location=device).eval() if config.classification_weight > 0 else None
    for p in (C.parameters() if C is not None else []):
        p.requires_grad_(False)
    x_train, y_train = domain.load("train")
    x_test, _ = domain.load("test", limit=1000)
    x_train, y_train, x_test = x_train.to(device), y_train.to(device), x_test.to(device)
    if config.init:
        E = load_named(config.init, domain, map_location=device).float()
        if not isinstance(E, Encoder) or int(getattr(E, "latent_dim", -1)) != k:
            raise ValueError(f"--init {config.init}: not an encoder into the generator's {k}-dimensional latent space")
    else:
        E = Encoder(latent_dim=k, channels=domain.image_shape[0], image_size=domain.image_shape[-1]).to(device)
    E.train()
    lo, hi = domain.pixel_range

    def noisy(images: torch.Tensor, rng: torch.Generator = gen) -> torch.Tensor:
        if config.noise_sigma == 0:
            return images
        noise = torch.randn(images.shape, generator=rng).to(device)
        return (images + config.noise_sigma * noise).clamp(lo, hi)

    def held_out_mse() -> float:
        """Per-pixel MSE of G(E(.)) on the 1000 test images, with the same noise every time."""
        E.eval()
        with torch.no_grad():
            mse = float(F.mse_loss(G(E(noisy(x_test, torch.Generator().manual_seed(1)))), x_test))
        E.train()
        return mse

    curve: list[dict[str, float]] = []
    every = max(1, config.iterations // 20)

    opt = torch.optim.Adam(E.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.iterations)
    start = time.monotonic()
    bar = tqdm(range(config.iterations), desc="encoder", unit="it")
    for it in bar:
        z = torch.randn(config.batch_size, k, generator=gen).to(device)
        idx = torch.randint(0, len(x_train), (config.batch_size,), generator=gen).to(device)
        x = x_train[idx]
        loss_z = F.mse_loss(E(noisy(G(z))), z)
        x_hat = G(E(noisy(x)))
        loss_x = F.mse_loss(x_hat, x)
        loss = config.latent_weight * loss_z + config.pixel_weight * loss_x
        if C is not None:
            loss = loss + config.classification_weight * F.cross_entropy(C(x_hat), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % 50 == 0:
            bar.set_postfix(z_mse=f"{loss_z.item():.3f}", x_mse=f"{loss_x.item():.4f}")
        if (it + 1) % every == 0 or it + 1 == config.iterations:
            curve.append({"iteration": it + 1, "train_z_mse": round(loss_z.item(), 5),
                          "train_x_mse": round(loss_x.item(), 5), "test_x_mse": round(held_out_mse(), 5)})
    E.eval()
    test_mse = held_out_mse()
    log.info("test per-pixel MSE of G(E(x%s)) on 1000 test images: %.5f",
             f" + {config.noise_sigma:g} e" if config.noise_sigma else "", test_mse)
    save_model(E, config.out, metadata={
        "trained_by": "manifold_defense.training.encoder",
        "config": dataclasses.asdict(config),
        "test_pixel_mse_G_of_E": test_mse,
        "learning_curve": curve,
        "train_seconds": round(time.monotonic() - start, 1),
        **device_facts(device),
    })
    return E


def build_parser() -> argparse.ArgumentParser:
    """This script's command line: one flag per field of :class:`EncoderConfig` (range-checked)."""
    return config_parser(EncoderConfig)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(EncoderConfig, argv)
    train(config)
    print(f"saved {config.out}.safetensors and {config.out}.json")


if __name__ == "__main__":
    from ..utils.cli import run

    run(main)
