"""The DDPM training script: a tiny run writes a loadable DDPM with its held-out curve, and a resumed
run continues from the saved state (EMA, optimiser, curve) instead of starting over."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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


def test_a_conditional_ddpm_trains_on_every_timestep_and_records_its_command(tmp_path: Path) -> None:
    out = tmp_path / "cfg"
    argv = ["--conditional", "true", "--width", "4", "--batch-size", "8", "--iterations", "3", "--eval-every", "3",
            "--timesteps", "40", "--threads", "1", "--device", "cpu", "--out", str(out)]
    ddpm.main(argv)
    config = read_config(out)
    meta = config["metadata"]
    assert config["kwargs"]["num_classes"] == 10 and config["kwargs"]["max_t"] == 40
    assert meta["command"].startswith("python -m manifold_defense.training.ddpm --conditional true")
    assert meta["device"] == "cpu" and meta["iterations_done"] == 3
    model = load_model(out)
    assert isinstance(model, DDPM) and model.num_classes == 10
    with pytest.raises(ValueError, match="all timesteps"):
        ddpm.train(ddpm.DDPMConfig(conditional=True, max_t=20, timesteps=40, width=4, iterations=1, out=str(tmp_path / "x")))


def _cond(seed: int = 0) -> DDPM:
    torch.manual_seed(seed)
    model = DDPM(width=4, timesteps=50, num_classes=10).eval()
    for p in [*model.net.label_emb.parameters(), *model.net.out.parameters()]:  # as if trained: not zero
        torch.nn.init.normal_(p, std=0.5)
    return model


def test_sampling_is_reproducible_in_range_and_guidance_zero_is_unconditional() -> None:
    model, labels = _cond(), torch.tensor([0, 3, 9, 3])
    a = model.sample(labels, steps=5, guidance=2.0, generator=torch.Generator().manual_seed(1))
    b = model.sample(labels, steps=5, guidance=2.0, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, 1, 28, 28) and torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 1
    unguided = model.sample(labels, steps=5, guidance=0.0, generator=torch.Generator().manual_seed(1))
    unconditional = model.sample(n=4, steps=5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(unguided, unconditional, atol=1e-6)
    assert not torch.allclose(a, unconditional, atol=1e-3)  # the labels steer the sample
    stochastic = model.sample(labels, steps=5, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert stochastic.shape == a.shape and not torch.equal(stochastic, a)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"labels": torch.tensor([10])}, "classes in"),
    ({"labels": torch.tensor([[1]])}, "1-D"),
    ({}, "exactly one"),
    ({"labels": torch.tensor([1]), "n": 1}, "exactly one"),
    ({"n": 1, "steps": 0}, "steps"),
    ({"n": 1, "eta": 2.0}, "eta"),
    ({"labels": torch.tensor([1]), "guidance": -1.0}, "guidance"),
])
def test_sampling_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _cond().sample(**kwargs)


def test_an_unconditional_or_purification_only_ddpm_cannot_take_labels_or_sample() -> None:
    with pytest.raises(ValueError, match="unconditional"):
        DDPM(width=4, timesteps=50).eval().sample(torch.tensor([1]))
    with pytest.raises(ValueError, match="cannot sample from noise"):
        DDPM(width=4, timesteps=50, max_t=20, num_classes=10).eval().sample(n=1)
    assert DDPM(width=4, timesteps=50).eval().sample(n=2, steps=3).shape == (2, 1, 28, 28)
