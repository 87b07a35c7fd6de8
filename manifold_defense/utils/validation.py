"""Input checks that turn bad input into a clear exception before it reaches deep torch code."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["check_images", "module_device_dtype"]


def module_device_dtype(module: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    """Device and floating dtype of a module's first parameter or buffer (None, None if it has none)."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return None, None


def check_images(
    x: object,
    *,
    shape: Sequence[int] | None = None,
    pixel_range: tuple[float, float] | None = (0.0, 1.0),
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    name: str = "x",
) -> torch.Tensor:
    """Check a batch of images; return it unchanged.

    Args:
        x: the batch, expected (N, C, H, W) floating point.
        shape: the expected (C, H, W), e.g. the generator's output shape.
        pixel_range: inclusive (low, high) bounds on values (1e-6 slack); None skips the check.
        device: the device the models live on; x must already be there (nothing is moved silently).
        dtype: the models' dtype; x must match.
        name: what the error messages call the tensor.

    Raises:
        TypeError: not a tensor, or a non-floating or mismatched dtype.
        ValueError: wrong rank or shape, empty batch, NaN/inf, values out of range, or the wrong device.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; images must be floating point in the pixel range "
            "(e.g. x.float() / 255 for uint8 images)"
        )
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(
            f"{name} has per-image shape {tuple(x.shape[1:])} but the generator makes {tuple(shape)} (C, H, W)"
        )
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the models are on {device}; move one of them with .to()")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the models use {dtype}; convert with x.to({dtype})")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    if pixel_range is not None:
        low, high = pixel_range
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if lo < low - 1e-6 or hi > high + 1e-6:
            raise ValueError(f"{name} has values in [{lo:.4g}, {hi:.4g}], outside the pixel range [{low}, {high}]")
    return x
