"""The honest report as one Python call (eval.evaluate) on a user's own classifier and generator,
defined here and unknown to the library; the CLI over the same bundle with --import gives the same
per-example results; without --import it names the missing class and the flag."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from eval import ReportOptions, SuiteConfig, evaluate, robustness
from manifold_defense import DefendedClassifier, ProjectionConfig, save_bundle
from manifold_defense.domains import get_domain

ROOT = Path(__file__).resolve().parents[1]

# The user's module: their own classifier and generator, registered by their own code.
USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn
    from manifold_defense.models import register_architecture

    class UserClassifier(nn.Module):
        def __init__(self, hidden: int = 12) -> None:
            super().__init__()
            self.hidden = hidden
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)
        def config(self) -> dict:
            return {"hidden": self.hidden}

    class UserGenerator(nn.Module):
        def __init__(self, latent_dim: int = 6) -> None:
            super().__init__()
            self.latent_dim, self.output_shape, self.output_range = latent_dim, (1, 28, 28), (0.0, 1.0)
            self.net = nn.Sequential(nn.Linear(latent_dim, 784), nn.Sigmoid())
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.net(z).view(-1, 1, 28, 28)
        def config(self) -> dict:
            return {"latent_dim": self.latent_dim}

    register_architecture("user_classifier", UserClassifier)
    register_architecture("user_generator", UserGenerator)
''')

ATTACKS = ("clean", "fgsm", "bpda_pgd", "exact_apgd_ce", "square")


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "user_models_for_test.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("user_models_for_test")


def _defended(user_module) -> DefendedClassifier:
    torch.manual_seed(0)
    return DefendedClassifier(user_module.UserClassifier(), user_module.UserGenerator(),
                              ProjectionConfig(restarts=2, steps=4, init_std=1.0, seed=0)).eval()


@pytest.mark.slow
def test_evaluate_from_python_then_the_cli_with_import_agrees(user_module, tmp_path: Path) -> None:
    fashion = get_domain("fashion_mnist")
    x, y = fashion.load("test", limit=8)
    defended = _defended(user_module)
    suite = SuiteConfig(domain=fashion, attacks=ATTACKS, apgd_steps=3, square_queries=10, batch_size=4)
    before = x.clone()
    report = evaluate(defended, x, y, suite=suite, eps=[0.1],
                      options=ReportOptions(check_n=4, effort_check=False, progress=False, name=str(tmp_path / "b")))
    assert torch.equal(x, before)
    assert 0.0 <= report.robust_accuracy() <= report.robust_accuracy(model="undefended") + 1.0
    assert {c.name for c in report.checks} and len(report.per_example()["0.1"]["defended | clean"]) == 8
    written = report.write(tmp_path / "py")
    assert (written / "robustness.json").is_file() and (written / "examples.png").is_file()
    assert "worst case" in report.markdown()

    save_bundle(defended, tmp_path / "b")
    record = robustness.main(["--import", "user_models_for_test", "--defense", str(tmp_path / "b"), "--num-images", "8",
                              "--eps", "0.1", "--attacks", ",".join(ATTACKS), "--apgd-steps", "3", "--square-queries",
                              "10", "--batch-size", "4", "--check-n", "4", "--skip-effort-check",
                              "--out", str(tmp_path / "cli")])
    assert record is not None
    assert record["per_example"] == report.per_example()  # the same verdict for every image and attack


def test_evaluate_builds_the_defense_from_a_classifier_and_a_generator(user_module) -> None:
    fashion = get_domain("fashion_mnist")
    x, y = fashion.load("test", limit=4)
    suite = SuiteConfig(domain=fashion, attacks=("clean", "fgsm"), batch_size=4)
    report = evaluate(user_module.UserClassifier(), x, y, generator=user_module.UserGenerator(),
                      projection=ProjectionConfig(restarts=2, steps=2, init_std=1.0, seed=0), suite=suite, eps=[0.1],
                      options=ReportOptions(checks=False, progress=False))
    assert report.record["n"] == 4 and report.checks == []
    with pytest.raises(TypeError, match="generator="):
        evaluate(user_module.UserClassifier(), x, y, suite=suite)
    with pytest.raises(ValueError, match="both x and y"):
        evaluate(_defended(user_module), x, None, suite=suite)


@pytest.mark.slow
def test_the_cli_without_import_names_the_class_and_the_flag(user_module, tmp_path: Path) -> None:
    save_bundle(_defended(user_module), tmp_path / "b")
    env = {**os.environ, "GIT_PYTHON_REFRESH": "quiet"}
    done = subprocess.run([sys.executable, "-m", "eval.robustness", "--defense", str(tmp_path / "b"), "--quick"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "user_classifier" in lines[0] and "--import" in lines[0], done.stderr
