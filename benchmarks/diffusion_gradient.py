"""Cost of one exact-gradient attack step through the diffusion purifier: peak memory and seconds for
a batch, by recomputation segment (the memory goal: a 100-step sampler, batch 50, under 4 GB on CPU).

    python -m benchmarks.diffusion_gradient                  # t* = 100, 100 reverse steps, batch 50
    python -m benchmarks.diffusion_gradient --quick

One attack step = the purifier (diffuse to t*, ``steps`` reverse UNet steps) + the classifier + the
backward pass to x, through :func:`manifold_defense.projection.exact_gradient.checkpointed_loop`. A segment
equal to ``steps`` keeps the whole sampler's graph during the backward pass (what plain autograd
needs). Each setting runs in a fresh process, so the peak resident memory (``ru_maxrss``) is its own;
the table reports it above the process's memory after loading and one plain forward pass. The cost
does not depend on the weights: without a shipped ``ddpm`` checkpoint an untrained DDPM of the same
size is timed (the record says which). Writes benchmarks/results/diffusion_gradient_{device}.json.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any, Sequence

import torch

from manifold_defense.utils import ToolParser, integer, integers, run
from manifold_defense.purify import DiffusionPurifier
from manifold_defense.domains import get_domain
from manifold_defense.models import DDPM
from manifold_defense.pretrained import available, load_pretrained

from .record import peak_rss_mb, run_isolated, write_record


def _ddpm() -> tuple[DDPM, str]:
    if "ddpm" in available("fashion_mnist"):
        model = load_pretrained("ddpm")
        if isinstance(model, DDPM):
            return model.eval(), "shipped ddpm"
    return DDPM(width=16, max_t=400).eval(), "untrained DDPM(width=16) (cost only)"


def _measure(t_star: int, steps: int, segment: int, batch: int, repeats: int, threads: int, device: str,
             queue: Any) -> None:
    try:
        torch.set_num_threads(threads)
        ddpm, which = _ddpm()
        ddpm = ddpm.to(device)
        classifier = load_pretrained("classifier").eval().to(device)
        purifier = DiffusionPurifier(ddpm, t_star=t_star, steps=steps, checkpoint_every=segment)
        x, y = get_domain("fashion_mnist").load("test", limit=batch)
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            classifier(purifier(x))
        base = peak_rss_mb()
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            x_in = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(classifier(purifier(x_in)), y)
            (grad,) = torch.autograd.grad(loss, x_in)
            seconds.append(time.perf_counter() - start)
        queue.put({"ok": True, "ddpm": which, "seconds_per_step": round(min(seconds), 3),
                   "peak_rss_mb": round(peak_rss_mb(), 1), "peak_above_loaded_mb": round(peak_rss_mb() - base, 1),
                   "grad_norm": float(grad.norm())})
    except Exception as exc:  # noqa: BLE001  (an out-of-memory is a result too)
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]})


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=integer(1), default=50)
    parser.add_argument("--t-star", type=integer(1), default=100)
    parser.add_argument("--steps", type=integer(1), default=100, help="reverse sampler steps")
    parser.add_argument("--segments", type=integers(1), default=[1, 10, 100],
                        help="checkpoint_every values (= --steps: the whole graph kept during backward)")
    parser.add_argument("--repeats", type=integer(1), default=1)
    parser.add_argument("--threads", type=integer(1), default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="default benchmarks/results/diffusion_gradient_{device}.json")
    parser.add_argument("--quick", action="store_true", help="batch 2, t* 4, 4 steps, segments 1 and 4")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.batch, args.t_star, args.steps, args.segments = 2, 4, 4, [1, 4]
    if args.steps > args.t_star:
        raise ValueError(f"--steps {args.steps} exceeds --t-star {args.t_star} (one reverse step per timestep at most)")
    results = []
    for segment in args.segments:
        row = run_isolated(_measure, args.t_star, args.steps, min(segment, args.steps), args.batch, args.repeats,
                           args.threads, args.device)
        row = {"checkpoint_every": segment, **row}
        results.append(row)
        shown = (f"{row['seconds_per_step']:.2f} s/step, peak {row['peak_rss_mb']:.0f} MB "
                 f"(+{row['peak_above_loaded_mb']:.0f} MB above loaded)" if row["ok"] else row["error"])
        print(f"t*={args.t_star} steps={args.steps} batch={args.batch} checkpoint_every={segment:<4d} {shown}", flush=True)
    record = {"command": "python -m benchmarks.diffusion_gradient" + (" --quick" if args.quick else ""),
              "batch": args.batch, "t_star": args.t_star, "steps": args.steps, "repeats": args.repeats,
              "threads": args.threads, "device": args.device, "torch": torch.__version__,
              "machine": platform.machine(), "results": results}
    write_record(record, args.out or f"benchmarks/results/diffusion_gradient_{args.device}.json")
    return record


if __name__ == "__main__":
    run(main)
