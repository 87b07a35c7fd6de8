"""Cost of one exact-gradient attack step through the deployed projection: peak memory and seconds,
with and without gradient checkpointing.

    python -m benchmarks.exact_gradient                 # default and Defense-GAN projections, batch 16
    python -m benchmarks.exact_gradient --quick

One attack step = the defense's forward pass (the whole projection) + the backward pass to x. Each
setting runs in a fresh process, so the peak resident memory (``ru_maxrss``) is its own; the table
reports it above the process's memory after loading the models and running one plain forward pass.
Writes benchmarks/results/exact_gradient_cpu.json.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any, Sequence

import torch

from manifold_defense import ProjectionConfig
from manifold_defense.utils import ToolParser, integer, run
from manifold_defense.domains import get_domain
from manifold_defense.pretrained import defended_fashion_mnist

from .record import peak_rss_mb, run_isolated, write_record

PROJECTIONS = {
    "default (encoder + 1 x 50 Adam)": (ProjectionConfig(), True),
    "Defense-GAN (10 x 200 momentum)": (ProjectionConfig.defense_gan(), False),
}


def _measure(projection: str, checkpoint_every: int | None, batch: int, repeats: int, threads: int,
             device: str, queue: Any) -> None:
    try:
        torch.set_num_threads(threads)
        config, encoder = PROJECTIONS[projection]
        d = defended_fashion_mnist(config.replace(seed=0), defense="projection", use_encoder=encoder).eval().to(device)
        x, y = get_domain("fashion_mnist").load("test", limit=batch)
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            d(x)
        base = peak_rss_mb()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            x_in = x.clone().requires_grad_(True)
            out = d.project(x_in, create_graph=True, checkpoint_every=checkpoint_every)
            loss = torch.nn.functional.cross_entropy(d.classifier(out.x_hat), y)
            (grad,) = torch.autograd.grad(loss, x_in)
            seconds.append(time.perf_counter() - start)
        queue.put({"ok": True, "seconds_per_step": min(seconds), "peak_rss_mb": round(peak_rss_mb(), 1),
                   "peak_above_loaded_mb": round(peak_rss_mb() - base, 1), "grad_norm": float(grad.norm())})
    except Exception as exc:  # noqa: BLE001  (an out-of-memory is a result too)
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})


def _segments(text: str) -> list[int | None]:
    """--segments: a comma list of checkpoint_every values, each an integer >= 1 or 'none' (the full unroll)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or any(t != "none" and not (t.isdigit() and int(t) >= 1) for t in items):
        raise argparse.ArgumentTypeError(f"{text!r}: give a comma list of integers >= 1 or 'none'")
    return [None if t == "none" else int(t) for t in items]


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=integer(1), default=16)
    parser.add_argument("--repeats", type=integer(1), default=2)
    parser.add_argument("--threads", type=integer(1), default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--segments", type=_segments, default=[None, 10, 50], help="checkpoint_every values; 'none' = full unroll")
    parser.add_argument("--out", default=None, help="default benchmarks/results/exact_gradient_{device}.json")
    parser.add_argument("--quick", action="store_true", help="batch 2, one repeat, default projection only")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    projections = list(PROJECTIONS)
    if args.quick:
        args.batch, args.repeats, projections = 2, 1, projections[:1]
    segments = list(args.segments)
    results = []
    for projection in projections:
        for every in segments:
            row = run_isolated(_measure, projection, every, args.batch, args.repeats, args.threads, args.device)
            row = {"projection": projection, "checkpoint_every": every, **row}
            results.append(row)
            shown = (f"{row['seconds_per_step']:.2f} s/step, peak +{row['peak_above_loaded_mb']:.0f} MB" if row["ok"]
                     else row["error"])
            print(f"{projection:34s} checkpoint_every={str(every):5s} {shown}", flush=True)
    record = {"command": "python -m benchmarks.exact_gradient", "batch": args.batch, "repeats": args.repeats,
              "threads": args.threads, "device": args.device, "torch": torch.__version__,
              "machine": platform.machine(), "results": results}
    write_record(record, args.out or f"benchmarks/results/exact_gradient_{args.device}.json")
    return record


if __name__ == "__main__":
    run(main)
