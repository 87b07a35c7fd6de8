"""Dataclass configs as command-line interfaces, and seeding, shared by every training script.

Every numeric field is range-checked at parse time: by default an integer or a finite number >= 0;
a config narrows or widens that with a class attribute ``BOUNDS = {"field": (low, high, low_open)}``
(``None`` for an open end), and restricts a string field with ``CHOICES = {"field": (...)}``. A bad
value is answered with one line, ``error: argument --field: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import shlex
import sys
from typing import Any, Sequence, TypeVar

import numpy as np
import torch

from ..utils.cli import ToolParser, integer, real

__all__ = ["parse_config", "config_parser", "seed_everything", "resolve_device", "device_facts", "command_line"]

T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a ``torch.Generator`` seeded the same for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_facts(device: torch.device) -> dict[str, Any]:
    """What a checkpoint's JSON says about where it was trained: the device, the GPU's name on CUDA,
    torch's version and the CPU threads."""
    facts: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        facts["device_name"] = torch.cuda.get_device_name(device)
    return facts


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that reproduces a run: ``python -m MODULE`` and its arguments (``sys.argv`` when
    ``argv`` is None)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false")


_boolean.__name__ = "boolean"


def config_parser(cls: type, *, description: str = "") -> argparse.ArgumentParser:
    """The ``argparse`` CLI of a dataclass config: ``--field-name VALUE`` per field plus ``--quick``
    (see the module docstring for the range checks)."""
    parser = ToolParser(description=description or cls.__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds, not minutes)")
    bounds: dict[str, tuple[Any, Any, bool]] = getattr(cls, "BOUNDS", {})
    choices: dict[str, tuple[str, ...]] = getattr(cls, "CHOICES", {})
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
        low, high, low_open = bounds.get(field.name, (0, None, False))
        if kind == "bool":
            parser.add_argument(flag, type=_boolean, default=None, help=f"true or false (default {default})")
        elif kind == "int":
            parser.add_argument(flag, type=integer(low, high), default=None, help=f"(default {default})")
        elif kind == "float":
            parser.add_argument(flag, type=real(low, high, low_open=low_open), default=None, help=f"(default {default})")
        else:
            parser.add_argument(flag, type=str, default=None, choices=choices.get(field.name),
                                help=f"(default {default!r})")
    return parser


def parse_config(cls: type[T], argv: Sequence[str] | None = None, *, description: str = "") -> T:
    """Build a config from the command line (``--field-name VALUE``) plus ``--quick``.

    ``--quick`` applies the dataclass's ``quick()`` overrides (smoke-test sizes) before explicit flags.
    """
    args = vars(config_parser(cls, description=description).parse_args(argv))
    config = cls()
    if args.pop("quick"):
        config = dataclasses.replace(config, **config.quick())  # type: ignore[attr-defined,type-var]
    overrides = {k: v for k, v in args.items() if v is not None}
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var,misc]
