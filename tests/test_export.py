"""Export round trips: TorchScript in a fresh process without this project, and safetensors bundles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manifold_defense import CheckpointError, DefendedClassifier, ProjectionConfig, export, load, save_bundle
from manifold_defense.models import Encoder, ModelA, WGANGenerator
from manifold_defense.projection.operators import PixelMask

CONFIG = ProjectionConfig(restarts=3, steps=15, optimizer="adam", lr=0.05, halving_at=(0.3,), early_stop_tol=1e-4)

# Runs in a fresh interpreter in which importing this project fails: only torch is available.
FRESH = """
import sys
for name in ("manifold_defense", "attacks", "eval"):
    sys.modules[name] = None  # any import of this project now raises ImportError
import torch
model = torch.jit.load(sys.argv[1])
x = torch.load(sys.argv[2], weights_only=True)
torch.manual_seed(7)
logits = model(x)
with torch.no_grad():
    torch.manual_seed(7)
    logits_no_grad = model(x)
torch.save({"logits": logits.detach(), "no_grad": logits_no_grad}, sys.argv[3])
"""


@pytest.fixture(scope="module")
def defended() -> DefendedClassifier:
    torch.manual_seed(0)
    return DefendedClassifier(ModelA(width=4).eval(), WGANGenerator(dim=4).eval(), CONFIG,
                              encoder=Encoder(dim=4).eval()).eval()


@pytest.mark.slow
def test_torchscript_runs_in_fresh_process_without_project(defended, tmp_path: Path):
    artifact = export(defended, tmp_path / "defended.pt")
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "run.py"
    script.write_text(FRESH)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "", "PYTHONNOUSERSITE": "1", "GIT_PYTHON_REFRESH": "quiet"}
    proc = subprocess.run([sys.executable, str(script), str(artifact), str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.manual_seed(7)
    with torch.no_grad():
        expected = defended(x)
    assert torch.equal(out["logits"].argmax(1), expected.argmax(1))
    assert torch.allclose(out["logits"], expected, atol=1e-5)
    assert torch.allclose(out["no_grad"], expected, atol=1e-5)


def test_torchscript_rejects_bad_input(defended, tmp_path: Path):
    model = torch.jit.load(str(export(defended, tmp_path / "d.pt")))
    for bad in (torch.rand(2, 1, 32, 32), torch.full((2, 1, 28, 28), float("nan")), torch.rand(2, 1, 28, 28) + 2):
        with pytest.raises(Exception, match="shape|NaN|pixel range"):
            model(bad)


def test_torchscript_with_mask_operator(tmp_path: Path):
    torch.manual_seed(0)
    mask = PixelMask.random((1, 28, 28), 0.5, generator=torch.Generator().manual_seed(0))
    d = DefendedClassifier(ModelA(width=4).eval(), WGANGenerator(dim=4).eval(), CONFIG, operator=mask).eval()
    model = torch.jit.load(str(export(d, tmp_path / "masked.pt")))
    x = torch.rand(3, 1, 28, 28)
    torch.manual_seed(3)
    a = model(x)
    torch.manual_seed(3)
    assert torch.allclose(a, d(x), atol=1e-5)


def test_bundle_round_trip(defended, tmp_path: Path):
    save_bundle(defended, tmp_path / "bundle")
    loaded = load(tmp_path / "bundle")
    assert loaded.config == defended.config and loaded.encoder is not None
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(5)
    a = defended(x)
    torch.manual_seed(5)
    assert torch.equal(a, loaded(x))
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["versions"]["torch"] == torch.__version__


def test_bad_bundles_are_refused(defended, tmp_path: Path):
    path = save_bundle(defended, tmp_path / "b")
    weights = path / "generator.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="SHA-256"):
        load(path)
    weights.write_bytes(original)
    (path / "manifest.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="JSON"):
        load(path)
    (path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="manifest"):
        load(path)
    with pytest.raises(CheckpointError, match="not a bundle"):
        load(tmp_path / "nowhere")


def test_export_rejects_non_defended(tmp_path: Path):
    with pytest.raises(TypeError, match="DefendedClassifier"):
        export(ModelA(), tmp_path / "x.pt")  # type: ignore[arg-type]


@pytest.mark.slow
def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "manifold_defense.export", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--torchscript" in proc.stdout


@pytest.mark.parametrize("config", [ProjectionConfig(), ProjectionConfig.defense_gan(steps=3, restarts=2)],
                         ids=["default", "defense_gan"])
def test_export_with_stock_configs(config, tmp_path: Path):
    torch.manual_seed(0)
    d = DefendedClassifier(ModelA(width=4).eval(), WGANGenerator(dim=4).eval(), config,
                           encoder=Encoder(dim=4).eval()).eval()
    model = torch.jit.load(str(export(d, tmp_path / "d.pt")))
    x = torch.rand(3, 1, 28, 28)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    assert torch.allclose(a, d(x), atol=1e-5)


def test_encoder_only_path_runs_in_onnxruntime(defended, tmp_path: Path):
    ort = pytest.importorskip("onnxruntime")  # installed by the test extras
    from manifold_defense import export_onnx

    path = export_onnx(defended, tmp_path / "amortised.onnx")
    session = ort.InferenceSession(str(path))
    x = torch.rand(5, 1, 28, 28)
    (logits,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = defended.classifier(defended.generator(defended.encoder(x)))
    assert logits.shape == (5, 10)
    assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4)
    with pytest.raises(ValueError, match="no encoder"):
        export_onnx(DefendedClassifier(defended.classifier, defended.generator, CONFIG), tmp_path / "x.onnx")
