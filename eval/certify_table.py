"""Certified robustness side by side: several certification reports (``eval.certify``) in one table,
each certified L2 accuracy (a lower bound) next to the empirical accuracy of the same smoothed
classifier under SmoothAdv at the same radius (an upper bound).

    python -m eval.certify_table                      # the shipped certification reports (CERTIFY_REPORTS)
    python -m eval.certify_table --reports eval/reports/certify_lenet,eval/reports/certify_lenet_amortised

One row per (report, sigma): the smoothed classifier's clean accuracy (r = 0), certified accuracy at
each radius with the empirical accuracy in brackets where the report attacked that radius, the
average certified radius, images and n. The last line names the configuration that certifies most
at ``--radius`` (default 1.0) over all rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from manifold_defense.cli import ToolParser, real, reals, run

__all__ = ["CERTIFY_REPORTS", "base_label", "certify_table", "best_at", "main"]

CERTIFY_REPORTS = (
    "eval/reports/certify_lenet_noise_0.25",
    "eval/reports/certify_lenet_noise_0.5",
    "eval/reports/certify_lenet_noise_1.0",
    "eval/reports/certify_lenet",
    "eval/reports/certify_lenet_amortised_400",
    "eval/reports/certify_lenet_amortised_noise_0.25",
    "eval/reports/certify_lenet_amortised_noise_0.5",
    "eval/reports/certify_lenet_amortised_noise_1.0",
)


def _load(path: str) -> dict[str, Any]:
    file = Path(path) / "certify.json"
    if not file.is_file():
        raise ValueError(f"{path}: no certify.json there (run python -m eval.certify ... --out {path})")
    return dict(json.loads(file.read_text()))


def base_label(record: dict[str, Any]) -> str:
    """The base model of a certification record in words, e.g. ``classifier_lenet behind the amortised
    denoiser (encoder encoder_noise_0.5)``."""
    denoiser = record.get("denoiser", "none")
    encoder = f" (encoder {record['encoder']})" if record.get("encoder") else ""
    return record["classifier"] + ("" if denoiser == "none" else f" behind the {denoiser} denoiser{encoder}")


def _rows(records: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    return [(base_label(r), sigma, res, r) for r in records for sigma, res in r["results"].items()]


def best_at(records: list[dict[str, Any]], radius: float) -> tuple[str, str, float]:
    """(label, sigma, certified accuracy) of the row that certifies most at ``radius``.

    Raises:
        ValueError: no report certified at that radius.
    """
    key = f"{radius:g}"
    found = [(res["certified_accuracy"][key], label, sigma) for label, sigma, res, _ in _rows(records)
             if key in res["certified_accuracy"]]
    if not found:
        raise ValueError(f"no report has certified accuracy at radius {key}")
    acc, label, sigma = max(found)
    return label, sigma, acc


def certify_table(records: list[dict[str, Any]], radii: Sequence[float]) -> str:
    """The Markdown table of the module docstring."""
    head = ("| base classifier | sigma | images | n | r = 0 (clean) | "
            + " | ".join(f"r = {r:g}" for r in radii) + " | ACR |")
    lines = [head, "|---|---|---|---|---|" + "---|" * len(radii) + "---|"]
    for label, sigma, res, record in _rows(records):
        cells = []
        for r in radii:
            key = f"{r:g}"
            cert = res["certified_accuracy"].get(key)
            emp = res.get("empirical_accuracy", {}).get(key)
            cell = "–" if cert is None else f"{100 * cert:.1f}%"
            if emp is not None:
                cell += f" ({100 * emp:.1f}%)"
            cells.append(cell)
        lines.append(f"| {label} | {sigma} | {record['num_images']} | {record['n']:,} | "
                     f"{100 * res['certified_accuracy']['0']:.1f}% | " + " | ".join(cells)
                     + f" | {res['average_certified_radius']:.3f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """This script's command line."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=lambda t: [p for p in t.split(",") if p], default=list(CERTIFY_REPORTS),
                        help="comma list of eval.certify output directories")
    parser.add_argument("--radii", type=reals(0.0, low_open=True), default=[0.25, 0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--radius", type=real(0.0, low_open=True), default=1.0,
                        help="the radius at which the best configuration is named")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    records = [_load(p) for p in args.reports]
    table = certify_table(records, args.radii)
    label, sigma, acc = best_at(records, args.radius)
    text = (f"{table}\n\nCertified accuracy with the empirical accuracy under SmoothAdv in brackets. "
            f"Most certified at r = {args.radius:g}: {label}, sigma {sigma}: {100 * acc:.1f}%.")
    print(text)
    return text


if __name__ == "__main__":
    run(main)
