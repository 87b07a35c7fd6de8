"""Certified robustness side by side: several certification reports (``eval.certify``) in one table,
each certified L2 accuracy (a lower bound) next to the empirical accuracy of the same smoothed
classifier under SmoothAdv at the same radius (an upper bound).

    python -m eval.certify_table                      # the shipped certification reports (CERTIFY_REPORTS)
    python -m eval.certify_table --reports eval/reports/certify_lenet,eval/reports/certify_lenet_amortised
    python -m eval.certify_table --first 100          # every report on the same first 100 test images
    python -m eval.certify_table --first 500 --update docs/results.md --block certify_first_500   # rewrite in place

One row per (report, sigma): the smoothed classifier's clean accuracy (r = 0), certified accuracy at
each radius with the empirical accuracy in brackets where the report attacked that radius, the
average certified radius, images and n. The last line names the configuration that certifies most
at ``--radius`` (default 1.0) over all rows; compare rows on the same images with ``--first N``
(every report cut to its first N images, its figures recomputed from the per-example results;
reports on fewer images, or on other images (``eval.certify --start``), are left out and named under
the table): a last column then pairs each row with the first at ``--radius`` (McNemar's test).
A report of a selection split (``--start K``) is labelled with its images. ``--update PAGE --block
NAME`` writes the output between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` of a Markdown page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from manifold_defense.utils import ToolParser, integer, real, reals, run
from manifold_defense.domains import get_domain

from .report.page import update_file
from .report.certified import average_certified_radius, base_label, certified_accuracy, soundness, summarise
from .suite.stats import mcnemar_p

__all__ = ["CERTIFY_REPORTS", "certified_accuracy", "average_certified_radius", "soundness", "summarise", "base_label",
           "first_images", "certify_table", "best_at", "leaders_at", "soundness_line", "main"]

CERTIFY_REPORTS = (  # the first row is the one --first pairs every other row with: the strongest baseline at r = 1
    "eval/reports/certify_lenet_smoothadv_0.5",  # SmoothAdv training (Salman et al. 2019, eps 1.0, m = 1, T = 2)
    "eval/reports/certify_lenet_smoothadv_consistency_0.5",  # SmoothAdv + consistency (Jeong & Shin 2020's combination)
    "eval/reports/certify_lenet_consistency_0.5",  # Gaussian noise + consistency regularisation (Jeong & Shin 2020)
    "eval/reports/certify_lenet_consistency_0.25",
    "eval/reports/certify_lenet_consistency_1.0",
    "eval/reports/certify_lenet_consistency_0.5_e35",  # consistency 5 epochs longer: the control of the fine-tuned rows
    "eval/reports/certify_lenet_noise_0.5",  # Gaussian-noise training (Cohen et al. 2019)
    "eval/reports/certify_lenet_noise_1.0",
    "eval/reports/certify_lenet_noise_0.25",
    "eval/reports/certify_lenet",
    "eval/reports/certify_lenet_amortised_500",
    "eval/reports/certify_lenet_diffusion_500",
    "eval/reports/certify_lenet_amortised_noise_0.25_500",
    "eval/reports/certify_lenet_amortised_noise_0.5_500",
    "eval/reports/certify_lenet_amortised_noise_1.0_500",
    "eval/reports/certify_lenet_projection_20",  # n = 1,000 on 20 images: the iterative projection's cost
    "eval/reports/certify_lenet_amortised_clf_1.0_500",  # (b) the encoder trained through the frozen classifier
    "eval/reports/certify_lenet_on_ddpm_1.0_500",  # (a) the classifier fine-tuned behind the DDPM denoiser
    "eval/reports/certify_lenet_on_ddpm_cons5_1.0_500",  # (a) with consistency regularisation (weight 5)
    "eval/reports/certify_lenet_ddpm_head_1.0_500",  # (b) a residual head on the DDPM trained through the frozen classifier
    "eval/reports/certify_lenet_consistency_on_ddpm_0.5_500",  # (a) from the sigma-0.5 consistency classifier
    "eval/reports/certify_lenet_consistency_on_amortised_0.5_500",  # (a) the same behind G(E(x))
)


def first_images(record: dict[str, Any], n: int, truth: Sequence[int] | None = None) -> dict[str, Any]:
    """``record`` (an ``eval.certify`` report) cut to its first ``n`` images, every figure recomputed
    from the per-example results (seconds per image kept as they were).

    Args:
        truth: the true classes of at least the first n images, for reports older than the ones that
            keep them per example.

    Raises:
        ValueError: the report has fewer than n images, or keeps no true classes and none were given.
    """
    if n > record["num_images"]:
        raise ValueError(f"the report covers {record['num_images']} images, fewer than {n}")
    results = {}
    for sigma, res in record["results"].items():
        ex = res["per_example"]
        classes = ex.get("truth", truth)
        if classes is None:
            raise ValueError("the report keeps no true classes per example; pass them (truth=)")
        table_radii = [float(r) for r in res["certified_accuracy"] if float(r) > 0]
        results[sigma] = {**res, **summarise(ex["label"][:n], ex["radius"][:n], list(classes)[:n],
                                             {r: v[:n] for r, v in ex["attacked"].items()}, table_radii)}
    return {**record, "num_images": n, "results": results}


def _load(path: str) -> dict[str, Any]:
    file = Path(path) / "certify.json"
    if not file.is_file():
        raise ValueError(f"{path}: no certify.json there (run python -m eval.certify ... --out {path})")
    return dict(json.loads(file.read_text()))


def _images(record: dict[str, Any]) -> tuple[str, int, int]:
    """Which test images a report covers: (data set, first index, count); ``--start`` moves the first."""
    return str(record.get("dataset", "")), int(record.get("start", 0)), int(record["num_images"])


def _label(record: dict[str, Any]) -> str:
    _, start, count = _images(record)
    return base_label(record) + (f" (test images {start} to {start + count - 1})" if start else "")


def _rows(records: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    return [(_label(r), sigma, res, r) for r in records for sigma, res in r["results"].items()]


def leaders_at(records: list[dict[str, Any]], radius: float) -> list[tuple[str, str, float]]:
    """(label, sigma, certified accuracy) of every row that certifies most at ``radius`` (ties all
    named, in table order).

    Raises:
        ValueError: no report certified at that radius.
    """
    key = f"{radius:g}"
    found = [(label, sigma, res["certified_accuracy"][key]) for label, sigma, res, _ in _rows(records)
             if key in res["certified_accuracy"]]
    if not found:
        raise ValueError(f"no report has certified accuracy at radius {key}")
    top = max(acc for _, _, acc in found)
    return [row for row in found if row[2] == top]


def best_at(records: list[dict[str, Any]], radius: float) -> tuple[str, str, float]:
    """(label, sigma, certified accuracy) of the first row (in table order) that certifies most at
    ``radius``; :func:`leaders_at` names the rows tied with it.

    Raises:
        ValueError: no report certified at that radius.
    """
    return leaders_at(records, radius)[0]


def _certified(res: dict[str, Any], radius: float) -> list[bool]:
    ex = res["per_example"]
    return [c and r >= radius for c, r in zip(ex["correct"], ex["radius"])]


def certify_table(records: list[dict[str, Any]], radii: Sequence[float], pair_radius: float | None = None) -> str:
    """The Markdown table of the module docstring. With ``pair_radius`` and every report on the same
    images, a last column pairs each row with the first: images certified at that radius only in
    this row / only in the first, with the exact McNemar p-value."""
    rows = _rows(records)
    paired = pair_radius is not None and len({_images(r) for r in records}) == 1
    head = ("| base classifier | sigma | images | n | r = 0 (clean) | "
            + " | ".join(f"r = {r:g}" for r in radii) + " | ACR |"
            + (f" certified at r = {pair_radius:g} only here / only in the first row (McNemar p) |" if paired else ""))
    lines = [head, "|---|---|---|---|---|" + "---|" * len(radii) + "---|" + ("---|" if paired else "")]
    first = _certified(rows[0][2], pair_radius) if paired and rows and pair_radius is not None else []
    for i, (label, sigma, res, record) in enumerate(rows):
        cells = []
        for r in radii:
            key = f"{r:g}"
            cert = res["certified_accuracy"].get(key)
            emp = res.get("empirical_accuracy", {}).get(key)
            cell = "–" if cert is None else f"{100 * cert:.1f}%"
            if emp is not None:
                cell += f" ({100 * emp:.1f}%)"
            cells.append(cell)
        pair = ""
        if paired and pair_radius is not None:
            mine = _certified(res, pair_radius)
            only, other = sum(a and not b for a, b in zip(mine, first)), sum(b and not a for a, b in zip(mine, first))
            pair = " – |" if i == 0 else f" {only} / {other} (p = {mcnemar_p(only, other):.2g}) |"
        lines.append(f"| {label} | {sigma} | {record['num_images']} | {record['n']:,} | "
                     f"{100 * res['certified_accuracy']['0']:.1f}% | " + " | ".join(cells)
                     + f" | {res['average_certified_radius']:.3f} |" + pair)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """This script's command line."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=lambda t: [p for p in t.split(",") if p], default=list(CERTIFY_REPORTS),
                        help="comma list of eval.certify output directories")
    parser.add_argument("--radii", type=reals(0.0, low_open=True), default=[0.25, 0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--radius", type=real(0.0, low_open=True), default=1.0,
                        help="the radius at which the best configuration is named")
    parser.add_argument("--first", type=integer(1), default=None, metavar="N",
                        help="every report cut to its first N images (the same images in every row; reports on "
                             "fewer are left out and named)")
    parser.add_argument("--update", default="", metavar="PAGE",
                        help="rewrite the --block NAME block of this Markdown page with the output, in place")
    parser.add_argument("--block", default="", metavar="NAME",
                        help="the block of --update PAGE: between <!-- NAME:begin --> and <!-- NAME:end -->")
    return parser


def _truth(record: dict[str, Any], n: int) -> list[int] | None:
    """The true classes of a report's first n images when it keeps none itself: its domain's test labels.

    Raises:
        ValueError: an older report made on other data (``--data``), whose classes cannot be looked up.
    """
    if all("truth" in res["per_example"] for res in record["results"].values()):
        return None
    if " --data" in record.get("command", "") or record.get("start"):
        raise ValueError("made on --data or --start images by an eval.certify that kept no true classes per example: rerun it")
    return [int(c) for c in get_domain(record["dataset"]).load("test", limit=n)[1].tolist()]


def soundness_line(records: Sequence[dict[str, Any]]) -> str:
    """One sentence: the soundness counts of every record, sigma and attacked radius summed.

    Example:
        >>> rec = {"results": {"0.5": {"soundness": {"1": {"tried": 3, "held": 2, "abstained": 1, "changed": 0}}}}}
        >>> soundness_line([rec, rec]).split(";")[0]
        'Soundness, over every report and radius above: the attack was run on 6 certified-correct (example, radius) pairs inside their certified radius'
    """
    total = {"tried": 0, "held": 0, "abstained": 0, "changed": 0}
    for record in records:
        for res in record["results"].values():
            for counts in res.get("soundness", {}).values():
                for key in total:
                    total[key] += int(counts[key])
    return (f"Soundness, over every report and radius above: the attack was run on {total['tried']} certified-correct "
            f"(example, radius) pairs inside their certified radius; {total['held']} kept their label, "
            f"{total['abstained']} made PREDICT abstain (allowed: PREDICT is a test) and {total['changed']} changed to "
            "another class (a contradicted certificate; expected at most alpha = 0.001 of them).")


def main(argv: Sequence[str] | None = None) -> str:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.update) != bool(args.block):
        parser.error("--update PAGE and --block NAME go together")
    records = [_load(p) for p in args.reports]
    left_out = ""
    if args.first is not None:
        short = [p for p, r in zip(args.reports, records) if int(r["num_images"]) < args.first]
        if args.reports[0] in short:  # the row every other is paired with
            raise ValueError(f"--first {args.first}: {args.reports[0]}: the report covers "
                             f"{records[0]['num_images']} images, fewer than {args.first}")
        elsewhere = [p for p, r in zip(args.reports, records) if _images(r)[:2] != _images(records[0])[:2]]
        cut = []
        for path, record in zip(args.reports, records):
            if path in short or path in elsewhere:
                continue
            try:
                cut.append(first_images(record, args.first, _truth(record, args.first)))
            except ValueError as exc:
                raise ValueError(f"--first {args.first}: {path}: {exc}") from exc
        records = cut
        if short:
            left_out = f" Left out, on fewer than {args.first} images: {', '.join(short)}."
        if elsewhere:
            left_out += f" Left out, on other test images than the first row: {', '.join(elsewhere)}."
    table = certify_table(records, args.radii, pair_radius=args.radius)
    (label, sigma, acc), *tied = leaders_at(records, args.radius)
    level = "".join(f" Level with it: {other}, sigma {s}." for other, s, _ in tied)
    counts = sorted({int(r["num_images"]) for r in records})
    caveat = ("" if len({_images(r) for r in records}) == 1 else
              f" The rows cover {counts[0]} to {counts[-1]} images" if len(counts) > 1 else " The rows cover other images")
    caveat += ": compare them on the same images with --first N." if caveat else ""
    text = (f"{table}\n\nCertified accuracy with the empirical accuracy under SmoothAdv in brackets. "
            f"Most certified at r = {args.radius:g}: {label}, sigma {sigma}: {100 * acc:.1f}%.{level}{caveat}"
            f"{left_out}\n\n{soundness_line(records)}")
    if args.update:
        update_file(args.update, {args.block: text})
        print(f"updated the {args.block} block of {args.update}")
    else:
        print(text)
    return text


if __name__ == "__main__":
    run(main)
