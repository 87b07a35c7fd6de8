"""Resumable training state without pickle: weights and optimiser moments as safetensors, the step,
config, learning curve and seconds so far as JSON (``OUT.state.safetensors`` + ``OUT.state.json``).

Every training script that takes ``--resume`` saves with :func:`save_state` at its ``--max-minutes``
budget (and periodically), and restores with :func:`load_state`.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> net = torch.nn.Linear(2, 2); opt = torch.optim.Adam(net.parameters())
    >>> net(torch.ones(1, 2)).sum().backward(); opt.step()
    >>> path = Path(tempfile.mkdtemp()) / "run"
    >>> save_state(path, {"model": net}, {"opt": opt}, {"step": 1})
    >>> other = torch.nn.Linear(2, 2); other_opt = torch.optim.Adam(other.parameters())
    >>> load_state(path, {"model": other}, {"opt": other_opt})["step"]
    1
    >>> torch.equal(other.weight, net.weight)
    True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..models.checkpoint import save_model
from .cli import device_facts

__all__ = ["save_state", "load_state", "has_state", "outcome", "budget_spent", "save_final"]


def has_state(path: str | Path) -> bool:
    """Whether :func:`save_state` left a state at ``path``."""
    return Path(f"{path}.state.json").is_file()


def save_state(path: str | Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
               meta: dict[str, Any]) -> None:
    """Write every module's state dict and every optimiser's per-parameter state (safetensors) and
    ``meta`` (JSON); the JSON is written last, so a kill in between leaves the previous state usable
    only if both files agree: the safetensors file is replaced atomically first."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    for name, opt in optimizers.items():
        for i, state in opt.state_dict()["state"].items():
            for key, value in state.items():
                tensors[f"{name}.{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tmp = Path(f"{path}.state.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(Path(f"{path}.state.safetensors"))
    meta_tmp = Path(f"{path}.state.json.tmp")
    meta_tmp.write_text(json.dumps(meta, indent=2))
    meta_tmp.replace(Path(f"{path}.state.json"))


def load_state(path: str | Path, modules: dict[str, nn.Module],
               optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote into ``modules`` and ``optimizers`` (same names); returns the meta."""
    path = Path(path)
    tensors = load_file(str(Path(f"{path}.state.safetensors")))
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, opt in optimizers.items():
        prefix = name + "."
        state = opt.state_dict()
        restored: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                i, key = k[len(prefix):].split(".", 1)
                restored.setdefault(int(i), {})[key] = v
        state["state"] = restored
        opt.load_state_dict(state)
    return dict(json.loads(Path(f"{path}.state.json").read_text()))


def outcome(out: str | Path, finished: bool) -> str:
    """What a resumable training script prints when it returns: the checkpoint it saved, or how to resume."""
    if finished:
        return f"saved {out}.safetensors and {out}.json"
    return f"stopped at the time budget; state in {out}.state.*: rerun with --resume true"


def budget_spent(start: float, max_minutes: float, done: int, total: int) -> bool:
    """Whether a resumable run started at ``start`` (``time.monotonic()``) must stop after iteration
    ``done`` of ``total`` because its ``--max-minutes`` budget is spent (never when it is 0 or the run
    is complete); logs how to continue. The caller saves its state and breaks."""
    if max_minutes <= 0 or done >= total or time.monotonic() - start <= 60 * max_minutes:
        return False
    logging.getLogger(__name__).warning("stopping after %d of %d iterations (%.1f-minute budget); --resume true "
                                        "continues", done, total, max_minutes)
    return True


def save_final(model: nn.Module, out: str | Path, *, trained_by: str, config: Any, done: int, total: int,
               curve: list[dict[str, Any]], seconds: float, device: torch.device, command: str | None = None,
               **extra: Any) -> bool:
    """The checkpoint a resumable script saves when it returns, finished or stopped by its budget: the
    weights of ``model`` (put in eval mode) as ``OUT.safetensors`` and the JSON every script writes
    (who trained it, the command, the config dataclass, iterations done, ``stopped_by_budget``, the learning
    curve, seconds, the device; ``extra`` adds script-specific fields). Loadable after every piece; returns
    whether the run is complete (``done >= total``)."""
    finished = done >= total
    model.eval()
    save_model(model, out, metadata={
        "trained_by": trained_by,
        **({"command": command} if command else {}),
        "config": dataclasses.asdict(config),
        "iterations_done": done,
        "stopped_by_budget": not finished,
        "learning_curve": curve,
        "train_seconds": round(seconds, 1),
        **extra,
        **device_facts(device),
    })
    return finished
