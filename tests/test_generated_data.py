"""Generated training data: the sampler command writes balanced, labelled shards that a resumed run
reproduces exactly, pseudo-labels an unconditional generator's samples, and measures the set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eval import generate_data
from manifold_defense.domains import GeneratedDataError, load_generated, shard_path
from manifold_defense.models import DDPM, WGANGenerator, save_model
from manifold_defense.pretrained import load_pretrained


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = DDPM(width=4, timesteps=20, num_classes=10).eval()
    stem = tmp_path_factory.mktemp("gen") / "ddpm_cfg"
    save_model(model, stem)
    return stem


def _run(out: Path, generator: Path | str, *extra: str) -> dict | None:
    return generate_data.main(["--generator", str(generator), "--n", "30", "--shard-size", "10", "--batch-size", "7",
                               "--steps", "2", "--quality-n", "30", "--out", str(out), *extra])


def test_a_conditional_set_is_balanced_measured_and_resumes_to_the_same_shards(tiny_ddpm: Path, tmp_path: Path) -> None:
    full = _run(tmp_path / "full", tiny_ddpm)
    assert full is not None and full["conditional"] and full["shards"] == 3
    x, y = load_generated(tmp_path / "full")
    assert x.shape == (30, 1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.tolist() == [i % 10 for i in range(30)] and full["class_histogram"] == [3] * 10
    assert 0 <= full["labeler_agreement"] <= 1 and full["frechet_distance_classifier_features"] >= 0
    assert full["command"].startswith("python -m eval.generate_data --generator")
    saved = json.loads((tmp_path / "full" / "generated.json").read_text())
    assert saved["samples_this_run"] == 30 and saved["samples_per_second"] > 0

    # A budget spent after the first shard stops there and writes no record; the same command resumes.
    assert _run(tmp_path / "resumed", tiny_ddpm, "--max-minutes", "1e-9") is None
    assert shard_path(tmp_path / "resumed", 0).is_file() and not shard_path(tmp_path / "resumed", 2).is_file()
    again = _run(tmp_path / "resumed", tiny_ddpm)
    assert again is not None and again["samples_this_run"] == 20  # only the missing shards were made
    for i in range(3):
        a, b = load_file(shard_path(tmp_path / "resumed", i)), load_file(shard_path(tmp_path / "full", i))
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])


def test_an_unconditional_generator_is_pseudo_labelled_by_the_labeler(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stem = tmp_path / "wgan"
    save_model(WGANGenerator(latent_dim=8, dim=4).eval(), stem)
    record = _run(tmp_path / "set", stem)
    assert record is not None and not record["conditional"] and "labeler_agreement" not in record
    x, y = load_generated(tmp_path / "set")
    with torch.no_grad():
        predicted = load_pretrained("classifier")(x).argmax(1)
    # Labels were taken on the float samples, judged here on their uint8 quantisation: nearly all agree.
    assert (predicted == y).float().mean() >= 0.9


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GeneratedDataError, match="no generated shards"):
        load_generated(tmp_path)
    save_model(DDPM(width=4, timesteps=20, max_t=10), tmp_path / "purifier_only")
    with pytest.raises(ValueError, match="cannot sample from noise"):
        _run(tmp_path / "x", tmp_path / "purifier_only")
