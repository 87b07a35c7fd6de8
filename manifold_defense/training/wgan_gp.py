"""Train Defense-GAN's WGAN-GP generator (Gulrajani et al. 2017) on an MNIST-format data set.

    python -m manifold_defense.training.wgan_gp --out manifold_defense/weights/fashion_mnist/generator
    python -m manifold_defense.training.wgan_gp --quick --out runs/generator_quick

Writes ``OUT.safetensors`` + ``OUT.json`` (the config below, a learning curve of the critic's
Wasserstein estimate and the seconds are stored in the JSON). ``--max-minutes`` saves the state
(``OUT.state.*``) and stops; ``--resume true`` continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from tqdm import tqdm

from ..inverse.ambient import MeasurementFamily, parse_family
from ..domains.registry import resolve_domain
from ..models import WGANCritic, WGANGenerator
from .cli import command_line, config_parser, parse_config, resolve_device, seed_everything
from .state import budget_spent, has_state, load_state, outcome, save_final, save_state

log = logging.getLogger(__name__)


@dataclass
class WGANConfig:
    """WGAN-GP training configuration (defaults: gan_mnist.py's, with fewer iterations)."""

    BOUNDS: ClassVar[dict[str, tuple[Any, Any, bool]]] = {  # numeric fields not named here: >= 0
        "latent_dim": (1, None, False), "dim": (1, None, False), "batch_size": (1, None, False),
        "iterations": (1, None, False), "critic_iters": (1, None, False), "lr": (0.0, None, True),
        "save_every": (1, None, False),
        "beta1": (0.0, 1.0, False), "beta2": (0.0, 1.0, False)}

    domain: str = "fashion_mnist"
    data_dir: str = ""  # empty: the domain's own files
    out: str = "runs/generator"
    latent_dim: int = 128
    dim: int = 64
    batch_size: int = 64
    iterations: int = 6000  # generator updates
    critic_iters: int = 5
    gp_lambda: float = 10.0
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    max_minutes: float = 0.0  # > 0: save the state and stop after this wall-clock budget (--resume continues)
    resume: bool = False  # continue from OUT.state.* if it exists
    save_every: int = 500  # iterations between saved states and learning-curve points
    measurement: str = ""  # AmbientGAN: "dropout:0.9", "block:14", "blur_noise:0.1", "projection:50"; empty: clean data
    unmeasured: bool = False  # with measurement: the paper's baseline, a plain GAN on the inverted measurements
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # > 0: torch.set_num_threads

    def quick(self) -> dict[str, Any]:
        return {"iterations": 20, "dim": 16, "batch_size": 16, "out": "runs/generator_quick"}


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] on random interpolates x_hat of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=gen).to(real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


@torch.no_grad()
def _measured_dataset(images: torch.Tensor, family: MeasurementFamily, config: WGANConfig, *,
                      invert: bool) -> torch.Tensor:
    """Every training image measured once (in chunks of ``batch_size``: a projection matrix is shared
    by a chunk), from a generator of its own; with ``invert``, the baseline's inversion of each."""
    gen = torch.Generator().manual_seed(config.seed + 7919)
    out = torch.empty_like(images)
    for i in range(0, len(images), config.batch_size):
        m = family.measure(images[i:i + config.batch_size], gen)
        out[i:i + config.batch_size] = family.invert(m) if invert else m.y
    return out


def train(config: WGANConfig, command: str | None = None) -> WGANGenerator | None:
    """Run WGAN-GP training and save the generator; returns it (eval mode), or None when
    ``max_minutes`` stopped it first (the generator so far is still saved, marked
    ``stopped_by_budget``, and the state is saved for ``resume``).

    Raises:
        ValueError: an unknown measurement family, or ``unmeasured`` without one.
    """
    family = parse_family(config.measurement) if config.measurement else None
    if config.unmeasured and family is None:
        raise ValueError("unmeasured needs a measurement family (--measurement ...): it trains on inverted measurements")
    gen = seed_everything(config.seed)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    domain = resolve_domain(config.domain, config.data_dir)
    images, _ = domain.load("train")
    images = images.to(device)
    if family is not None:
        # The real images are measured once, as a dataset of corrupted captures is: every real image
        # the critic (or the inversion) ever sees is this one measurement of it.
        images = _measured_dataset(images, family, config, invert=config.unmeasured)
    measure_fakes = family is not None and not config.unmeasured
    channels, size = domain.image_shape[0], domain.image_shape[-1]
    G = WGANGenerator(config.latent_dim, config.dim, channels, size).to(device)
    D = WGANCritic(config.dim, channels, size).to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    n = images.shape[0]
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done, curve, seconds0 = 0, [], 0.0
    if config.resume and has_state(out):
        saved = load_state(out, {"G": G, "D": D}, {"opt_g": opt_g, "opt_d": opt_d})
        done, curve, seconds0 = int(saved["step"]), list(saved["learning_curve"]), float(saved["train_seconds"])
        gen.manual_seed(config.seed + done)  # a resumed run draws fresh batches from its own seed
        log.info("resumed at iteration %d", done)
    start = time.monotonic()

    def checkpoint() -> None:
        save_state(out, {"G": G, "D": D}, {"opt_g": opt_g, "opt_d": opt_d},
                   {"step": done, "config": dataclasses.asdict(config), "learning_curve": curve,
                    "train_seconds": round(seconds0 + time.monotonic() - start, 1)})

    wasserstein = torch.zeros(())
    bar = tqdm(range(done, config.iterations), desc="wgan-gp", unit="it", initial=done, total=config.iterations)
    for it in bar:
        for _ in range(config.critic_iters):
            idx = torch.randint(0, n, (config.batch_size,), generator=gen).to(device)
            real = images[idx]
            z = torch.randn(config.batch_size, config.latent_dim, generator=gen).to(device)
            with torch.no_grad():
                fake = G(z)
                if measure_fakes and family is not None:
                    fake = family(fake, gen)  # fresh operators for every generated batch
            wasserstein = D(fake).mean() - D(real).mean()
            loss_d = wasserstein + config.gp_lambda * gradient_penalty(D, real, fake, gen)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        z = torch.randn(config.batch_size, config.latent_dim, generator=gen).to(device)
        generated = G(z)
        if measure_fakes and family is not None:
            generated = family(generated, gen)  # the generator is judged through the measurements only
        loss_g = -D(generated).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        done = it + 1
        if it % 50 == 0:
            bar.set_postfix(w_dist=f"{-wasserstein.item():.3f}", loss_g=f"{loss_g.item():.3f}")
        if done % config.save_every == 0:
            curve.append({"iteration": done, "wasserstein_estimate": round(float(-wasserstein.item()), 4),
                          "loss_g": round(float(loss_g.item()), 4),
                          "seconds": round(seconds0 + time.monotonic() - start, 1)})
            checkpoint()
        if budget_spent(start, config.max_minutes, done, config.iterations):
            checkpoint()
            break
    finished = save_final(G, config.out, trained_by="manifold_defense.training.wgan_gp", config=config, done=done,
                          total=config.iterations, curve=curve, seconds=seconds0 + time.monotonic() - start,
                          device=device, command=command, final_wasserstein_estimate=float(-wasserstein.item()))
    return G if finished else None


def build_parser() -> argparse.ArgumentParser:
    """This script's command line: one flag per field of :class:`WGANConfig` (range-checked)."""
    return config_parser(WGANConfig)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(WGANConfig, argv)
    print(outcome(config.out, train(config, command_line("manifold_defense.training.wgan_gp", argv)) is not None))


if __name__ == "__main__":
    from ..utils.cli import run

    run(main)
