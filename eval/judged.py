"""A randomised defense's robust accuracy with selection and judgement on independent draws.

    python -m eval.judged --purifier diffusion --classifier classifier_lenet_at --t-star 100 --sampler-steps 10 \\
        --num-images 200 --runs 4 --steps 200 --eot 8 --out eval/reports/judged_diffpure_lenet_at_t100
    python -m eval.judged ... --fold eval/reports/judged_a,eval/reports/judged_b --out eval/reports/judged_ab
    python -m eval.judged ... --steps 400 --eot 16 --doubling-of eval/reports/judged_diffpure_lenet_at_t100 --out ...
    python -m eval.judged --quick --out runs/judged_quick

Each of ``--runs`` attack runs (APGD through the exact gradient of the defense as deployed, EOT over
its randomness, its own random start) leaves one candidate adversarial example per image; the clean
image is candidate 0. Candidates are stored as int8 perturbations (``OUT/candidates.npz``,
compressed), and what is stored is what is judged. :func:`eval.suite.judge.select_and_judge` then
chooses each image's candidate on ``--select-draws`` draws of the defense and judges it on
``--judge-draws`` (M >= 64) independent seeded draws. ``OUT/judged.json`` has the expected one-shot
accuracy (the mean of k / M, with a 95% interval over images), majority of N and worst-of-N from the
same judgement draws, the expected clean accuracy, and k per image.

``--fold DIRS`` (with ``--runs 0``: nothing new attacked) adds the candidates of earlier runs on the same images and selects again, so folding
never lowers a figure by draw luck alone. A DIR may also be an ``eval.robustness`` report of the same
randomised defense: the candidates of its every attack family at this eps take part. ``--doubling-of DIR`` records how far this (stronger)
command moved each figure from DIR's on the images both cover: the convergence rule of issue #45 is
< 1 point expected one-shot and < 2 points majority / worst-of-10. A killed run resumes from
``OUT/cache`` (one file per run and batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from attacks import APGD, ExactGradient
from manifold_defense.domains import resolve_domain
from manifold_defense.pretrained import diffpure_pretrained
from manifold_defense.purify import PurifiedClassifier
from manifold_defense.utils import ToolParser, integer, real, run

from .report import defense_difference, describe_purifier
from .report.defenses import load_defense
from .report.judging import load_candidates
from .suite.judge import JUDGE, Judgement, correct_counts, dequantise, quantise, select_and_judge

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """This command's line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--purifier", choices=["projection", "diffusion"], default="diffusion")
    parser.add_argument("--defense", default="shipped", help="projection: as in eval.robustness")
    parser.add_argument("--projection", choices=["default", "defense_gan"], default="defense_gan")
    parser.add_argument("--classifier", default=None, help="a shipped name or checkpoint path")
    parser.add_argument("--ddpm", default="ddpm")
    parser.add_argument("--t-star", type=integer(1), default=100)
    parser.add_argument("--sampler-steps", type=integer(1), default=10)
    parser.add_argument("--checkpoint-every", type=integer(1), default=1)
    parser.add_argument("--domain", default="fashion_mnist")
    parser.add_argument("--num-images", type=integer(1), default=200)
    parser.add_argument("--eps", type=real(0.0, low_open=True), default=None, help="Linf budget (default: the domain's)")
    parser.add_argument("--runs", type=integer(0), default=4,
                        help="attack runs: candidates per image (0 with --fold: only choose among the folded ones)")
    parser.add_argument("--steps", type=integer(1), default=200, help="APGD steps per run")
    parser.add_argument("--eot", type=integer(1), default=8, help="EOT samples per attack step")
    parser.add_argument("--select-draws", type=integer(1), default=16)
    parser.add_argument("--judge-draws", type=integer(64), default=64)
    parser.add_argument("--votes", type=integer(1), default=10, help="N of majority-of-N and worst-of-N")
    parser.add_argument("--batch-size", type=integer(1), default=50)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fold", default="",
                        help="comma-separated earlier OUT directories or eval.robustness reports to select among too")
    parser.add_argument("--doubling-of", default="", help="an earlier OUT directory this command doubles")
    parser.add_argument("--out", default="results/judged")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: 4 images, t* 10, 2 sampler steps, 2 runs")
    return parser


def _defense(args: argparse.Namespace) -> PurifiedClassifier:
    domain = resolve_domain(args.domain)
    if args.purifier == "diffusion":
        return diffpure_pretrained(domain, t_star=args.t_star, steps=args.sampler_steps,
                                   checkpoint_every=args.checkpoint_every, classifier=args.classifier or "classifier",
                                   ddpm=args.ddpm).eval()
    return load_defense(args.defense, args.classifier, args.projection, domain).eval()


def _attack_runs(args: argparse.Namespace, defended: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor,
                 eps: float, bounds: tuple[float, float], out: Path) -> np.ndarray:
    """(runs, N, ...) int8 perturbations of this command's runs, each (run, batch) cached in OUT/cache."""
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    surrogate = ExactGradient(defended, checkpoint_every=args.checkpoint_every)
    runs: list[list[np.ndarray]] = []
    todo = [(r, b) for r in range(args.runs) for b in range(0, len(x), args.batch_size)]
    for r, b in tqdm(todo, desc="attack runs x batches", unit="batch"):
        path = cache / f"run{r}_batch{b}.npy"
        if not path.exists():
            torch.manual_seed(args.seed * 1_000 + r)
            attack = APGD(eps=eps, steps=args.steps, loss="ce", eot_samples=args.eot, bounds=bounds, seed=args.seed + r)
            xb, yb = x[b:b + args.batch_size], y[b:b + args.batch_size]
            np.save(path, quantise(attack(surrogate, xb, yb).adversarial.detach() - xb, eps).numpy())
        if b == 0:
            runs.append([])
        runs[-1].append(np.load(path))
    if not runs:
        return np.zeros((0, *x.shape), dtype=np.int8)
    return np.stack([np.concatenate(parts) for parts in runs])


def _load_folded(dirs: Sequence[str], n: int, eps: float, defense: dict[str, Any]) -> list[np.ndarray]:
    """The candidates of earlier ``eval.judged`` outputs or ``eval.robustness`` reports of this defense
    (a report's every defended worst-case row at this eps), each (K, n, ...) int8.

    Raises:
        ValueError: a directory without candidates, of another defense or eps, or covering fewer images.
    """
    folded = []
    for d in dirs:
        judged, report = Path(d) / "judged.json", Path(d) / "robustness.json"
        record = json.loads((judged if judged.is_file() else report).read_text()) if judged.is_file() or report.is_file() else None
        if record is None:
            raise ValueError(f"--fold {d}: neither judged.json nor robustness.json there")
        theirs = {k: v for k, v in record.get("defense", {}).items() if k in defense}
        differs = defense_difference(theirs, json.loads(json.dumps(defense)))
        if differs is not None:
            raise ValueError(f"--fold {d}: another defense (it differs in {differs!r})")
        if record["n"] < n:
            raise ValueError(f"--fold {d}: it covers {record['n']} images, this run {n}")
        if judged.is_file():
            if record["eps"] != eps:
                raise ValueError(f"--fold {d}: eps {record['eps']}, this run eps {eps}")
            folded.append(np.load(Path(d) / "candidates.npz")["deltas"][:, :n])
            continue
        mine = {k: v for k, v in load_candidates(d).items() if k.split(" | ")[0] == repr(float(eps))}
        if not mine:
            raise ValueError(f"--fold {d}: no candidates at eps {eps} (a deterministic defense, or a report written "
                             "before candidates were kept)")
        folded.append(np.stack([v[:n].numpy() for v in mine.values()]))
    return folded


def _doubling(record: dict[str, Any], other_dir: str) -> dict[str, Any]:
    other = json.loads((Path(other_dir) / "judged.json").read_text())
    n = min(record["n"], other["n"])
    votes, m_a, m_b = record["votes"], record["judge_draws"], other["judge_draws"]

    def figures(r: dict[str, Any], m: int) -> tuple[float, float, float]:
        j = Judgement(torch.tensor(r["correct_of_draws"][:n]), m, torch.zeros(n, dtype=torch.long))
        return j.expected(), j.majority_of(votes), j.worst_of(votes)

    a, b = figures(record, m_a), figures(other, m_b)
    moved = [round(100 * (p - q), 2) for p, q in zip(a, b)]
    return {"of": other_dir, "images": n, "expected_one_shot_points": moved[0], f"majority_of_{votes}_points": moved[1],
            f"worst_of_{votes}_points": moved[2],
            "converged": abs(moved[0]) < 1 and abs(moved[1]) < 2 and abs(moved[2]) < 2}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Attack (or resume), fold, select and judge; write OUT/candidates.npz and OUT/judged.json."""
    args = build_parser().parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.num_images, args.t_star, args.sampler_steps, args.runs, args.steps = 4, 10, 2, min(args.runs, 2), 2
        args.eot, args.select_draws, args.batch_size = 1, 2, 4
    folds = [d for d in args.fold.split(",") if d]
    if args.runs == 0 and not folds:
        raise ValueError("--runs 0 leaves only the clean image to judge: pass --fold REPORT,... or --runs >= 1")
    domain = resolve_domain(args.domain)
    eps = args.eps if args.eps is not None else domain.budgets.linf_eps
    bounds = domain.pixel_range
    start = time.monotonic()
    defended = _defense(args).to(args.device)
    for p in defended.parameters():
        p.requires_grad_(False)
    x, y = domain.load("test", limit=args.num_images)
    x, y = x.to(args.device), y.to(args.device)
    out = Path(args.out)
    deltas = [np.zeros((1, *x.shape), dtype=np.int8), _attack_runs(args, defended, x, y, eps, bounds, out)]
    deltas += _load_folded(folds, len(x), eps, describe_purifier(defended))
    all_deltas = np.concatenate(deltas)
    judgement = select_and_judge(defended, dequantise(torch.from_numpy(all_deltas), x, eps, bounds), y, select_draws=args.select_draws,
                                 judge_draws=args.judge_draws, seed=args.seed, batch_size=args.batch_size)
    clean = correct_counts(defended, x, y, draws=args.judge_draws, seed=args.seed + 1, purpose=JUDGE,
                           batch_size=args.batch_size).cpu()
    lo, hi = judgement.interval()
    record: dict[str, Any] = {
        "command": " ".join(["python -m eval.judged", *argv_list]),
        "defense": describe_purifier(defended), "randomized": bool(getattr(defended.purifier, "randomized", False)),
        "n": len(x), "eps": eps, "runs": args.runs, "steps": args.steps, "eot": args.eot, "seed": args.seed,
        "folded": folds, "candidates_per_image": int(all_deltas.shape[0]),
        "select_draws": args.select_draws, "judge_draws": args.judge_draws, "votes": args.votes,
        "clean_expected": round(float(clean.double().mean()) / args.judge_draws, 4),
        "expected_one_shot": round(judgement.expected(), 4), "interval": [round(lo, 4), round(hi, 4)],
        f"majority_of_{args.votes}": round(judgement.majority_of(args.votes), 4),
        f"worst_of_{args.votes}": round(judgement.worst_of(args.votes), 4),
        "chosen_candidate": judgement.chosen.tolist(), "correct_of_draws": judgement.correct.tolist(),
        "device": args.device, "threads": torch.get_num_threads(), "seconds": round(time.monotonic() - start, 1),
    }
    if args.doubling_of:
        record["doubling"] = _doubling(record, args.doubling_of)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "candidates.npz", deltas=all_deltas[1:1 + args.runs])  # this command's own runs
    (out / "judged.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"first {len(x)} test images, Linf {eps:g}: expected one-shot {100 * judgement.expected():.1f}% "
          f"[{100 * lo:.1f}, {100 * hi:.1f}], majority of {args.votes} {100 * record[f'majority_of_{args.votes}']:.1f}%, "
          f"worst-of-{args.votes} {100 * record[f'worst_of_{args.votes}']:.1f}% ({record['candidates_per_image']} "
          f"candidates per image, judged on {args.judge_draws} independent draws)")
    return record


if __name__ == "__main__":
    run(main)
