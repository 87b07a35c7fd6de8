"""Every saved report and shipped checkpoint with the command that made it: the tables of
``docs/reproduce.md``, printed from the files themselves (a test checks that the page matches).

    python -m eval.report_index                 # both tables, Markdown
    python -m eval.report_index --reports eval/reports --weights manifold_defense/weights/fashion_mnist
    python -m eval.report_index --update docs/reproduce.md   # rewrite the page's two tables in place

A report's command is its ``command`` field (with ``torchrun --nproc_per_node N`` where it ran on N
processes). A checkpoint stores its training config, not its command line: the command shown is the
training script with every setting that differs from the script's defaults, which rebuilds the same
config. Core-hours are wall-clock seconds x processes x threads per process / 3600.

Example:
    >>> "| report |" in reports_table(Path("eval/reports"))
    True
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

from manifold_defense.utils import ToolParser, run

from .report.page import update_file, update_page

__all__ = ["reports_table", "weights_table", "checkpoint_command", "update_page", "main"]

# The command-line script of each training module (a checkpoint JSON names the module that trained it).
TRAINING_SCRIPTS = {
    "manifold_defense.training.robust": ("eval.train_robust", "manifold_defense.training.robust", "RobustConfig"),
    "manifold_defense.training.classifier": ("manifold_defense.training.classifier",
                                             "manifold_defense.training.classifier", "ClassifierConfig"),
    "manifold_defense.training.encoder": ("manifold_defense.training.encoder", "manifold_defense.training.encoder",
                                          "EncoderConfig"),
    "manifold_defense.training.wgan_gp": ("manifold_defense.training.wgan_gp", "manifold_defense.training.wgan_gp",
                                          "WGANConfig"),
    "manifold_defense.training.ddpm": ("manifold_defense.training.ddpm", "manifold_defense.training.ddpm", "DDPMConfig"),
}


def _hours(seconds: float | None, processes: int, threads: int | None) -> str:
    """Core-hours, or '–' when the time or the thread count (0: all cores) was not recorded."""
    if seconds is None or not threads:
        return "–"
    return f"{seconds * processes * threads / 3600:.2f}"


def _report_file(directory: Path) -> Path | None:
    files = sorted(directory.glob("*.json"))
    preferred = [f for f in files if f.name == "robustness.json"]
    chosen = preferred or files
    return chosen[0] if chosen else None


def reports_table(root: Path) -> str:
    """Markdown: one row per report directory under ``root`` (its JSON's command, images, seconds, processes)."""
    lines = ["| report | images | seconds | processes x threads | core-hours | command |", "|---|---|---|---|---|---|"]
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        file = _report_file(directory)
        if file is None:
            continue
        record: dict[str, Any] = json.loads(file.read_text())
        world, threads = int(record.get("world_size", 1) or 1), record.get("threads")
        seconds = record.get("seconds")
        if seconds is None and isinstance(record.get("rows"), list):
            seconds = sum(float(r.get("seconds", 0.0)) for r in record["rows"])
        command = str(record.get("command", "–"))
        if world > 1 and command.startswith("python -m "):
            command = f"torchrun --nproc_per_node {world} -m " + command[len("python -m "):]
        extends = record.get("extends")
        note = f" (extends `{Path(extends['report']).name}`: its first {extends['images']} images)" if extends else ""
        cache = record.get("cache") or {}
        if cache.get("hits"):  # the seconds count only the work this command did, not what it read back
            note += f" ({cache['hits']} of {cache['hits'] + cache.get('misses', 0)} attack batches read from the cache)"
        images = record.get("num_images", record.get("n", "–"))  # a certification's n is its draws, not images
        lines.append(f"| `{directory.as_posix()}`{note} | {images} | "
                     f"{'–' if seconds is None else f'{float(seconds):,.0f}'} | {world} x {threads or '–'} | "
                     f"{_hours(None if seconds is None else float(seconds), world, threads)} | "
                     f"`{command.replace('|', '/')}` |")
    return "\n".join(lines)


def checkpoint_command(metadata: dict[str, Any]) -> str | None:
    """The training command that rebuilds a checkpoint's stored config (None: no config, or an unknown trainer)."""
    script = TRAINING_SCRIPTS.get(str(metadata.get("trained_by", "")))
    config = metadata.get("config")
    if script is None or not isinstance(config, dict):
        return None
    module_name, config_module, class_name = script
    import importlib

    cls = getattr(importlib.import_module(config_module), class_name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    flags = []
    for key, value in config.items():
        if key not in defaults or value == defaults[key] or key in ("resume",):
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        flags.append(f"--{key.replace('_', '-')} {text if text else chr(34) * 2}")
    world = int(metadata.get("world_size", 1) or 1)
    launcher = f"torchrun --nproc_per_node {world} -m" if world > 1 else "python -m"
    return " ".join([launcher, module_name, *flags])


def weights_table(root: Path) -> str:
    """Markdown: one row per checkpoint under ``root`` (trainer, training seconds, processes, the command)."""
    lines = ["| checkpoint | training seconds | processes x threads | core-hours | command (rebuilt from its stored config) |",
             "|---|---|---|---|---|"]
    for file in sorted(root.glob("*.json")):
        metadata: dict[str, Any] = json.loads(file.read_text()).get("metadata", {})
        world = int(metadata.get("world_size", 1) or 1)
        threads = (metadata.get("config") or {}).get("threads") or None
        seconds = metadata.get("train_seconds")
        command = checkpoint_command(metadata)
        lines.append(f"| `{file.with_suffix('').as_posix()}` | {'–' if seconds is None else f'{float(seconds):,.0f}'} | "
                     f"{world} x {threads or 'all'} | {_hours(seconds, world, threads)} | "
                     f"{'–' if command is None else f'`{command}`'} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """This script's command line."""
    parser = ToolParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", default="eval/reports", help="the directory of saved reports")
    parser.add_argument("--weights", default="manifold_defense/weights/fashion_mnist",
                        help="the directory of shipped checkpoints")
    parser.add_argument("--update", default="", metavar="PAGE",
                        help="rewrite the report_index and weights_index blocks of this Markdown page in place")
    return parser


def main(argv: Sequence[str] | None = None) -> str:
    args = build_parser().parse_args(argv)
    for path in (args.reports, args.weights):
        if not Path(path).is_dir():
            raise FileNotFoundError(f"no such directory: {path}")
    reports, weights = reports_table(Path(args.reports)), weights_table(Path(args.weights))
    if args.update:
        update_file(args.update, {"report_index": reports, "weights_index": weights})
        print(f"updated {args.update}")
    text = reports + "\n\n" + weights
    if not args.update:
        print(text)
    return text


if __name__ == "__main__":
    run(main)
