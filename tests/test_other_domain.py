"""End to end on another domain: synthetic 3x32x32 images in 5 classes, a tiny generator with tanh
([-1, 1]) output plugged in through RangeAdapter, a classifier trained in seconds. Wrap, project,
run every suite attack, write the robustness report, export the bundle and the TorchScript
artifact, load both, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from manifold_defense import DefendedClassifier, ProjectionConfig, export, load, save_bundle
from manifold_defense.domains import Budgets, domain_from_path, register_domain
from manifold_defense.models import ModelA, RangeAdapter, register_architecture

K, CLASSES, SHAPE = 6, 5, (3, 32, 32)


class TanhGenerator(nn.Module):
    """G(z) = tanh(mean + z B): a fixed linear manifold squashed into [-1, 1] (a stand-in for a GAN)."""

    def __init__(self, latent_dim: int = K, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.latent_dim, self.seed, self.output_shape = latent_dim, seed, SHAPE
        numel = SHAPE[0] * SHAPE[1] * SHAPE[2]
        self.mean = nn.Parameter(0.1 * torch.randn(numel, generator=gen))
        self.basis = nn.Parameter(torch.randn(latent_dim, numel, generator=gen) / 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean + z @ self.basis).view(-1, SHAPE[0], SHAPE[1], SHAPE[2])

    def config(self) -> dict[str, int]:
        return {"latent_dim": self.latent_dim, "seed": self.seed}


register_architecture("test_tanh_generator", TanhGenerator)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The synthetic domain (written as .npz, read back through the Domain), G, and a trained C."""
    root = tmp_path_factory.mktemp("synthetic")
    torch.manual_seed(0)
    G = RangeAdapter(TanhGenerator(), from_range=(-1.0, 1.0), to_range=(0.0, 1.0)).eval()
    centres = 0.3 * torch.randn(CLASSES, K, generator=torch.Generator().manual_seed(1))  # overlapping classes
    arrays = {}
    for split, n in (("train", 600), ("test", 64)):
        y = torch.arange(n) % CLASSES
        z = centres[y] + 0.3 * torch.randn(n, K, generator=torch.Generator().manual_seed(len(split)))
        with torch.no_grad():
            x = G(z)
        arrays[f"x_{split}"] = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (N, H, W, C) uint8
        arrays[f"y_{split}"] = y.numpy()
    np.savez(root / "synthetic.npz", **arrays)
    domain = register_domain(domain_from_path(root / "synthetic.npz", name="synthetic_rgb32",
                                              class_names=tuple(f"c{i}" for i in range(CLASSES)),
                                              budgets=Budgets(linf_eps=0.05, l2_eps=0.5, on_manifold_eta=1.0)),
                             replace=True)
    x, y = domain.load("train")
    C = ModelA(in_channels=3, image_size=32, num_classes=CLASSES, width=8)
    opt = torch.optim.Adam(C.parameters(), lr=3e-3)
    for _ in range(6):
        for i in range(0, len(x), 50):
            loss = nn.functional.cross_entropy(C(x[i:i + 50]), y[i:i + 50])
            opt.zero_grad()
            loss.backward()
            opt.step()
    C.eval()
    return {"root": root, "domain": domain, "G": G, "C": C}


def test_domain_reads_the_npz(world):
    d = world["domain"]
    x, y = d.load("test", limit=10)
    assert d.image_shape == SHAPE and d.num_classes == CLASSES and d.chance == pytest.approx(0.2)
    assert x.shape == (10, *SHAPE) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.dtype == torch.int64 and int(y.max()) < CLASSES


def test_range_adapter_maps_tanh_output_into_the_domain(world):
    with torch.no_grad():
        out = world["G"](torch.randn(16, K) * 3)
    assert out.shape == (16, *SHAPE) and float(out.min()) >= 0 and float(out.max()) <= 1
    tanh_gan = TanhGenerator()
    tanh_gan.output_range = (-1.0, 1.0)  # a [-1, 1] generator that says so, plugged in without the adapter
    with pytest.raises(ValueError, match="RangeAdapter"):
        DefendedClassifier(world["C"], tanh_gan, ProjectionConfig(restarts=2))
    adapted = RangeAdapter(tanh_gan)  # from_range defaults to the declared output_range
    assert adapted.from_range == (-1.0, 1.0) and adapted.output_range == (0.0, 1.0)
    with pytest.raises(ValueError, match="output_range"):
        RangeAdapter(tanh_gan, from_range=(0.0, 1.0))  # contradicts what the generator declares


@pytest.mark.slow
def test_whole_pipeline_on_the_other_domain(world, tmp_path: Path):
    from eval import robustness
    from eval.suite import ATTACKS, register_transfer_source

    domain, G, C = world["domain"], world["G"], world["C"]
    config = ProjectionConfig(restarts=2, steps=30, lr=0.1, pixel_range=domain.pixel_range)
    defended = DefendedClassifier(C, G, config).eval()
    x, y = domain.load("test", limit=16)
    # Projection lands on G's range: re-projecting G(z*) barely moves it.
    torch.manual_seed(0)
    first = defended.project(x)
    torch.manual_seed(0)
    again = defended.project(first.x_hat)
    assert float(again.residual.mean()) <= float(first.residual.mean()) + 1e-6
    bundle = save_bundle(defended, tmp_path / "bundle", domain=domain)
    assert json.loads((bundle / "manifest.json").read_text())["domain"]["image_shape"] == list(SHAPE)

    register_transfer_source("rgb_classifier", C, domain)  # the transfer family's source on this domain
    record = robustness.main(["--defense", str(bundle), "--domain", domain.name, "--quick", "--attacks",
                              ",".join(ATTACKS), "--transfer-from", "rgb_classifier", "--num-images", "24",
                              "--batch-size", "24", "--check-n", "8", "--draws", "2", "--out", str(tmp_path / "report")])
    assert record is not None and record["domain"]["name"] == domain.name
    assert all(v > 0 for v in record["seconds_per_prediction"].values())  # recorded (timings are not asserted)
    rows = record["results"][str(domain.budgets.linf_eps)]
    keys = {r["key"] for r in rows}
    assert set(ATTACKS) - {"bpda_apgd_amortised"} <= keys  # no encoder: the amortised surrogate has no row
    clean = next(r for r in rows if r["key"] == "clean" and r["model"] == "undefended")["accuracy"]
    worst = next(r for r in rows if r["attack"].startswith("worst") and r["model"] == "undefended")["accuracy"]
    assert clean >= 0.6 and worst <= clean / 2  # the suite breaks the undefended classifier
    chance = next(c for c in record["checks"] if c["name"].startswith("accuracy falls to chance"))
    assert "chance 20%" in chance["detail"]
    assert (tmp_path / "report" / "robustness.md").is_file() and (tmp_path / "report" / "examples.png").is_file()

    loaded = load(bundle)
    scripted = torch.jit.load(str(export(defended, tmp_path / "defended.pt")))
    torch.manual_seed(3)
    expected = defended(x).argmax(1)
    torch.manual_seed(3)
    from_bundle = loaded(x).argmax(1)
    torch.manual_seed(3)
    from_script = scripted(x).argmax(1)
    assert torch.equal(expected, from_bundle) and torch.equal(expected, from_script)
    assert float((expected == y).float().mean()) >= 0.5
