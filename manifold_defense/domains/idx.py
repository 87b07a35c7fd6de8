"""Reading MNIST-format (IDX) image files from a local directory.

Nothing here downloads, and nothing here knows a particular data set: where Fashion-MNIST lives
(Debian's ``dataset-fashion-mnist``) is its :class:`manifold_defense.domains.Domain` entry, and
``get_domain("fashion_mnist").load("test")`` is the usual way in. MNIST or Fashion-MNIST files a
user already has load from any directory they name.

Example:
    >>> from manifold_defense.domains import load_idx_split
    >>> x, y = load_idx_split("test", "path/to/idx-files", limit=8)   # doctest: +SKIP
    >>> x.shape, x.dtype, y.shape                                                      # doctest: +SKIP
    (torch.Size([8, 1, 28, 28]), torch.float32, torch.Size([8]))
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = [
    "DataFileError",
    "read_idx",
    "load_idx_split",
    "idx_dataset",
]

_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type codes (http://yann.lecun.com/exdb/mnist/ file format section).
_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFileError(ValueError):
    """A data file is missing, truncated or not in IDX format."""


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem, root / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    raise DataFileError(f"IDX file {stem!r} not found in {root}: put {stem}.gz (or the uncompressed {stem}) there")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Args:
        path: the file; a ``.gz`` suffix means gzip.

    Returns:
        The array with the shape stored in the file's header.

    Raises:
        DataFileError: the file is missing, truncated, or its header is not IDX.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"IDX file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataFileError(f"{path} is not a readable gzip file ({exc}); re-install or re-copy it") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path} does not start with an IDX header (magic bytes {raw[:4]!r})")
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataFileError(f"{path} is truncated inside its IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_len != expected:
        raise DataFileError(
            f"{path} holds {len(raw) - header_len} data bytes but its header {shape} needs {expected}: "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)


def load_idx_split(
    split: Literal["train", "test"],
    root: str | Path,
    *,
    limit: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of an MNIST-format data set as tensors.

    Args:
        split: ``"train"`` or ``"test"``.
        root: directory holding the four IDX files (gzip or not).
        limit: keep only the first ``limit`` examples (deterministic).
        dtype: floating dtype of the images.

    Returns:
        ``(images, labels)``: images in [0, 1] with shape (N, 1, H, W); labels int64 with shape (N,).

    Raises:
        ValueError: unknown split, or ``limit`` < 1.
        DataFileError: a file is missing or corrupt (the message says what to install or where to put it).
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    root_path = Path(root)
    image_stem, label_stem = _SPLIT_FILES[split]
    images = read_idx(_find(root_path, image_stem))
    labels = read_idx(_find(root_path, label_stem))
    if images.ndim != 3 or labels.ndim != 1:
        raise DataFileError(f"expected images (N, H, W) and labels (N,), got {images.shape} and {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataFileError(f"{images.shape[0]} images but {labels.shape[0]} labels in {root_path}")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).to(dtype).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def idx_dataset(
    split: Literal["train", "test"],
    root: str | Path,
    *,
    limit: int | None = None,
) -> TensorDataset:
    """The same data as :func:`load_idx_split`, as a ``torch.utils.data.Dataset`` of (image, label)."""
    x, y = load_idx_split(split, root, limit=limit)
    return TensorDataset(x, y)
