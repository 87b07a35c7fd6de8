"""Generated training data on disk: labelled images in shards, written once and read back as one tensor.

A generated set is a folder of ``shard_NNNNN.safetensors`` files, each holding ``images`` (N, C, H, W)
uint8 (pixels quantised to 256 levels of the domain's range, as real IDX data are) and ``labels`` (N,)
int64, with the shard's index and seed in its metadata. A shard is written to a temporary name and
renamed, so a killed writer never leaves a half shard that a reader or a resumed writer would take.
The command that fills such a folder from a DDPM or a GAN is ``python -m eval.generate_data``.

Example:
    >>> import tempfile, torch
    >>> from manifold_defense.domains.generated import load_generated, save_shard, shard_path
    >>> root = tempfile.mkdtemp()
    >>> save_shard(shard_path(root, 0), torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]), seed=7)
    >>> x, y = load_generated(root)
    >>> x.shape, y.tolist(), x.dtype
    (torch.Size([4, 1, 28, 28]), [0, 1, 2, 3], torch.float32)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["shard_path", "save_shard", "shard_complete", "load_generated", "GeneratedDataError"]


class GeneratedDataError(ValueError):
    """A folder holds no shards, or a shard is unreadable or inconsistent."""


def shard_path(root: str | Path, index: int) -> Path:
    """The file of shard ``index`` in ``root``."""
    return Path(root) / f"shard_{index:05d}.safetensors"


def save_shard(path: str | Path, images: torch.Tensor, labels: torch.Tensor, *, seed: int,
               pixel_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Quantise ``images`` (in ``pixel_range``) to uint8 and write them with ``labels`` atomically.

    Raises:
        ValueError: images not (N, C, H, W), labels not (N,).
    """
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise ValueError(f"need images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
    lo, hi = pixel_range
    quantised = ((images.detach().float().cpu() - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"images": quantised.contiguous(), "labels": labels.detach().long().cpu().contiguous()}, str(tmp),
              metadata={"seed": str(seed), "lo": str(lo), "hi": str(hi)})
    os.replace(tmp, path)


def shard_complete(path: str | Path, size: int) -> bool:
    """Whether ``path`` is a readable shard of ``size`` samples (a resumed writer skips it)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice("labels").get_shape() == [size]
    except Exception:  # missing, truncated (safetensors raises its own error type) or not a shard
        return False


def load_generated(root: str | Path, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every shard of ``root`` in index order as float images in their pixel range and int64 labels.

    Raises:
        GeneratedDataError: no shard in ``root``, an unreadable shard, or shards of different shapes.
    """
    paths = sorted(Path(root).glob("shard_*.safetensors"))
    if not paths:
        raise GeneratedDataError(f"no generated shards (shard_*.safetensors) in {root}: run python -m eval.generate_data")
    images: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    total = 0
    for path in paths:
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                x, y = f.get_tensor("images"), f.get_tensor("labels")
        except Exception as exc:
            raise GeneratedDataError(f"cannot read generated shard {path}: {exc}") from exc
        if images and x.shape[1:] != images[0].shape[1:]:
            raise GeneratedDataError(f"{path} holds images of shape {tuple(x.shape[1:])}, the others {tuple(images[0].shape[1:])}")
        lo, hi = float(meta.get("lo", 0.0)), float(meta.get("hi", 1.0))
        images.append(x.float() / 255 * (hi - lo) + lo)
        labels.append(y.long())
        total += len(y)
        if limit is not None and total >= limit:
            break
    x_all, y_all = torch.cat(images), torch.cat(labels)
    return (x_all[:limit], y_all[:limit]) if limit is not None else (x_all, y_all)
