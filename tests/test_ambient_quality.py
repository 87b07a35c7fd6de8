"""The AmbientGAN quality table: the Frechet distance and class coverage by their definitions, and
the command on a tiny generator checkpoint (every column filled, resume keeps a measured generator)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval import ambient_quality
from manifold_defense.models import WGANGenerator, save_model


def test_frechet_distance_of_gaussians_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20_000, 2))
    b = rng.normal(size=(20_000, 2)) * 2.0 + np.array([1.0, 0.0])
    # ||mu||^2 + Tr(I + 4I - 2 * 2I) = 1 + 2
    assert abs(ambient_quality.frechet_distance(a, b) - 3.0) < 0.1
    assert ambient_quality.frechet_distance(a, a) < 1e-6


def test_class_coverage_sees_a_collapsed_generator() -> None:
    collapsed = np.tile(np.eye(10)[3], (100, 1))
    cover = ambient_quality.class_coverage(collapsed)
    assert cover["classes_covered"] == 1 and cover["evenness"] == 0.1
    even = ambient_quality.class_coverage(np.eye(10)[np.arange(100) % 10] * 0.5 + 0.05)
    assert even["classes_covered"] == 10 and even["evenness"] == 1.0 and abs(even["confidence"] - 0.55) < 1e-6


@pytest.mark.slow
def test_the_table_on_a_tiny_generator_and_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model(WGANGenerator(latent_dim=8, dim=2).eval(), tmp_path / "tiny_0.5",
               metadata={"config": {"measurement": "dropout:0.5", "unmeasured": False}, "iterations_done": 7})
    argv = ["--generators", f"tiny={tmp_path / 'tiny_0.5'}", "--samples", "300", "--cs-n", "2", "--acc-n", "3",
            "--m", "20", "--out", str(tmp_path / "q")]
    record = ambient_quality.main(argv)
    row = record["generators"][f"tiny={tmp_path / 'tiny_0.5'}"]
    assert row["frechet_distance"] > 0 and 0 < row["evenness"] <= 1 and 1 <= row["classes_covered"] <= 10
    assert set(row["cs_mse"]) == {"20"} and 0 <= row["accuracy_behind_projection"] <= 1
    assert row["provenance"] == {"trained_on": "measured dropout:0.5", "measurement": "dropout:0.5", "iterations": 7,
                                 "stopped_by_budget": False}
    table = (tmp_path / "q" / "ambient_quality.md").read_text()
    assert "Lasso-DCT" in table and "| measured dropout:0.5 | 7 |" in table
    assert (tmp_path / "q" / "ambient_samples.png").stat().st_size > 1000  # the training data as measured + samples
    again = ambient_quality.main([*argv, "--resume"])
    assert again["generators"] == record["generators"]  # read back, not recomputed
    assert json.loads((tmp_path / "q" / "ambient_quality.json").read_text())["settings"]["samples"] == 300
