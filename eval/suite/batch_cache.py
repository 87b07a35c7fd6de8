"""Finished (attack, batch) verdicts on disk, so that a long evaluation that was killed resumes
where it stopped (``python -m eval.robustness ... --cache DIR``: rerun the same command).

Each entry is one JSON file named by a SHA-256 over everything that decides the verdicts: the
suite config (budgets, attack list, seed, domain), the attack's position and the batch index
(they set the batch's seed), the images and labels of the batch, the weights and projection
settings of the models, and the source code of the library, the attacks and the suite
(:func:`code_fingerprint`). Change any of them and the entry is simply not found; nothing stale
is reused. The suite seeds every (attack, batch) pair on its own, so a resumed run gives the
same per-example results as an uninterrupted one.

Example:
    >>> import tempfile, torch
    >>> from eval.suite.batch_cache import BatchCache
    >>> cache = BatchCache(tempfile.mkdtemp(), fingerprint="models")
    >>> key = cache.key({"eps": 0.1}, 0, 0, torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    >>> cache.put(key, {"defended": (torch.tensor([True, False]),)})
    >>> cache.get(key)["defended"][0].tolist()
    [True, False]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["BatchCache", "code_fingerprint", "model_fingerprint"]

_REPO = Path(__file__).resolve().parents[2]
_CODE = ("manifold_defense", "attacks", "eval/suite")


def code_fingerprint() -> str:
    """SHA-256 of the Python source that decides an attack's verdicts (library, attacks, suite)."""
    h = hashlib.sha256()
    for part in _CODE:
        path = _REPO / part
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(f.relative_to(_REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()

Verdicts = dict[str, tuple[torch.Tensor, ...]]


def model_fingerprint(*modules: nn.Module | None, extra: Any = None) -> str:
    """SHA-256 of the modules' state dicts (names, shapes, values) and any JSON-able ``extra``."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for module in modules:
        if module is None:
            h.update(b"none")
            continue
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class BatchCache:
    """A directory of verdict files.

    Args:
        root: the directory (created if missing).
        fingerprint: identifies the models being judged (:func:`model_fingerprint`); the code's
            fingerprint is added to it.
    """

    def __init__(self, root: str | Path, *, fingerprint: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint + code_fingerprint()
        self.hits = 0  # verdicts read back from disk (their attack's seconds are not spent again)
        self.misses = 0

    def key(self, cfg: dict[str, Any], attack_index: int, batch_index: int, x: torch.Tensor, y: torch.Tensor) -> str:
        h = hashlib.sha256(json.dumps([cfg, attack_index, batch_index, self.fingerprint], sort_keys=True).encode())
        h.update(x.detach().cpu().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def get(self, key: str) -> Verdicts | None:
        """The stored verdicts, or None (also for an unreadable file, which is then recomputed)."""
        path = self.root / f"{key}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            self.misses += 1
            return None
        self.hits += 1
        return {model: tuple(torch.tensor([c == "1" for c in bits], dtype=torch.bool) for bits in columns)
                for model, columns in data.items()}

    def put(self, key: str, verdicts: Verdicts) -> None:
        data = {model: ["".join("1" if v else "0" for v in col.tolist()) for col in columns]
                for model, columns in verdicts.items()}
        tmp = self.root / f"{key}.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(self.root / f"{key}.json")  # atomic: a kill mid-write leaves no half file

    def get_candidates(self, key: str) -> dict[str, torch.Tensor] | None:
        """The stored int8 candidate perturbations per model, or None (missing or unreadable)."""
        try:
            with np.load(self.root / f"{key}.candidates.npz") as data:
                return {model: torch.from_numpy(data[model]) for model in data.files}
        except (OSError, ValueError, KeyError):
            return None

    def put_candidates(self, key: str, candidates: dict[str, torch.Tensor]) -> None:
        """Keep each model's int8 candidate perturbations of a batch (compressed)."""
        tmp = self.root / f"{key}.candidates.tmp.npz"
        arrays: dict[str, Any] = {model: c.cpu().numpy() for model, c in candidates.items()}
        np.savez_compressed(tmp, **arrays)
        tmp.replace(self.root / f"{key}.candidates.npz")
