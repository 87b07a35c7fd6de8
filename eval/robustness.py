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
    python -m eval.robustness ... --no-checks --survivors-of A+B   # a stronger attack on only the images that the
                                                      # reports A and B of this defense leave unbroken
    python -m eval.robustness ... --dry-run 2         # attack nothing: how many images and batches, on 2
                                                      # processes, and the --batch-size for one batch each

    python -m eval.robustness --import my_models --defense my_bundle/ ...      # my_models registers the
                                                      # bundle's own architectures (register_architecture)
    python -m eval.robustness --purifier diffusion --t-star 100 --classifier classifier   # DiffPure with the
                                                      # shipped DDPM in front of a classifier

Any other purifier (your own module) goes through the same report from Python:
``eval.evaluate(classifier, purifier=as_purifier(module, randomized=...))``.

A thin command line over :func:`eval.report.evaluate` (the same report from Python). Writes
``OUT/robustness.json`` (every hyperparameter, versions, seed, timings, per-attack and
worst-case accuracy, per-example results, checks), ``OUT/robustness.md`` and PNG figures
``OUT/accuracy_vs_eps.png`` and ``OUT/examples.png`` (x / adversarial / projection G(z*)).
``python -m eval.reference_table`` puts several reports side by side on the same images.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import logging
import os
import sys
from typing import Any, Sequence

import torch
import torch.distributed as dist

from manifold_defense import PurifiedClassifier
from manifold_defense.domains import Domain, resolve_domain
from manifold_defense.pretrained import DEFAULT_DEFENSE, SHIPPED_DEFENSES, diffpure_pretrained
from manifold_defense.utils import ToolParser, integer, names, real, reals, run

from .report import DEFAULT_ATTACKS, ReportOptions, evaluate, plan
from .report.defenses import classifier_name, load_defense, robust_training
from .suite import ATTACKS, SuiteConfig


def _load_diffusion(args: argparse.Namespace, domain: Domain) -> PurifiedClassifier:
    """``--classifier`` (default: the standard ``classifier``) behind the DiffPure purifier of ``--ddpm``.

    Raises:
        ValueError: ``--ddpm`` is not a DDPM checkpoint, or a t* / steps it cannot run.
    """
    return diffpure_pretrained(domain, t_star=args.t_star, steps=args.sampler_steps, eta=args.eta,
                               checkpoint_every=args.checkpoint_every, classifier=args.classifier or "classifier",
                               ddpm=args.ddpm).eval()


def _sources(text: str) -> tuple[str, ...]:
    """A comma list of transfer sources (checked when the suite loads them: shipped or registered)."""
    out = tuple(part.strip() for part in text.split(",") if part.strip())
    if not out:
        raise argparse.ArgumentTypeError(f"expected a comma list of model names, got {text!r}")
    return out


def _reports(text: str) -> tuple[str, ...]:
    """A '+' list of report directories (checked when the report loads them)."""
    out = tuple(part.strip() for part in text.split("+"))
    if not all(out):
        raise argparse.ArgumentTypeError(f"expected REPORT[+REPORT...], got {text!r}")
    return out


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
    parser.add_argument("--purifier", default="projection", choices=["projection", "diffusion"],
                        help="diffusion: --classifier behind DiffPure with the DDPM of --ddpm (diffuse to --t-star, "
                             "denoise in --sampler-steps steps) instead of a projection")
    parser.add_argument("--ddpm", default="ddpm", help="a shipped DDPM's name or a checkpoint path (--purifier diffusion)")
    parser.add_argument("--t-star", type=integer(1), default=100, help="diffusion timestep t* (--purifier diffusion)")
    parser.add_argument("--sampler-steps", type=integer(1), default=None,
                        help="reverse steps from t* to 0 (default t*: every timestep; --purifier diffusion)")
    parser.add_argument("--eta", type=real(0.0, 1.0), default=1.0,
                        help="1: stochastic DDPM-like reverse steps; 0: deterministic DDIM (--purifier diffusion)")
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
    parser.add_argument("--surrogate-steps", type=integer(1), default=SuiteConfig.surrogate_steps,
                        help="steps of the shortened purifier of the bpda_apgd_short surrogate")
    parser.add_argument("--transfer-from", type=_sources, default=(),
                        help="comma list of source models of the transfer attack (--attacks ...,transfer): shipped "
                             f"defenses ({', '.join(sorted(SHIPPED_DEFENSES))}), shipped classifiers, or diffpure_t<T>[_s<S>] "
                             "(the standard classifier behind DiffPure at t* = T with S reverse steps)")
    parser.add_argument("--checkpoint-every", type=integer(1), default=SuiteConfig.checkpoint_every,
                        help="projection (or sampler) steps per recomputed segment of the exact gradient")
    parser.add_argument("--select-draws", type=integer(1), default=16,
                        help="randomised defense: draws that choose each image's candidate among the attacks'")
    parser.add_argument("--judge-draws", type=integer(0), default=64,
                        help="randomised defense: independent draws that judge the chosen candidate (0: none)")
    parser.add_argument("--check-n", type=integer(1), default=100, help="images used by the sanity checks")
    parser.add_argument("--cache", default=None,
                        help="keep finished (attack, batch) verdicts in this directory; rerunning the same command resumes")
    parser.add_argument("--extend", default=None,
                        help="REPORT_DIR of this same command on the first k images (k a multiple of --batch-size): "
                             "keep its per-example verdicts and attack only images k..n-1 (each batch keeps its seed)")
    parser.add_argument("--survivors-of", type=_reports, default=(), metavar="REPORT[+REPORT...]",
                        help="attack only the images that the per-example worst case of these earlier reports of this "
                             "defense leaves correct under some protocol (AutoAttack's rule); the others count as broken. "
                             "Needs one --eps, --models defended and --no-checks; fold the result in with "
                             "eval.reference_table's REPORT+REPORT2 column")
    parser.add_argument("--no-checks", action="store_true")
    parser.add_argument("--skip-effort-check", action="store_true",
                        help="run every check but the 2x-effort rerun (the costliest; reported as SKIPPED): for a "
                             "report whose convergence is shown by a separate run at more steps")
    parser.add_argument("--batch-size", type=integer(1), default=50)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--out", default="results/robustness")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (models and images move there)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this module first (repeatable): the one that registers your own architectures "
                             "(manifold_defense.models.register_architecture) so that a bundle of them loads")
    parser.add_argument("--quick", action="store_true", help="32 images, one eps, few steps")
    parser.add_argument("--dry-run", type=integer(1), nargs="?", const=0, default=None, metavar="PROCESSES",
                        help="attack nothing: print which images and batches the run would attack on PROCESSES "
                             "processes (default: as launched) and the --batch-size that gives each one batch")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Run the report (see the module docstring): parse, load, :func:`eval.report.evaluate`, write.
    Returns the record on rank 0."""
    args = build_parser().parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    for name in args.imports:
        # A user's module that registers their architectures (register_architecture) before a bundle loads.
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"--import {name}: {exc}") from exc

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        # Rank 0 runs the checks alone after the sharded suite while the other ranks wait at the
        # final barrier: on a CPU that takes hours, far beyond the default 30-minute timeout.
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=datetime.timedelta(days=2))
    rank = dist.get_rank() if dist.is_initialized() else 0

    domain = resolve_domain(args.domain, args.data)
    base = SuiteConfig(domain=domain, attacks=tuple(args.attacks), seed=args.seed, batch_size=args.batch_size,
                       models=tuple(args.models), apgd_steps=args.apgd_steps,
                       apgd_restarts=args.apgd_restarts, apgd_t_steps=args.apgd_t_steps, apgd_targets=args.apgd_targets,
                       square_queries=args.square_queries, eot_samples=args.eot_samples, draws=args.draws,
                       checkpoint_every=args.checkpoint_every, surrogate_steps=args.surrogate_steps,
                       transfer_from=tuple(args.transfer_from))
    if "transfer" in base.attacks and not base.transfer_from:
        raise ValueError("--attacks transfer needs --transfer-from (the models whose adversarials transfer)")
    budget = domain.budgets.linf_eps
    eps_list = list(args.eps) if args.eps else [budget / 2, budget, 2 * budget]
    n, check_n = args.n, args.check_n
    select_draws, judge_draws = args.select_draws, args.judge_draws
    if args.quick:
        n, check_n, eps_list = min(n, 32), min(check_n, 16), eps_list[len(eps_list) // 2:][:1]
        select_draws, judge_draws = min(select_draws, 2), min(judge_draws, 16)
        base = dataclasses.replace(base, pgd_steps=5, apgd_steps=5, apgd_t_steps=3, eot_steps=2, eot_samples=2, draws=min(3, base.draws),
                                   latent_steps=10, square_queries=50, on_manifold_steps=10,
                                   batch_size=min(16, args.batch_size))
    torch.manual_seed(args.seed)
    defended: PurifiedClassifier
    if args.purifier == "diffusion":
        if args.defense != "shipped" or args.projection != "default":
            raise ValueError("--purifier diffusion replaces the projection: drop --defense and --projection")
        defended = _load_diffusion(args, domain).to(args.device)
    else:
        defended = load_defense(args.defense, args.classifier, args.projection, domain, args.channels_last).to(args.device)
    x, y = domain.load("test", limit=n)
    name = classifier_name(args.defense, args.classifier)
    options = ReportOptions(checks=not args.no_checks, effort_check=not args.skip_effort_check, check_n=check_n,
                            large_eps=args.large_eps, cache=args.cache, extend=args.extend, partial_out=args.out,
                            survivors_of=args.survivors_of, select_draws=select_draws, judge_draws=judge_draws,
                            progress=True, name=args.defense if args.purifier == "projection" else "diffusion",
                            classifier_name=name if args.purifier == "projection" else (args.classifier or "classifier"),
                            robust_training=robust_training(name, domain),
                            command=" ".join(["python -m eval.robustness", *argv_list]),
                            channels_last=args.channels_last)
    if args.dry_run is not None:
        if rank == 0:
            print(plan(defended, len(x), suite=base, eps=eps_list, options=options,
                       world=args.dry_run or (dist.get_world_size() if dist.is_initialized() else 1)).describe())
        if dist.is_initialized():
            dist.destroy_process_group()
        return None
    report = evaluate(defended, x.to(args.device), y.to(args.device), domain=domain, suite=base, eps=eps_list,
                      options=options)
    if rank == 0:
        report.write(args.out)
        print(report.markdown())
        print(f"wrote {args.out}/{', '.join(report.files())}")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return report.record if rank == 0 else None


if __name__ == "__main__":
    run(main)
