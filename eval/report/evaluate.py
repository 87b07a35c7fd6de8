"""The report as one Python call: :func:`evaluate` plans, runs the suite per eps (sharded over a
torch.distributed group when one is initialised, resumable through the batch cache), folds in an
earlier report it extends, runs the checks and returns a :class:`Report`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import torch
from torch import nn
import torch.distributed as dist

from manifold_defense import DefendedClassifier, ProjectionConfig, PurifiedClassifier, Purifier
from manifold_defense.domains import Domain, get_domain

from . import checks
from ..suite.batch_cache import BatchCache, model_fingerprint
from ..suite import Row, SuiteConfig, is_randomized, run_suite, spec_of, worst_case
from .fold import _prepend, _scatter
from .judging import judge_rows, load_candidates
from .measure import _exact_step_cost, _peak_rss_mib, _record, _run_checks, _seconds_per_prediction
from .options import DEFAULT_ATTACKS, Report, ReportOptions
from .plan import _schedule, describe_purifier

__all__ = ["evaluate"]


def _as_defended(model: nn.Module, generator: nn.Module | None, encoder: nn.Module | None,
                 projection: ProjectionConfig | None, purifier: Purifier | None, domain: Domain) -> PurifiedClassifier:
    if isinstance(model, PurifiedClassifier):
        if generator is not None or encoder is not None or projection is not None or purifier is not None:
            raise TypeError(f"evaluate() got a {type(model).__name__} and generator/encoder/projection/purifier: "
                            "pass one or the other")
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"evaluate() needs an nn.Module, got {type(model).__name__}")
    if purifier is not None:
        if generator is not None or encoder is not None or projection is not None:
            raise TypeError("evaluate() got purifier= and generator/encoder/projection: a projection is one purifier, "
                            "pass one or the other")
        if not isinstance(purifier, Purifier):
            raise TypeError(f"purifier= must be a manifold_defense.purify.Purifier, got {type(purifier).__name__}; "
                            "wrap your module: as_purifier(module, randomized=..., pixel_range=...)")
        if tuple(purifier.pixel_range) != tuple(domain.pixel_range):
            raise ValueError(f"the purifier works in the pixel range {purifier.pixel_range} but the {domain.name} "
                             f"images are in {domain.pixel_range}")
        return PurifiedClassifier(model, purifier).eval()
    if generator is None:
        raise TypeError("evaluate() needs a defended model (PurifiedClassifier or DefendedClassifier), or a classifier "
                        "with purifier=, or with generator= (and optionally encoder= and projection=)")
    config = projection or (ProjectionConfig(pixel_range=domain.pixel_range) if encoder is not None else
                            ProjectionConfig(restarts=10, steps=100, init_std=1.0, pixel_range=domain.pixel_range))
    return DefendedClassifier(model, generator, config, encoder=encoder).eval()


def _device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def evaluate(
    model: nn.Module,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    generator: nn.Module | None = None,
    encoder: nn.Module | None = None,
    projection: ProjectionConfig | None = None,
    purifier: Purifier | None = None,
    domain: str | Domain = "fashion_mnist",
    num_images: int = 500,
    suite: SuiteConfig | None = None,
    eps: Sequence[float] | None = None,
    options: ReportOptions | None = None,
) -> Report:
    """Run the honest report on a defended model.

    Args:
        model: a defended model (:class:`PurifiedClassifier`, :class:`DefendedClassifier`), or a classifier
            to put behind ``purifier`` or behind ``generator``'s projection.
        x, y: test images (N, C, H, W) in the domain's pixel range and labels (N,); None: the first
            ``num_images`` test images of ``domain``. They are copied to the model's device, never modified.
        generator, encoder, projection: with a bare classifier, the defense to build around it (default
            projection: 10 random restarts x 100 steps, or the encoder warm start + 50 steps).
        purifier: with a bare classifier, any other purifier (:mod:`manifold_defense.purify`;
            ``as_purifier(module, randomized=...)`` for your own module).
        domain: the images' domain (pixel range, classes, budgets).
        num_images: how many test images of the domain when ``x`` is None.
        suite: the attacks and their budgets (default: :data:`DEFAULT_ATTACKS` at the suite's budgets).
        eps: Linf budgets (default: half, one and two times the domain's).
        options: checks, cache, extend, progress, names (see :class:`ReportOptions`).

    Returns:
        The :class:`Report` (on every rank under torch.distributed; only rank 0's holds the rows of
        all ranks, the others hold their own).

    Raises:
        TypeError: a model that is neither a defended model nor a classifier with a purifier or generator.
        ValueError: images that do not fit the domain, an ``extend`` report of another evaluation,
            a ``survivors_of`` report of another defense (or with ``checks``, several eps or the
            undefended model), nothing left to attack, fewer batches than processes, or select/judge
            draws out of range.
    """
    dom = get_domain(domain) if isinstance(domain, str) else domain
    opts = options or ReportOptions()
    draws = (suite or SuiteConfig(domain=dom)).draws
    if opts.select_draws < 1 or (opts.judge_draws and opts.judge_draws < draws):
        raise ValueError(f"options.select_draws must be >= 1 and options.judge_draws 0 or >= the suite's draws ({draws}): "
                         f"got {opts.select_draws} and {opts.judge_draws}")
    defended = _as_defended(model, generator, encoder, projection, purifier, dom)
    if isinstance(defended, DefendedClassifier) and tuple(defended.image_shape) != tuple(dom.image_shape):
        raise ValueError(f"the defense's generator makes images of shape {tuple(defended.image_shape)} but the "
                         f"{dom.name} images are {dom.image_shape}")
    if (x is None) != (y is None):
        raise ValueError("pass both x and y, or neither (then the domain's first num_images test images)")
    if x is None or y is None:
        x, y = dom.load("test", limit=num_images)
    device = _device(defended)
    x, y = x.detach().to(device), y.detach().to(device)
    base = suite or SuiteConfig(domain=dom, attacks=DEFAULT_ATTACKS)
    if base.domain.name != dom.name:
        raise ValueError(f"the suite's domain is {base.domain.name!r} but the images are {dom.name!r}")
    budget = dom.budgets.linf_eps
    eps_list = [float(e) for e in eps] if eps else [budget / 2, budget, 2 * budget]
    large_eps = opts.large_eps if opts.large_eps is not None else (dom.pixel_range[1] - dom.pixel_range[0]) / 2
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    classifier = defended.classifier
    n = len(x)
    described = {"spec": opts.name, "classifier": opts.classifier_name, **describe_purifier(defended)}
    schedule, previous = _schedule(described, dom, eps_list, base, opts, n, world)
    schedule.check()
    kept, done, n_batches = schedule.kept, schedule.done, schedule.batches
    # With survivors_of: the indices (>= kept) of the images attacked here, in their own batches.
    attacked = torch.tensor(schedule.attacked, dtype=torch.long) if schedule.sources else None
    x_run, y_run = (x[attacked.to(device)], y[attacked.to(device)]) if attacked is not None else (x, y)
    run = len(x_run)
    batch_sizes = [min(base.batch_size, run - b * base.batch_size) for b in range(n_batches)]
    mine = list(range(done + rank, n_batches, world))  # each batch keeps its index, hence its seed

    speed = _seconds_per_prediction(classifier, defended, x[:base.batch_size])
    step_cost = _exact_step_cost(defended, x[:base.batch_size], y[:base.batch_size], base.checkpoint_every)
    cache = None
    if opts.cache:
        fingerprint = model_fingerprint(classifier, defended.purifier, extra=[describe_purifier(defended),
                                                                             defended.gradient])
        cache = BatchCache(opts.cache, fingerprint=fingerprint)
    start = time.monotonic()
    earlier = load_candidates(opts.extend) if previous is not None and opts.extend is not None else {}
    per_eps: dict[float, list[Row]] = {}
    for e in eps_list:
        cfg = dataclasses.replace(base, eps=e)
        rows = _gather(run_suite(classifier, defended, x_run, y_run, cfg, batches=mine,
                                 progress=opts.progress and rank == 0, cache=cache), mine, world, batch_sizes)
        if attacked is not None and rank == 0:
            rows = [_scatter(r, attacked - kept, n - kept) for r in rows]
        if previous is not None and rank == 0:
            rows = _prepend(rows, previous, e, earlier)
        for m in ("undefended", "defended"):
            w = worst_case(rows, m)
            if w is not None and (rank == 0 or world == 1):
                rows.append(w)
        per_eps[e] = rows
    sample = (x[:8], y[:8])
    if rank != 0:
        return Report({}, per_eps, [], defended, sample)

    judged = _judge(defended, x, y, per_eps, opts, base, dom, surviving=bool(schedule.sources))
    main_eps = eps_list[len(eps_list) // 2]
    found: list[checks.Check] = []
    if opts.checks:
        if opts.partial_out is not None:
            # The suite's results first: the checks can run for hours, and a crash must not lose them.
            partial = _record(opts, described, base, dom, per_eps, [], time.monotonic() - start, world, n, eps_list,
                              device)
            partial["seconds_per_prediction"] = speed
            partial["exact_gradient_step"] = step_cost
            partial["checks_status"] = "running: this file is rewritten with the checks when they finish"
            if judged:
                partial["judged"] = judged
            Report(partial, per_eps, [], defended, sample).write(opts.partial_out, figures=False)
        found = _run_checks(classifier, defended, x[:opts.check_n], y[:opts.check_n], base, main_eps, large_eps,
                            per_eps[main_eps], cache, effort=opts.effort_check, robust_training=opts.robust_training)
    record = _record(opts, described, base, dom, per_eps, found, time.monotonic() - start, world, n, eps_list, device)
    record["seconds_per_prediction"] = speed
    record["exact_gradient_step"] = step_cost
    record["peak_rss_mib"] = _peak_rss_mib()
    if judged:
        record["judged"] = judged
    if previous is not None:
        # Images 0..k-1 come from the extended report (its command, code version and seconds);
        # "seconds" above counts only the images attacked here.
        record["extends"] = {"report": str(opts.extend), "images": previous["n"], "command": previous["command"],
                             "seconds": previous["seconds"], "versions": previous.get("versions")}
    if attacked is not None:
        record["survivors_of"] = {"reports": list(schedule.sources), "first": kept, "images": n - kept, "attacked": len(attacked)}
    if cache is not None:
        # Rows served from the cache took no time here: "seconds" counts recomputed batches only.
        record["cache"] = {"dir": str(opts.cache), "hits": cache.hits, "misses": cache.misses,
                           "counted_on": "rank 0" if world > 1 else "this process"}
    return Report(record, per_eps, found, defended, sample)


def _judge(defended: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, per_eps: dict[float, list[Row]],
           opts: ReportOptions, base: SuiteConfig, dom: Domain, *, surviving: bool) -> dict[str, Any]:
    """Per eps, the judged section of a randomised defense (:mod:`.judging`), or why there is none."""
    out: dict[str, Any] = {}
    if not opts.judge_draws or not is_randomized(defended):
        return out
    for e, rows in per_eps.items():
        worst = [r for r in rows if r.model == "defended" and (s := spec_of(r)) is not None and s.worst_case]
        if not worst:
            continue
        if any(r.candidates is None for r in worst):
            out[str(e)] = ("some worst-case rows have no candidates (an extended report written before candidates "
                           "were kept)")
            continue
        if surviving:
            out[str(e)] = ("a survivors_of report counts the images it did not attack as broken; fold its candidates "
                           "with the earlier reports' (python -m eval.judged --fold ...)")
            continue
        section = judge_rows(defended, x, y, rows, eps=e, bounds=dom.pixel_range, select_draws=opts.select_draws,
                             judge_draws=opts.judge_draws, votes=base.draws, seed=base.seed,
                             batch_size=max(base.batch_size, 256))
        if section is not None:
            out[str(e)] = section
    return out


def _gather(rows: list[Row], batches: list[int], world: int, batch_sizes: list[int]) -> list[Row]:
    """Reassemble every rank's rows in batch order on rank 0 (other ranks keep their own)."""
    if world == 1:
        return rows
    payload = (batches, [(r.model, r.attack, r.threat, r.correct, r.seconds, r.correct_all, r.correct_vote, r.key,
                          r.candidates) for r in rows])
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, payload)
    if dist.get_rank() != 0:
        return rows
    merged = []
    for i, (model, attack, threat, *_) in enumerate(payload[1]):
        columns: list[torch.Tensor | None] = []
        for j in (3, 5, 6, 8):  # correct, correct_all, correct_vote, candidates
            if payload[1][i][j] is None:
                columns.append(None)
                continue
            by_batch: dict[int, torch.Tensor] = {}
            for rank_batches, rank_rows in gathered:
                flat, offset = rank_rows[i][j], 0
                for b in rank_batches:  # a rank's tensor covers its batches in order
                    by_batch[b] = flat[offset:offset + batch_sizes[b]]
                    offset += batch_sizes[b]
            columns.append(torch.cat([by_batch[b] for b in sorted(by_batch)]))
        correct, correct_all, correct_vote, candidates = columns
        if correct is None:
            raise RuntimeError(f"rank results for {model} | {attack} lack one-shot verdicts")
        merged.append(Row(model, attack, threat, correct, max(rr[i][4] for _, rr in gathered), correct_all, correct_vote,
                          key=payload[1][i][7], candidates=candidates))
    return merged
