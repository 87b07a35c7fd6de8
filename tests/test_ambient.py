"""AmbientGAN: the measurement families, their inversions, and WGAN-GP training whose critic never
sees an unmeasured real image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from manifold_defense.inverse import BlurNoise, RandomBlock, RandomDropout, RandomProjection, parse_family
from manifold_defense.models import WGANCritic, read_config
from manifold_defense.training import wgan_gp


def test_families_measure_what_they_say() -> None:
    ones = torch.ones(4, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    dropped = RandomDropout(0.9).measure(ones, gen)
    assert 0.85 < float((dropped.y == 0).float().mean()) < 0.95 and dropped.mask is not None
    block = RandomBlock(14).measure(ones, gen)
    assert ((block.y == 0).flatten(1).sum(1) == 14 * 14).all()
    x = torch.rand(3, 1, 28, 28, generator=gen)
    projection = RandomProjection(50).measure(x, gen)
    assert projection.matrix is not None
    lifted = (x.flatten(1) @ projection.matrix.T) @ projection.matrix
    assert torch.allclose(projection.y.flatten(1), lifted, atol=1e-4)
    # Inversions: a full-rank projection (of small images) and a noiseless blur are (nearly) undone.
    small = torch.rand(3, 1, 4, 4, generator=gen)
    assert torch.allclose(RandomProjection(16).invert(RandomProjection(16).measure(small, gen)), small, atol=1e-3)
    blurred = BlurNoise(0.0).measure(x, gen)
    assert float((BlurNoise(0.0).invert(blurred) - x).pow(2).mean()) < float((blurred.y - x).pow(2).mean())
    inpainted = RandomDropout(0.5).invert(RandomDropout(0.5).measure(torch.full((2, 1, 28, 28), 0.7), gen))
    assert torch.allclose(inpainted[:, :, 4:-4, 4:-4], torch.full_like(inpainted[:, :, 4:-4, 4:-4], 0.7), atol=1e-3)


@pytest.mark.parametrize("spec", ["dropout:1.2", "block:0", "blur_noise:-1", "projection:0", "mask:3", "dropout:x"])
def test_bad_families_are_named(spec: str) -> None:
    with pytest.raises(ValueError, match="measurement|unknown"):
        parse_family(spec)


def _ones_domain(tmp_path: Path) -> Path:
    x = np.full((64, 28, 28), 255, dtype=np.uint8)
    path = tmp_path / "ones.npz"
    np.savez(path, x_train=x, y_train=np.arange(64) % 4, x_test=x[:8], y_test=np.arange(8) % 4)
    return path


@pytest.mark.slow
def test_the_critic_never_sees_an_unmeasured_real_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    original = WGANCritic.forward

    def recording(self: WGANCritic, x: torch.Tensor) -> torch.Tensor:
        seen.append(float((x == 0).float().mean()))
        return original(self, x)

    monkeypatch.setattr(WGANCritic, "forward", recording)
    data = _ones_domain(tmp_path)
    config = wgan_gp.WGANConfig(domain="ones", data_dir=str(data), out=str(tmp_path / "g"), dim=4, batch_size=8,
                                iterations=2, critic_iters=2, measurement="dropout:0.9", device="cpu")
    wgan_gp.train(config)
    # Clean real images are all ones (no zero pixel): every critic input here is >= 70% zeros.
    assert seen and min(seen) > 0.7
    assert read_config(tmp_path / "g")["metadata"]["config"]["measurement"] == "dropout:0.9"


def test_the_unmeasured_baseline_trains_on_inverted_measurements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _ones_domain(tmp_path)
    base = dict(domain="ones", data_dir=str(data), dim=4, batch_size=8, iterations=1, critic_iters=1, device="cpu")
    wgan_gp.train(wgan_gp.WGANConfig(**base, out=str(tmp_path / "u"), measurement="dropout:0.5", unmeasured=True))
    assert read_config(tmp_path / "u")["metadata"]["config"]["unmeasured"] is True
    with pytest.raises(ValueError, match="unmeasured needs"):
        wgan_gp.train(wgan_gp.WGANConfig(**base, out=str(tmp_path / "v"), unmeasured=True))


def test_training_resumes_from_its_saved_state(tmp_path: Path) -> None:
    data = _ones_domain(tmp_path)
    base = dict(domain="ones", data_dir=str(data), dim=4, batch_size=8, critic_iters=1, device="cpu", save_every=2,
                measurement="dropout:0.9", out=str(tmp_path / "r"))
    first = wgan_gp.train(wgan_gp.WGANConfig(**base, iterations=4))
    assert first is not None and (tmp_path / "r.state.json").is_file()
    wgan_gp.train(wgan_gp.WGANConfig(**base, iterations=6, resume=True))
    meta = read_config(tmp_path / "r")["metadata"]
    assert meta["iterations_done"] == 6
    assert [p["iteration"] for p in meta["learning_curve"]] == [2, 4, 6]  # the first run's points kept


def test_a_budget_stop_still_saves_a_loadable_generator_marked_unfinished(tmp_path: Path) -> None:
    data = _ones_domain(tmp_path)
    config = wgan_gp.WGANConfig(domain="ones", data_dir=str(data), dim=4, batch_size=8, critic_iters=1, device="cpu",
                                iterations=50, max_minutes=1e-9, out=str(tmp_path / "b"))
    assert wgan_gp.train(config) is None  # stopped by the budget after the first iteration
    meta = read_config(tmp_path / "b")["metadata"]
    assert meta["stopped_by_budget"] is True and meta["iterations_done"] == 1
    assert (tmp_path / "b.state.json").is_file()
