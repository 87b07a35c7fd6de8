"""What a report measures besides verdicts: the sanity checks, seconds per prediction and per exact
attack step, peak memory, and the record (JSON) they go into.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from typing import Any

import torch
from torch import nn

from attacks import BPDA, ExactGradient
from manifold_defense import PurifiedClassifier
from manifold_defense.domains import Domain

from . import checks
from ..suite.batch_cache import BatchCache
from ..suite import ATTACKS, Row, SuiteConfig, run_suite, worst_case
from .fold import _key
from .options import ReportOptions

__all__ = []


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
        **({"device_name": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        "channels_last": opts.channels_last,
    }
