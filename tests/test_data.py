"""IDX loading: the real Fashion-MNIST files, user directories, and broken files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from manifold_defense.domains import DataFileError, get_domain, idx_dataset, load_idx_split, read_idx


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.fixture
def mnist_like_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 7)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), compress=False)
    return tmp_path


def test_real_fashion_mnist_test_split():
    x, y = get_domain("fashion_mnist").load("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert sorted(y.unique().tolist()) == list(range(10))
    assert torch.bincount(y).tolist() == [1000] * 10  # Fashion-MNIST's test split is balanced


def test_real_fashion_mnist_train_split_with_limit():
    x, y = get_domain("fashion_mnist").load("train", limit=100)
    assert x.shape == (100, 1, 28, 28) and y.shape == (100,)


def test_user_directory_gz_and_raw(mnist_like_dir: Path):
    x, y = load_idx_split("train", mnist_like_dir)
    assert x.shape == (12, 1, 28, 28) and y.shape == (12,)
    ds = idx_dataset("test", mnist_like_dir)
    image, label = ds[0]
    assert len(ds) == 7 and image.shape == (1, 28, 28) and 0 <= int(label) < 10


def test_missing_directory_says_where_to_put_files(tmp_path: Path):
    with pytest.raises(DataFileError, match="put train-images-idx3-ubyte.gz"):
        load_idx_split("train", tmp_path)


def test_truncated_file_is_reported(mnist_like_dir: Path):
    path = mnist_like_dir / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataFileError, match="truncated"):
        load_idx_split("test", mnist_like_dir)


def test_corrupt_gzip_is_reported(mnist_like_dir: Path):
    path = mnist_like_dir / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"not a gzip stream at all")
    with pytest.raises(DataFileError, match="gzip"):
        read_idx(path)


def test_not_idx_is_reported(tmp_path: Path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(DataFileError, match="IDX header"):
        read_idx(path)


def test_mismatched_counts_are_reported(mnist_like_dir: Path):
    write_idx(mnist_like_dir / "t10k-labels-idx1-ubyte", np.zeros(5), compress=False)
    with pytest.raises(DataFileError, match="7 images but 5 labels"):
        load_idx_split("test", mnist_like_dir)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_idx_split("validation", "/nonexistent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        load_idx_split("test", "/nonexistent", limit=0)
