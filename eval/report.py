"""The honest robustness report as one Python call, for any defended model, including yours.

:func:`evaluate` runs the attack suite (:mod:`eval.suite`) per eps on a defended model and its bare
classifier, takes the per-example worst case, runs the sanity checks (:mod:`eval.checks`) and returns
a :class:`Report`: rows, per-example results, checks, timings, and methods that write the JSON,
Markdown and figures. ``python -m eval.robustness`` is a thin command line over it (same per-example
results for the same settings), as RobustBench's CLI is over ``benchmark``.

The batch cache (resume a killed run), ``extend`` (keep an earlier report's verdicts and attack only
the new images) and torch.distributed sharding (when a process group is initialised, each rank
attacks its share of the batches and rank 0 gets the report) work the same from Python.

Example:
    >>> import torch
    >>> from manifold_defense import DefendedClassifier, ProjectionConfig, PurifiedClassifier, Purifier
    >>> from manifold_defense.models import MLP, WGANGenerator
    >>> from eval.report import ReportOptions, evaluate
    >>> from eval.suite import SuiteConfig
    >>> from manifold_defense.domains import get_domain
    >>> _ = torch.manual_seed(0)
    >>> defended = DefendedClassifier(MLP(hidden=8, depth=1), WGANGenerator(latent_dim=4, dim=2),
    ...                               ProjectionConfig(restarts=2, steps=3, init_std=1.0, seed=0)).eval()
    >>> x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    >>> suite = SuiteConfig(domain=get_domain("fashion_mnist"), attacks=("clean", "fgsm"), batch_size=4)
    >>> report = evaluate(defended, x, y, suite=suite, eps=[0.1], options=ReportOptions(checks=False, progress=False))
    >>> 0.0 <= report.robust_accuracy() <= 1.0
    True
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from attacks import APGD, BPDA, ExactGradient
from manifold_defense import DefendedClassifier, ProjectionConfig, PurifiedClassifier, Purifier
from manifold_defense.domains import Domain, get_domain

from . import checks
from .batch_cache import BatchCache, model_fingerprint
from .suite import ATTACKS, WORST, Row, SuiteConfig, format_table, run_suite, worst_case

__all__ = ["evaluate", "plan", "AttackPlan", "Report", "ReportOptions", "DEFAULT_ATTACKS", "extended_reports"]

DEFAULT_ATTACKS = ("clean", "fgsm", "pgd", "pgd_l2", "bpda_pgd", "bpda_apgd_amortised", "eot_pgd", "exact_apgd_ce",
                   "exact_apgd_dlr", "implicit_apgd", "latent", "square", "on_manifold")


@dataclass
class ReportOptions:
    """What the report does besides the attacks (their budgets are the :class:`SuiteConfig`).

    Attributes:
        checks: run the sanity checks after the suite.
        effort_check: include the costliest check, the 2x-effort rerun (reported SKIPPED otherwise).
        check_n: images the checks use (the first ones).
        large_eps: budget of the falls-to-chance check (None: half the pixel range).
        cache: a directory that keeps finished (attack, batch) verdicts: the same call resumes.
        extend: an earlier report directory of the same evaluation on the first k images: its
            verdicts are kept and only images k.. are attacked (each batch keeps its seed).
        partial_out: write the suite's results here before the checks start (they can take hours).
        progress: progress bars (rank 0 only).
        name: the defense's name in the report (the CLI's ``--defense``).
        classifier_name: the classifier's name in the report (None: not recorded).
        robust_training: how the classifier was adversarially trained (the breaks-undefended check
            is skipped for such a classifier); None: standard training.
        command: the command recorded in the report (default: a description of this call).
        channels_last: recorded only (the generator's memory format).
        survivors_of: earlier report directories of this same defense (AutoAttack's rule: attack only
            what is not yet broken): only the images that some protocol of their combined per-example
            worst case still classifies correctly are attacked; every other image counts as broken (0)
            in every row, so a row reads "this attack after those reports". Fold the result into those
            reports with ``eval.reference_table --column TITLE=R1+R2+THIS:defended``. Needs one eps,
            the defended model only and ``checks=False``.
    """

    checks: bool = True
    effort_check: bool = True
    check_n: int = 100
    large_eps: float | None = None
    cache: str | Path | None = None
    extend: str | Path | None = None
    partial_out: str | Path | None = None
    progress: bool = True
    name: str = "python"
    classifier_name: str | None = None
    robust_training: str | None = None
    command: str | None = None
    channels_last: bool = False
    survivors_of: tuple[str | Path, ...] = ()


@dataclass
class Report:
    """The result of :func:`evaluate`: ``record`` is the JSON document (every setting, versions, per-attack
    and worst-case accuracy, per-example results, checks, timings); ``rows`` the suite's rows per eps."""

    record: dict[str, Any]
    rows: dict[float, list[Row]]
    checks: list[checks.Check]
    defended: PurifiedClassifier
    sample: tuple[torch.Tensor, torch.Tensor]  # the first images, for the figures

    @property
    def main_eps(self) -> float:
        """The middle budget of the eps list (the one the checks and figures use)."""
        eps = sorted(self.rows)
        return eps[len(eps) // 2]

    def robust_accuracy(self, eps: float | None = None, model: str = "defended") -> float:
        """The per-example worst case over the Linf attacks (``model``: "defended" or "undefended").

        Raises:
            KeyError: no such eps or model in the report.
        """
        rows = self.rows[self.main_eps if eps is None else eps]
        for row in rows:
            if row.model == model and row.attack == WORST:
                return row.accuracy
        raise KeyError(f"no worst case for {model!r} in the report (its models: {sorted({r.model for r in rows})})")

    def per_example(self) -> dict[str, dict[str, str]]:
        """Per eps and 'model | attack [| protocol]': one character per image, 1 = still correct."""
        return dict(self.record["per_example"])

    def markdown(self) -> str:
        """The report as Markdown: the command, the setting, one table per eps, the checks."""
        record = self.record
        lines = [f"Command: `{record['command']}`", "",
                 f"n = {record['n']} {record['domain']['title']} test images (the first n), seed {record['seed']}; "
                 f"{record['seconds']:.0f} s on {record['threads']} CPU threads x {record['world_size']} process(es). "
                 "Brackets: 95% Wilson confidence intervals.", ""]
        if "extends" in record:
            ext = record["extends"]
            lines[2:2] = [f"The first {ext['images']} images are those of `{ext['report']}` (its command: "
                          f"`{ext['command']}`; {ext['seconds']:.0f} s by its record); the seconds below count only "
                          "the images attacked by this command.", ""]
        if "survivors_of" in record:
            surv = record["survivors_of"]
            sources = " + ".join(f"`{r}`" for r in surv["reports"])
            lines[2:2] = [f"Only {surv['attacked']} of the {surv['images']} images {surv['first']}..{record['n'] - 1} were "
                          f"attacked: those that survived the per-example worst case of {sources} under some protocol. "
                          "Every other image counts as broken (0) in every row, so each row reads \"this attack after "
                          "those reports\", not the attack's strength alone; fold the report into them with "
                          "`python -m eval.reference_table --column TITLE=REPORT+...+THIS:defended`.", ""]
        cost = record.get("exact_gradient_step")
        if cost:
            speed = record.get("seconds_per_prediction", {})
            lines += [f"Cost: {speed.get('defended', float('nan')):.3g} s per defended prediction per image; one "
                      f"exact-gradient attack step {cost['seconds_per_image']:.3g} s per image (batch {cost['batch']}, "
                      f"segments of {cost['checkpoint_every']} steps); peak memory of the process "
                      f"{record.get('peak_rss_mib') or cost.get('peak_rss_mib_after')} MiB.", ""]
        for eps_value, rows in self.rows.items():
            lines += [f"### Linf eps = {eps_value:g}", "", format_table(rows), ""]
        if self.checks:
            lines += ["### Sanity checks", ""] + [f"- {c.line()}" for c in self.checks] + [""]
        return "\n".join(lines)

    def write(self, out: str | Path, *, figures: bool = True) -> Path:
        """Write ``robustness.json``, ``robustness.md`` and (``figures``) ``accuracy_vs_eps.png`` and
        ``examples.png`` (x / adversarial / projection) into the directory ``out``; returns it.

        A survivors_of report gets no ``examples.png``: its sample (the first images) need not be the
        images it attacked, and the figure's own 20-step exact attack would cost minutes for nothing."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "robustness.json").write_text(json.dumps(self.record, indent=2) + "\n")
        (out / "robustness.md").write_text(self.markdown())
        if figures:
            _figures(out, self.rows, self.defended, *self.sample, self.main_eps,
                     examples="survivors_of" not in self.record)
        return out

    def files(self, *, figures: bool = True) -> list[str]:
        """The names :meth:`write` writes."""
        names = ["robustness.json", "robustness.md"]
        if figures:
            names += ["accuracy_vs_eps.png"] + ([] if "survivors_of" in self.record else ["examples.png"])
        return names


@dataclass(frozen=True)
class AttackPlan:
    """What a run of :func:`evaluate` would attack, known before any attack runs (:func:`plan`).

    Attributes:
        n: images in the report.
        kept: the first images, whose verdicts come from the ``extend`` report.
        attacked: indices of the images this run attacks (with ``survivors_of``: only the survivors
            among images ``kept..n-1``; otherwise all of them).
        batch_size: images per batch.
        done: batches whose verdicts come from the extended report (survivors form their own batches: 0).
        batches: batches in all, ``done`` included.
        world: processes that share the batches.
        sources: the ``survivors_of`` reports (empty: none).
    """

    n: int
    kept: int
    attacked: tuple[int, ...]
    batch_size: int
    done: int
    batches: int
    world: int
    sources: tuple[str, ...] = ()

    @property
    def per_process(self) -> list[int]:
        """Batches each process attacks (rank r takes batches done+r, done+r+world, ...)."""
        return [len(range(self.done + r, self.batches, self.world)) for r in range(self.world)]

    def even_batch_size(self) -> int:
        """The batch size that gives each process one batch of the attacked images (for a survivors
        run, whose attacked images form their own batches)."""
        return max(1, -(-len(self.attacked) // self.world))

    def check(self) -> None:
        """Raises:
            ValueError: nothing to attack, or fewer batches to attack than processes."""
        if not self.attacked:
            raise ValueError(f"survivors_of: the worst case of {list(self.sources)} already breaks images "
                             f"{self.kept}..{self.n - 1}: nothing left to attack")
        if self.batches - self.done < self.world:
            raise ValueError(f"{self.batches - self.done} batch(es) of batch_size {self.batch_size} to attack but "
                             f"{self.world} processes: use fewer processes or a smaller batch size")

    def describe(self) -> str:
        """One paragraph for a person choosing --batch-size and the number of processes."""
        which = (f": the survivors among images {self.kept}..{self.n - 1} of {' + '.join(self.sources)}"
                 if self.sources else f": images {self.kept}..{self.n - 1}")
        lines = [f"would attack {len(self.attacked)} of the {self.n} images{which}"
                 + (f" (the first {self.kept} kept from --extend)" if self.kept else ""),
                 f"{self.batches - self.done} batch(es) of at most {self.batch_size} on {self.world} process(es): "
                 f"{', '.join(str(k) for k in self.per_process)} batch(es) per process"]
        if self.sources:
            lines.append(f"--batch-size {self.even_batch_size()} gives each process one batch")
        try:
            self.check()
        except ValueError as exc:
            lines.append(f"this run would fail: {exc}")
        return "\n".join(lines)


def _schedule(described: dict[str, Any], dom: Domain, eps_list: list[float], base: SuiteConfig, opts: ReportOptions,
              n: int, world: int) -> tuple[AttackPlan, dict[str, Any] | None]:
    """Which images and batches a run attacks, from ``extend`` and ``survivors_of`` (reads only reports),
    and the extended report."""
    previous = (_previous_report(opts.extend, dom, eps_list, base, described, rebatch=bool(opts.survivors_of))
                if opts.extend else None)
    kept = previous["n"] if previous else 0
    if kept >= n:
        raise ValueError(f"extend={opts.extend} already covers {kept} images; ask for more")
    sources = [str(p) for p in opts.survivors_of]
    if previous is not None and not _same_sources(previous.get("survivors_of", {}).get("reports", []), sources):
        raise ValueError(f"extend={opts.extend} attacked the survivors of {previous.get('survivors_of', {}).get('reports', [])} "
                         f"but this run those of {sources}: extend a report with the same survivors_of (or with "
                         "reports that --extend those)")
    if sources:
        alive = _survivors(sources, dom, eps_list, base, opts, described, n)
        indices = tuple(int(i) for i in torch.nonzero(alive[kept:]).flatten() + kept)
        run, done = len(indices), 0  # the survivors form their own batches
    else:
        indices, run, done = tuple(range(kept, n)), n, kept // base.batch_size
    plan = AttackPlan(n=n, kept=kept, attacked=indices, batch_size=base.batch_size, done=done,
                      batches=(run + base.batch_size - 1) // base.batch_size, world=world, sources=tuple(sources))
    return plan, previous


def plan(defended: PurifiedClassifier, n: int, *, suite: SuiteConfig, eps: Sequence[float],
         options: ReportOptions | None = None, world: int = 1) -> AttackPlan:
    """What :func:`evaluate` would attack with these settings, without attacking (the CLI's ``--dry-run``).

    Args:
        defended: the defended model (its description must match any ``extend`` / ``survivors_of`` report).
        n: images in the report (the first ``n`` test images).
        suite: the attacks and batch size.
        eps: the Linf budgets.
        options: ``extend``, ``survivors_of`` and the names, as :func:`evaluate` would get them.
        world: processes that would share the batches.

    Returns:
        The :class:`AttackPlan` (its ``describe()`` prints the counts; its ``check()`` raises where
        :func:`evaluate` would).

    Raises:
        ValueError: as :func:`evaluate` for an ``extend`` or ``survivors_of`` report that does not fit.

    Example:
        >>> from manifold_defense import DefendedClassifier, ProjectionConfig
        >>> from manifold_defense.models import MLP, WGANGenerator
        >>> from manifold_defense.domains import get_domain
        >>> from eval.suite import SuiteConfig
        >>> defended = DefendedClassifier(MLP(hidden=8, depth=1), WGANGenerator(latent_dim=4, dim=2),
        ...                               ProjectionConfig(restarts=1, steps=1))
        >>> p = plan(defended, 10, suite=SuiteConfig(domain=get_domain("fashion_mnist"), batch_size=4), eps=[0.1],
        ...          world=2)
        >>> p.batches, p.per_process
        (3, [2, 1])
    """
    opts = options or ReportOptions()
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if world < 1:
        raise ValueError(f"world must be at least 1, got {world}")
    described = {"spec": opts.name, "classifier": opts.classifier_name, **describe_purifier(defended)}
    return _schedule(described, suite.domain, [float(e) for e in eps], suite, opts, n, world)[0]


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
            raise TypeError(f"purifier= must be a manifold_defense.purifiers.Purifier, got {type(purifier).__name__}; "
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


def describe_purifier(defended: PurifiedClassifier) -> dict[str, Any]:
    """What a report records about the defense: the projection's settings, or the purifier's class and repr."""
    if isinstance(defended, DefendedClassifier):
        return {"kind": "projection", "projection": defended.config.to_dict(), "encoder": defended.encoder is not None}
    p = defended.purifier
    return {"kind": type(p).__name__, "settings": p.extra_repr(), "randomized": p.randomized}


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
        purifier: with a bare classifier, any other purifier (:mod:`manifold_defense.purifiers`;
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
            undefended model), nothing left to attack, or fewer batches than processes.
    """
    dom = get_domain(domain) if isinstance(domain, str) else domain
    opts = options or ReportOptions()
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
    per_eps: dict[float, list[Row]] = {}
    for e in eps_list:
        cfg = dataclasses.replace(base, eps=e)
        rows = _gather(run_suite(classifier, defended, x_run, y_run, cfg, batches=mine,
                                 progress=opts.progress and rank == 0, cache=cache), mine, world, batch_sizes)
        if attacked is not None and rank == 0:
            rows = [_scatter(r, attacked - kept, n - kept) for r in rows]
        if previous is not None and rank == 0:
            rows = _prepend(rows, previous, e)
        for m in ("undefended", "defended"):
            w = worst_case(rows, m)
            if w is not None and (rank == 0 or world == 1):
                rows.append(w)
        per_eps[e] = rows
    sample = (x[:8], y[:8])
    if rank != 0:
        return Report({}, per_eps, [], defended, sample)

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
            Report(partial, per_eps, [], defended, sample).write(opts.partial_out, figures=False)
        found = _run_checks(classifier, defended, x[:opts.check_n], y[:opts.check_n], base, main_eps, large_eps,
                            per_eps[main_eps], cache, effort=opts.effort_check, robust_training=opts.robust_training)
    record = _record(opts, described, base, dom, per_eps, found, time.monotonic() - start, world, n, eps_list, device)
    record["seconds_per_prediction"] = speed
    record["exact_gradient_step"] = step_cost
    record["peak_rss_mib"] = _peak_rss_mib()
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


def _gather(rows: list[Row], batches: list[int], world: int, batch_sizes: list[int]) -> list[Row]:
    """Reassemble every rank's rows in batch order on rank 0 (other ranks keep their own)."""
    if world == 1:
        return rows
    payload = (batches, [(r.model, r.attack, r.threat, r.correct, r.seconds, r.correct_all, r.correct_vote, r.key)
                         for r in rows])
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, payload)
    if dist.get_rank() != 0:
        return rows
    merged = []
    for i, (model, attack, threat, *_) in enumerate(payload[1]):
        columns: list[torch.Tensor | None] = []
        for j in (3, 5, 6):  # correct, correct_all, correct_vote
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
        correct, correct_all, correct_vote = columns
        if correct is None:
            raise RuntimeError(f"rank results for {model} | {attack} lack one-shot verdicts")
        merged.append(Row(model, attack, threat, correct, max(rr[i][4] for _, rr in gathered), correct_all, correct_vote,
                          key=payload[1][i][7]))
    return merged


@torch.no_grad()
def _peak_rss_mib() -> float | None:
    """This process's peak resident memory so far (Linux reports KiB; None where unavailable)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _exact_step_cost(defended: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor,
                     checkpoint_every: int) -> dict[str, float | None]:
    """Seconds per image of one exact-gradient attack step (the deployed purifier's forward, the
    classifier, the backward pass to x) on one batch, and the process's peak memory after it."""
    surrogate = ExactGradient(defended, checkpoint_every=checkpoint_every)
    x_in = x.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(surrogate(x_in), y)
    torch.autograd.grad(loss, x_in)
    if x.is_cuda:
        torch.cuda.synchronize(x.device)
    return {"seconds_per_image": round((time.perf_counter() - start) / len(x), 5), "batch": len(x),
            "checkpoint_every": checkpoint_every, "peak_rss_mib_after": _peak_rss_mib()}


def _seconds_per_prediction(classifier: nn.Module, defended: PurifiedClassifier, x: torch.Tensor) -> dict[str, float]:
    """Wall-clock seconds per image of one batched prediction (after a warm-up call), per model."""
    out = {}
    for name, model in (("undefended", classifier), ("defended", defended)):
        model(x[:2])
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        out[name] = (time.perf_counter() - start) / len(x)
    return out


def _run_checks(classifier: nn.Module, defended: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor,
                base: SuiteConfig, eps: float, large_eps: float, rows: list[Row],
                cache: BatchCache | None = None, effort: bool = True,
                robust_training: str | None = None) -> list[checks.Check]:
    found = []
    model = "defended" if "defended" in base.models else "undefended"
    # 1. Accuracy falls to chance at a budget that can erase the image.
    key = "bpda_pgd" if model == "defended" else "exact_apgd_dlr"
    large = run_suite(classifier, defended, x, y, dataclasses.replace(base, eps=large_eps, attacks=(key,), models=(model,)),
                      progress=False, cache=cache)
    found.append(checks.falls_to_chance(large[0].accuracy, large_eps, chance=base.domain.chance))
    # 2. Doubling the iterations of the iterative attacks does not change the worst case: the
    #    reported rows (on the check images) against a rerun of those attacks with 2x the effort.
    iterative = tuple(a for a in base.attacks if ATTACKS[a].iterative and ATTACKS[a].worst_case)
    if iterative and not effort:
        found.append(checks.Check(checks.EFFORT_CHECK, False, "skipped (--skip-effort-check): rerun without that flag "
                                  "for the 2x-effort rerun of every iterative attack", skipped=True))
    elif iterative:
        reported = [Row(r.model, r.attack, r.threat, r.correct[: len(x)], key=r.key) for r in rows if r.key in iterative]
        once = worst_case(reported, model)
        cfg = dataclasses.replace(base, eps=eps, attacks=iterative, models=(model,)).scaled(2)
        twice = worst_case(run_suite(classifier, defended, x, y, cfg, progress=False, cache=cache), model)
        if once is not None and twice is not None:
            found.append(checks.more_effort_is_stable(once.accuracy, twice.accuracy))
    # 3./4. White-box beats gradient-free; attack families agree; the attacks break the undefended model.
    for m in base.models:
        found.append(checks.whitebox_beats_gradient_free(rows, m))
        found.append(checks.families_agree(rows, m))
    found.append(checks.breaks_undefended(rows, robust_training=robust_training))
    # 5. Gradient health of what the attacks differentiate.
    if "defended" in base.models:
        found.append(checks.gradient_health("defended model as deployed", defended, x[:16], y[:16]))
        found.append(checks.gradient_health("exact gradient of the deployed defense",
                                            ExactGradient(defended, checkpoint_every=base.checkpoint_every), x[:16], y[:16]))
        found.append(checks.gradient_health("BPDA surrogate", BPDA.from_defense(defended), x[:16], y[:16]))
    return found


def _record(opts: ReportOptions, described: dict[str, Any], base: SuiteConfig, domain: Domain,
            per_eps: dict[float, list[Row]], found: list[checks.Check], seconds: float, world: int, n: int,
            eps_list: list[float], device: torch.device) -> dict[str, Any]:
    import foolbox
    import torchattacks

    import manifold_defense

    return {
        "command": opts.command or f"eval.report.evaluate(<{opts.name}>, n={n}, eps={eps_list})",
        "dataset": domain.name, "domain": domain.to_dict(), "n": n, "eps": eps_list, "seed": base.seed,
        "world_size": world, "defense": described,
        "suite": base.to_dict(),
        "results": {str(e): [r.to_dict() for r in rows] for e, rows in per_eps.items()},
        # Per test image (in order), 1 = still correctly classified after the attack: any subset's
        # accuracy can be recomputed from it (eval.reference_table does).
        "per_example": {str(e): {_key(r, protocol): "".join("1" if c else "0" for c in correct.tolist())
                                 for r in rows for protocol, correct in r.protocols().items()}
                        for e, rows in per_eps.items()},
        "checks": [c.to_dict() for c in found],
        "seconds": round(seconds, 1),
        "versions": {"manifold_defense": manifold_defense.__version__, "torch": torch.__version__,
                     "torchattacks": torchattacks.__version__, "foolbox": foolbox.__version__,
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "device": str(device),
        "channels_last": opts.channels_last,
    }


def _changed(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any]) -> str | None:
    """The first setting that differs between an old record and this run (None: the same run). A
    setting the old record lacks (added to the code after it was written) must be at its default."""
    for key in sorted(set(old) | set(new)):
        was = old[key] if key in old else defaults.get(key, "<absent>")
        if was != new.get(key, "<absent>"):
            return key
    return None


def _defense_pairs(old: dict[str, Any], described: dict[str, Any]) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """(old, new, defaults) of a report's defense description and its projection settings, for
    :func:`_changed` (a key an older report lacks must be at its default)."""
    return {"defense": ({k: v for k, v in old.items() if k != "projection"},
                        {k: v for k, v in described.items() if k != "projection"}, {"kind": "projection"}),
            "projection": (old.get("projection", {}), described.get("projection", {}), ProjectionConfig().to_dict())}


def defense_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first setting in which two reports' ``defense`` descriptions differ (None: the same
    defense). A key one of them lacks (written before the key existed) must be at its default."""
    for name, (one, two, defaults) in _defense_pairs(a, b).items():
        key = _changed({**defaults, **one}, {**defaults, **two}, defaults)
        if key is not None:
            return f"{name}.{key}" if name == "projection" else key
    return None


def extended_reports(path: str | Path) -> list[str]:
    """The report directory ``path`` and every report it continues through ``--extend`` (newest first):
    their per-example results are the first images of ``path``'s, so either stands for the other on
    those images.

    Args:
        path: a report directory (its ``robustness.json`` is read if there).

    Returns:
        The paths as each report recorded them; a missing report or a loop ends the chain.

    Example:
        >>> extended_reports("eval/reports/converged_diffpure_t100_200")[-1]
        'eval/reports/converged_diffpure_t100'
    """
    chain, seen = [str(path)], {Path(path).name}
    while True:
        file = Path(chain[-1]) / "robustness.json"
        if not file.is_file():
            return chain
        parent = json.loads(file.read_text()).get("extends", {}).get("report")
        if parent is None or Path(parent).name in seen:
            return chain
        chain.append(str(parent))
        seen.add(Path(parent).name)


def _same_sources(old: Sequence[str], new: Sequence[str]) -> bool:
    """Whether ``new`` survivors_of reports are ``old``'s, each the same report or one that extends it
    (same verdicts on the old images, more images): an extended run attacks the same first images."""
    if len(old) != len(new):
        return False
    return all(Path(o).name in {Path(c).name for c in extended_reports(n)} for o, n in zip(old, new))


def _without(suite: dict[str, Any], rebatch: bool) -> dict[str, Any]:
    return {k: v for k, v in suite.items() if k != "batch_size"} if rebatch else suite


def _previous_report(path: str | Path, domain: Domain, eps_list: list[float], base: SuiteConfig,
                     described: dict[str, Any], *, rebatch: bool = False) -> dict[str, Any]:
    """The report ``extend`` continues, after checking that it ran this same evaluation.

    With ``rebatch`` (a survivors_of run, whose attacked images form their own batches) the batch
    size may differ from the extended report's; it changes which images share a batch and seed,
    not what is attacked.

    Raises:
        ValueError: no such report, no per-example results, a different setting (named), or a
            number of images that is not a whole number of batches.
    """
    file = Path(path) / "robustness.json"
    if not file.is_file():
        raise ValueError(f"--extend {path}: no robustness.json there")
    old: dict[str, Any] = json.loads(file.read_text())
    if "per_example" not in old:
        raise ValueError(f"--extend {path}: the report has no per-example results to keep")
    pairs = {"dataset": (old.get("dataset"), domain.name, None), "eps": (old.get("eps"), eps_list, None),
             "seed": (old.get("seed"), base.seed, None),
             "suite": (_without(old.get("suite", {}), rebatch), _without(base.to_dict(), rebatch),
                       _without(SuiteConfig(domain=base.domain).to_dict(), rebatch)),
             **_defense_pairs(old.get("defense", {}), described)}
    for name, (was, now, defaults) in pairs.items():
        key = _changed(was, now, defaults) if defaults is not None else (None if was == now else name)
        if key is not None:
            where = name if key == name else f"{name}.{key}"
            raise ValueError(f"--extend {path}: its {where} differs from this run's "
                             f"({(was.get(key) if isinstance(was, dict) else was)!r} against "
                             f"{(now.get(key) if isinstance(now, dict) else now)!r})")
    if old["n"] % base.batch_size and not rebatch:
        raise ValueError(f"--extend {path}: its {old['n']} images are not whole batches of --batch-size {base.batch_size}")
    return old


def _prepend(rows: list[Row], previous: dict[str, Any], eps: float) -> list[Row]:
    """Each row with the extended report's per-example verdicts for the first images in front."""
    bits = previous["per_example"][str(eps)]
    seconds = {(r["model"], r["attack"]): r.get("seconds", 0.0) for r in previous["results"][str(eps)]}

    def before(row: Row, protocol: str, new: torch.Tensor) -> torch.Tensor:
        key = _key(row, protocol)
        if key not in bits:
            raise ValueError(f"--extend: the extended report has no per-example results for {key!r}")
        return torch.cat([torch.tensor([c == "1" for c in bits[key]], dtype=torch.bool), new.bool().cpu()])

    return [dataclasses.replace(
        r, correct=before(r, "one-shot", r.correct),
        correct_all=None if r.correct_all is None else before(r, "worst-of-N", r.correct_all),
        correct_vote=None if r.correct_vote is None else before(r, "majority of N", r.correct_vote),
        seconds=r.seconds + seconds.get((r.model, r.attack), 0.0)) for r in rows]


def _survivors(paths: Sequence[str], domain: Domain, eps_list: list[float], base: SuiteConfig, opts: ReportOptions,
               described: dict[str, Any], n: int) -> torch.Tensor:
    """Which of the first ``n`` images the combined per-example worst case of the reports ``paths``
    (the minimum over reports, per protocol) still classifies correctly under some protocol: the
    only images an attack can still lower.

    Raises:
        ValueError: more than one eps, the undefended model, checks asked for, or a report that is
            missing, of another defense or data set, without this eps or covering fewer images.
    """
    if len(eps_list) != 1:
        raise ValueError(f"survivors_of needs one eps (each eps has its own survivors), got {eps_list}")
    if "undefended" in base.models:
        raise ValueError("survivors_of attacks the defended model's survivors: run models=('defended',) (--models defended)")
    if opts.checks:
        raise ValueError("survivors_of attacks only some images but the checks need every one: pass checks=False "
                         "(--no-checks)")
    eps = str(eps_list[0])
    mine = json.loads(json.dumps(described))  # tuples as the JSON of a report holds them
    worst: dict[str, torch.Tensor] = {}
    for path in paths:
        file = Path(path) / "robustness.json"
        if not file.is_file():
            raise ValueError(f"survivors_of {path}: no robustness.json there")
        old: dict[str, Any] = json.loads(file.read_text())
        if old.get("dataset", "").replace("-", "_") != domain.name:
            raise ValueError(f"survivors_of {path}: its data set is {old.get('dataset')!r}, not {domain.name!r}")
        differs = defense_difference(old.get("defense", {}), mine)
        if differs is not None:
            raise ValueError(f"survivors_of {path}: it evaluated another defense (it differs in {differs!r}: "
                             f"{old.get('defense')!r}, this run's {mine!r})")
        if old.get("n", 0) < n:
            raise ValueError(f"survivors_of {path}: it covers {old.get('n')} images, fewer than the {n} asked for")
        bits = old.get("per_example", {}).get(eps)
        if bits is None:
            raise ValueError(f"survivors_of {path}: no per-example results at eps {eps}")
        rows = {key: value for key, value in bits.items() if key.split(" | ")[:2] == ["defended", WORST]}
        if not rows:
            raise ValueError(f"survivors_of {path}: no per-example worst case of the defended model at eps {eps}")
        for key, value in rows.items():
            correct = torch.tensor([c == "1" for c in value[:n]], dtype=torch.bool)
            worst[key] = correct if key not in worst else worst[key] & correct
    return torch.stack(list(worst.values())).any(dim=0)


def _scatter(row: Row, where: torch.Tensor, size: int) -> Row:
    """A row of the attacked images spread over ``size`` images: the others count as broken (0)."""

    def spread(bits: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(size, dtype=torch.bool)
        out[where] = bits.bool().cpu()
        return out

    return dataclasses.replace(row, correct=spread(row.correct),
                               correct_all=None if row.correct_all is None else spread(row.correct_all),
                               correct_vote=None if row.correct_vote is None else spread(row.correct_vote))


def _key(row: Row, protocol: str) -> str:
    """'model | attack' for one-shot results, 'model | attack | protocol' for the others."""
    return f"{row.model} | {row.attack}" + ("" if protocol == "one-shot" else f" | {protocol}")


def _figures(out: Path, per_eps: dict[float, list[Row]], defended: PurifiedClassifier, x: torch.Tensor,
             y: torch.Tensor, eps: float, *, examples: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps_values = sorted(per_eps)
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[tuple[str, str], list[float]] = {}
    for e in eps_values:
        for r in per_eps[e]:
            if r.threat.startswith("Linf") or r.attack.startswith("worst"):
                series.setdefault((r.model, r.attack), []).append(r.accuracy)
    for (model, attack), accs in series.items():
        if len(accs) == len(eps_values):
            style = "-" if attack.startswith("worst") else ":"
            ax.plot(eps_values, accs, style, marker="o", label=f"{model}: {attack}")
    ax.set_xlabel("Linf eps")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_eps.png", dpi=120)
    plt.close(fig)
    if not examples:
        return

    adv = APGD(eps=eps, steps=20, loss="dlr", bounds=defended.pixel_range, seed=0)(ExactGradient(defended), x, y).adversarial
    with torch.no_grad():
        projected = defended.purifier(adv)
    shown = "G(z*)" if isinstance(defended, DefendedClassifier) else "P(x_adv)"
    fig, axes = plt.subplots(3, len(x), figsize=(len(x) * 1.2, 4), squeeze=False)
    for j in range(len(x)):
        for i, (img, title) in enumerate(((x, "x"), (adv, f"exact-gradient APGD eps {eps:g}"), (projected, shown))):
            lo, hi = defended.pixel_range
            pixels = ((img[j].detach().cpu() - lo) / (hi - lo)).clamp(0, 1)  # shown in [0, 1]
            if pixels.shape[0] == 1:
                axes[i, j].imshow(pixels[0], cmap="gray", vmin=0, vmax=1)
            else:
                axes[i, j].imshow(pixels[:3].permute(1, 2, 0))
            axes[i, j].axis("off")
            if j == 0:
                axes[i, j].set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=120)
    plt.close(fig)
