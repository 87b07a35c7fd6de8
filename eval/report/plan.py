"""Planning a report: which attacks run on which images in which batches (:func:`plan`), so that a
dry run, the cache and the shards all agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from manifold_defense import DefendedClassifier, PurifiedClassifier
from manifold_defense.domains import Domain

from ..suite import SuiteConfig
from .fold import _previous_report, _same_sources, _survivors
from .options import ReportOptions

__all__ = ["AttackPlan", "plan", "describe_purifier"]


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


def describe_purifier(defended: PurifiedClassifier) -> dict[str, Any]:
    """What a report records about the defense: the projection's settings, or the purifier's class and repr."""
    if isinstance(defended, DefendedClassifier):
        return {"kind": "projection", "projection": defended.config.to_dict(), "encoder": defended.encoder is not None}
    p = defended.purifier
    return {"kind": type(p).__name__, "settings": p.extra_repr(), "randomized": p.randomized}
