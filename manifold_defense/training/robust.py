"""Robust training on the manifold: harden a classifier on G(z) (Ilyas et al. 2017, "The Robust
Manifold Defense"), optionally with ordinary PGD adversarial training (Madry et al. 2018), TRADES
(Zhang et al. 2019) or adversarial training through the amortised defense.

Each step's loss is a weighted sum of
  * clean:       CE(C(x), y) on data;
  * projection:  CE(C(G(z_x)), y), z_x the projection of x (amortised: the encoder's E(x) refined by
                 a few projection steps, so that the classifier sees what the defense will feed it);
  * on-manifold: CE(C(G(z')), y) for z' found by the on-manifold attack within ||G(z') - G(z_x)|| <= eta;
  * pgd:         CE(C(x_pgd), y) for Linf PGD examples (weight 0 turns it off);
  * trades:      beta KL(C(x) || C(x')) for x' maximising that KL in the Linf ball (TRADES' robust term;
                 with clean weight 1 and pgd weight 0 this is TRADES);
  * defense:     CE(C(P(x_def)), y), x_def a Linf PGD example against the whole amortised pipeline
                 C(G(E(x))) and P the training projection (encoder warm start + a few steps): the
                 classifier learns to be right on what the defense makes of an attacked input.

``--train-encoder true`` trains the amortised defense itself: the model every loss term above
sees is the pipeline C(G(E(x))) with G frozen and E and C trained jointly, so ``--pgd-weight`` and
``--trades-beta`` become adversarial training against the exact gradient of the defense as it will
be deployed (the projection ``ProjectionConfig(steps=0)``, G(E(x))). ``--reconstruction-weight w``
adds w * mean ||G(E(x)) - x||^2, which keeps E a projection rather than any feature map. The run
writes the classifier (``OUT``), the encoder (``OUT_encoder``) and a loadable defense bundle
(``OUT_defense/``, see :func:`manifold_defense.export.load`).

A learning-rate schedule (constant, cosine, or step x0.1 at 50% and 75%), a wall-clock budget
(``--max-minutes``, then it saves and stops; ``--resume true`` continues) and a learning curve
(``--eval-every``: clean and PGD accuracy on ``--val-size`` held-out training images, stored in the
checkpoint JSON) make the long baseline runs auditable.

Training on generated data (Gowal et al. 2021; Wang et al. 2023): ``--generated DIR`` (shards written
by ``python -m eval.generate_data``) makes exactly ``--generated-fraction`` of every batch generated
images (:mod:`.mixing`); ``--label-smoothing`` smooths every cross-entropy term; ``--ema d`` keeps an
exponential moving average of the weights (:mod:`.ema`) that the learning curve evaluates and the
run saves instead of the last iterate.

The loop needs two attacks (PGD examples, on-manifold pairs); it receives them as
:class:`Adversaries` and never imports the ``attacks`` package (the core depends on nothing above
it). The command-line script that builds them from ``attacks`` is ``eval.train_robust``:

    python -m eval.train_robust --out manifold_defense/weights/fashion_mnist/classifier_robust
    python -m eval.train_robust --pgd-weight 1 --manifold-weight 0 --projection-weight 0 \\
        --out manifold_defense/weights/fashion_mnist/classifier_pgd          # plain Madry PGD training
    torchrun --nproc_per_node 2 -m eval.train_robust --quick                 # data-parallel (DDP)

Checkpoints are safetensors + JSON (the config is stored); ``--resume`` continues from the
``OUT.state`` files (weights, Adam moments, step, RNG seed schedule).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..models.checkpoint import load_model, save_model
from ..domains import Domain, load_generated, resolve_domain, weights_path
from ..models import build
from ..projection import ProjectionConfig, project
from .cli import device_facts, resolve_device, seed_everything
from .convergence import convergence, curve_point
from .ema import WeightEMA
from .mixing import mixed_indices, stratified_order
from .state import has_state, load_state, save_state

log = logging.getLogger(__name__)


SCHEDULES = ("constant", "cosine", "step", "final_tenth")
SAMPLINGS = ("replacement", "epochs")


@dataclass
class RobustConfig:
    """Robust (on-manifold and/or PGD) training configuration."""

    BOUNDS: ClassVar[dict[str, tuple[Any, Any, bool]]] = {  # numeric fields not named here: >= 0
        "iterations": (1, None, False), "batch_size": (1, None, False), "lr": (0.0, None, True),
        "eta": (None, None, False), "pgd_eps": (None, None, False), "pgd_steps": (1, None, False),
        "pgd_step_factor": (0.0, None, True), "ae_frac": (0.0, 1.0, True), "generated_fraction": (0.0, 1.0, False),
        "label_smoothing": (0.0, 1.0, False), "ema": (0.0, 1.0, False)}
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"lr_schedule": SCHEDULES, "sampling": SAMPLINGS}

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
    pgd_step_factor: float = 2.5  # PGD step = factor * eps / steps (Madry: 2.5; Croce et al. 2019: 2)
    ae_frac: float = 1.0  # fraction of each batch replaced by its PGD examples (the rest stays clean)
    trades_beta: float = 0.0  # > 0: add TRADES' robust KL term (its inner maximisation uses pgd_steps)
    defense_weight: float = 0.0  # > 0: adversarial examples against C(G(E(x))), trained on C(P(x_adv))
    train_encoder: bool = False  # train C(G(E(x))) jointly (E and C; G frozen): every loss sees the pipeline
    reconstruction_weight: float = 0.0  # with train_encoder: + w * mean ||G(E(x)) - x||^2 (E stays a projection)
    lr_schedule: str = "constant"  # constant | cosine | step (x0.1 at 50% and 75%) | final_tenth (x0.1 for the last 10%)
    generated: str = ""  # a folder of generated shards (python -m eval.generate_data); empty: real images only
    generated_fraction: float = 0.7  # with generated: the exact share of every batch drawn from it
    label_smoothing: float = 0.0  # smoothing of every cross-entropy term
    ema: float = 0.0  # > 0: an EMA of the weights with this decay is evaluated and saved instead of the last iterate
    sampling: str = "replacement"  # replacement: batches drawn with replacement | epochs: a fresh permutation per epoch
    max_minutes: float = 0.0  # > 0: save and stop after this wall-clock budget (resume continues)
    eval_every: int = 0  # > 0: record clean / PGD accuracy on the held-out images every N iterations
    val_square_queries: int = 0  # > 0: the curve also runs Square (gradient-free) with this many queries; the rule reads the worst case
    val_size: int = 0  # training images held out (the last ones) for the learning curve
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
        pgd: makes the PGD examples (needed when ``pgd_weight`` or ``defense_weight`` > 0, and for
            the learning curve's robust accuracy).
        on_manifold: makes the on-manifold pairs (needed when ``manifold_weight`` > 0).
        trades: makes TRADES' KL-maximising examples (needed when ``trades_beta`` > 0).
        gradient_free: a gradient-free attack whose fifth argument is its query budget (needed when
            ``val_square_queries`` > 0): the learning curve's check against gradient masking.
    """

    pgd: ExampleAttack | None = None
    on_manifold: PairAttack | None = None
    trades: ExampleAttack | None = None  # maximises KL(C(x) || C(x')) (y is ignored)
    gradient_free: ExampleAttack | None = None  # (C, x, y, eps, queries, seed): Square, for the learning curve


def _adversarial_count(config: RobustConfig, batch: int) -> int:
    """How many of a batch's first images PGD replaces (``ae_frac``; at least one)."""
    return max(1, int(config.ae_frac * batch))


def _seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))


def lr_at(config: RobustConfig, it: int) -> float:
    """The learning rate of iteration ``it`` under ``config.lr_schedule`` (a pure function of the
    iteration, so a resumed run continues the same schedule)."""
    t = it / max(1, config.iterations)
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * t))
    if config.lr_schedule == "step":
        return config.lr * (0.1 ** ((t >= 0.5) + (t >= 0.75)))
    if config.lr_schedule == "final_tenth":
        return config.lr * (0.1 if t >= 0.9 else 1.0)
    return config.lr


def batch_indices(config: RobustConfig, it: int, n: int, gen: torch.Generator, rank: int = 0,
                  world: int = 1) -> torch.Tensor:
    """This rank's training images for iteration ``it`` (of ``n`` images).

    ``sampling="replacement"``: ``batch_size`` images drawn with replacement from ``gen`` (each rank
    has its own generator, so under DDP the step sees ``world * batch_size`` images).
    ``sampling="epochs"``: the ``it``-th global batch of ``world * batch_size`` images of a
    permutation fixed by the seed and the epoch, this rank taking its slice, so a resumed run sees
    the same epochs and the same recipe runs on any number of processes; each epoch's last
    incomplete batch is skipped, as in the reference code of Croce et al. 2019.

    Example:
        >>> cfg = RobustConfig(batch_size=4, sampling="epochs")
        >>> a, b = (batch_indices(cfg, 0, 16, torch.Generator(), rank=r, world=2) for r in (0, 1))
        >>> len(set(a.tolist()) | set(b.tolist()))
        8
    """
    if config.sampling == "epochs":
        step = config.batch_size * world
        per_epoch = n // step
        if per_epoch < 1:
            raise ValueError(f"batch_size {config.batch_size} x {world} processes exceeds the {n} training images")
        epoch, k = divmod(it, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        start = k * step + rank * config.batch_size
        return perm[start:start + config.batch_size]
    return torch.randint(0, n, (config.batch_size,), generator=gen)


class _AmortisedPipeline(nn.Module):
    """C(G(E(x))): the defense's fully differentiable amortised path (what the defense-AT examples
    attack, and with ``train_encoder`` the model being trained). G always stays in eval mode."""

    def __init__(self, C: nn.Module, G: nn.Module, E: nn.Module) -> None:
        super().__init__()
        self.C, self.G, self.E = C, G, E

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.C(self.G(self.E(x)))

    def train(self, mode: bool = True) -> "_AmortisedPipeline":
        super().train(mode)
        self.G.eval()
        return self


def _save_amortised_defense(out: Path, C: nn.Module, G: nn.Module, E: nn.Module, domain: Domain,
                            metadata: dict[str, Any]) -> None:
    """The jointly trained encoder (``OUT_encoder``) and the defense as deployed, C(G(E(x))) with no
    projection steps, as a bundle (``OUT_defense/``) that ``manifold_defense.export.load`` reads."""
    from ..purify.defended import DefendedClassifier
    from ..export import save_bundle

    for p in E.parameters():
        p.requires_grad_(False)
    save_model(E, out.with_name(out.name + "_encoder"), metadata=metadata)
    config = ProjectionConfig(restarts=1, steps=0, use_encoder=True, pixel_range=domain.pixel_range)
    save_bundle(DefendedClassifier(C, G, config, encoder=E).eval(), out.with_name(out.name + "_defense"), domain=domain)


def _out_of_time(start: float, minutes: float, world: int, device: torch.device) -> bool:
    """Whether the wall-clock budget is spent; under DDP rank 0 decides for all (no rank stops alone)."""
    flag = torch.tensor([float(time.monotonic() - start > 60 * minutes)], device=device)
    if world > 1:
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def trades_kl(adv_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """TRADES' robust term KL(C(x) || C(x')) per example, from logits, computed in log space.

    ``F.kl_div(log_softmax(adv), softmax(clean))`` (the reference code's form) has a NaN gradient
    as soon as one clean probability underflows to 0 (0 * log 0 in the backward pass); with both
    arguments as log-probabilities (``log_target=True``) the gradient stays finite.

    Shape:
        adv_logits, clean_logits: (N, K) -> scalar (mean over the batch).

    Example:
        >>> z = torch.tensor([[300.0, 0.0, -300.0]], requires_grad=True)
        >>> trades_kl(torch.zeros(1, 3), z).backward()
        >>> bool(torch.isfinite(z.grad).all())
        True
    """
    return F.kl_div(F.log_softmax(adv_logits, 1), F.log_softmax(clean_logits, 1), reduction="batchmean", log_target=True)


def _checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, config: RobustConfig,
                curve: list[dict[str, float]], seconds: float, ema: WeightEMA | None = None) -> None:
    """The resumable state (:mod:`manifold_defense.training.state`): weights (and their EMA), Adam
    moments, step, config, curve."""
    modules = {"model": model, **({"ema": ema.module} if ema is not None else {})}
    save_state(path, modules, {"opt": opt}, {"step": step, "config": dataclasses.asdict(config),
                                             "learning_curve": curve, "train_seconds": round(seconds, 1)})


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
    if config.trades_beta > 0 and adversaries.trades is None:
        raise ValueError("trades_beta > 0 needs Adversaries(trades=...); eval.train_robust builds it")
    if config.defense_weight > 0 and (adversaries.pgd is None or not config.encoder):
        raise ValueError("defense_weight > 0 needs Adversaries(pgd=...) and an encoder (the amortised path G(E(x)))")
    if config.train_encoder and not config.encoder:
        raise ValueError("train_encoder needs an encoder to start from (--encoder shipped or a checkpoint path)")
    if config.reconstruction_weight > 0 and not config.train_encoder:
        raise ValueError("reconstruction_weight > 0 needs train_encoder (it is a loss on the trained encoder)")
    if config.train_encoder and (config.projection_weight > 0 or config.manifold_weight > 0 or config.defense_weight > 0):
        raise ValueError("train_encoder trains the pipeline C(G(E(x))) with the clean, pgd, trades and reconstruction "
                         "terms; set projection_weight, manifold_weight and defense_weight to 0")
    if config.lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {config.lr_schedule!r}")
    if config.sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {config.sampling!r}")
    if not 0.0 < config.ae_frac <= 1.0:
        raise ValueError(f"ae_frac must be in (0, 1], got {config.ae_frac}")
    if config.pgd_step_factor <= 0:
        raise ValueError(f"pgd_step_factor must be > 0, got {config.pgd_step_factor}")
    if config.ema >= 1.0:
        raise ValueError(f"ema must be a decay in [0, 1), got {config.ema}")
    if config.val_square_queries > 0 and (adversaries.gradient_free is None or config.eval_every < 1):
        raise ValueError("val_square_queries > 0 needs Adversaries(gradient_free=...) and eval_every > 0; "
                         "eval.train_robust builds Square")
    if config.eval_every > 0 and config.val_size < 1:
        raise ValueError("eval_every > 0 needs val_size >= 1 held-out images")
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
    on_manifold = (config.projection_weight > 0 or config.manifold_weight > 0 or config.defense_weight > 0
                   or config.train_encoder)
    G = load_model(checkpoint(config.generator, "generator"), map_location=device) if on_manifold else None
    E = load_model(checkpoint(config.encoder, "encoder"), map_location=device) if on_manifold and config.encoder else None
    for module in (G, E):
        for p in (module.parameters() if module is not None else []):
            p.requires_grad_(False)  # our own loaded copies: frozen
    x_all, y_all = domain.load("train", limit=config.train_limit or None)
    x_all, y_all = x_all.to(device), y_all.to(device)
    if config.val_size > 0:
        if config.val_size >= len(x_all):
            raise ValueError(f"val_size {config.val_size} leaves no training images (of {len(x_all)})")
        x_val, y_val = x_all[-config.val_size:], y_all[-config.val_size:]
        x_all, y_all = x_all[:-config.val_size], y_all[:-config.val_size]
    x_gen = y_gen = None
    if config.generated:
        x_gen, y_gen = load_generated(config.generated)
        if tuple(x_gen.shape[1:]) != tuple(domain.image_shape):
            raise ValueError(f"generated images of shape {tuple(x_gen.shape[1:])} do not match the domain's {domain.image_shape}")
        x_gen, y_gen = x_gen.to(device), y_gen.to(device)
    channels, size = domain.image_shape[0], domain.image_shape[-1]
    C = (load_model(checkpoint(config.init, "classifier"), map_location=device) if config.init
         else build(config.architecture, in_channels=channels, image_size=size, num_classes=domain.num_classes))
    C = C.to(device).train()
    trained: nn.Module = C  # what the optimiser updates, the losses see and the state files hold
    if config.train_encoder and G is not None and E is not None:
        for p in E.parameters():
            p.requires_grad_(True)
        trained = _AmortisedPipeline(C, G, E).train()
    model: nn.Module = nn.parallel.DistributedDataParallel(trained) if world > 1 else trained
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    ema = WeightEMA(trained, config.ema) if config.ema > 0 else None
    ce = functools.partial(F.cross_entropy, label_smoothing=config.label_smoothing)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    resumed = config.resume and has_state(out)
    step0, curve, seconds0 = 0, [], 0.0
    if resumed:
        saved = load_state(out, {"model": trained, **({"ema": ema.module} if ema is not None else {})}, {"opt": opt})
        step0, curve, seconds0 = int(saved["step"]), list(saved.get("learning_curve", [])), float(saved.get("train_seconds", 0.0))
    if ema is not None:
        ema.updates = step0
    proj_cfg = ProjectionConfig(restarts=1, steps=config.projection_steps, optimizer="adam", lr=0.05,
                                decay_at=(0.6,), lr_decay=0.3)
    start = time.monotonic()
    bar = tqdm(range(step0, config.iterations), desc="robust training", unit="it", disable=rank != 0)
    it = step0
    for it in bar:
        if config.max_minutes > 0 and _out_of_time(start, config.max_minutes, world, device):
            log.info("wall-clock budget of %.1f minutes reached at iteration %d", config.max_minutes, it)
            break
        lr = lr_at(config, it)
        for group in opt.param_groups:
            group["lr"] = lr
        if x_gen is not None and y_gen is not None:
            real, fake = mixed_indices(it, batch_size=config.batch_size, fraction=config.generated_fraction,
                                       n_real=len(x_all), n_generated=len(x_gen), seed=config.seed, rank=rank, world=world)
            real, fake = real.to(device), fake.to(device)
            order = stratified_order(len(real), len(fake), _adversarial_count(config, len(real) + len(fake))).to(device)
            x, y = torch.cat([x_all[real], x_gen[fake]])[order], torch.cat([y_all[real], y_gen[fake]])[order]
        else:
            idx = batch_indices(config, it, len(x_all), gen, rank, world).to(device)
            x, y = x_all[idx], y_all[idx]
        losses: dict[str, torch.Tensor] = {}
        if config.clean_weight > 0:
            losses["clean"] = config.clean_weight * ce(model(x), y)
        if config.reconstruction_weight > 0 and G is not None and E is not None:
            recon = (G(E(x)) - x).flatten(1).pow(2).sum(1).mean()  # the trained E through the frozen G
            losses["reconstruction"] = config.reconstruction_weight * recon
        if G is not None and not config.train_encoder:
            z = project(G, x, proj_cfg, encoder=E, rng=gen).z
            if config.projection_weight > 0:
                with torch.no_grad():
                    x_proj = G(z)
                losses["projection"] = config.projection_weight * ce(model(x_proj), y)
            if config.manifold_weight > 0 and adversaries.on_manifold is not None:
                C.eval()
                z_adv = adversaries.on_manifold(C, G, z, eta, config.manifold_steps, _seed(gen))
                C.train()
                with torch.no_grad():
                    x_adv = G(z_adv)
                losses["manifold"] = config.manifold_weight * ce(model(x_adv), y)
        if config.pgd_weight > 0 and adversaries.pgd is not None:
            n_adv = _adversarial_count(config, len(x))  # Croce et al.'s ae_frac: the rest of the batch stays clean
            trained.eval()
            x_pgd = adversaries.pgd(trained, x[:n_adv], y[:n_adv], pgd_eps, config.pgd_steps, _seed(gen))
            trained.train()
            losses["pgd"] = config.pgd_weight * ce(model(torch.cat([x_pgd, x[n_adv:]])), y)
        if config.trades_beta > 0 and adversaries.trades is not None:
            trained.eval()
            x_tr = adversaries.trades(trained, x, y, pgd_eps, config.pgd_steps, _seed(gen))
            trained.train()
            losses["trades"] = config.trades_beta * trades_kl(model(x_tr), model(x))
        if config.defense_weight > 0 and adversaries.pgd is not None and G is not None and E is not None:
            C.eval()
            x_def = adversaries.pgd(_AmortisedPipeline(C, G, E), x, y, pgd_eps, config.pgd_steps, _seed(gen))
            C.train()
            with torch.no_grad():
                x_def_proj = G(project(G, x_def, proj_cfg, encoder=E, rng=gen).z)
            losses["defense"] = config.defense_weight * ce(model(x_def_proj), y)
        loss = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(loss):
            bad = [k for k, v in losses.items() if not torch.isfinite(v)]
            raise FloatingPointError(f"robust training diverged at iteration {it}: loss terms {bad} are not finite "
                                     f"(lower --lr, or resume from the last saved state with --resume true)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(trained)
        if rank == 0 and it % 10 == 0:
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
        if rank == 0 and config.eval_every > 0 and (it + 1) % config.eval_every == 0:
            judged = ema.module if ema is not None else trained
            judged.eval()
            curve.append(curve_point(judged, x_val, y_val, pgd_eps, it + 1, lr, pgd=adversaries.pgd,
                                     gradient_free=adversaries.gradient_free, queries=config.val_square_queries))
            trained.train()
            bar.write(f"iteration {it + 1}: " + ", ".join(f"{k} {v:.4g}" for k, v in curve[-1].items() if k != "iteration"))
        if rank == 0 and (it + 1) % 250 == 0:
            _checkpoint(out, trained, opt, it + 1, config, curve, seconds0 + time.monotonic() - start, ema)
    else:
        it = config.iterations
    trained.eval()
    shipped = ema.module if ema is not None else trained  # what is evaluated and saved
    C_out, E_out = (shipped.C, shipped.E) if isinstance(shipped, _AmortisedPipeline) else (shipped, E)
    if rank == 0:
        from .classifier import accuracy

        x_test, y_test = domain.load("test", limit=2000)
        test_acc = accuracy(shipped, x_test.to(device), y_test.to(device))
        log.info("clean test accuracy (first 2000 test images) %.4f", test_acc)
        _checkpoint(out, trained, opt, it, config, curve, seconds0 + time.monotonic() - start, ema)
        metadata = {
            "trained_by": "manifold_defense.training.robust",
            "config": dataclasses.asdict(config),
            "iterations_done": it,
            "stopped_by_budget": it < config.iterations,
            "learning_curve": curve,
            **({"convergence": convergence(curve)}  # a run stopped by its budget gets none until it ends
               if curve and "val_pgd10" in curve[-1] and it >= config.iterations else {}),
            "world_size": world,
            "test_accuracy_first_2000": test_acc,
            "train_seconds": round(seconds0 + time.monotonic() - start, 1),  # all pieces of a resumed run
            **device_facts(device),
        }
        save_model(C_out, out, metadata=metadata)
        if config.train_encoder and G is not None and E_out is not None:
            _save_amortised_defense(out, C_out, G, E_out, domain, metadata)
    if world > 1:
        dist.barrier()
    return C_out
