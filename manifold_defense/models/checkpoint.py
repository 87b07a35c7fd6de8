"""Model checkpoints as safetensors weights plus a JSON config; nothing is ever unpickled.

A checkpoint ``stem`` is two files: ``stem.safetensors`` (the state dict) and ``stem.json``
(architecture name, constructor arguments, the SHA-256 of the weights file, and free-form metadata
such as the training config and measured metrics).

Example:
    >>> import tempfile, torch
    >>> from manifold_defense.models import MLP
    >>> from manifold_defense.models import save_model, load_model
    >>> d = tempfile.mkdtemp()
    >>> save_model(MLP(hidden=16), f"{d}/mlp", metadata={"note": "demo"})
    >>> type(load_model(f"{d}/mlp")).__name__
    'MLP'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .registry import ARCHITECTURES, architecture_name, build

__all__ = ["CheckpointError", "save_model", "load_model", "read_config", "FORMAT"]

FORMAT = "manifold-defense/model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, tampered with, or not of this format."""


def checkpoint_paths(stem: str | Path) -> tuple[Path, Path]:
    """The (weights, JSON) files of a checkpoint stem; dots in the name are kept (``noise_0.25``).

    Example:
        >>> [p.name for p in checkpoint_paths("runs/noise_0.25")]
        ['noise_0.25.safetensors', 'noise_0.25.json']
    """
    stem = Path(stem)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    return Path(f"{stem}.safetensors"), Path(f"{stem}.json")


_paths = checkpoint_paths


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_model(
    model: nn.Module, stem: str | Path, *, metadata: dict[str, Any] | None = None, half_precision: bool = False
) -> None:
    """Write ``stem.safetensors`` and ``stem.json`` for a registered architecture.

    Args:
        model: an instance of an architecture in :data:`manifold_defense.models.ARCHITECTURES`.
        stem: path without suffix (a ``.json``/``.safetensors`` suffix is stripped).
        metadata: JSON-serialisable extras (training config, metrics, seed).
        half_precision: store floating tensors as float16 (half the file); loading casts them back
            into the model's float32 parameters.

    Raises:
        ValueError: unregistered architecture, or metadata that JSON cannot hold.
    """
    weights_path, config_path = _paths(stem)
    name = architecture_name(model)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": name,
        "kwargs": model.config(),  # type: ignore[operator]
        "torch_version": torch.__version__,
        "metadata": metadata or {},
    }
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if half_precision:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        config["stored_dtype"] = "float16"
    save_file(state, str(weights_path))
    config["sha256"] = _sha256(weights_path)
    try:
        text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"checkpoint metadata is not JSON-serialisable: {exc}") from exc
    config_path.write_text(text + "\n")


def read_config(stem: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint, validated.

    Raises:
        CheckpointError: missing file, invalid JSON, or a file of another format.
    """
    _, config_path = _paths(stem)
    if not config_path.is_file():
        raise CheckpointError(f"checkpoint config not found: {config_path}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path} is not valid JSON ({exc}); the checkpoint is corrupt") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path} is not a {FORMAT} checkpoint config")
    for key in ("architecture", "kwargs", "sha256"):
        if key not in config:
            raise CheckpointError(f"{config_path} lacks the field {key!r}")
    return config


def load_model(stem: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_model`, in eval mode, on ``map_location``.

    Raises:
        CheckpointError: a missing, truncated or tampered file (checked against the stored SHA-256),
            or weights that do not fit the architecture.
    """
    weights_path, config_path = _paths(stem)
    config = read_config(stem)
    if not weights_path.is_file():
        raise CheckpointError(f"checkpoint weights not found: {weights_path}")
    if _sha256(weights_path) != config["sha256"]:
        raise CheckpointError(
            f"{weights_path} does not match the SHA-256 recorded in {config_path}: the file was changed or truncated"
        )
    if config["architecture"] not in ARCHITECTURES:
        raise CheckpointError(
            f"{config_path}: unknown architecture {config['architecture']!r}: it is not registered in this process "
            f"(known: {sorted(ARCHITECTURES)}): import the module that calls "
            f"manifold_defense.models.register_architecture({config['architecture']!r}, ...) first "
            "(on the command line of eval.robustness: --import MODULE)")
    try:
        model = build(config["architecture"], **config["kwargs"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    try:
        state = load_file(str(weights_path), device=str(map_location))
        model.load_state_dict(state)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{weights_path} does not load into {config['architecture']}: {exc}") from exc
    return model.to(map_location).eval()
