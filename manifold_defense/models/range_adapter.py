"""What the toolkit needs from a generator, and an adapter for generators that output [-1, 1].

A generator is an ``nn.Module`` G: (n, latent_dim) -> (n, C, H, W) that declares
:class:`GeneratorContract`'s three attributes. Most pretrained GANs output tanh images in [-1, 1];
:class:`RangeAdapter` converts at the boundary, so that the projection, the classifier and the
attacks all see the domain's pixel range.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from manifold_defense.models import RangeAdapter, check_generator
    >>> tanh_gan = nn.Sequential(nn.Linear(8, 3 * 4 * 4), nn.Tanh(), nn.Unflatten(1, (3, 4, 4)))
    >>> G = RangeAdapter(tanh_gan, latent_dim=8, output_shape=(3, 4, 4), from_range=(-1, 1), to_range=(0, 1))
    >>> check_generator(G, pixel_range=(0.0, 1.0)).output_shape
    (3, 4, 4)
    >>> bool((G(torch.randn(5, 8)) >= 0).all())
    True
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .registry import architecture_name, build

__all__ = ["GeneratorContract", "RangeAdapter", "check_generator"]


@runtime_checkable
class GeneratorContract(Protocol):
    """The attributes a generator declares.

    Attributes:
        latent_dim: k, the size of z.
        output_shape: (C, H, W) of one generated image.
        output_range: (low, high) of its pixels.
    """

    latent_dim: int
    output_shape: tuple[int, int, int]
    output_range: tuple[float, float]

    def __call__(self, z: torch.Tensor) -> torch.Tensor: ...


class RangeAdapter(nn.Module):
    """G'(z) = affine map of G(z) from ``from_range`` onto ``to_range``, declaring the contract.

    Args:
        generator: the wrapped module (its parameters, mode and device are left alone), or its
            checkpoint spec ``{"architecture": name, "kwargs": {...}}`` (how a saved adapter is rebuilt).
        latent_dim: k (default: ``generator.latent_dim``).
        output_shape: (C, H, W) (default: ``generator.output_shape``, else probed once).
        from_range: the wrapped generator's pixel range, e.g. (-1, 1) for a tanh output (default: the
            generator's declared ``output_range``, else (-1, 1)).
        to_range: the range the rest of the pipeline uses (the domain's ``pixel_range``).

    Shape:
        input (n, latent_dim); output (n, C, H, W) in ``to_range``.

    Raises:
        ValueError: an empty range, no latent size, or a ``from_range`` that differs from the range the
            wrapped generator declares (its outputs would land outside ``to_range``).
    """

    def __init__(
        self,
        generator: nn.Module | dict[str, Any],
        *,
        latent_dim: int | None = None,
        output_shape: tuple[int, int, int] | None = None,
        from_range: tuple[float, float] | None = None,
        to_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if isinstance(generator, dict):
            generator = build(generator["architecture"], **generator["kwargs"])
        declared = getattr(generator, "output_range", None)
        if from_range is None:
            from_range = (float(declared[0]), float(declared[1])) if declared is not None else (-1.0, 1.0)
        for name, (low, high) in (("from_range", from_range), ("to_range", to_range)):
            if not float(low) < float(high):
                raise ValueError(f"{name} must be (low, high) with low < high, got {(low, high)}")
        if declared is not None and (float(declared[0]), float(declared[1])) != (float(from_range[0]), float(from_range[1])):
            raise ValueError(
                f"from_range {tuple(from_range)} differs from the range the wrapped generator declares, "
                f"output_range={tuple(declared)}: pass from_range={tuple(declared)} (or fix the generator's "
                "output_range), otherwise its images land outside to_range")
        k = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
        if not isinstance(k, int) or k < 1:
            raise ValueError("pass latent_dim=k: the wrapped generator has no integer latent_dim")
        self.generator = generator
        self.latent_dim = k
        self.from_range = (float(from_range[0]), float(from_range[1]))
        self.output_range = (float(to_range[0]), float(to_range[1]))
        self.scale = (self.output_range[1] - self.output_range[0]) / (self.from_range[1] - self.from_range[0])
        shape = output_shape if output_shape is not None else getattr(generator, "output_shape", None)
        if shape is None:
            with torch.no_grad():
                shape = tuple(generator(torch.zeros(1, k)).shape[1:])
        self.output_shape: tuple[int, ...] = tuple(int(s) for s in shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.generator(z) - self.from_range[0]) * self.scale + self.output_range[0]

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this adapter (the wrapped generator must be registered)."""
        inner = {"architecture": architecture_name(self.generator), "kwargs": self.generator.config()}  # type: ignore[operator]
        return {"generator": inner, "latent_dim": self.latent_dim, "output_shape": list(self.output_shape),
                "from_range": list(self.from_range), "to_range": list(self.output_range)}


def check_generator(generator: nn.Module, *, pixel_range: tuple[float, float] | None = None,
                    image_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Check that ``generator`` declares the contract and matches a domain; return it unchanged.

    A generator without ``output_range`` is taken to output ``pixel_range`` (the toolkit's own
    generators end in a sigmoid and declare (0, 1)).

    Raises:
        TypeError: not an ``nn.Module``.
        ValueError: no integer ``latent_dim``; an ``output_shape`` that differs from the domain's, or
            an ``output_range`` reaching outside its pixel range (the message says to wrap it in
            :class:`RangeAdapter`).
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"the generator must be a torch.nn.Module, got {type(generator).__name__}")
    k = getattr(generator, "latent_dim", None)
    if not isinstance(k, int) or k < 1:
        raise ValueError("the generator must declare an integer latent_dim (wrap it: RangeAdapter(G, latent_dim=k))")
    shape = getattr(generator, "output_shape", None)
    if image_shape is not None and shape is not None and tuple(shape) != tuple(image_shape):
        raise ValueError(f"the generator makes images of shape {tuple(shape)} but the domain's are {tuple(image_shape)}")
    out_range = getattr(generator, "output_range", None)
    if pixel_range is not None and out_range is not None and not (
            float(pixel_range[0]) <= float(out_range[0]) and float(out_range[1]) <= float(pixel_range[1])):
        raise ValueError(
            f"the generator outputs pixels in {tuple(out_range)} but the domain's range is {tuple(pixel_range)}: "
            f"wrap it, RangeAdapter(G, from_range={tuple(out_range)}, to_range={tuple(pixel_range)})"
        )
    return generator
