"""Data domains: everything the toolkit knows about one kind of image, in one place.

A :class:`Domain` says what the images are (shape, pixel range, classes, normalisation), how big an
attack on them may be (:class:`Budgets`), where its data come from (a :class:`DataSource`) and where
its shipped weights live. Data loading, models, training scripts, attack bounds, suite budgets, the
checks (chance = 1 / classes), reports, pretrained weights and export all read it; no constant of a
data set lives anywhere else.

Domains are kept in an explicit registry keyed by name. ``fashion_mnist`` is built in; your own
data become a domain with :func:`domain_from_path` (a directory of IDX files, an ``.npz`` holding
``x`` and ``y``, or a torchvision ``ImageFolder`` tree) and :func:`register_domain`.

Example:
    >>> from manifold_defense.domains import get_domain
    >>> fm = get_domain("fashion_mnist")
    >>> fm.image_shape, fm.num_classes, fm.chance, fm.budgets.linf_eps
    ((1, 28, 28), 10, 0.1, 0.1)
"""

from __future__ import annotations

import dataclasses
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from .idx import DataFileError, load_idx_split
from ..utils.validation import check_images

__all__ = [
    "Budgets", "DataSource", "Domain", "DOMAINS", "IdxSource", "ImageFolderSource", "NpzSource",
    "domain_from_path", "get_domain", "register_domain", "resolve_domain", "source_for_path", "weights_path",
]

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Budgets:
    """Default attack budgets of a domain, in pixel units of its range.

    Attributes:
        linf_eps: the Linf threat model's radius.
        l2_eps: the L2 threat model's radius.
        on_manifold_eta: the L2 bound ||G(z) - G(z')|| of on-manifold pairs.
    """

    linf_eps: float = 0.1
    l2_eps: float = 1.5
    on_manifold_eta: float = 2.0

    def __post_init__(self) -> None:
        for name in ("linf_eps", "l2_eps", "on_manifold_eta"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"Budgets.{name} must be a number >= 0, got {value!r}")


@runtime_checkable
class DataSource(Protocol):
    """Where a domain's images come from: ``load(split, limit)`` -> (images (N, C, H, W) float, labels (N,) int64)."""

    def load(self, split: Split, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def describe(self) -> dict[str, str]: ...


def _check_split(split: str, limit: int | None) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


@dataclass(frozen=True)
class IdxSource:
    """MNIST-format IDX files (gzip or not) in one directory: ``train-images-idx3-ubyte`` etc."""

    root: Path
    install_hint: str = ""

    def load(self, split: Split, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_split(split, limit)
        try:
            return load_idx_split(split, self.root, limit=limit)
        except DataFileError as exc:
            raise DataFileError(f"{exc}{'; ' + self.install_hint if self.install_hint else ''}") from None

    def describe(self) -> dict[str, str]:
        return {"kind": "idx", "path": str(self.root)}


def _to_nchw_float(images: np.ndarray, where: str) -> torch.Tensor:
    """uint8 (scaled by 1/255) or float arrays, (N, H, W), (N, H, W, C) or (N, C, H, W) -> float32 NCHW."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataFileError(f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got {images.shape}")
    if images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        images = images.transpose(0, 3, 1, 2)
    if images.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise DataFileError(f"{where}: images must be uint8 or floating point, got {images.dtype}")
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))


@dataclass(frozen=True)
class NpzSource:
    """An ``.npz`` file with ``x`` and ``y`` (used for every split), or ``x_train``/``y_train`` and
    ``x_test``/``y_test``. Images uint8 (scaled to [0, 1]) or float; (N, H, W), (N, H, W, C) or (N, C, H, W)."""

    path: Path

    def load(self, split: Split, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_split(split, limit)
        if not self.path.is_file():
            raise DataFileError(f"npz file not found: {self.path}")
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys = (f"x_{split}", f"y_{split}") if f"x_{split}" in data else ("x", "y")
                missing = [k for k in keys if k not in data]
                if missing:
                    raise DataFileError(f"{self.path} has no arrays {missing}; it holds {sorted(data.files)} "
                                        "(expected x and y, or x_train/y_train/x_test/y_test)")
                images, labels = data[keys[0]], data[keys[1]]
        except DataFileError:
            raise
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            # A truncated or corrupt archive fails inside numpy or zipfile with a message that does
            # not name the file.
            raise DataFileError(f"{self.path} is not a readable .npz file ({type(exc).__name__}: {exc}); "
                                "it is truncated or corrupt: write or copy it again") from exc
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
            raise DataFileError(f"{self.path}: labels must be integers of shape ({len(images)},), got "
                                f"{labels.dtype} {labels.shape}")
        return _to_nchw_float(images, str(self.path)), torch.from_numpy(labels.astype(np.int64))

    def describe(self) -> dict[str, str]:
        return {"kind": "npz", "path": str(self.path)}


@dataclass(frozen=True)
class ImageFolderSource:
    """A torchvision ``ImageFolder`` tree: ``root/<split>/<class>/*.png`` (or ``root/<class>/*.png``
    for every split). Images become [0, 1] tensors; class indices follow sorted folder names."""

    root: Path

    def split_root(self, split: Split) -> Path:
        return self.root / split if (self.root / split).is_dir() else self.root

    def classes(self) -> tuple[str, ...]:
        root = self.split_root("test")
        return tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))

    def load(self, split: Split, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check_split(split, limit)
        from torchvision import datasets, transforms

        root = self.split_root(split)
        if not root.is_dir():
            raise DataFileError(f"image folder not found: {root}")
        folder = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
        count = len(folder) if limit is None else min(limit, len(folder))
        if count == 0:
            raise DataFileError(f"no images under {root}")
        pairs = [folder[i] for i in range(count)]
        return torch.stack([img for img, _ in pairs]), torch.tensor([label for _, label in pairs], dtype=torch.int64)

    def describe(self) -> dict[str, str]:
        return {"kind": "image_folder", "path": str(self.root)}


@dataclass(frozen=True)
class Domain:
    """One data domain.

    Attributes:
        name: registry key (also the folder of its shipped weights).
        image_shape: (C, H, W).
        class_names: one name per class, in label order.
        source: where the images come from.
        pixel_range: (low, high) of valid pixels; attacks clip to it, the projection checks it.
        mean, std: per-channel normalisation a classifier applies internally (informational: the
            toolkit always feeds pixels in ``pixel_range``), or None.
        budgets: default attack budgets.
        weights_dir: directory of the domain's shipped checkpoints, or None.
        title: the name printed in reports (default: ``name``).

    Raises:
        ValueError: a malformed shape, range, class list or normalisation.
    """

    name: str
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    source: DataSource = field(repr=False)
    pixel_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    budgets: Budgets = Budgets()
    weights_dir: Path | None = None
    title: str = ""

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) of positive sizes, got {self.image_shape}")
        if len(self.class_names) < 2:
            raise ValueError(f"a domain needs at least two classes, got {self.class_names}")
        low, high = (float(v) for v in self.pixel_range)
        if not low < high:
            raise ValueError(f"pixel_range must be (low, high) with low < high, got {self.pixel_range}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != shape[0]:
                raise ValueError(f"{name} needs one value per channel ({shape[0]}), got {value}")
        object.__setattr__(self, "image_shape", shape)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "pixel_range", (low, high))
        object.__setattr__(self, "title", self.title or self.name)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def chance(self) -> float:
        """Accuracy of a uniform guess: 1 / classes."""
        return 1.0 / self.num_classes

    def load(self, split: Split = "test", limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``limit`` images of a split, checked against the domain.

        Returns:
            (images (N, C, H, W) float32 in ``pixel_range``, labels (N,) int64 in [0, num_classes)).

        Raises:
            DataFileError: missing or corrupt files (the message says what to install or where to put them).
            ValueError: images of another shape or range, or labels outside the classes.
        """
        x, y = self.source.load(split, limit)
        check_images(x, shape=self.image_shape, pixel_range=self.pixel_range, name=f"{self.name} {split} images")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"{self.name} {split} labels span [{int(y.min())}, {int(y.max())}] but the domain has "
                             f"{self.num_classes} classes")
        return x, y

    def with_source(self, source: DataSource) -> "Domain":
        """The same domain read from other files (e.g. your copy of the data elsewhere)."""
        return dataclasses.replace(self, source=source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (what reports and exported bundles record)."""
        return {"name": self.name, "title": self.title, "image_shape": list(self.image_shape), "class_names": list(self.class_names),
                "pixel_range": list(self.pixel_range), "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std), "budgets": dataclasses.asdict(self.budgets),
                "source": self.source.describe()}


DOMAINS: dict[str, Domain] = {}


def register_domain(domain: Domain, *, replace: bool = False) -> Domain:
    """Add ``domain`` to :data:`DOMAINS` under its name.

    Raises:
        TypeError: not a Domain.
        ValueError: the name is taken and ``replace`` is False.
    """
    if not isinstance(domain, Domain):
        raise TypeError(f"register_domain takes a Domain, got {type(domain).__name__}")
    if domain.name in DOMAINS and not replace:
        raise ValueError(f"a domain named {domain.name!r} is already registered; pass replace=True to replace it")
    DOMAINS[domain.name] = domain
    return domain


def get_domain(name: str | Domain) -> Domain:
    """The registered domain called ``name`` (a Domain passes through).

    Raises:
        ValueError: no such domain (the message lists the registered ones).
    """
    if isinstance(name, Domain):
        return name
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; registered: {sorted(DOMAINS)} "
                         "(register your own with manifold_defense.domains.register_domain)")
    return DOMAINS[name]


def source_for_path(path: str | Path) -> DataSource:
    """The data source a path holds: ``.npz`` file, directory of IDX files, or ``ImageFolder`` tree.

    Raises:
        DataFileError: none of the three.
    """
    path = Path(path)
    if path.suffix == ".npz":
        return NpzSource(path)
    if path.is_dir() and any(path.glob("t10k-images*")):
        return IdxSource(path)
    if path.is_dir():
        return ImageFolderSource(path)
    raise DataFileError(f"{path} is neither an .npz file nor a directory (IDX files or ImageFolder tree)")


def resolve_domain(name: str = "fashion_mnist", data: str | Path | None = None) -> Domain:
    """What a script's ``--domain NAME --data PATH`` mean.

    Without ``data``: the registered domain ``name``. With ``data``: a registered ``name`` read from
    that path (same classes and budgets: e.g. your own copy of Fashion-MNIST), otherwise a new
    domain inferred from the files (:func:`domain_from_path`), called ``name``.

    Raises:
        ValueError: an unknown name and no data.
        DataFileError: unreadable data.
    """
    if not data:
        return get_domain(name)
    if name in DOMAINS:
        return DOMAINS[name].with_source(source_for_path(data))
    return domain_from_path(data, name=name or None)


def weights_path(domain: Domain, name: str) -> Path:
    """Path stem of a shipped checkpoint of ``domain`` (``classifier``, ``generator``, ...).

    Raises:
        ValueError: the domain ships no weights.
    """
    if domain.weights_dir is None:
        raise ValueError(f"domain {domain.name!r} ships no weights; pass checkpoint paths explicitly")
    return domain.weights_dir / name


def domain_from_path(
    path: str | Path,
    *,
    name: str | None = None,
    class_names: tuple[str, ...] | None = None,
    pixel_range: tuple[float, float] = (0.0, 1.0),
    budgets: Budgets | None = None,
) -> Domain:
    """A domain for data you have: a directory of IDX files, an ``.npz`` (x, y) or an ``ImageFolder`` tree.

    The image shape is read from the first test image; the classes are the folder names
    (ImageFolder) or ``class_names`` or ``"0" .. "K-1"`` with K = the largest test label + 1.

    Raises:
        DataFileError: the path holds none of the three layouts.
    """
    path = Path(path)
    source = source_for_path(path)
    if isinstance(source, ImageFolderSource):
        class_names = class_names or source.classes()
    x, y = source.load("test")
    if class_names is None:
        class_names = tuple(str(i) for i in range(max(int(y.max()) + 1, 2)))
    return Domain(name=name or path.stem, image_shape=tuple(x.shape[1:]), class_names=tuple(class_names),  # type: ignore[arg-type]
                  source=source, pixel_range=pixel_range, budgets=budgets or Budgets())


FASHION_MNIST = register_domain(Domain(
    name="fashion_mnist",
    image_shape=(1, 28, 28),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    source=IdxSource(Path("/usr/share/datasets/fashion-mnist"),
                     install_hint="install it with `apt-get install -y dataset-fashion-mnist`"),
    budgets=Budgets(linf_eps=0.1, l2_eps=1.5, on_manifold_eta=2.0),
    weights_dir=Path(__file__).parents[1] / "weights" / "fashion_mnist",
    title="Fashion-MNIST",
))
