"""Robust training: runs, saves config, resumes, and keeps DDP replicas identical."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manifold_defense.checkpoint import load_model, read_config, save_model
from manifold_defense.models import Encoder, WGANGenerator
from eval import train_robust
from manifold_defense.training import robust

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    save_model(WGANGenerator(latent_dim=16, dim=4), d / "g")
    save_model(Encoder(latent_dim=16, dim=4, hidden=32), d / "e")
    return {"generator": str(d / "g"), "encoder": str(d / "e")}


def args(parts: dict[str, str], out: Path, *extra: str) -> list[str]:
    return ["--quick", "--generator", parts["generator"], "--encoder", parts["encoder"], "--init", "",
            "--architecture", "mlp", "--device", "cpu", "--out", str(out), "--pgd-weight", "1", *extra]


def test_all_losses_train_save_and_resume(parts, tmp_path: Path):
    train_robust.main(args(parts, tmp_path / "c"))
    meta = read_config(tmp_path / "c")["metadata"]
    assert meta["config"]["pgd_weight"] == 1.0 and 0 <= meta["test_accuracy_first_2000"] <= 1
    first = load_model(tmp_path / "c")
    train_robust.main(args(parts, tmp_path / "c", "--resume", "true", "--iterations", "6"))
    resumed = load_model(tmp_path / "c")
    changed = any(not torch.equal(a, b) for a, b in zip(first.parameters(), resumed.parameters()))
    assert changed and read_config(tmp_path / "c")["metadata"]["config"]["iterations"] == 6


def test_ddp_two_gloo_processes_keep_replicas_identical(parts, tmp_path: Path):
    torchrun = Path(sys.executable).parent / "torchrun"
    result = tmp_path / "result.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_PYTHON_REFRESH": "quiet"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", str(REPO / "tests" / "ddp_robust_worker.py"),
         str(result), *args(parts, tmp_path / "ddp")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result.read_text().split() == ["2", "1"]
    assert read_config(tmp_path / "ddp")["metadata"]["world_size"] == 2
