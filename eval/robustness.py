"""An honest robust-accuracy report for a defended classifier: the attack suite per eps, the
per-example worst case, and the sanity checks that expose a broken evaluation.

    python -m eval.robustness --n 500 --eps 0.05,0.1,0.2
    python -m eval.robustness --quick
    torchrun --nproc_per_node 2 -m eval.robustness --num-images 500   # sharded; identical totals
    python -m eval.robustness --defense my_bundle --domain my_data --data my_data.npz --device cuda
    python -m eval.robustness --classifier runs/my_classifier --models defended   # your checkpoint behind
                                                                                  # the shipped projection
    python -m eval.robustness ... --num-images 200 --extend OLD_REPORT            # OLD_REPORT ran the same
                                                      # command on 100 images: attack only images 100-199

Writes ``OUT/robustness.json`` (every hyperparameter, versions, seed, timings, per-attack and
worst-case accuracy, per-example results, checks), ``OUT/robustness.md`` and PNG figures
``OUT/accuracy_vs_eps.png`` and ``OUT/examples.png`` (x / adversarial / projection G(z*)).
``python -m eval.reference_table`` puts several reports side by side on the same images.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist

from attacks import APGD, BPDA, ExactGradient
from manifold_defense import DefendedClassifier, ProjectionConfig, load
from manifold_defense.domains import Domain, resolve_domain, weights_path
from manifold_defense.checkpoint import CheckpointError, load_model, read_config
from manifold_defense.cli import ToolParser, integer, names, real, reals, run
from manifold_defense.pretrained import DEFAULT_DEFENSE, SHIPPED_DEFENSES, available, defended_pretrained

from . import checks
from .batch_cache import BatchCache, model_fingerprint
from .suite import ATTACKS, Row, SuiteConfig, format_table, run_suite, worst_case

DEFAULT_ATTACKS = ("clean", "fgsm", "pgd", "pgd_l2", "bpda_pgd", "bpda_apgd_amortised", "eot_pgd", "exact_apgd_ce",
                   "exact_apgd_dlr", "latent", "square", "on_manifold")


def _load_defense(spec: str, classifier: str | None, projection: str, domain: Domain, channels_last: bool = False) -> DefendedClassifier:
    """``spec`` "shipped": ``classifier`` (default: the standard ``classifier``) behind the domain's
    shipped iterative projection; a key of ``SHIPPED_DEFENSES`` (e.g. "amortised_at", the library's
    default defense): that shipped configuration, its classifier replaced by ``classifier`` if given;
    any other spec: a bundle directory.

    Raises:
        ValueError: the defense's images do not have the domain's shape, or a classifier given with a bundle.
    """
    if classifier is not None and spec != "shipped" and spec not in SHIPPED_DEFENSES:
        raise ValueError(f"--classifier replaces a shipped configuration's classifier; the bundle {spec!r} brings its own")
    name = _classifier_name(spec, classifier)
    if name is not None:
        # A checkpoint path (stem of a .safetensors/.json pair) replaces the configuration's classifier.
        own = name not in available(domain) and Path(name).with_suffix(".json").is_file()
        clf: str | torch.nn.Module = load_model(name).eval() if own else name
        defended = defended_pretrained(domain, defense="projection" if spec == "shipped" else spec, classifier=clf).eval()
    else:
        defended = load(spec)
    if tuple(defended.image_shape) != tuple(domain.image_shape):
        raise ValueError(f"the defense's generator makes images of shape {tuple(defended.image_shape)} but the "
                         f"{domain.name} images are {domain.image_shape}")
    if projection == "defense_gan":
        defended.config, defended.encoder = ProjectionConfig.defense_gan(pixel_range=domain.pixel_range), None
    if channels_last:
        # The same float32 arithmetic in another memory layout (the generator was loaded here, so
        # changing it in place touches nothing a caller owns): ~25% faster projection on CPU.
        defended.generator.to(memory_format=torch.channels_last)
    return defended


def _robust_training(classifier: str | None, domain: Domain) -> str | None:
    """How a classifier checkpoint was adversarially trained, from the training config in its JSON
    (None: standard training, or no config to read)."""
    if classifier is None:
        return None
    stem = weights_path(domain, classifier) if classifier in available(domain) else Path(classifier)
    try:
        config = read_config(stem).get("metadata", {}).get("config", {})
    except CheckpointError:
        return None
    terms = [f"{k} {config[k]:g}" for k in ("pgd_weight", "trades_beta", "defense_weight") if config.get(k, 0) > 0]
    if config.get("train_encoder"):
        terms.append("through the amortised defense")
    return ", ".join(terms) or None


def _classifier_name(spec: str, classifier: str | None) -> str | None:
    """The classifier a report ran (None for a bundle: its own)."""
    if classifier is not None:
        return classifier
    if spec == "shipped":
        return "classifier"
    return SHIPPED_DEFENSES[spec].classifier if spec in SHIPPED_DEFENSES else None


def _gather(rows: list[Row], batches: list[int], world: int, batch_sizes: list[int]) -> list[Row]:
    """Reassemble every rank's rows in batch order on rank 0 (other ranks get [])."""
    if world == 1:
        return rows
    payload = (batches, [(r.model, r.attack, r.threat, r.correct, r.seconds, r.correct_all, r.correct_vote, r.key)
                         for r in rows])
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, payload)
    if dist.get_rank() != 0:
        return []
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


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m eval.robustness`` (every numeric flag range-checked)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defense", default="shipped",
                        help="'shipped': --classifier behind the shipped iterative projection (the Defense-GAN pipeline); "
                             f"a shipped configuration ({', '.join(sorted(SHIPPED_DEFENSES))}; the library's default is "
                             f"{DEFAULT_DEFENSE}); or a bundle directory (manifold_defense.save_bundle)")
    parser.add_argument("--classifier", default=None,
                        help="a shipped classifier's name, or a checkpoint path (e.g. runs/pgd_at), put in place of the "
                             "configuration's classifier (default: the standard 'classifier' for --defense shipped)")
    parser.add_argument("--projection", default="default", choices=["default", "defense_gan"],
                        help="defense_gan: Defense-GAN's R=10, L=200 momentum settings, no encoder (~60x slower)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run the generator in channels_last memory format (same float32 math, faster on CPU)")
    parser.add_argument("--domain", default="fashion_mnist",
                        help="a registered domain (manifold_defense.domains), or the name for the data given by --data")
    parser.add_argument("--data", "--data-dir", dest="data", default=None,
                        help="test images: an IDX directory, an .npz (x, y) or an ImageFolder tree (default: the domain's)")
    parser.add_argument("--num-images", "--n", dest="n", type=integer(1), default=500,
                        help="first N test images (use --num-images under torchrun: it takes --n as its own)")
    parser.add_argument("--eps", type=reals(0.0, low_open=True), default=None,
                        help="comma-separated Linf budgets (default: half, one and two times the domain's)")
    parser.add_argument("--large-eps", type=real(0.0, low_open=True), default=None,
                        help="budget for the falls-to-chance check (default: half the pixel range)")
    parser.add_argument("--attacks", type=names(ATTACKS), default=DEFAULT_ATTACKS, help=f"comma list of {sorted(ATTACKS)}")
    parser.add_argument("--models", type=names(("undefended", "defended")), default=("undefended", "defended"),
                        help="comma list: undefended (the bare classifier), defended (the deployed defense)")
    parser.add_argument("--apgd-steps", type=integer(1), default=SuiteConfig.apgd_steps)
    parser.add_argument("--apgd-restarts", type=integer(1), default=SuiteConfig.apgd_restarts)
    parser.add_argument("--apgd-t-steps", type=integer(1), default=SuiteConfig.apgd_t_steps,
                        help="APGD-T (attack exact_apgd_t) iterations per target class")
    parser.add_argument("--apgd-targets", type=integer(1), default=SuiteConfig.apgd_targets, help="APGD-T target classes")
    parser.add_argument("--square-queries", type=integer(1), default=SuiteConfig.square_queries,
                        help="Square's query budget per image")
    parser.add_argument("--eot-samples", type=integer(1), default=SuiteConfig.eot_samples,
                        help="gradient samples per step against a randomised defense")
    parser.add_argument("--draws", type=integer(1), default=SuiteConfig.draws,
                        help="N runs of a randomised defense for the worst-of-N and majority-vote verdicts")
    parser.add_argument("--checkpoint-every", type=integer(1), default=SuiteConfig.checkpoint_every,
                        help="projection steps per recomputed segment of the exact gradient")
    parser.add_argument("--check-n", type=integer(1), default=100, help="images used by the sanity checks")
    parser.add_argument("--cache", default=None,
                        help="keep finished (attack, batch) verdicts in this directory; rerunning the same command resumes")
    parser.add_argument("--extend", default=None,
                        help="REPORT_DIR of this same command on the first k images (k a multiple of --batch-size): "
                             "keep its per-example verdicts and attack only images k..n-1 (each batch keeps its seed)")
    parser.add_argument("--no-checks", action="store_true")
    parser.add_argument("--skip-effort-check", action="store_true",
                        help="run every check but the 2x-effort rerun (the costliest; reported as SKIPPED): for a "
                             "report whose convergence is shown by a separate run at more steps")
    parser.add_argument("--batch-size", type=integer(1), default=50)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--out", default="results/robustness")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (models and images move there)")
    parser.add_argument("--quick", action="store_true", help="32 images, one eps, few steps")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run the report (see the module docstring); returns the record on rank 0."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        # Rank 0 runs the checks alone after the sharded suite while the other ranks wait at the
        # final barrier: on a CPU that takes hours, far beyond the default 30-minute timeout.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=datetime.timedelta(days=2))
    rank = dist.get_rank() if world > 1 else 0
    progress = rank == 0

    domain = resolve_domain(args.domain, args.data)
    budget = domain.budgets.linf_eps
    eps_list = list(args.eps) if args.eps else [budget / 2, budget, 2 * budget]
    if args.large_eps is None:
        args.large_eps = (domain.pixel_range[1] - domain.pixel_range[0]) / 2
    base = SuiteConfig(domain=domain, attacks=tuple(args.attacks), seed=args.seed, batch_size=args.batch_size,
                       models=tuple(args.models), apgd_steps=args.apgd_steps,
                       apgd_restarts=args.apgd_restarts, apgd_t_steps=args.apgd_t_steps, apgd_targets=args.apgd_targets,
                       square_queries=args.square_queries, eot_samples=args.eot_samples, draws=args.draws,
                       checkpoint_every=args.checkpoint_every)
    n, check_n = args.n, args.check_n
    if args.quick:
        n, check_n, eps_list = min(n, 32), min(check_n, 16), eps_list[len(eps_list) // 2:][:1]
        base = dataclasses.replace(base, pgd_steps=5, apgd_steps=5, apgd_t_steps=3, eot_steps=2, eot_samples=2, draws=min(3, base.draws),
                                   latent_steps=10, square_queries=50, on_manifold_steps=10,
                                   batch_size=min(16, args.batch_size))
    torch.manual_seed(args.seed)
    defended = _load_defense(args.defense, args.classifier, args.projection, domain, args.channels_last).to(args.device)
    classifier = defended.classifier
    x, y = domain.load("test", limit=n)
    x, y = x.to(args.device), y.to(args.device)
    n_batches = (len(x) + base.batch_size - 1) // base.batch_size
    batch_sizes = [min(base.batch_size, len(x) - b * base.batch_size) for b in range(n_batches)]
    previous = _previous_report(args.extend, args, base, eps_list, defended) if args.extend else None
    done = previous["n"] // base.batch_size if previous else 0
    if done >= n_batches:
        raise ValueError(f"--extend {args.extend} already covers {previous['n'] if previous else 0} images; ask for more than that")
    if n_batches - done < world:
        raise ValueError(f"{n_batches - done} batch(es) of --batch-size {base.batch_size} to attack but {world} processes: "
                         "use fewer processes or a smaller --batch-size")
    mine = list(range(done + rank, n_batches, world))  # each batch keeps its index, hence its seed

    speed = _seconds_per_prediction(classifier, defended, x[:base.batch_size])
    cache = None
    if args.cache:
        fingerprint = model_fingerprint(classifier, defended.generator, defended.encoder, defended.operator,
                                        extra=[defended.config.to_dict(), defended.gradient])
        cache = BatchCache(args.cache, fingerprint=fingerprint)
    start = time.monotonic()
    per_eps: dict[float, list[Row]] = {}
    for eps in eps_list:
        cfg = dataclasses.replace(base, eps=eps)
        rows = _gather(run_suite(classifier, defended, x, y, cfg, batches=mine, progress=progress, cache=cache), mine,
                       world, batch_sizes)
        if previous is not None and rank == 0:
            rows = _prepend(rows, previous, eps)
        for model in ("undefended", "defended"):
            w = worst_case(rows, model)
            if w is not None:
                rows.append(w)
        per_eps[eps] = rows
    if rank != 0:
        dist.barrier()
        dist.destroy_process_group()
        return None

    main_eps = eps_list[len(eps_list) // 2]
    found: list[checks.Check] = []
    if not args.no_checks:
        # Save the suite's results first: the checks can run for hours, and a crash must not lose them.
        partial = _record(args, defended, base, per_eps, [], time.monotonic() - start, world, n, eps_list)
        partial["seconds_per_prediction"] = speed
        partial["checks_status"] = "running: this file is rewritten with the checks when they finish"
        _write(Path(args.out), partial, per_eps, [], defended, x[:8], y[:8], main_eps, figures=False)
        found = _run_checks(classifier, defended, x[:check_n], y[:check_n], base, main_eps, args.large_eps, per_eps[main_eps],
                            cache, effort=not args.skip_effort_check,
                            robust_training=_robust_training(_classifier_name(args.defense, args.classifier), domain))
    seconds = time.monotonic() - start
    record = _record(args, defended, base, per_eps, found, seconds, world, n, eps_list)
    record["seconds_per_prediction"] = speed
    if previous is not None:
        # Images 0..k-1 come from the extended report (its command, code version and seconds);
        # "seconds" above counts only the images attacked here.
        record["extends"] = {"report": str(args.extend), "images": previous["n"], "command": previous["command"],
                             "seconds": previous["seconds"], "versions": previous.get("versions")}
    if cache is not None:
        # Rows served from the cache took no time here: "seconds" counts recomputed batches only.
        record["cache"] = {"dir": str(args.cache), "hits": cache.hits, "misses": cache.misses,
                           "counted_on": "rank 0" if world > 1 else "this process"}
    _write(Path(args.out), record, per_eps, found, defended, x[:8], y[:8], main_eps)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return record


@torch.no_grad()
def _seconds_per_prediction(classifier: torch.nn.Module, defended: DefendedClassifier, x: torch.Tensor) -> dict[str, float]:
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


def _run_checks(classifier: torch.nn.Module, defended: DefendedClassifier, x: torch.Tensor, y: torch.Tensor,
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


def _record(args: argparse.Namespace, defended: DefendedClassifier, base: SuiteConfig, per_eps: dict[float, list[Row]],
            found: list[checks.Check], seconds: float, world: int, n: int, eps_list: list[float]) -> dict[str, Any]:
    import attacks  # noqa: F401  (versions below)
    import foolbox
    import torchattacks

    import manifold_defense

    return {
        "command": " ".join(["python -m eval.robustness", *args.argv]),
        "dataset": base.domain.name, "domain": base.domain.to_dict(), "n": n, "eps": eps_list, "seed": args.seed, "world_size": world,
        "defense": {"spec": args.defense, "classifier": _classifier_name(args.defense, args.classifier),
                    "projection": defended.config.to_dict(),
                    "encoder": defended.encoder is not None},
        "suite": base.to_dict(),
        "results": {str(eps): [r.to_dict() for r in rows] for eps, rows in per_eps.items()},
        # Per test image (in order), 1 = still correctly classified after the attack: any subset's
        # accuracy can be recomputed from it (eval.reference_table does).
        "per_example": {str(eps): {_key(r, protocol): "".join("1" if c else "0" for c in correct.tolist())
                                   for r in rows for protocol, correct in r.protocols().items()}
                        for eps, rows in per_eps.items()},
        "checks": [c.to_dict() for c in found],
        "seconds": round(seconds, 1),
        "versions": {"manifold_defense": manifold_defense.__version__, "torch": torch.__version__,
                     "torchattacks": torchattacks.__version__, "foolbox": foolbox.__version__,
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "device": str(args.device),
        "channels_last": args.channels_last,
    }


def _changed(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any]) -> str | None:
    """The first setting that differs between an old record and this run (None: the same run). A
    setting the old record lacks (added to the code after it was written) must be at its default."""
    for key in sorted(set(old) | set(new)):
        was = old[key] if key in old else defaults.get(key, "<absent>")
        if was != new.get(key, "<absent>"):
            return key
    return None


def _previous_report(path: str, args: argparse.Namespace, base: SuiteConfig, eps_list: list[float],
                     defended: DefendedClassifier) -> dict[str, Any]:
    """The report ``--extend`` continues, after checking that it ran this same evaluation.

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
    mine = {"spec": args.defense, "classifier": _classifier_name(args.defense, args.classifier),
            "projection": defended.config.to_dict(), "encoder": defended.encoder is not None}
    pairs = {"dataset": (old.get("dataset"), base.domain.name, None), "eps": (old.get("eps"), eps_list, None),
             "seed": (old.get("seed"), args.seed, None),
             "suite": (old.get("suite", {}), base.to_dict(), SuiteConfig(domain=base.domain).to_dict()),
             "defense": ({k: v for k, v in old.get("defense", {}).items() if k != "projection"},
                         {k: v for k, v in mine.items() if k != "projection"}, {}),
             "projection": (old.get("defense", {}).get("projection", {}), mine["projection"], ProjectionConfig().to_dict())}
    for name, (was, now, defaults) in pairs.items():
        key = _changed(was, now, defaults) if defaults is not None else (None if was == now else name)
        if key is not None:
            where = name if key == name else f"{name}.{key}"
            raise ValueError(f"--extend {path}: its {where} differs from this run's "
                             f"({(was.get(key) if isinstance(was, dict) else was)!r} against "
                             f"{(now.get(key) if isinstance(now, dict) else now)!r})")
    if old["n"] % base.batch_size:
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


def _key(row: Row, protocol: str) -> str:
    """'model | attack' for one-shot results, 'model | attack | protocol' for the others."""
    return f"{row.model} | {row.attack}" + ("" if protocol == "one-shot" else f" | {protocol}")


def _write(out: Path, record: dict[str, Any], per_eps: dict[float, list[Row]], found: list[checks.Check],
           defended: DefendedClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, *, figures: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"Command: `{record['command']}`", "",
             f"n = {record['n']} {record['domain']['title']} test images (the first n), seed {record['seed']}; "
             f"{record['seconds']:.0f} s on {record['threads']} CPU threads x {record['world_size']} process(es). "
             "Brackets: 95% Wilson confidence intervals.", ""]
    if "extends" in record:
        ext = record["extends"]
        lines[2:2] = [f"The first {ext['images']} images are those of `{ext['report']}` (its command: `{ext['command']}`; "
                      f"{ext['seconds']:.0f} s by its record); the seconds below count only the images attacked by this command.", ""]
    for eps_value, rows in per_eps.items():
        lines += [f"### Linf eps = {eps_value:g}", "", format_table(rows), ""]
    if found:
        lines += ["### Sanity checks", ""] + [f"- {c.line()}" for c in found] + [""]
    (out / "robustness.md").write_text("\n".join(lines))
    if not figures:
        return
    print("\n".join(lines))
    _figures(out, per_eps, defended, x, y, eps)
    print(f"wrote {out}/robustness.json, robustness.md, accuracy_vs_eps.png, examples.png")


def _figures(out: Path, per_eps: dict[float, list[Row]], defended: DefendedClassifier, x: torch.Tensor,
             y: torch.Tensor, eps: float) -> None:
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

    adv = APGD(eps=eps, steps=20, loss="dlr", bounds=defended.config.pixel_range, seed=0)(ExactGradient(defended), x, y).adversarial
    projected = defended.project(adv).x_hat
    fig, axes = plt.subplots(3, len(x), figsize=(len(x) * 1.2, 4))
    for j in range(len(x)):
        for i, (img, title) in enumerate(((x, "x"), (adv, f"exact-gradient APGD eps {eps:g}"), (projected, "G(z*)"))):
            lo, hi = defended.config.pixel_range
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


if __name__ == "__main__":
    run(main)
