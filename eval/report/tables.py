"""Tables from saved robustness reports: a :class:`Column` per (report, model), folded over every
report it names, compared on the first images they all share; :func:`reference_table` (one row per
attack) and :func:`summary_table` (one row per column, with McNemar against the first). Used by
``python -m eval.reference_table``; it recomputes nothing but accuracies.

Example:
    >>> from eval.report.tables import Column
    >>> Column.parse("undefended=eval/reports/robustness_classifier:undefended").model
    'undefended'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..suite import ATTACKS, WORST
from ..suite.stats import mcnemar_p, wilson_interval
from .fold import defense_difference, extended_reports

__all__ = ["Column", "ReportError", "reference_table", "summary_table", "load_report", "load_column",
           "summary_markdown", "attack_markdown", "judged_markdown"]


class ReportError(ValueError):
    """A report is missing, lacks per-example results, or does not match the others."""


@dataclass(frozen=True)
class Column:
    """One table column: a title, the report directory and the model ('undefended' or 'defended');
    ``attack``, an attack key of the suite, makes a summary row show that attack alone instead of
    the worst case (e.g. a published protocol beside our suite); several keys, comma-separated, the
    per-example worst case over those attacks alone (two reports compared under the same families).
    ``also`` names further reports of the same defense (a stronger attack run separately, a convergence run): their attack rows join
    the column, marked with their report's name, and the worst case becomes the per-example minimum
    over every report, on the images they all cover; a ``--survivors-of`` report on fewer images
    lowers only its own first images (its rows, marked ``[NAME, first K]``, read "this attack after
    the column's other reports" and stand at the worst case so far beyond them). ``images`` caps the column at its own first
    images, fewer than the table's (a slow configuration whose strongest attacks reached only part of
    the set): its cells are accuracies over those images, and a summary pairs it with the first row on
    them."""

    title: str
    report: Path
    model: str
    attack: str | None = None
    also: tuple[Path, ...] = ()
    images: int | None = None

    @classmethod
    def parse(cls, spec: str) -> "Column":
        """Parse ``"TITLE=REPORT_DIR[+REPORT_DIR...]:MODEL[@ATTACK_KEY[,ATTACK_KEY...]][#IMAGES]"``.

        Raises:
            ValueError: the spec does not have that form, MODEL is not undefended/defended, an unknown
                attack key, or IMAGES is not a positive integer.
        """
        form = "'TITLE=REPORT_DIR[+REPORT_DIR...]:MODEL[@ATTACK_KEY[,ATTACK_KEY...]][#IMAGES]'"
        title, sep, rest = spec.rpartition("=")
        path, sep2, model = rest.rpartition(":")
        model, hashed, images = model.partition("#")
        model, _, attack = model.partition("@")
        paths = path.split("+")
        if not sep or not sep2 or not title or not all(paths):
            raise ValueError(f"column must be {form}, got {spec!r}")
        if hashed and not (images.isdigit() and int(images) > 0):
            raise ValueError(f"IMAGES must be a positive integer, got {images!r} in {spec!r} (form {form})")
        if model not in ("undefended", "defended"):
            raise ValueError(f"MODEL must be 'undefended' or 'defended', got {model!r} in {spec!r}")
        unknown = [key for key in attack.split(",") if key not in ATTACKS] if attack else []
        if unknown:
            raise ValueError(f"unknown attack key {unknown[0]!r} in {spec!r}; known: {sorted(ATTACKS)}")
        return cls(title, Path(paths[0]), model, attack or None, tuple(Path(p) for p in paths[1:]),
                   int(images) if hashed else None)

    @property
    def attacks(self) -> tuple[str, ...]:
        """The attack keys of ``attack`` (empty: the worst case over every attack)."""
        return tuple(self.attack.split(",")) if self.attack else ()

    def count(self, first: int) -> int:
        """How many of the table's ``first`` images this column covers."""
        return first if self.images is None else min(first, self.images)

    @property
    def reports(self) -> tuple[Path, ...]:
        """Every report the column reads, its main one first."""
        return (self.report, *self.also)


def load_report(report: Path) -> dict[str, Any]:
    path = report / "robustness.json" if report.is_dir() or not report.suffix else report
    if not path.exists():
        raise ReportError(f"no report at {path}: run the command of eval.robustness that writes it")
    record: dict[str, Any] = json.loads(path.read_text())
    if "per_example" not in record:
        raise ReportError(f"{path} has no per-example results (written by an older eval.robustness): rerun its command "
                          f"{record.get('command', '')!r}")
    return record


def load_column(column: Column) -> dict[str, Any]:
    """The column's report, with the rows of its ``also`` reports folded in (see :class:`Column`)."""
    record = load_report(column.report)
    _check_survivors(column, column.report, record)
    if not column.also:
        return _with_subset(column, record)
    merged = {**record, "per_example": {eps: dict(rows) for eps, rows in record["per_example"].items()}}
    for extra_path in column.also:
        extra = load_report(extra_path)
        _check_survivors(column, extra_path, extra)
        if _normal(extra.get("dataset")) != _normal(record.get("dataset")):
            raise ReportError(f"{extra_path}: dataset {extra.get('dataset')!r} differs from {record.get('dataset')!r} in "
                              f"{column.report}: a column combines reports of one defense on one data set")
        differs = defense_difference(record.get("defense", {}), extra.get("defense", {}))
        if differs is not None:
            raise ReportError(f"{extra_path}: its defense differs from {column.report}'s in {differs!r} "
                              f"({extra.get('defense')!r} against {record.get('defense')!r}): a column combines "
                              "reports of one defense on one data set")
        # A survivors_of report on fewer images lowers only those it covers (its rows already read "after
        # the earlier reports"; on the rest they stand at the worst case so far); any other report on
        # fewer images shrinks the column to them.
        partial = extra["n"] < merged["n"] and bool(extra.get("survivors_of"))
        if not partial:
            merged["n"] = min(merged["n"], extra["n"])
        n, k = merged["n"], min(merged["n"], extra["n"])
        tag = f"{extra_path.name}, first {k}" if partial else extra_path.name
        for eps, rows in merged["per_example"].items():
            extra_rows = extra["per_example"].get(eps)
            if extra_rows is None:
                raise ReportError(f"{extra_path} has no results at eps {float(eps):g}, which {column.report} has")
            for key in list(rows):
                rows[key] = rows[key][:n]
            so_far = {tuple(key.split(" | ")[2:]): bits for key, bits in rows.items()
                      if key.split(" | ")[:2] == [column.model, WORST]}
            for key, bits in extra_rows.items():
                model, label, *rest = key.split(" | ")
                if model != column.model or label == "clean":
                    continue  # the main report's clean row stands; the extra's clean runs enter its worst case
                if label == WORST:
                    if key not in rows:
                        raise ReportError(f"{extra_path} has the row {key!r}, which {column.report} lacks")
                    rows[key] = "".join("1" if a == "1" and b == "1" else "0" for a, b in zip(rows[key], bits[:k])) + rows[key][k:]
                else:
                    rest_of = so_far.get(tuple(rest), so_far.get((), "0" * n))[k:] if partial else ""
                    rows[" | ".join([model, f"{label} [{tag}]", *rest])] = bits[:k] + rest_of
    return _with_subset(column, merged)


def _check_survivors(column: Column, path: Path, record: dict[str, Any]) -> None:
    """A report that attacked only the survivors of earlier reports (``--survivors-of``) counts every
    other image as broken by them: its column must hold them too.

    Raises:
        ReportError: one of those earlier reports is not in the column.
    """
    names = {Path(r).name for p in column.reports for r in extended_reports(p)}  # a report stands for those it extends
    missing = [r for r in record.get("survivors_of", {}).get("reports", []) if Path(r).name not in names]
    if missing:
        raise ReportError(f"{path} attacked only the images that {missing} left unbroken: put those reports in the "
                          f"column too ({column.title}=REPORT+...+{path})")


def reference_table(columns: Sequence[Column], *, first: int, eps: float, protocol: str = "one-shot") -> str:
    """Markdown: one row per attack, one column per :class:`Column`, accuracy over the first images.

    Args:
        columns: what to compare.
        first: use the first ``first`` test images (every report must cover them).
        eps: the Linf budget whose results are read.
        protocol: ``"one-shot"``, ``"worst-of-N"`` or ``"majority of N"`` (randomised defenses; a
            deterministic report's one-shot results stand for all three).

    Raises:
        ReportError: a report is missing, lacks per-example data or ``eps``, covers fewer images,
            or uses another dataset or seed than the first column's.
    """
    return attack_markdown(columns, [load_column(c) for c in columns], first=first, eps=eps, protocol=protocol)


def summary_table(columns: Sequence[Column], *, first: int, eps: float, protocol: str = "one-shot") -> str:
    """Markdown: one row per :class:`Column` (a configuration) with its clean and worst-case accuracy
    over the first images (one-shot, and worst-of-N for a randomised defense: wrong if any of N runs
    is wrong), how many attack rows its worst case took, its seconds per prediction and the peak
    memory of its report's process (reports that recorded it).

    Raises:
        ReportError: as :func:`reference_table`.
    """
    return summary_markdown(columns, [load_column(c) for c in columns], first=first, eps=eps, protocol=protocol)


def summary_markdown(columns: Sequence[Column], records: Sequence[dict[str, Any]], *, first: int, eps: float,
             protocol: str = "one-shot") -> str:
    cells = _cells(columns, records, first=first, eps=eps, protocol=protocol)
    worst_of_n = _cells(columns, records, first=first, eps=eps, protocol="worst-of-N")
    worst = [_bits(c, r, first=c.count(first), eps=eps, protocol=protocol, attack=_label(c))
             for c, r in zip(columns, records)]
    lines = [f"| configuration ({_span(columns, first)}, Linf eps {eps:g}) | clean | worst case over the suite "
             "| worst-of-N (randomised) | attacks in the worst case | seconds per prediction | peak memory (MiB) "
             "| robust only here / only in the first row (McNemar p) |",
             "|---|---|---|---|---|---|---|---|"]
    for i, (column, record, cell) in enumerate(zip(columns, records, cells)):
        speed = record.get("seconds_per_prediction", {}).get(column.model)
        attacks = len(set(column.attacks) - {"clean"}) or sum(1 for a in cell if a not in ("clean", WORST) and _counts(a))
        paired = "–"
        mine, reference = worst[i], worst[0]
        if i > 0 and mine is not None and reference is not None:
            here = sum(a == "1" and b == "0" for a, b in zip(mine, reference))
            there = sum(a == "0" and b == "1" for a, b in zip(mine, reference))
            paired = f"{here} / {there} (p = {mcnemar_p(here, there):.2g})"
        label = _label(column)
        randomised = f"{column.model} | {label} | worst-of-N" in record["per_example"].get(str(float(eps)), {})
        n = column.count(first)
        n_worst = _cell(worst_of_n[i][label], n) if randomised and label in worst_of_n[i] else "–"
        peak = record.get("peak_rss_mib") or (record.get("exact_gradient_step") or {}).get("peak_rss_mib_after")
        lines.append(f"| {column.title} | {_cell(cell['clean'], n) if 'clean' in cell else '–'} | "
                     f"**{_cell(cell[label], n) if label in cell else '–'}** | {n_worst} | {attacks} | "
                     f"{'–' if speed is None else f'{speed:.2g}'} | {'–' if peak is None else f'{peak:.0f}'} | {paired} |")
    return "\n".join(lines)


def _label(column: Column) -> str:
    """The row a summary reads for a column: its named attack, else the worst case."""
    labels = [ATTACKS[key].label for key in column.attacks]
    if len(labels) > 1:
        return f"{WORST} over {', '.join(label for key, label in zip(column.attacks, labels) if key != 'clean')}"
    return labels[0] if labels else WORST


def _with_subset(column: Column, record: dict[str, Any]) -> dict[str, Any]:
    """The record with a row of the per-example worst case over the column's attacks (several
    ``@`` keys) and the clean run, as the suite's worst case has it, per protocol; every report's rows
    of those attacks enter it."""
    if len(column.attacks) < 2:
        return record
    labels = {ATTACKS[key].label for key in (*column.attacks, "clean")}
    merged = {**record, "per_example": {eps: dict(rows) for eps, rows in record["per_example"].items()}}
    for eps, rows in merged["per_example"].items():
        chosen: dict[tuple[str, ...], list[str]] = {}
        for key, bits in rows.items():
            model, label, *rest = key.split(" | ")
            if model == column.model and _base_label(label) in labels:
                chosen.setdefault(tuple(rest), []).append(bits)
        found = {_base_label(label) for model, label, *_ in (k.split(" | ") for k in rows) if model == column.model}
        if not labels <= found:
            raise ReportError(f"{' + '.join(map(str, column.reports))} has no {column.model} rows of "
                              f"{sorted(labels - found)} at eps {float(eps):g}")
        for rest, all_bits in chosen.items():
            rows[" | ".join([column.model, _label(column), *rest])] = "".join(
                "1" if all(b[i] == "1" for b in all_bits) else "0" for i in range(min(map(len, all_bits))))
    return merged


def _bits(column: Column, record: dict[str, Any], *, first: int, eps: float, protocol: str, attack: str) -> str | None:
    """The per-example string of one row (first images), or None if the report lacks it."""
    for key, bits in record["per_example"].get(str(float(eps)), {}).items():
        model, label, *rest = key.split(" | ")
        if model == column.model and label == attack and (not rest or rest[0] == protocol):
            return str(bits[:first])
    return None


def _counts(label: str) -> bool:
    """Whether the attack row with this label (``LABEL [REPORT]`` for an ``also`` report's row) enters the
    Linf worst case."""
    return any(spec.label == _base_label(label) and spec.worst_case for spec in ATTACKS.values())


def _base_label(label: str) -> str:
    """An attack row's label without the ``[REPORT]`` mark of a folded report."""
    return label.rsplit(" [", 1)[0] if label.endswith("]") else label


def _normal(value: Any) -> Any:
    """Reports before the Domain registry wrote 'fashion-mnist' for the domain now called 'fashion_mnist'."""
    return value.replace("-", "_") if isinstance(value, str) else value


def _cells(columns: Sequence[Column], records: Sequence[dict[str, Any]], *, first: int, eps: float,
           protocol: str = "one-shot") -> list[dict[str, float]]:
    """Per column: attack label -> accuracy over the first images (the worst case included)."""
    if first < 1:
        raise ValueError(f"first must be >= 1, got {first}")
    reference = records[0]
    cells: list[dict[str, float]] = []
    for column, record in zip(columns, records):
        for key in ("dataset", "seed"):
            if _normal(record.get(key)) != _normal(reference.get(key)):
                raise ReportError(f"{column.report}: {key} {record.get(key)!r} differs from {reference.get(key)!r} "
                                  f"in {columns[0].report}")
        n = column.count(first)
        if record["n"] < n:
            raise ReportError(f"{' + '.join(map(str, column.reports))} covers {record['n']} images, fewer than "
                              + (f"--first {first}" if n == first else f"its #{n}"))
        per_eps = record["per_example"].get(str(float(eps)))
        if per_eps is None:
            raise ReportError(f"{column.report} has no results at eps {eps:g} (it has {sorted(record['per_example'])})")
        mine: dict[str, float] = {}
        for key, bits in per_eps.items():
            model, attack, *rest = key.split(" | ")
            if model != column.model or (rest and rest[0] != protocol):
                continue
            if not rest and protocol != "one-shot" and f"{key} | {protocol}" in per_eps:
                continue  # this row has results under the requested protocol
            mine[attack] = bits[:n].count("1") / n
        cells.append(mine)
    return cells


def attack_markdown(columns: Sequence[Column], records: Sequence[dict[str, Any]], *, first: int, eps: float,
           protocol: str = "one-shot") -> str:
    cells = _cells(columns, records, first=first, eps=eps, protocol=protocol)
    attacks: list[str] = []
    for cell in cells:
        attacks += [a for a in cell if a not in attacks and a != WORST]
    order = [spec.label for spec in ATTACKS.values()]
    attacks.sort(key=lambda a: order.index(a) if a in order else len(order))
    lines = [
        f"| attack ({_span(columns, first)}, Linf eps {eps:g}) | " + " | ".join(c.title for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for attack in [*attacks, WORST]:
        values = [_cell(cell[attack], column.count(first)) if attack in cell else "–" for column, cell in zip(columns, cells)]
        if attack == WORST:
            lines.append(f"| **{attack}** | " + " | ".join(f"**{v}**" for v in values) + " |")
        else:
            lines.append(f"| {attack} | " + " | ".join(values) + " |")
    speed = [record.get("seconds_per_prediction", {}).get(column.model) for column, record in zip(columns, records)]
    if any(v is not None for v in speed):
        lines.append("| seconds per prediction (one image, batch of 50) | "
                     + " | ".join("–" if v is None else f"{v:.2g}" for v in speed) + " |")
    return "\n".join(lines)


def _span(columns: Sequence[Column], first: int) -> str:
    """The images a table covers: "first N test images", N what its columns cover (a ``#K`` column
    covers only its first K; columns that differ are named)."""
    counts = {column.count(first) for column in columns}
    if len(counts) == 1:
        return f"first {counts.pop()} test images"
    fewer = ", ".join(f"{c.title}: first {c.count(first)}" for c in columns if c.count(first) < max(counts))
    return f"first {max(counts)} test images ({fewer})"


def _cell(accuracy: float, n: int) -> str:
    k = round(accuracy * n)
    lo, hi = wilson_interval(k, n)
    return f"{100 * accuracy:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def _judged_record(directory: Path) -> dict[str, Any]:
    """A judged.json, or the judged section of a report's middle eps (with the record's n and candidates
    per image), in judged.json's keys."""
    path = Path(directory) / "judged.json"
    if path.is_file():
        return json.loads(path.read_text())
    report = Path(directory) / "robustness.json"
    if report.is_file():
        record = json.loads(report.read_text())
        eps = record["eps"][len(record["eps"]) // 2]
        section = record.get("judged", {}).get(str(eps))
        if isinstance(section, dict):
            return {**section, "n": record["n"], "candidates_per_image": len(section["candidates"])}
        raise ReportError(f"{report} has no judged section at eps {eps}: {section or 'a report of a deterministic defense'}")
    raise ReportError(f"no judged report at {path}: run its python -m eval.judged command")


def judged_markdown(rows: Sequence[tuple[str, Path]]) -> str:
    """One row per ``python -m eval.judged`` output (or ``eval.robustness`` report of a randomised
    defense, at its middle eps): expected one-shot accuracy with its interval, majority and worst-of-N
    from the same independent judgement draws, the expected clean accuracy, candidates per image, and
    the doubling check when the output has one.

    Raises:
        ReportError: a directory without judged.json, or a report without a judged section.
    """
    lines = ["| randomised configuration (judged) | images | clean | expected one-shot | majority | worst-of-N "
             "| candidates / judge draws | doubling check |", "|---|---|---|---|---|---|---|---|"]
    for title, directory in rows:
        r = _judged_record(directory)
        votes, (lo, hi) = r["votes"], r["interval"]
        doubling = r.get("doubling")
        moved = ("–" if doubling is None else f"{doubling['expected_one_shot_points']:+.1f} / "
                 f"{doubling[f'majority_of_{votes}_points']:+.1f} / {doubling[f'worst_of_{votes}_points']:+.1f} points"
                 f" ({'converged' if doubling['converged'] else 'not converged'})")
        lines.append(f"| {title} | {r['n']} | {100 * r['clean_expected']:.1f}% | {100 * r['expected_one_shot']:.1f}% "
                     f"[{100 * lo:.1f}, {100 * hi:.1f}] | {100 * r[f'majority_of_{votes}']:.1f}% (of {votes}) | "
                     f"{100 * r[f'worst_of_{votes}']:.1f}% (of {votes}) | {r['candidates_per_image']} / {r['judge_draws']} "
                     f"| {moved} |")
    return "\n".join(lines)
