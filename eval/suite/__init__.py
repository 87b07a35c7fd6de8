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

Adding an attack: write it in ``attacks/``, then one runner function and one
``AttackSpec`` entry in :data:`ATTACKS` (both in :mod:`eval.suite.families`); ``--attacks KEY`` then runs it and the checks pick it up by
its flags.

Parts: :mod:`.config` (SuiteConfig, AttackSpec, Row), :mod:`.families` (the runners and the
registry), :mod:`.run` (run_suite, worst_case, format_table), :mod:`.stats` (intervals, McNemar) and
:mod:`.batch_cache` (resume a killed run), :mod:`.judge` (randomised defenses: select on some draws,
judge on independent ones). Library code: it never imports a command line of ``eval``.
"""

from .batch_cache import BatchCache, code_fingerprint, model_fingerprint
from .config import WORST, AttackSpec, Row, SuiteConfig, is_randomized
from .families import ATTACKS, register_transfer_source, spec_of, transfer_source
from .judge import Judgement, select_and_judge
from .run import format_table, run_suite, worst_case
from .stats import format_accuracy, mcnemar_p, wilson_interval

__all__ = ["SuiteConfig", "AttackSpec", "Row", "ATTACKS", "run_suite", "worst_case", "format_table", "is_randomized",
           "WORST", "register_transfer_source", "transfer_source", "spec_of", "BatchCache", "code_fingerprint",
           "model_fingerprint", "format_accuracy", "mcnemar_p", "wilson_interval", "Judgement", "select_and_judge"]
