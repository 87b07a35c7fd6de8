"""Running the suite: :func:`run_suite` attacks a batch with every requested family and judges the
adversarials itself on the deployed models; :func:`worst_case` is their per-example AND;
:func:`format_table` prints the rows.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from tqdm import tqdm

from attacks.base import predict
from manifold_defense import PurifiedClassifier

from .batch_cache import BatchCache, model_fingerprint
from .judge import quantise
from .stats import format_accuracy
from .config import Row, SuiteConfig, WORST, is_randomized
from .families import ATTACKS, spec_of, transfer_source

__all__ = ["run_suite", "worst_case", "format_table"]


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

    Against a randomised defense, every worst-case row of the defended model keeps each image's
    adversarial example (:attr:`Row.candidates`, int8 steps of eps / 127, cached with the verdicts):
    the report chooses among them on some draws and judges on others (:mod:`eval.report.judging`).

    Each (attack, batch) pair starts from its own seed, so a batch's result does not depend on what
    ran before it: a sharded run (``batches`` = this rank's batch indices) reproduces exactly the
    rows of a single-process run for those batches, and ``cache`` can keep finished pairs on disk
    (a rerun after a kill skips them: :mod:`eval.suite.batch_cache`).

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
    keep_candidates = is_randomized(defended) and "defended" in cfg.models
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
        keep = keep_candidates and spec.worst_case
        parts: dict[str, list[tuple[torch.Tensor, ...]]] = {}
        kept: dict[str, list[torch.Tensor]] = {}
        for b in tqdm(mine, desc=name, unit="batch", leave=False, disable=not progress):
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            key = cache.key(settings, a, b, x[sl], y[sl]) if cache is not None else ""
            candidates = cache.get_candidates(key) if cache is not None and keep else None
            found = None
            if cache is not None and keep and candidates is None:
                cache.misses += 1  # the verdicts alone are not enough: the attack reruns
            elif cache is not None:
                found = cache.get(key)
            if found is None or (keep and candidates is None):
                torch.manual_seed(cfg.seed * 1_000_003 + a * 10_007 + b)
                adversarials = spec.run(classifier, defended, x[sl], y[sl], cfg)
                found = {model: tuple(v.cpu() for v in _judge(judges[model], adv, y[sl], draws[model]))
                         for model, adv in adversarials.items()}
                candidates = {"defended": quantise(adversarials["defended"] - x[sl], cfg.eps)} \
                    if keep and "defended" in adversarials else {}
                if cache is not None:
                    cache.put(key, found)
                    if keep:
                        cache.put_candidates(key, candidates)
            for model, verdicts in found.items():
                parts.setdefault(model, []).append(verdicts)
            for model, deltas in (candidates or {}).items():
                kept.setdefault(model, []).append(deltas)
        seconds = time.monotonic() - start
        for model, chunks in parts.items():
            columns = [torch.cat(c) for c in zip(*chunks)]
            extra = columns[1:] if len(columns) == 3 else [None, None]
            rows.append(Row(model, spec.label, spec.threat(cfg), columns[0], seconds, extra[0], extra[1], key=spec.key,
                            candidates=torch.cat(kept[model]) if model in kept else None))
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
