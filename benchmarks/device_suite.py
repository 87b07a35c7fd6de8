"""One prepared command that turns a lent GPU's minutes into results, and the plan for the long jobs.

Here, on the CPU machine (nothing runs on a GPU):

    python -m benchmarks.device_suite --dry-run      # the jobs, their limits, what travels and its size
    python -m benchmarks.device_suite --prepare      # the wheels and the data set into .device/ (git-ignored)
    python -m benchmarks.device_suite --stage        # move what the jobs do not read out of the tree
    python -m benchmarks.device_suite --unstage      # ... and back (always, right after the device call)
    python -m benchmarks.device_suite --unpack DIR   # the results archive a device call brought back

On the lent machine, as the device tool's one command (carry what ``--dry-run`` lists: the wheels
and the data in ``.device/``, and for the long DDPM job all training images and ``eval/resume``):

    JOBS=default MAX_MINUTES=8 bash benchmarks/device_run.sh

The jobs are explicit entries of :data:`JOBS`; ``default`` is every job not marked long: the CUDA
tests, the benchmarks (``benchmarks/results/*_cuda.json``) and the shipped default's report on the
first 1000 test images under the full suite. Each job runs as its own process with its own time
limit, in order, and is skipped when less than its limit is left of ``--max-minutes``; a summary
(status, seconds, log) goes into the archive with every job's outputs. The device's working tree
travels with a 64 MiB limit, which the tracked tree (shipped weights, saved reports) exceeds: hence
``--stage``, which moves every tracked weight no job reads, the AmbientGAN generators and the saved
reports into ``.device_stash/`` (ignored) until ``--unstage`` moves them back.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from manifold_defense.utils import ToolParser, names, real, run

REPO = Path(__file__).resolve().parents[1]
DEVICE_DIR, STASH = REPO / ".device", REPO / ".device_stash"
LIMIT_BYTES = 64 * 2**20
WHEELS = ("torchattacks==3.5.1", "foolbox==3.3.4", "eagerpy==0.30.0", "GitPython==3.2.1", "gitdb==4.0.12", "smmap==5.0.3")
DATA = Path("/usr/share/datasets/fashion-mnist")
STAGED = ("eval/generators", "eval/reports")  # tracked folders no job reads
TRAIN_SUBSET = 5000  # training images the short jobs carry (the long ones carry all 60,000)
FULL_SUITE = "clean,fgsm,pgd,pgd_l2,bpda_pgd,eot_pgd,exact_apgd_ce,exact_apgd_dlr,exact_apgd_t,latent,square,on_manifold"


@dataclass(frozen=True)
class Job:
    """One step of the device suite: a ``python -m`` command with a time limit.

    Attributes:
        name: its key for ``--jobs``.
        argv: the arguments after ``python``.
        minutes: its time limit.
        outputs: paths (relative to the repository) packed into the results archive.
        weights: shipped checkpoints (of fashion_mnist) it reads; ``--stage`` keeps them.
        long: a heavy queued job, run only when named.
    """

    name: str
    argv: tuple[str, ...]
    minutes: float
    outputs: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    long: bool = False


def _bench(name: str, *extra: str, weights: tuple[str, ...] = ()) -> Job:
    out = f"benchmarks/results/{name}_cuda.json"
    return Job(f"bench-{name.replace('_', '-')}", ("-m", f"benchmarks.{name}", "--device", "cuda", *extra, "--out", out),
               1.0, (out,), weights)


JOBS: tuple[Job, ...] = (
    Job("cuda-tests", ("-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"), 1.0,
        weights=("classifier_amortised_at", "encoder_amortised_at", "generator")),
    _bench("projection", "--n", "1000", weights=("generator", "encoder", "classifier")),
    _bench("exact_gradient", "--batch", "256", weights=("generator", "encoder", "classifier")),
    _bench("diffusion_gradient", "--batch", "200", weights=("ddpm", "classifier_lenet_at")),
    _bench("certify_throughput", weights=("classifier_lenet_noise_0.5", "encoder_noise_0.5", "ddpm", "generator")),
    _bench("training_throughput"),
    Job("report-default", ("-m", "eval.robustness", "--defense", "amortised_at", "--models", "defended", "--num-images",
                           "1000", "--eps", "0.1", "--attacks", FULL_SUITE, "--apgd-steps", "400", "--square-queries",
                           "1000", "--check-n", "100", "--device", "cuda", "--cache", "runs/cache_default_cuda",
                           "--out", "eval/reports/robustness_amortised_at_1000_cuda"), 2.0,
        ("eval/reports/robustness_amortised_at_1000_cuda",), ("classifier_amortised_at", "encoder_amortised_at", "generator")),
    Job("ddpm-cfg", ("-m", "manifold_defense.training.ddpm", "--conditional", "true", "--width", "16", "--batch-size",
                     "128", "--iterations", "40000", "--eval-every", "1000", "--max-minutes", "6", "--resume", "true",
                     "--device", "cuda", "--out", "eval/resume/ddpm_cfg"), 7.0,
        ("eval/resume/ddpm_cfg.json", "eval/resume/ddpm_cfg.safetensors", "eval/resume/ddpm_cfg.state.json",
         "eval/resume/ddpm_cfg.state.safetensors"), long=True),
)
# Adversarial training on generated data against its control (issue #44): the reproduced baseline's
# recipe (Croce et al. 2019's PGD-40 AT of LeNetSmall, classifier_lenet_at), both runs with EMA and label
# smoothing, one with 70% of every batch generated. Resumable across leases through eval/resume. Each
# curve point also runs Square (1,000 queries), so the convergence verdict reads the worst case of
# PGD-10 and Square and flags masking (the LeNetWide runs on the CPU masked; training.md).
AT_RECIPE = ("-m", "eval.train_robust", "--architecture", "lenet_small", "--init", "", "--clean-weight", "0",
             "--pgd-weight", "1", "--ae-frac", "0.5", "--pgd-steps", "40", "--pgd-step-factor", "2",
             "--projection-weight", "0", "--manifold-weight", "0", "--batch-size", "128", "--iterations", "46000",
             "--lr", "1e-3", "--lr-schedule", "final_tenth", "--sampling", "epochs", "--eval-every", "2300",
             "--val-size", "1000", "--val-square-queries", "1000", "--ema", "0.995", "--label-smoothing", "0.1",
             "--device", "cuda", "--max-minutes", "4", "--resume", "true")


def _at_job(name: str, *extra: str) -> Job:
    stem = f"eval/resume/{name}"
    return Job(name.replace("_", "-"), (*AT_RECIPE, *extra, "--out", stem), 5.0,
               tuple(f"{stem}{suffix}" for suffix in (".json", ".safetensors", ".state.json", ".state.safetensors")),
               long=True)


# Issue #45: the baseline + DiffPure row judged on independent draws, and its doubling check (steps and
# EOT doubled), on the first 100 test images.
_JUDGED_OUT = "eval/resume/judged_diffpure_lenet_at_t100_{}"


def _judged_job(name: str, runs: str, steps: str, eot: str, minutes: float, *extra: str) -> Job:
    out = _JUDGED_OUT.format(name.rsplit("-", 1)[-1])
    return Job(name, ("-m", "eval.judged", "--purifier", "diffusion", "--classifier", "classifier_lenet_at", "--t-star",
                      "100", "--sampler-steps", "10", "--num-images", "100", "--runs", runs, "--steps", steps, "--eot", eot,
                      "--select-draws", "16", "--judge-draws", "64", "--batch-size", "100", "--device", "cuda", *extra,
                      "--out", out), minutes, (out,),
               ("classifier_lenet_at", "ddpm"), long=True)


JOBS += (
    Job("generate-ddpm", ("-m", "eval.generate_data", "--generator", "ddpm_cfg", "--n", "200000",
                          "--shard-size", "20000", "--batch-size", "5000", "--device", "cuda", "--max-minutes", "2",
                          "--out", "data/generated/ddpm_cfg"), 3.0, ("data/generated/ddpm_cfg/generated.json",),
        ("classifier", "ddpm_cfg"), long=True),  # the shipped checkpoint every CPU sample set came from
    _judged_job("judged-diffpure-base", "4", "200", "8", 3.0),
    _judged_job("judged-diffpure-x2", "4", "400", "16", 7.0, "--doubling-of", _JUDGED_OUT.format("base")),
    _at_job("at_control_lenet"),
    _at_job("at_generated_lenet", "--generated", "data/generated/ddpm_cfg", "--generated-fraction", "0.7"),
)
BY_NAME = {job.name: job for job in JOBS}


def selected(spec: Sequence[str]) -> list[Job]:
    """The jobs named (``default``: every job not marked long), in :data:`JOBS` order."""
    wanted = {j.name for j in JOBS if not j.long} if "default" in spec else set()
    wanted |= {s for s in spec if s != "default"}
    return [j for j in JOBS if j.name in wanted]


def _weights_dir() -> Path:
    return REPO / "manifold_defense" / "weights" / "fashion_mnist"


def _travelling(carry: Sequence[str]) -> list[Path]:
    """Files the device tool would send: tracked files present, untracked ones git does not ignore, carried paths."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    files = [REPO / p for p in listed if p and (REPO / p).is_file()]
    for path in carry:
        root = REPO / path
        files += [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else [root] if root.is_file() else []
    return files


def _stage_candidates(jobs: Sequence[Job]) -> list[Path]:
    keep = {w for j in jobs for w in j.weights}
    heavy = [p for p in _weights_dir().glob("*.safetensors") if p.name[:-len(".safetensors")] not in keep]
    return heavy + [REPO / folder for folder in STAGED if (REPO / folder).exists()]


def carry_for(jobs: Sequence[Job]) -> list[str]:
    """The ignored paths a device call for ``jobs`` must name in ``carry``."""
    return [".device/wheels", ".device/data", *([".device/data_full", "eval/resume"] if any(j.long for j in jobs) else [])]


def dry_run(jobs: Sequence[Job], minutes: float) -> dict[str, Any]:
    """What the suite would run and carry, and whether it fits; prints it and returns it."""
    carry = carry_for(jobs)
    size = sum(p.stat().st_size for p in _travelling(carry))
    staged = sum(sum(f.stat().st_size for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
                 for p in _stage_candidates(jobs))
    missing = [w for j in jobs for w in j.weights if not (_weights_dir() / f"{w}.safetensors").is_file()]
    plan = {
        "jobs": [{"name": j.name, "minutes": j.minutes, "command": "python " + " ".join(j.argv)} for j in jobs],
        "minutes_planned": sum(j.minutes for j in jobs), "max_minutes": minutes, "carry": carry,
        "wheels": sorted(p.name for p in (DEVICE_DIR / "wheels").glob("*.whl")),
        "data": sorted(p.name for p in (DEVICE_DIR / "data").glob("*.gz")),
        "travel_mib": round(size / 2**20, 1), "travel_mib_after_stage": round((size - staged) / 2**20, 1),
        "limit_mib": LIMIT_BYTES / 2**20, "missing_weights": missing,
    }
    for j in plan["jobs"]:
        print(f"{j['name']:<26} {j['minutes']:>4} min  {j['command']}")
    problems = []
    if len(plan["wheels"]) < len(WHEELS) or len(plan["data"]) < 4 or (
            any(j.long for j in jobs) and not list((DEVICE_DIR / "data_full").glob("*.gz"))):
        problems.append("run --prepare first (wheels and data into .device/)")
    if missing:
        problems.append(f"missing weights {missing}")
    if size > LIMIT_BYTES:
        problems.append(f"{plan['travel_mib']} MiB would travel (limit 64): run --stage first "
                        f"({plan['travel_mib_after_stage']} MiB after it), --unstage after the call")
    if STASH.exists() and any(p.is_file() for p in STASH.rglob("*")):
        problems.append(f"files are staged in {STASH}: run --unstage before you commit anything")
    if plan["minutes_planned"] > minutes:
        problems.append(f"the jobs plan {plan['minutes_planned']} minutes, over --max-minutes {minutes}: the last are skipped")
    plan["problems"] = problems
    print(f"travels {plan['travel_mib']} MiB ({plan['travel_mib_after_stage']} MiB staged) with carry {carry}")
    print("ready" if not problems else "not ready: " + "; ".join(problems))
    return plan


def _idx_subset(source: Path, target: Path, count: int) -> None:
    """The first ``count`` items of an IDX file (gzip), with the header's count rewritten."""
    raw = gzip.decompress(source.read_bytes())
    dims = raw[3]  # IDX: 2 zero bytes, a type byte, the number of dimensions, then one big-endian int32 each
    header = 4 + 4 * dims
    item = 1
    for d in range(1, dims):
        item *= int.from_bytes(raw[4 + 4 * d:8 + 4 * d], "big")
    count = min(count, int.from_bytes(raw[4:8], "big"))
    target.write_bytes(gzip.compress(raw[:4] + count.to_bytes(4, "big") + raw[8:header] + raw[header:header + count * item]))


def prepare() -> None:
    """Download the wheels the device lacks and put the data set into ``.device/`` (ignored by git):
    ``data/`` the test set and the first :data:`TRAIN_SUBSET` training images, ``data_full/`` all of them."""
    (DEVICE_DIR / "wheels").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", "-d", str(DEVICE_DIR / "wheels"), *WHEELS], check=True)
    for folder in ("data", "data_full"):
        (DEVICE_DIR / folder).mkdir(exist_ok=True)
    for gz in DATA.glob("*.gz"):
        if gz.name.startswith("train"):
            shutil.copy2(gz, DEVICE_DIR / "data_full" / gz.name)
            _idx_subset(gz, DEVICE_DIR / "data" / gz.name, TRAIN_SUBSET)
        else:
            shutil.copy2(gz, DEVICE_DIR / "data" / gz.name)
    print(f"prepared {DEVICE_DIR}")


def stage(jobs: Sequence[Job]) -> None:
    """Move what no job reads into ``.device_stash/`` (same relative paths)."""
    for path in _stage_candidates(jobs):
        target = STASH / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target))
    print(f"staged into {STASH}: run --unstage right after the device call")


def unstage() -> None:
    """Move everything in ``.device_stash/`` back into the tree."""
    if not STASH.exists():
        return
    for path in sorted(STASH.rglob("*")):
        if path.is_file():
            target = REPO / path.relative_to(STASH)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(target))
    shutil.rmtree(STASH)
    print("unstaged")


def run_jobs(jobs: Sequence[Job], minutes: float, pack: Path | None) -> dict[str, Any]:
    """Run each job in order within the budget; pack the outputs, logs and summary into PACK/results.tgz."""
    start, summary = time.monotonic(), []
    logs = REPO / "runs" / "device_logs"
    logs.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        left = minutes - (time.monotonic() - start) / 60
        if left < job.minutes:
            summary.append({"job": job.name, "status": f"skipped ({left:.1f} of its {job.minutes} minutes left)"})
            continue
        t0, log = time.monotonic(), logs / f"{job.name}.log"
        print(f"== {job.name}: python {' '.join(job.argv)}", flush=True)
        with log.open("w") as f:
            try:
                rc = subprocess.run([sys.executable, *job.argv], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=60 * job.minutes).returncode
                status = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                status = f"timed out after {job.minutes} minutes"
        summary.append({"job": job.name, "status": status, "seconds": round(time.monotonic() - t0, 1)})
        print(f"   {status} in {summary[-1]['seconds']} s; tail of {log.name}:\n" + log.read_text()[-600:], flush=True)
    record = {"summary": summary, "seconds": round(time.monotonic() - start, 1)}
    (logs / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    if pack is not None:
        pack.mkdir(parents=True, exist_ok=True)
        with tarfile.open(pack / "results.tgz", "w:gz") as tar:
            tar.add(logs, arcname="runs/device_logs")
            for job in jobs:
                for out in job.outputs:
                    if (REPO / out).exists():
                        tar.add(REPO / out, arcname=out)
    return record


def unpack(archive: Path) -> None:
    """Extract a results archive (a file, or a folder holding results.tgz) into the repository."""
    path = archive / "results.tgz" if archive.is_dir() else archive
    with tarfile.open(path) as tar:
        tar.extractall(REPO, filter="data")
        print("\n".join(tar.getnames()))


def build_parser() -> argparse.ArgumentParser:
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=names(("default", *BY_NAME)), default=("default",),
                        help=f"comma list of {', '.join(BY_NAME)} or default (every job not marked long)")
    parser.add_argument("--max-minutes", type=real(0.0, low_open=True), default=8.0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list the jobs and check what would travel")
    mode.add_argument("--prepare", action="store_true", help="wheels and data into .device/")
    mode.add_argument("--stage", action="store_true", help="move what no job reads out of the tree")
    mode.add_argument("--unstage", action="store_true", help="move it back")
    mode.add_argument("--unpack", type=Path, default=None, help="extract a results archive into the repository")
    parser.add_argument("--pack", type=Path, default=None, help="write PACK/results.tgz (the device call's $OUT)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = build_parser().parse_args(argv)
    jobs = selected(args.jobs)
    if args.dry_run:
        return dry_run(jobs, args.max_minutes)
    if args.prepare:
        prepare()
    elif args.stage:
        stage(jobs)
    elif args.unstage:
        unstage()
    elif args.unpack is not None:
        unpack(args.unpack)
    else:
        return run_jobs(jobs, args.max_minutes, args.pack)
    return None


if __name__ == "__main__":
    run(main)
