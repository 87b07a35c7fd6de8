"""Command-line plumbing shared by every entry point (eval, training, benchmarks, export).

* :class:`ToolParser` answers a bad flag with one line, ``error: argument --eps: ...``, and exit
  status 2 (argparse's convention), never a usage dump or a traceback.
* The argument types (:func:`integer`, :func:`real`, :func:`reals`, :func:`names`) check ranges at
  parse time and say what is allowed.
* :func:`run` calls a script's ``main`` and turns the errors a user can cause (a missing or corrupt
  file, a setting the library refuses) into the same one-line answer; the library itself keeps
  raising exceptions. ``MANIFOLD_DEFENSE_TRACEBACK=1`` shows the traceback instead.

Example:
    >>> parser = ToolParser(prog="demo")
    >>> _ = parser.add_argument("--eps", type=reals(low=0.0), default=[0.1])
    >>> parser.parse_args(["--eps", "0.05,0.1"]).eps
    [0.05, 0.1]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable, Iterable, NoReturn, Sequence, TypeVar

__all__ = ["ToolParser", "integer", "integers", "real", "reals", "names", "run", "USER_ERRORS"]

T = TypeVar("T")

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                PermissionError)
"""What :func:`run` reports as one ``error:`` line: the project's named errors (``DataFileError``,
``CheckpointError``, ``ReportError`` are ``ValueError``s), refused settings and missing files."""


class ToolParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``error: MESSAGE``, with exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _bounds_text(low: float | None, high: float | None, low_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    return " and ".join(parts)


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (either end may be open-ended with None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: it must be an integer "
                                             f"{_bounds_text(low, high, False)}")
        return value

    parse.__name__ = "integer"
    return parse


def _real(text: str, low: float | None, high: float | None, low_open: bool, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number{what}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number{what}")
    if (low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: it must be a number "
                                         f"{_bounds_text(low, high, low_open)}{what}")
    return value


def real(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] ((low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        return _real(text, low, high, low_open, "")

    parse.__name__ = "number"
    return parse


def reals(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Callable[[str], list[float]]:
    """An argparse type: a comma-separated, non-empty list of finite floats, each in range."""

    def parse(text: str) -> list[float]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} is empty: give a comma-separated list of numbers")
        return [_real(t, low, high, low_open, f" (in the list {text!r})") for t in items]

    parse.__name__ = "number list"
    return parse


def integers(low: int | None = None, high: int | None = None) -> Callable[[str], list[int]]:
    """An argparse type: a comma-separated, non-empty list of integers, each in [low, high]."""
    one = integer(low, high)

    def parse(text: str) -> list[int]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} is empty: give a comma-separated list of integers")
        try:
            return [one(t) for t in items]
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (in the list {text!r})") from None

    parse.__name__ = "integer list"
    return parse


def names(known: Iterable[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated, non-empty list of names, each one of ``known``."""
    allowed = sorted(set(known))

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(t.strip() for t in text.split(",") if t.strip())
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r} is empty: give a comma-separated list of {allowed}")
        unknown = [t for t in items if t not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown))}: choose from {allowed}")
        return items

    parse.__name__ = "name list"
    return parse


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main(argv)``; a user error (see :data:`USER_ERRORS`) prints one line,
    ``error: ...``, and exits with status 2."""
    try:
        main(argv)
    except USER_ERRORS as exc:
        if os.environ.get("MANIFOLD_DEFENSE_TRACEBACK"):
            raise
        message = str(exc) if not isinstance(exc, OSError) or not exc.filename else f"{exc.strerror}: {exc.filename}"
        sys.stderr.write(f"error: {' '.join(message.split())}\n")
        raise SystemExit(2) from None
