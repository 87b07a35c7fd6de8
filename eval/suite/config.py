"""What a suite run is configured with (:class:`SuiteConfig`), what one attack is (:class:`AttackSpec`)
and what it yields (:class:`Row`: per-example verdicts under each protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import torch
from torch import nn

from manifold_defense import PurifiedClassifier
from manifold_defense.domains import Domain, get_domain

from .stats import wilson_interval

__all__ = ["WORST", "SuiteConfig", "is_randomized", "Adversarials", "Runner", "AttackSpec", "Row"]


WORST = "worst case (per example)"


@dataclass
class SuiteConfig:
    """Budgets of the attack suite, in pixel units of the domain's range.

    The domain (:mod:`manifold_defense.domains`) gives the pixel bounds every attack clips to, the
    chance level of the checks, and the default budgets: ``eps``, ``l2_eps`` and
    ``on_manifold_eta`` left at None take the domain's. Fields named in :attr:`EFFORT` are
    iteration counts: :meth:`scaled` multiplies them.
    """

    domain: Domain = field(default_factory=lambda: get_domain("fashion_mnist"))
    eps: float = None  # type: ignore[assignment]  # None: the domain's Linf budget
    l2_eps: float = None  # type: ignore[assignment]  # None: the domain's L2 budget
    pgd_steps: int = 20
    pgd_restarts: int = 1
    apgd_steps: int = 100  # APGD iterations (exact gradient and surrogates)
    apgd_restarts: int = 1
    apgd_t_steps: int = 100  # APGD-T iterations per target class (AutoAttack: 100)
    apgd_targets: int = 9  # APGD-T target classes (AutoAttack: 9)
    checkpoint_every: int = 10  # projection steps per recomputed segment of the exact gradient
    surrogate_steps: int = 10  # iterations of the shortened purifier of the bpda_apgd_short surrogate
    eot_samples: int = 4  # gradient samples per step against a randomised defense
    eot_steps: int = 10
    draws: int = 10  # N runs of a randomised defense for worst-of-N and majority vote
    latent_steps: int = 100
    square_queries: int = 200
    on_manifold_eta: float = None  # type: ignore[assignment]  # None: the domain's eta, ||G(z) - G(z')|| <= eta
    on_manifold_steps: int = 100
    batch_size: int = 50
    transfer_from: tuple[str, ...] = ()  # source models of the transfer attack (see transfer_source)
    attacks: tuple[str, ...] = ("clean", "fgsm", "pgd", "bpda_pgd", "exact_apgd_dlr", "on_manifold")
    models: tuple[str, ...] = ("undefended", "defended")
    seed: int = 0

    EFFORT = ("pgd_steps", "pgd_restarts", "apgd_steps", "apgd_t_steps", "eot_steps", "latent_steps", "square_queries",
              "on_manifold_steps")

    def __post_init__(self) -> None:
        if not isinstance(self.domain, Domain):
            raise TypeError(f"SuiteConfig.domain must be a Domain, got {type(self.domain).__name__}")
        b = self.domain.budgets
        if self.eps is None:
            self.eps = b.linf_eps
        if self.l2_eps is None:
            self.l2_eps = b.l2_eps
        if self.on_manifold_eta is None:
            self.on_manifold_eta = b.on_manifold_eta

    @property
    def bounds(self) -> tuple[float, float]:
        """The pixel range every attack clips to (the domain's)."""
        return self.domain.pixel_range

    def scaled(self, factor: int) -> "SuiteConfig":
        """The same suite with ``factor`` times the iterations (the 'more effort' check)."""
        return replace(self, **{name: getattr(self, name) * factor for name in self.EFFORT})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "domain"}
        return {"domain": self.domain.name, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}}


def is_randomized(defended: PurifiedClassifier) -> bool:
    """Whether two runs of the defense on the same input can differ (its purifier's declaration:
    fresh random restarts of a projection, the noise of a diffusion purifier)."""
    return defended.randomized


Adversarials = dict[str, torch.Tensor]


Runner = Callable[[nn.Module, PurifiedClassifier, torch.Tensor, torch.Tensor, SuiteConfig], Adversarials]


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the suite.

    Attributes:
        key: the name on the command line (``--attacks``).
        label: the row title in tables and reports.
        run: (classifier, defended, x, y, cfg) -> adversarial images for each model in ``cfg.models``
            that the attack applies to.
        threat: the threat model's label for a config (``"Linf 0.1"``).
        family: attacks of one family share a gradient source; the checks compare families.
        worst_case: counts toward the Linf worst case.
        iterative: its effort grows with :meth:`SuiteConfig.scaled` (the 2x-effort check reruns it).
        gradient_free: uses only the model's outputs.
        adaptive: a white-box attack that knows the defense (the family-agreement check compares these).
        needs_defense: has rows only for the defended model.
    """

    key: str
    label: str
    run: Runner
    threat: Callable[[SuiteConfig], str]
    family: str
    worst_case: bool = True
    iterative: bool = False
    gradient_free: bool = False
    adaptive: bool = False
    needs_defense: bool = False


@dataclass
class Row:
    """One (model, attack) result: per-example correctness after the attack.

    ``key`` names the :data:`ATTACKS` entry (checks select rows by its flags, never by label);
    ``correct`` is the one-shot verdict; for a randomised defense ``correct_all`` (all N runs right)
    and ``correct_vote`` (majority of N runs right) are set too, and a worst-case row of the defended
    model keeps ``candidates``: each image's adversarial example as an int8 perturbation
    (:func:`eval.suite.judge.quantise`), which the report chooses among and judges on independent
    draws (:mod:`eval.report.judging`).
    """

    model: str
    attack: str
    threat: str
    correct: torch.Tensor = field(repr=False)
    seconds: float = 0.0
    correct_all: torch.Tensor | None = field(default=None, repr=False)
    correct_vote: torch.Tensor | None = field(default=None, repr=False)
    key: str = ""  # the registry key of the attack ("" for derived rows such as the worst case)
    candidates: torch.Tensor | None = field(default=None, repr=False)  # (N, C, H, W) int8, see above

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    def protocols(self) -> dict[str, torch.Tensor]:
        """Per-example correctness under each protocol this row has (one-shot first)."""
        out = {"one-shot": self.correct}
        if self.correct_all is not None and self.correct_vote is not None:
            out["worst-of-N"], out["majority of N"] = self.correct_all, self.correct_vote
        return out

    def to_dict(self) -> dict[str, Any]:
        n = int(self.correct.numel())
        d: dict[str, Any] = {"model": self.model, "attack": self.attack, "key": self.key, "threat": self.threat, "n": n,
                             "seconds": round(self.seconds, 2)}
        for name, correct in self.protocols().items():
            k = int(correct.sum())
            prefix = "" if name == "one-shot" else name.replace(" ", "_").replace("-", "_") + "_"
            d[prefix + "accuracy"] = k / n
            d[prefix + "ci95"] = [round(v, 4) for v in wilson_interval(k, n)]
        return d
