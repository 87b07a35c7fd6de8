"""How good is a generator learned from corrupted measurements only (AmbientGAN), next to the one
trained on clean images and the "unmeasured" baseline: one table, four measurements per generator.

    python -m eval.ambient_quality --generators clean=generator,ambient_dropout_0.9=runs/ambient_dropout_0.9 \\
        --out eval/reports/ambient_quality
    python -m eval.ambient_quality --quick

For each generator G (a shipped name or a checkpoint path):

* **Frechet distance** between 10,000 samples G(z) and the 10,000 test images in the feature space of
  the shipped classifier's penultimate layer (the input of its last linear layer): an FID whose
  feature extractor is a Fashion-MNIST classifier instead of Inception.
* **Class coverage** of the samples under that classifier: ``evenness`` = exp(entropy of the
  predicted-class histogram) / classes (1: every class equally often), ``confidence`` = the mean top
  softmax probability, ``classes_covered`` = classes that receive at least half their fair share.
* **Compressed sensing** (Bora et al. 2017): per-pixel MSE of recovering the first ``--cs-n`` test
  images from m Gaussian measurements (noise std 0.01) with G as the prior, next to Lasso-DCT.
* **Behind the projection**: clean accuracy of the standard classifier on G(z*(x)), the projection
  of the first ``--acc-n`` test images onto G's range (random restarts, the same setting for every
  generator: no generator gets an encoder).

Each row also says what the generator was trained on (clean images, measurements, or inverted
measurements: the "unmeasured" baseline) and for how many iterations, read from its checkpoint JSON.

Writes OUT/ambient_quality.json and .md, and OUT/ambient_samples.png (samples of every generator
under rows of the measured training images each measurement family produces); ``--resume`` keeps the
generators already measured with the same settings in OUT/ambient_quality.json (and the Lasso-DCT
figures), so rerunning the saved command reprints the table in seconds.
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
from torch import nn
from tqdm import tqdm

from manifold_defense.inverse import lasso_dct, parse_family, recover
from manifold_defense.models import read_config
from manifold_defense.utils import ToolParser, integer, integers, run
from manifold_defense.domains import Domain, get_domain
from manifold_defense.projection import AdditiveNoise, Compose, GaussianMeasurement, ProjectionConfig, project
from manifold_defense.pretrained import available, load_named, load_pretrained

from .report.generative import class_coverage, frechet_distance, penultimate_features

__all__ = ["frechet_distance", "penultimate_features", "class_coverage", "provenance", "main"]

PROJECTION = ProjectionConfig(restarts=4, steps=100, init_std=1.0, seed=0)
CS_NOISE = 0.01


def _pairs(text: str) -> list[tuple[str, str]]:
    """--generators: comma list of LABEL=NAME_OR_PATH (a bare NAME is its own label)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give at least one generator")
    return [(t.split("=", 1)[0], t.split("=", 1)[1]) if "=" in t else (t, t) for t in items]


def build_parser() -> argparse.ArgumentParser:
    """This script's command line (numeric flags range-checked at parse time)."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", type=_pairs, default=[("clean", "generator")],
                        help="comma list of LABEL=NAME_OR_PATH (a shipped generator or a checkpoint path)")
    parser.add_argument("--samples", type=integer(2), default=10_000, help="samples per generator (and test images)")
    parser.add_argument("--cs-n", type=integer(1), default=200, help="first N test images for compressed sensing")
    parser.add_argument("--m", type=integers(1), default=[50, 200], help="numbers of Gaussian measurements")
    parser.add_argument("--acc-n", type=integer(1), default=200, help="first N test images behind the projection")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--resume", action="store_true", help="keep generators already measured in OUT")
    parser.add_argument("--out", default="eval/reports/ambient_quality")
    parser.add_argument("--quick", action="store_true", help="500 samples, 4 images, m = 50")
    return parser


def provenance(name: str, domain: Domain) -> dict[str, Any]:
    """What the generator ``name`` (shipped name or checkpoint path) was trained on and for how long,
    from its checkpoint JSON: ``trained_on`` is ``clean``, ``measured FAMILY`` (AmbientGAN) or
    ``inverted FAMILY`` (the unmeasured baseline)."""
    stem = domain.weights_dir / name if domain.weights_dir is not None and name in available(domain) else Path(name)
    meta = read_config(stem).get("metadata", {})
    config = meta.get("config", {})
    family = config.get("measurement", "")
    trained_on = "clean" if not family else f"{'inverted' if config.get('unmeasured') else 'measured'} {family}"
    return {"trained_on": trained_on, "measurement": family, "iterations": meta.get("iterations_done"),
            "stopped_by_budget": bool(meta.get("stopped_by_budget", False))}


def _figure(generators: dict[str, nn.Module], families: list[str], x_train: torch.Tensor, path: Path,
            seed: int) -> None:
    """Ten samples per generator (same latents) under ten training images as each family measures them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, torch.Tensor]] = []
    for spec in families:
        family = parse_family(spec)
        rows.append((f"training data, {spec}", family(x_train[:10], torch.Generator().manual_seed(seed))))
    for label, G in generators.items():
        z = torch.randn(10, int(getattr(G, "latent_dim")), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            rows.append((f"samples: {label}", G(z)))
    fig, axes = plt.subplots(len(rows), 10, figsize=(10, 1.1 * len(rows)), squeeze=False)
    for r, (title, images) in enumerate(rows):
        for c in range(10):
            ax = axes[r][c]
            ax.imshow(images[c, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _measure(G: nn.Module, classifier: nn.Module, test_features: np.ndarray, x_cs: torch.Tensor,
             operators: dict[int, tuple[nn.Module, torch.Tensor]], x_acc: torch.Tensor, y_acc: torch.Tensor,
             args: argparse.Namespace, domain: Domain) -> dict[str, Any]:
    start = time.monotonic()
    gen = torch.Generator().manual_seed(args.seed)
    k = int(getattr(G, "latent_dim"))
    with torch.no_grad():
        samples = torch.cat([G(torch.randn(1000, k, generator=gen)) for _ in range(0, args.samples, 1000)])[:args.samples]
    features, probs = penultimate_features(classifier, samples.clamp(*domain.pixel_range))
    out: dict[str, Any] = {"frechet_distance": round(frechet_distance(features, test_features), 3),
                           **class_coverage(probs)}
    out["cs_mse"] = {}
    for m, (A, y) in operators.items():
        x_hat = recover(y, A, G, rng=torch.Generator().manual_seed(args.seed)).x_hat.clamp(*domain.pixel_range)
        out["cs_mse"][str(m)] = round(float((x_hat - x_cs).pow(2).mean()), 5)
    x_hat = project(G, x_acc, PROJECTION.replace(pixel_range=domain.pixel_range)).x_hat
    with torch.no_grad():
        out["accuracy_behind_projection"] = float((classifier(x_hat).argmax(1) == y_acc).float().mean())
    out["seconds"] = round(time.monotonic() - start, 1)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.samples, args.cs_n, args.acc_n, args.m = 500, 4, 4, [50]
    domain = get_domain("fashion_mnist")
    classifier = load_pretrained("classifier", domain).eval()
    settings = {"samples": args.samples, "cs_n": args.cs_n, "m": list(args.m), "acc_n": args.acc_n, "seed": args.seed,
                "cs_noise": CS_NOISE, "projection": PROJECTION.to_dict()}
    out = Path(args.out)
    file = out / "ambient_quality.json"
    previous = json.loads(file.read_text()) if args.resume and file.is_file() else {}
    done: dict[str, Any] = previous.get("generators", {}) if previous.get("settings") == settings else {}
    x_test, y_test = domain.load("test", limit=args.samples)
    test_features, _ = penultimate_features(classifier, x_test)
    x_cs = x_test[:args.cs_n]
    shape = (int(x_cs.shape[1]), int(x_cs.shape[2]), int(x_cs.shape[3]))
    operators: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    # Lasso-DCT depends only on the settings: --resume reads it back with the generators.
    lasso: dict[str, float] = dict(previous.get("lasso_dct_cs_mse", {})) if done else {}
    for m in args.m:
        gen = torch.Generator().manual_seed(args.seed + m)
        A = GaussianMeasurement(m, shape, generator=gen)
        with torch.no_grad():
            y = Compose(A, AdditiveNoise(CS_NOISE, generator=gen))(x_cs)  # A is what recovery knows
        operators[m] = (A, y)
        if str(m) not in lasso:
            lasso[str(m)] = round(float((lasso_dct(y, A, shape) - x_cs).pow(2).mean()), 5)
    results: dict[str, Any] = {}
    loaded: dict[str, nn.Module] = {}
    for label, name in tqdm(args.generators, desc="generators", unit="G"):
        key = f"{label}={name}"
        G = loaded[label] = load_named(name, domain).eval()
        if key in done and done[key].get("provenance") == provenance(name, domain):
            results[key] = done[key]
            continue
        results[key] = {"provenance": provenance(name, domain),
                        **_measure(G, classifier, test_features, x_cs, operators, x_test[:args.acc_n],
                                   y_test[:args.acc_n], args, domain)}
        partial = {"settings": settings, "lasso_dct_cs_mse": lasso, "generators": results}
        out.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(partial, indent=2) + "\n")  # a crash keeps the generators measured so far
    record = {"command": " ".join(["python -m eval.ambient_quality", *(sys.argv[1:] if argv is None else argv)]),
              "settings": settings, "lasso_dct_cs_mse": lasso, "generators": results,
              "seconds": round(sum(float(r["seconds"]) for r in results.values()), 1)}  # measuring the generators
    out.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(record, indent=2) + "\n")
    ms = [str(m) for m in args.m]
    families = sorted({r["provenance"]["measurement"] for r in results.values() if r["provenance"]["measurement"]})
    _figure(loaded, families, domain.load("train", limit=10)[0], out / "ambient_samples.png", args.seed)
    lines = ["| generator | trained on | iterations | Frechet distance (classifier features) | evenness | confidence | classes covered | "
             + " | ".join(f"CS MSE m = {m}" for m in ms) + " | accuracy behind projection |",
             "|---|---|---|---|---|---|---|" + "---|" * len(ms) + "---|"]
    for key, r in results.items():
        src = r["provenance"]
        its = f"{src['iterations']:,}" + (" (budget)" if src["stopped_by_budget"] else "") if src["iterations"] else "?"
        lines.append(f"| {key} | {src['trained_on']} | {its} | {r['frechet_distance']:.2f} | {r['evenness']:.3f} | {r['confidence']:.3f} | "
                     f"{r['classes_covered']} | " + " | ".join(f"{r['cs_mse'][m]:.4f}" for m in ms)
                     + f" | {100 * r['accuracy_behind_projection']:.1f}% |")
    lines.append("| Lasso-DCT (no generator) | – | – | – | – | – | – | " + " | ".join(f"{lasso[m]:.4f}" for m in ms) + " | – |")
    table = "\n".join(lines)
    (out / "ambient_quality.md").write_text(f"Command: `{record['command']}`\n\n{table}\n")
    print(table)
    return record


if __name__ == "__main__":
    run(main)
