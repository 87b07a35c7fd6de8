"""safetensors + JSON checkpoints: round trips and refusal of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from manifold_defense.models import (DDPM, MLP, CheckpointError, Encoder, LeNetSmall, LeNetWide, ModelA, ResNetSmall, WGANGenerator,
                                    load_model, read_config, save_model)


@pytest.mark.parametrize("model", [ModelA(width=4), MLP(hidden=8), WGANGenerator(latent_dim=8, dim=4), Encoder(dim=4),
                                   ResNetSmall(width=4), LeNetSmall(width=3), LeNetWide(),
                                   DDPM(width=4, timesteps=20, num_classes=10)])
def test_round_trip_gives_identical_outputs(tmp_path: Path, model: torch.nn.Module):
    model.eval()
    save_model(model, tmp_path / "m", metadata={"seed": 3})
    loaded = load_model(tmp_path / "m.json")
    x = torch.randn(2, 8) if isinstance(model, WGANGenerator) else torch.rand(2, 1, 28, 28)
    args = (x, torch.tensor([3, 7]), torch.tensor([1, 10])) if isinstance(model, DDPM) else (x,)
    with torch.no_grad():
        assert torch.equal(model(*args), loaded(*args))
    assert type(loaded) is type(model) and not loaded.training
    assert read_config(tmp_path / "m")["metadata"] == {"seed": 3}


def test_lenet_checkpoint_without_width_loads_as_the_reference(tmp_path: Path):
    save_model(LeNetSmall(), tmp_path / "m")  # checkpoints written before the width multiplier existed
    config_path = tmp_path / "m.json"
    config = json.loads(config_path.read_text())
    del config["kwargs"]["width"]
    config_path.write_text(json.dumps(config))
    loaded = load_model(config_path)
    assert isinstance(loaded, LeNetSmall) and loaded.width == 1
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in LeNetSmall().parameters())


def test_lenet_width_below_one_is_refused():
    with pytest.raises(ValueError, match="width"):
        LeNetSmall(width=0)


def test_tampered_weights_are_refused(tmp_path: Path):
    save_model(MLP(hidden=8), tmp_path / "m")
    path = tmp_path / "m.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(tmp_path / "m")


def test_truncated_weights_are_refused(tmp_path: Path):
    save_model(MLP(hidden=8), tmp_path / "m")
    path = tmp_path / "m.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "m")


def test_bad_configs_are_refused(tmp_path: Path):
    save_model(MLP(hidden=8), tmp_path / "m")
    config_path = tmp_path / "m.json"
    config = json.loads(config_path.read_text())
    config_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        load_model(tmp_path / "m")
    config_path.write_text(json.dumps({**config, "architecture": "resnet9000"}))
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_model(tmp_path / "m")
    config_path.write_text(json.dumps({**config, "kwargs": {"hidden": 16}}))
    with pytest.raises(CheckpointError, match="does not load"):
        load_model(tmp_path / "m")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nothing")


def test_unregistered_architectures_cannot_be_saved(tmp_path: Path):
    with pytest.raises(ValueError, match="not a registered"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "m")


def test_no_pickle_in_weights(tmp_path: Path):
    save_model(MLP(hidden=8), tmp_path / "m")
    assert b"\x80\x04" not in (tmp_path / "m.safetensors").read_bytes()[:8]  # no pickle protocol header
    header_len = int.from_bytes((tmp_path / "m.safetensors").read_bytes()[:8], "little")
    json.loads((tmp_path / "m.safetensors").read_bytes()[8:8 + header_len])  # safetensors' JSON header


def test_half_precision_storage_loads_into_float32(tmp_path: Path):
    model = MLP(hidden=8).eval()
    save_model(model, tmp_path / "full")
    save_model(model, tmp_path / "half", half_precision=True)
    assert (tmp_path / "half.safetensors").stat().st_size < 0.6 * (tmp_path / "full.safetensors").stat().st_size
    loaded = load_model(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert read_config(tmp_path / "half")["stored_dtype"] == "float16"
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-2)


def test_dots_in_a_checkpoint_name_are_part_of_the_name(tmp_path) -> None:
    from manifold_defense.models import load_model, save_model
    from manifold_defense.models import MLP

    first, second = MLP(hidden=4, depth=1), MLP(hidden=6, depth=1)
    save_model(first, tmp_path / "noise_0.25")
    save_model(second, tmp_path / "noise_0.5")  # must not overwrite "noise_0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise_0.25.json", "noise_0.25.safetensors",
                                                          "noise_0.5.json", "noise_0.5.safetensors"]
    assert load_model(tmp_path / "noise_0.25").net[1].out_features == 4
