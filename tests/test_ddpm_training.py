"""The DDPM training script: a tiny run writes a loadable DDPM with its held-out curve, and a resumed
run continues from the saved state (EMA, optimiser, curve) instead of starting over."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifold_defense.models import DDPM, load_model, read_config
from manifold_defense.purify import DiffusionPurifier
from manifold_defense.training import ddpm


@pytest.mark.slow
def test_a_tiny_ddpm_trains_resumes_and_purifies(tmp_path: Path) -> None:
    base = dict(width=4, batch_size=8, eval_every=2, max_t=50, timesteps=100, threads=1, device="cpu",
                out=str(tmp_path / "ddpm"))
    assert ddpm.train(ddpm.DDPMConfig(**base, iterations=4)) is not None
    ddpm.train(ddpm.DDPMConfig(**base, iterations=6, resume=True))
    meta = read_config(tmp_path / "ddpm")["metadata"]
    assert meta["iterations_done"] == 6 and not meta["stopped_by_budget"]
    assert [p["iteration"] for p in meta["learning_curve"]] == [2, 4, 6]
    assert {"loss_t10", "loss_t50"} <= set(meta["learning_curve"][-1]) and "loss_t100" not in meta["learning_curve"][-1]
    model = load_model(tmp_path / "ddpm")
    assert isinstance(model, DDPM) and model.max_t == 50
    DiffusionPurifier(model.eval(), t_star=50, steps=2)  # t* up to the trained max_t is allowed
