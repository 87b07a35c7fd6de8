"""The attack suite behind the demo and the robustness report: one registry of attacks, each an
:class:`AttackSpec` entry, and the rules for combining their per-example results.

Every attack returns adversarial images per model ("undefended": the bare classifier, "defended":
the deployed defense); the suite judges them itself, always on the deployed models, so no attack
grades its own work. The worst case over the Linf attacks is their per-example AND (an example
counts as robust only if every attack failed on it), as AutoAttack reports. On-manifold and L2
attacks use other threat models, so they are reported beside the worst case, not inside it.

The default adaptive attack is APGD through the exact gradient of the defense as deployed
(:class:`attacks.ExactGradient`: same projection config, every step, checkpointed). Surrogates
(BPDA with the identity or the amortised G(E(x)); EOT) are extra rows, never the only word.

A randomised defense (random restarts without a fixed seed) is judged three ways when
``SuiteConfig.draws`` > 1: one-shot (one run of the defense), worst-of-N (robust only if all N
independent runs classify the adversarial correctly) and majority vote of N runs.

The transfer family (``transfer``) attacks other models (``SuiteConfig.transfer_from``: shipped
defense configurations, shipped classifiers, or models given to :func:`register_transfer_source`)
through their own exact gradients and judges those adversarials on this one.

Adding an attack: write it in ``attacks/``, then one runner function here and one
``AttackSpec`` entry in :data:`ATTACKS`; ``--attacks KEY`` then runs it and the checks pick it up by
its flags.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from attacks import (APGD, APGDTargeted, BPDA, FGSM, L2PGD, ExactGradient, ImplicitGradient, LatentAttack, LinfPGD,
                     OnManifoldAttack, TorchAttack)
from attacks.base import predict
from attacks.losses import Loss
from manifold_defense import DefendedClassifier, PurifiedClassifier
from manifold_defense.domains import Domain, get_domain
from manifold_defense.pretrained import SHIPPED_DEFENSES, available, defended_pretrained, diffpure_pretrained, load_pretrained

from .batch_cache import BatchCache, model_fingerprint
from .stats import format_accuracy, wilson_interval

__all__ = ["SuiteConfig", "AttackSpec", "Row", "ATTACKS", "run_suite", "worst_case", "format_table", "is_randomized",
           "WORST", "register_transfer_source", "transfer_source"]

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
    and ``correct_vote`` (majority of N runs right) are set too.
    """

    model: str
    attack: str
    threat: str
    correct: torch.Tensor = field(repr=False)
    seconds: float = 0.0
    correct_all: torch.Tensor | None = field(default=None, repr=False)
    correct_vote: torch.Tensor | None = field(default=None, repr=False)
    key: str = ""  # the registry key of the attack ("" for derived rows such as the worst case)

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


def _linf(cfg: SuiteConfig) -> str:
    return f"Linf {cfg.eps:g}"


def _none(cfg: SuiteConfig) -> str:
    return "none"


def _on_both(cfg: SuiteConfig, undefended: Callable[[], torch.Tensor] | None,
             defended: Callable[[], torch.Tensor] | None) -> Adversarials:
    """Run only the halves that ``cfg.models`` asks for (the expensive defended half is often skipped)."""
    out: Adversarials = {}
    if undefended is not None and "undefended" in cfg.models:
        out["undefended"] = undefended()
    if defended is not None and "defended" in cfg.models:
        out["defended"] = defended()
    return out


def _clean(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    return _on_both(cfg, lambda: x, lambda: x)


def _fgsm(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    attack = FGSM(eps=cfg.eps, bounds=cfg.bounds)
    return _on_both(cfg, lambda: attack(clf, x, y).adversarial,
                    lambda: attack(BPDA.from_defense(d), x, y).adversarial)


def _pgd(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    # Through the defense as deployed (gradient="detached"): its gradient is zero, the masking an
    # evaluation must see through. The row is the symptom, kept to show it.
    attack = LinfPGD(eps=cfg.eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, bounds=cfg.bounds, seed=cfg.seed)
    return _on_both(cfg, lambda: attack(clf, x, y).adversarial, lambda: attack(d, x, y).adversarial)


def _pgd40_croce(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor,
                 cfg: SuiteConfig) -> Adversarials:
    """The evaluation attack of Croce, Andriushchenko & Hein 2019 (cleverhans' ``MadryEtAl`` as their
    ``attacks.py`` calls it): 40 steps of 2 eps / 40 from a uniform random start, one run, the final
    iterate judged. A fixed protocol, to compare with their published numbers: its budget does not
    grow with the 2x-effort check. The defended model is attacked through its exact gradient."""
    attack = LinfPGD(eps=cfg.eps, steps=40, rel_stepsize=2 / 40, restarts=1, bounds=cfg.bounds, seed=cfg.seed)
    return _on_both(cfg, lambda: attack(clf, x, y).adversarial,
                    lambda: attack(ExactGradient(d, checkpoint_every=cfg.checkpoint_every), x, y).adversarial)


def _pgd_l2(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    attack = L2PGD(eps=cfg.l2_eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, bounds=cfg.bounds, seed=cfg.seed)
    return _on_both(cfg, lambda: attack(clf, x, y).adversarial,
                    lambda: attack(BPDA.from_defense(d), x, y).adversarial)


def _bpda_pgd(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    attack = LinfPGD(eps=cfg.eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, bounds=cfg.bounds, seed=cfg.seed)
    return _on_both(cfg, None, lambda: attack(BPDA.from_defense(d), x, y).adversarial)


def _bpda_apgd_amortised(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor,
                         cfg: SuiteConfig) -> Adversarials:
    if not isinstance(d, DefendedClassifier) or d.encoder is None:
        return {}  # a surrogate of projections with an encoder
    attack = APGD(eps=cfg.eps, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts, loss="dlr", bounds=cfg.bounds,
                  seed=cfg.seed)
    return _on_both(cfg, None, lambda: attack(BPDA.from_defense(d, approximation="amortised"), x, y).adversarial)


def _bpda_apgd_short(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor,
                     cfg: SuiteConfig) -> Adversarials:
    if d.purifier.shortened(cfg.surrogate_steps) is None:
        return {}  # a surrogate of iterative purifiers
    eot = cfg.eot_samples if is_randomized(d) else 1
    attack = APGD(eps=cfg.eps, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts, loss="dlr", eot_samples=eot,
                  bounds=cfg.bounds, seed=cfg.seed)
    surrogate = BPDA.from_defense(d, approximation="unroll", unroll_steps=cfg.surrogate_steps)
    return _on_both(cfg, None, lambda: attack(surrogate, x, y).adversarial)


def _implicit_apgd(loss: Loss) -> Runner:
    """APGD (CE or DLR loss) through the implicit derivative of the projection's optimum
    (attacks/implicit.py): a second adaptive family for projections whose exact gradient through the
    optimiser explodes (Defense-GAN's)."""
    def run(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
        operator = d.operator if isinstance(d, DefendedClassifier) else None
        if not isinstance(d, DefendedClassifier) or not getattr(operator, "linear", True):
            return {}  # a surrogate of projections with a linear operator
        eot = cfg.eot_samples if is_randomized(d) else 1
        attack = APGD(eps=cfg.eps, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts, loss=loss, eot_samples=eot,
                      bounds=cfg.bounds, seed=cfg.seed)
        return _on_both(cfg, None, lambda: attack(ImplicitGradient(d), x, y).adversarial)
    return run


def _eot_pgd(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    attack = LinfPGD(eps=cfg.eps, steps=cfg.eot_steps, eot_samples=cfg.eot_samples, bounds=cfg.bounds, seed=cfg.seed)
    return _on_both(cfg, None, lambda: attack(BPDA.from_defense(d), x, y).adversarial)


def _exact_apgd(loss: Loss) -> Runner:
    def run(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
        eot = cfg.eot_samples if is_randomized(d) else 1
        defended_attack = APGD(eps=cfg.eps, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts, loss=loss,
                               eot_samples=eot, bounds=cfg.bounds, seed=cfg.seed)
        plain = APGD(eps=cfg.eps, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts, loss=loss, bounds=cfg.bounds,
                     seed=cfg.seed)
        surrogate = ExactGradient(d, checkpoint_every=cfg.checkpoint_every)
        return _on_both(cfg, lambda: plain(clf, x, y).adversarial, lambda: defended_attack(surrogate, x, y).adversarial)
    return run


def _exact_apgd_t(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor,
                  cfg: SuiteConfig) -> Adversarials:
    targets = min(cfg.apgd_targets, cfg.domain.num_classes - 1)
    eot = cfg.eot_samples if is_randomized(d) else 1
    defended_attack = APGDTargeted(eps=cfg.eps, steps=cfg.apgd_t_steps, targets=targets, eot_samples=eot,
                                   bounds=cfg.bounds, seed=cfg.seed)
    plain = APGDTargeted(eps=cfg.eps, steps=cfg.apgd_t_steps, targets=targets, bounds=cfg.bounds, seed=cfg.seed)
    surrogate = ExactGradient(d, checkpoint_every=cfg.checkpoint_every)
    return _on_both(cfg, lambda: plain(clf, x, y).adversarial, lambda: defended_attack(surrogate, x, y).adversarial)


_TRANSFER_SOURCES: dict[tuple[str, str], nn.Module] = {}


def register_transfer_source(name: str, model: nn.Module, domain: str | Domain = "fashion_mnist") -> None:
    """Make ``model`` (a classifier or a :class:`PurifiedClassifier`) a source of the transfer attack
    under ``name`` for ``domain`` (``SuiteConfig(transfer_from=(name, ...))``).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"a transfer source must be an nn.Module, got {type(model).__name__}")
    dom = get_domain(domain) if isinstance(domain, str) else domain
    _TRANSFER_SOURCES[(dom.name, name)] = model


_DIFFPURE_SOURCE = re.compile(r"diffpure_t(\d+)(?:_s(\d+))?")


def transfer_source(name: str, domain: Domain) -> nn.Module:
    """The source model ``name``: one registered with :func:`register_transfer_source`, a shipped
    defense configuration (a key of ``SHIPPED_DEFENSES``: ``amortised_at``, ``projection``), a
    shipped classifier of ``domain``, or ``diffpure_t<T>[_s<S>]``: the standard ``classifier`` behind
    DiffPure with the shipped ``ddpm`` (diffuse to t* = T, denoise in S reverse steps; default T).

    Raises:
        ValueError: none of these, or a t* / step count the DDPM cannot run.
    """
    key = (domain.name, name)
    if key not in _TRANSFER_SOURCES:
        diffpure = _DIFFPURE_SOURCE.fullmatch(name)
        if name in SHIPPED_DEFENSES:
            model: nn.Module = defended_pretrained(domain, defense=name)
        elif name.startswith("classifier") and name in available(domain):
            model = load_pretrained(name, domain)
        elif diffpure is not None and {"ddpm", "classifier"} <= set(available(domain)):
            model = diffpure_pretrained(domain, t_star=int(diffpure[1]), steps=int(diffpure[2]) if diffpure[2] else None)
        else:
            raise ValueError(f"unknown transfer source {name!r}: register it (eval.suite.register_transfer_source) or "
                             f"name a shipped defense ({', '.join(sorted(SHIPPED_DEFENSES))}), classifier of "
                             f"{domain.name} or diffpure_t<T>[_s<steps>]")
        _TRANSFER_SOURCES[key] = model.eval()
    return _TRANSFER_SOURCES[key]


def _transfer(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    """Transfer (Papernot et al. 2016; the black-box row of Athalye et al. 2018): APGD-CE through each
    source's exact gradient (with EOT if it is randomised); per example, the first candidate that
    fools the judged model is kept (one query per candidate), else the first source's."""
    if not cfg.transfer_from:
        raise ValueError("the transfer attack needs source models: SuiteConfig.transfer_from (--transfer-from)")
    candidates = []
    for name in cfg.transfer_from:
        source = transfer_source(name, cfg.domain)
        randomized = isinstance(source, PurifiedClassifier) and source.randomized
        attack = APGD(eps=cfg.eps, steps=cfg.apgd_steps, restarts=cfg.apgd_restarts, loss="ce",
                      eot_samples=cfg.eot_samples if randomized else 1, bounds=cfg.bounds, seed=cfg.seed)
        target = ExactGradient(source, checkpoint_every=cfg.checkpoint_every) if isinstance(source, PurifiedClassifier) \
            else source
        weight = next(iter(source.parameters()), None)
        device = weight.device if weight is not None else x.device
        candidates.append(attack(target, x.to(device), y.to(device)).adversarial.to(x.device))

    def first_that_fools(model: nn.Module) -> torch.Tensor:
        chosen, fooled = candidates[0].clone(), torch.zeros_like(y, dtype=torch.bool)
        for adv in candidates:
            new = (predict(model, adv) != y) & ~fooled
            chosen[new], fooled = adv[new], fooled | new
        return chosen

    return _on_both(cfg, lambda: first_that_fools(clf), lambda: first_that_fools(d))


def _latent(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    if not isinstance(d, DefendedClassifier):
        return {}  # an attack in a generator's latent space
    return _on_both(cfg, None, lambda: LatentAttack(eps=cfg.eps, steps=cfg.latent_steps)(d, x, y).adversarial)


def _square(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    attack = TorchAttack("Square", eps=cfg.eps, n_queries=cfg.square_queries, seed=cfg.seed, bounds=cfg.bounds)
    return _on_both(cfg, lambda: attack(clf, x, y).adversarial, lambda: attack(d, x, y).adversarial)


def _on_manifold(clf: nn.Module, d: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, cfg: SuiteConfig) -> Adversarials:
    """Standard variant from the projection z*(x): is C (resp. the defense) still right on G(z')?"""
    if not isinstance(d, DefendedClassifier):
        return {}  # pairs on a generator's range
    z = d.project(x).z
    result = OnManifoldAttack(eta=cfg.on_manifold_eta, steps=cfg.on_manifold_steps, variant="standard",
                              seed=cfg.seed)(d.classifier, d.generator, z)
    x_adv = result.x_prime.clamp(*cfg.bounds)
    return _on_both(cfg, lambda: x_adv, lambda: x_adv)


ATTACKS: dict[str, AttackSpec] = {spec.key: spec for spec in (
    AttackSpec("clean", "clean", _clean, _none, "none"),
    AttackSpec("fgsm", "FGSM (BPDA on defended)", _fgsm, _linf, "bpda-identity"),
    AttackSpec("pgd", "PGD (naive on defended)", _pgd, _linf, "naive", iterative=True),
    AttackSpec("pgd40_croce", "PGD-40, Croce et al. 2019's protocol", _pgd40_croce, _linf, "exact-gradient"),
    AttackSpec("pgd_l2", "PGD-L2 (BPDA on defended)", _pgd_l2, lambda c: f"L2 {c.l2_eps:g}", "bpda-identity",
               worst_case=False, iterative=True),
    AttackSpec("bpda_pgd", "BPDA-PGD", _bpda_pgd, _linf, "bpda-identity", iterative=True, adaptive=True,
               needs_defense=True),
    AttackSpec("bpda_apgd_amortised", "APGD-DLR, BPDA via G(E(x))", _bpda_apgd_amortised, _linf, "bpda-amortised",
               iterative=True, adaptive=True, needs_defense=True),
    AttackSpec("bpda_apgd_short", "APGD-DLR, BPDA via the purifier shortened", _bpda_apgd_short, _linf,
               "bpda-shortened", iterative=True, adaptive=True, needs_defense=True),
    AttackSpec("implicit_apgd", "APGD-CE, implicit gradient at z*", _implicit_apgd("ce"), _linf, "bpda-implicit",
               iterative=True, adaptive=True, needs_defense=True),
    AttackSpec("implicit_apgd_dlr", "APGD-DLR, implicit gradient at z*", _implicit_apgd("dlr"), _linf,
               "bpda-implicit", iterative=True, adaptive=True, needs_defense=True),
    AttackSpec("eot_pgd", "EOT-BPDA-PGD", _eot_pgd, _linf, "bpda-identity", iterative=True, adaptive=True,
               needs_defense=True),
    AttackSpec("exact_apgd_ce", "APGD-CE, exact gradient", _exact_apgd("ce"), _linf, "exact-gradient",
               iterative=True, adaptive=True),
    AttackSpec("exact_apgd_dlr", "APGD-DLR, exact gradient", _exact_apgd("dlr"), _linf, "exact-gradient",
               iterative=True, adaptive=True),
    AttackSpec("exact_apgd_t", "APGD-T (targeted DLR), exact gradient", _exact_apgd_t, _linf, "exact-gradient",
               iterative=True, adaptive=True),
    AttackSpec("transfer", "transfer (APGD-CE on other models)", _transfer, _linf, "transfer", iterative=True),
    AttackSpec("latent", "latent reparam.", _latent, _linf, "latent", iterative=True, adaptive=True,
               needs_defense=True),
    AttackSpec("square", "Square (gradient-free)", _square, _linf, "gradient-free", iterative=True,
               gradient_free=True),
    AttackSpec("on_manifold", "on-manifold (standard)", _on_manifold, lambda c: f"L2 {c.on_manifold_eta:g} on G",
               "on-manifold", worst_case=False, iterative=True),
)}

def spec_of(row: Row) -> AttackSpec | None:
    """The registry entry of a row (None for derived rows such as the worst case)."""
    return ATTACKS.get(row.key)


def _judge(model: nn.Module, adv: torch.Tensor, y: torch.Tensor, draws: int) -> tuple[torch.Tensor, ...]:
    """One-shot correctness, and with ``draws`` > 1 also all-N-correct and majority-correct."""
    if draws <= 1:
        return (predict(model, adv) == y,)
    preds = torch.stack([predict(model, adv) for _ in range(draws)])  # (N, n)
    right = preds == y
    classes = int(max(preds.max(), y.max())) + 1
    votes = torch.nn.functional.one_hot(preds, num_classes=classes).sum(0)  # (n, classes)
    best_other = votes.scatter(1, y[:, None], 0).amax(1)
    return right[0], right.all(0), right.sum(0) > best_other  # a tie is not a correct vote


def run_suite(
    classifier: nn.Module,
    defended: PurifiedClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: SuiteConfig,
    *,
    batches: list[int] | None = None,
    progress: bool = True,
    cache: BatchCache | None = None,
) -> list[Row]:
    """Run every attack of ``cfg.attacks`` in batches of ``cfg.batch_size``; rows in suite order.

    Each (attack, batch) pair starts from its own seed, so a batch's result does not depend on what
    ran before it: a sharded run (``batches`` = this rank's batch indices) reproduces exactly the
    rows of a single-process run for those batches, and ``cache`` can keep finished pairs on disk
    (a rerun after a kill skips them: :mod:`eval.batch_cache`).

    Raises:
        ValueError: an unknown attack or model name.
    """
    unknown = [a for a in cfg.attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; known: {sorted(ATTACKS)}")
    bad_models = [m for m in cfg.models if m not in ("undefended", "defended")]
    if bad_models:
        raise ValueError(f"unknown models {bad_models}; known: ['defended', 'undefended']")
    judges = {"undefended": classifier, "defended": defended}
    draws = {"undefended": 1, "defended": cfg.draws if is_randomized(defended) else 1}
    n_batches = (len(x) + cfg.batch_size - 1) // cfg.batch_size
    mine = list(range(n_batches)) if batches is None else batches
    settings = cfg.to_dict()
    if cache is not None and "transfer" in cfg.attacks:
        # The sources' weights decide the transfer verdicts too (a name alone could be re-registered).
        settings["transfer_weights"] = [model_fingerprint(transfer_source(n, cfg.domain)) for n in cfg.transfer_from]
    rows: list[Row] = []
    bar = tqdm(cfg.attacks, desc="attacks", unit="attack", disable=not progress)
    for a, name in enumerate(bar):
        spec = ATTACKS[name]
        if spec.needs_defense and "defended" not in cfg.models:
            continue  # it has rows only for the defended model
        bar.set_postfix(attack=name)
        start = time.monotonic()
        parts: dict[str, list[tuple[torch.Tensor, ...]]] = {}
        for b in tqdm(mine, desc=name, unit="batch", leave=False, disable=not progress):
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            key = cache.key(settings, a, b, x[sl], y[sl]) if cache is not None else ""
            found = cache.get(key) if cache is not None else None
            if found is None:
                torch.manual_seed(cfg.seed * 1_000_003 + a * 10_007 + b)
                found = {model: tuple(v.cpu() for v in _judge(judges[model], adv, y[sl], draws[model]))
                         for model, adv in spec.run(classifier, defended, x[sl], y[sl], cfg).items()}
                if cache is not None:
                    cache.put(key, found)
            for model, verdicts in found.items():
                parts.setdefault(model, []).append(verdicts)
        seconds = time.monotonic() - start
        for model, chunks in parts.items():
            columns = [torch.cat(c) for c in zip(*chunks)]
            extra = columns[1:] if len(columns) == 3 else [None, None]
            rows.append(Row(model, spec.label, spec.threat(cfg), columns[0], seconds, extra[0], extra[1], key=spec.key))
    return rows


def worst_case(rows: list[Row], model: str) -> Row | None:
    """Per-example AND of correctness (under every protocol) over ``model``'s Linf worst-case rows."""
    mine = [r for r in rows if r.model == model and (s := spec_of(r)) is not None and s.worst_case]
    if not mine:
        return None
    correct = torch.stack([r.correct for r in mine]).all(0)
    extra: list[torch.Tensor | None] = [None, None]
    if all(r.correct_all is not None for r in mine):
        extra = [torch.stack([r.correct_all for r in mine]).all(0),  # type: ignore[misc]
                 torch.stack([r.correct_vote for r in mine]).all(0)]  # type: ignore[misc]
    threat = next((r.threat for r in mine if r.threat != "none"), "none")
    return Row(model, WORST, threat, correct, sum(r.seconds for r in mine), extra[0], extra[1], key="")


def format_table(rows: list[Row]) -> str:
    """A Markdown table: model | attack | threat | accuracy [95% Wilson interval] (| worst-of-N | majority)."""
    stochastic = any(r.correct_all is not None for r in rows)
    head = "| model | attack | threat model | accuracy [95% CI] |"
    rule = "|---|---|---|---|"
    if stochastic:
        head += " worst-of-N [95% CI] | majority of N [95% CI] |"
        rule += "---|---|"
    lines = [head, rule]
    for r in rows:
        cells = [format_accuracy(int(c.sum()), int(c.numel())) for c in r.protocols().values()]
        if stochastic and len(cells) == 1:
            cells += ["–", "–"]
        lines.append(f"| {r.model} | {r.attack} | {r.threat} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

