"""The honest robustness report as one Python call, for any defended model, including yours.

:func:`evaluate` runs the attack suite (:mod:`eval.suite`) per eps on a defended model and its bare
classifier, takes the per-example worst case, runs the sanity checks (:mod:`eval.report.checks`) and returns
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

Parts: :mod:`.options` (ReportOptions, Report), :mod:`.plan` (what runs where), :mod:`.evaluate`
(run and shard), :mod:`.fold` (extend and fold earlier reports), :mod:`.measure` (checks, timings,
the JSON record), :mod:`.figures`, :mod:`.checks`, :mod:`.tables` and :mod:`.certified` (tables from saved
reports), :mod:`.page` (generated blocks of a Markdown page). Library code: it never imports a command line.
"""

from .evaluate import evaluate
from .fold import defense_difference, extended_reports
from .options import DEFAULT_ATTACKS, Report, ReportOptions
from .plan import AttackPlan, describe_purifier, plan

__all__ = ["evaluate", "plan", "AttackPlan", "Report", "ReportOptions", "DEFAULT_ATTACKS", "extended_reports",
           "defense_difference", "describe_purifier"]
