"""The attack families of the suite: one runner per family and its :class:`AttackSpec` entry in
:data:`ATTACKS` (adding an attack: write it in ``attacks/``, then one runner and one entry here), and
the transfer sources.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

from attacks import APGD, APGDTargeted, BPDA, ExactGradient, FGSM, ImplicitGradient, L2PGD, LatentAttack, LinfPGD, OnManifoldAttack, TorchAttack
from attacks.base import predict
from attacks.losses import Loss
from manifold_defense import DefendedClassifier, PurifiedClassifier
from manifold_defense.domains import Domain, get_domain
from manifold_defense.pretrained import SHIPPED_DEFENSES, available, defended_pretrained, diffpure_pretrained, load_pretrained

from .config import Adversarials, AttackSpec, Row, Runner, SuiteConfig, is_randomized

__all__ = ["register_transfer_source", "transfer_source", "ATTACKS", "spec_of"]


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
