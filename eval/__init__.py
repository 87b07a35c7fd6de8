"""Evaluation: the attack suite, the honest report (:func:`evaluate`, and ``python -m eval.robustness``
over it), reference tables, the demo and the training command line.

Example:
    >>> from eval import ReportOptions, SuiteConfig, evaluate
    >>> ReportOptions().checks
    True
"""

from .report import DEFAULT_ATTACKS, Report, ReportOptions, evaluate
from .suite import SuiteConfig

__all__ = ["evaluate", "Report", "ReportOptions", "SuiteConfig", "DEFAULT_ATTACKS"]
