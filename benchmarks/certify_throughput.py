"""Noise draws per second of the smoothing base classifiers of ``eval.certify``, eager and through
``torch.compile`` (``eval.certify --compile``): what one certified image costs at n0 + n draws.

    python -m benchmarks.certify_throughput                 # none, amortised, diffusion at sigma 0.5
    python -m benchmarks.certify_throughput --quick

Each (denoiser, mode) runs in a fresh process: build the base exactly as ``eval.certify`` does
(:func:`eval.certify.build_base`, the standard ``classifier_lenet``), one untimed batch (for a
compiled base: the compilation, timed separately), then the best of ``--repeats`` timed forward
passes of ``--batch`` noisy images under ``torch.no_grad``. Writes
benchmarks/results/certify_throughput_{device}.json.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any, Sequence, cast

import torch
from torch import nn

from eval.certify import DENOISERS, build_base
from manifold_defense.utils import ToolParser, integer, names, real, run
from manifold_defense.domains import get_domain

from .record import run_isolated, write_record


def _measure(denoiser: str, compiled: bool, sigma: float, batch: int, repeats: int, threads: int, device: str,
             queue: Any) -> None:
    try:
        torch.set_num_threads(threads)
        base = build_base("classifier_lenet", denoiser, get_domain("fashion_mnist"), sigma).to(device)
        model = cast(nn.Module, torch.compile(base)) if compiled else base
        x = (torch.rand(batch, 1, 28, 28) + sigma * torch.randn(batch, 1, 28, 28)).to(device)
        with torch.no_grad():
            start = time.perf_counter()
            model(x)
            first = time.perf_counter() - start
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                seconds.append(time.perf_counter() - start)
        best = min(seconds)
        queue.put({"ok": True, "first_call_seconds": round(first, 2), "seconds_per_batch": round(best, 4),
                   "draws_per_second": round(batch / best, 1)})
    except Exception as exc:  # noqa: BLE001  (a compiler failure is a result too)
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--denoisers", type=names(DENOISERS), default=("none", "amortised", "diffusion"),
                        help=f"comma list of {', '.join(DENOISERS)}")
    parser.add_argument("--sigma", type=real(0.0, low_open=True), default=0.5)
    parser.add_argument("--batch", type=integer(1), default=1000, help="noisy images per forward pass")
    parser.add_argument("--repeats", type=integer(1), default=3)
    parser.add_argument("--draws", type=integer(1), default=10_100, help="n0 + n: the draws of one certified image")
    parser.add_argument("--threads", type=integer(1), default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="default benchmarks/results/certify_throughput_{device}.json")
    parser.add_argument("--quick", action="store_true", help="batch 50, one repeat, denoisers none and amortised")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.batch, args.repeats, args.denoisers = 50, 1, ("none", "amortised")
    results = []
    for denoiser in args.denoisers:
        for compiled in (False, True):
            row = run_isolated(_measure, denoiser, compiled, args.sigma, args.batch, args.repeats, args.threads,
                               args.device)
            row = {"denoiser": denoiser, "compiled": compiled, **row}
            if row["ok"]:
                row["seconds_per_certified_image"] = round(args.draws / row["draws_per_second"], 2)
            results.append(row)
            shown = (f"{row['draws_per_second']:.0f} draws/s, {row['seconds_per_certified_image']:.1f} s per "
                     f"certified image (first call {row['first_call_seconds']:.1f} s)" if row["ok"] else row["error"])
            print(f"{denoiser:<10} {'compiled' if compiled else 'eager':<8} {shown}", flush=True)
    record = {"command": "python -m benchmarks.certify_throughput" + (" --quick" if args.quick else ""),
              "classifier": "classifier_lenet", "sigma": args.sigma, "batch": args.batch, "repeats": args.repeats,
              "draws": args.draws, "threads": args.threads, "device": args.device, "torch": torch.__version__,
              "machine": platform.machine(), "results": results}
    write_record(record, args.out or f"benchmarks/results/certify_throughput_{args.device}.json")
    return record


if __name__ == "__main__":
    run(main)
