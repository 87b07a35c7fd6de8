"""Dataclass configs as command-line interfaces, and seeding, shared by every training script."""

from __future__ import annotations

import argparse
import dataclasses
import random
from typing import Any, Sequence, TypeVar

import numpy as np
import torch

__all__ = ["parse_config", "seed_everything", "resolve_device"]

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


def parse_config(cls: type[T], argv: Sequence[str] | None = None, *, description: str = "") -> T:
    """Build an ``argparse`` CLI from a dataclass's fields (``--field-name VALUE``) plus ``--quick``.

    ``--quick`` applies the dataclass's ``quick()`` overrides (smoke-test sizes) before explicit flags.
    """
    parser = argparse.ArgumentParser(description=description or cls.__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds, not minutes)")
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.type in (bool, "bool"):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                                help=f"(default {default})")
        else:
            kind: Any = {"int": int, "float": float, "str": str}.get(str(field.type), str)
            if isinstance(field.type, type):
                kind = field.type
            parser.add_argument(flag, type=kind, default=None, help=f"(default {default})")
    args = vars(parser.parse_args(argv))
    config = cls()
    if args.pop("quick"):
        config = dataclasses.replace(config, **config.quick())  # type: ignore[attr-defined,type-var]
    overrides = {k: v for k, v in args.items() if v is not None}
    return dataclasses.replace(config, **overrides)  # type: ignore[type-var,misc]
