"""The registry of architectures known to the checkpoint format, by name.

The package root (:mod:`manifold_defense.models`) registers the built-in architectures; your own
join with :func:`register_architecture`. Only names in this registry can be saved and loaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["ARCHITECTURES", "architecture_name", "build", "register_architecture"]

ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register_architecture(name: str, cls: type[nn.Module]) -> None:
    """Make your own architecture storable (checkpoints, bundles): ``cls`` needs a ``config()``
    method returning the keyword arguments that rebuild it.

    Raises:
        ValueError: the name is taken by another class.
        TypeError: ``cls`` is not an ``nn.Module`` subclass with ``config()``.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and callable(getattr(cls, "config", None))):
        raise TypeError(f"{cls!r} must be an nn.Module subclass with a config() method")
    if ARCHITECTURES.get(name, cls) is not cls:
        raise ValueError(f"architecture name {name!r} is taken by {ARCHITECTURES[name].__name__}")
    ARCHITECTURES[name] = cls


def build(name: str, **kwargs: Any) -> nn.Module:
    """Construct the architecture registered as ``name`` with constructor ``kwargs``.

    Raises:
        ValueError: unknown name.
        TypeError: an argument the architecture does not take.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name](**kwargs)


def architecture_name(model: nn.Module) -> str:
    """The registry name of ``model``'s class.

    Raises:
        ValueError: the class is not registered (it cannot be saved in this format).
    """
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered architecture; known: {sorted(ARCHITECTURES)}")
