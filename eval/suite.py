"""The attack suite behind the demo and the robustness report: one place that says which attacks
run against which model, with which budget, and how per-example results combine.

Every row records, per example, whether the model was still right after the attack. The worst case
over the Linf attacks is their per-example AND (an example counts as robust only if every attack
failed on it), as AutoAttack reports. On-manifold attacks use another threat model (an L2 bound on
G's range, not the Linf ball around x), so they are reported beside the worst case, not inside it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from attacks import BPDA, FGSM, L2PGD, LatentAttack, LinfPGD, OnManifoldAttack, TorchAttack, Unrolled
from attacks.base import predict
from manifold_defense import DefendedClassifier

__all__ = ["SuiteConfig", "Row", "run_suite", "worst_case", "ATTACKS"]


@dataclass
class SuiteConfig:
    """Budgets of the attack suite (eps in Linf pixel units of [0, 1] images)."""

    eps: float = 0.1
    l2_eps: float = 1.5
    pgd_steps: int = 20
    pgd_restarts: int = 1
    eot_samples: int = 4
    eot_steps: int = 10
    unrolled_steps: int = 10  # projection steps the unrolled attack differentiates through
    unrolled_pgd_steps: int = 5
    latent_steps: int = 100
    square_queries: int = 200
    on_manifold_eta: float = 2.0  # L2 bound ||G(z) - G(z')|| for the on-manifold attack
    on_manifold_steps: int = 100
    batch_size: int = 50
    attacks: tuple[str, ...] = ("clean", "fgsm", "pgd", "bpda_pgd", "eot_pgd", "on_manifold")
    seed: int = 0

    def scaled(self, factor: int) -> "SuiteConfig":
        """The same suite with ``factor`` times the steps and restarts (the 'more effort' check)."""
        return SuiteConfig(**{
            **asdict(self),
            "pgd_steps": self.pgd_steps * factor, "pgd_restarts": self.pgd_restarts * factor,
            "eot_steps": self.eot_steps * factor, "latent_steps": self.latent_steps * factor,
            "square_queries": self.square_queries * factor, "on_manifold_steps": self.on_manifold_steps * factor,
            "unrolled_pgd_steps": self.unrolled_pgd_steps * factor,
        })


@dataclass
class Row:
    """One (model, attack) result: per-example correctness after the attack."""

    model: str
    attack: str
    threat: str
    correct: torch.Tensor = field(repr=False)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "attack": self.attack, "threat": self.threat,
                "accuracy": self.accuracy, "n": int(self.correct.numel()), "seconds": round(self.seconds, 2)}


Runner = Callable[[nn.Module, DefendedClassifier, torch.Tensor, torch.Tensor, SuiteConfig], dict[str, torch.Tensor]]


def _linf(cfg: SuiteConfig) -> str:
    return f"Linf {cfg.eps:g}"


def _clean(clf: nn.Module, d: DefendedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> dict[str, torch.Tensor]:
    return {"undefended": predict(clf, x) == y, "defended": predict(d, x) == y}


def _fgsm(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    attack = FGSM(eps=cfg.eps)
    return {"undefended": ~attack(clf, x, y).success,
            "defended": ~attack(BPDA.from_defense(d), x, y, judge=d).success}


def _pgd(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    # Through the defense as deployed: its gradient is zero (the masking an evaluation must see through).
    attack = LinfPGD(eps=cfg.eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, seed=cfg.seed)
    return {"undefended": ~attack(clf, x, y).success, "defended": ~attack(d, x, y).success}


def _pgd_l2(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    attack = L2PGD(eps=cfg.l2_eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, seed=cfg.seed)
    return {"undefended": ~attack(clf, x, y).success,
            "defended": ~attack(BPDA.from_defense(d), x, y, judge=d).success}


def _bpda_pgd(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    attack = LinfPGD(eps=cfg.eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, seed=cfg.seed)
    return {"defended": ~attack(BPDA.from_defense(d), x, y, judge=d).success}


def _eot_pgd(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    attack = LinfPGD(eps=cfg.eps, steps=cfg.eot_steps, eot_samples=cfg.eot_samples, seed=cfg.seed)
    return {"defended": ~attack(BPDA.from_defense(d), x, y, judge=d).success}


def _unrolled_pgd(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    surrogate = Unrolled(d, steps=cfg.unrolled_steps)
    attack = LinfPGD(eps=cfg.eps, steps=cfg.unrolled_pgd_steps, seed=cfg.seed)
    return {"defended": ~attack(surrogate, x, y, judge=d).success}


def _latent(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    return {"defended": ~LatentAttack(eps=cfg.eps, steps=cfg.latent_steps)(d, x, y).success}


def _square(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    attack = TorchAttack("Square", eps=cfg.eps, n_queries=cfg.square_queries, seed=cfg.seed)
    return {"undefended": ~attack(clf, x, y).success, "defended": ~attack(d, x, y).success}


def _on_manifold(clf, d, x, y, cfg):  # type: ignore[no-untyped-def]
    """Standard variant from the projection z*(x): is C (resp. the defense) still right on G(z')?"""
    z = d.project(x).z
    result = OnManifoldAttack(eta=cfg.on_manifold_eta, steps=cfg.on_manifold_steps, variant="standard",
                              seed=cfg.seed)(d.classifier, d.generator, z)
    x_adv = result.x_prime.clamp(0.0, 1.0)
    return {"undefended": predict(clf, x_adv) == y, "defended": predict(d, x_adv) == y}


# name -> (runner, label in tables, threat model, counts toward the Linf worst case)
ATTACKS: dict[str, tuple[Runner, str, Callable[[SuiteConfig], str], bool]] = {
    "clean": (_clean, "clean", lambda c: "none", True),
    "fgsm": (_fgsm, "FGSM (BPDA on defended)", _linf, True),
    "pgd": (_pgd, "PGD (naive on defended)", _linf, True),
    "pgd_l2": (_pgd_l2, "PGD-L2 (BPDA on defended)", lambda c: f"L2 {c.l2_eps:g}", False),
    "bpda_pgd": (_bpda_pgd, "BPDA-PGD", _linf, True),
    "eot_pgd": (_eot_pgd, "EOT-BPDA-PGD", _linf, True),
    "unrolled_pgd": (_unrolled_pgd, "unrolled-PGD", _linf, True),
    "latent": (_latent, "latent reparam.", _linf, True),
    "square": (_square, "Square (gradient-free)", _linf, True),
    "on_manifold": (_on_manifold, "on-manifold (standard)", lambda c: f"L2 {c.on_manifold_eta:g} on G", False),
}


def run_suite(
    classifier: nn.Module,
    defended: DefendedClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: SuiteConfig,
    *,
    batches: list[int] | None = None,
    progress: bool = True,
) -> list[Row]:
    """Run every attack of ``cfg.attacks`` in batches of ``cfg.batch_size``; rows in suite order.

    Each (attack, batch) pair starts from its own seed, so a batch's result does not depend on what
    ran before it: a sharded run (``batches`` = this rank's batch indices) reproduces exactly the
    rows of a single-process run for those batches.

    Raises:
        ValueError: an unknown attack name.
    """
    unknown = [a for a in cfg.attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; known: {sorted(ATTACKS)}")
    n_batches = (len(x) + cfg.batch_size - 1) // cfg.batch_size
    mine = list(range(n_batches)) if batches is None else batches
    rows: list[Row] = []
    bar = tqdm(cfg.attacks, desc="attacks", unit="attack", disable=not progress)
    for a, name in enumerate(bar):
        runner, label, threat, _ = ATTACKS[name]
        bar.set_postfix(attack=name)
        start = time.monotonic()
        parts: dict[str, list[torch.Tensor]] = {}
        for b in tqdm(mine, desc=name, unit="batch", leave=False, disable=not progress):
            torch.manual_seed(cfg.seed * 1_000_003 + a * 10_007 + b)
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            for model, correct in runner(classifier, defended, x[sl], y[sl], cfg).items():
                parts.setdefault(model, []).append(correct.cpu())
        seconds = time.monotonic() - start
        for model, chunks in parts.items():
            rows.append(Row(model, label, threat(cfg), torch.cat(chunks), seconds))
    return rows


def worst_case(rows: list[Row], model: str) -> Row | None:
    """Per-example AND of correctness over ``model``'s rows that count toward the Linf worst case."""
    counted = {ATTACKS[k][1] for k, v in ATTACKS.items() if v[3]}
    mine = [r for r in rows if r.model == model and r.attack in counted]
    if not mine:
        return None
    correct = torch.stack([r.correct for r in mine]).all(0)
    threat = next((r.threat for r in mine if r.threat != "none"), "none")
    return Row(model, "worst case (per example)", threat, correct, sum(r.seconds for r in mine))


def format_table(rows: list[Row]) -> str:
    """A Markdown table: model | attack | threat | accuracy."""
    lines = ["| model | attack | threat model | accuracy |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.attack} | {r.threat} | {100 * r.accuracy:.1f}% |")
    return "\n".join(lines)
