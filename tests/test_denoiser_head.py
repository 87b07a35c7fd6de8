"""Issue #46 (b) on the DDPM: a residual head on the one-shot denoiser trained with the classification
objective through a frozen classifier. Tiny models: the loss falls, the classifier never changes, a
stopped and resumed run ends where an unstopped one does, and certify reads the head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from manifold_defense.domains import resolve_domain
from manifold_defense.models import DDPM, MLP, ResidualHead, load_model, read_config, save_model
from manifold_defense.purify import OneShotDenoiser, RefinedDenoiser
from manifold_defense.training import denoiser_head as dh


@pytest.fixture()
def tiny(tmp_path: Path) -> dict[str, str]:
    torch.manual_seed(0)
    save_model(DDPM(width=4, timesteps=200, max_t=150), tmp_path / "ddpm")
    save_model(MLP(hidden=16, depth=1), tmp_path / "clf")
    return {"ddpm": str(tmp_path / "ddpm"), "classifier": str(tmp_path / "clf")}


def _config(tiny: dict[str, str], out: Path, **overrides: object) -> dh.HeadConfig:
    base: dict[str, object] = dict(**tiny, noise_sigma=0.25, width=8, iterations=40, batch_size=32, lr=1e-2,
                                   train_limit=96, val_size=32, eval_every=10, device="cpu", out=str(out))
    return dh.HeadConfig(**{**base, **overrides})  # type: ignore[arg-type]


def _train_ce(tiny: dict[str, str], head: ResidualHead) -> float:
    """CE of the classifier behind D' on the 64 training images, one fixed noise draw."""
    x, y = resolve_domain("fashion_mnist").load("train", limit=64)
    noisy = x + 0.25 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    refined = RefinedDenoiser(OneShotDenoiser(load_model(tiny["ddpm"]), 0.25), head).eval()
    with torch.no_grad():
        return float(F.cross_entropy(load_model(tiny["classifier"])(refined(noisy)), y))


def test_the_head_lowers_the_classification_loss_and_leaves_the_classifier_alone(tiny: dict[str, str],
                                                                                tmp_path: Path) -> None:
    classifier = load_model(tiny["classifier"])
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    flags = [p.requires_grad for p in classifier.parameters()]
    head = dh.train(_config(tiny, tmp_path / "h", iterations=60, batch_size=64, eval_every=20), classifier=classifier)
    assert head is not None
    assert all(torch.equal(v, before[k]) for k, v in classifier.state_dict().items())  # frozen, and ours untouched
    assert [p.requires_grad for p in classifier.parameters()] == flags
    assert all(p.grad is None for p in classifier.parameters())
    fresh = ResidualHead(channels=1, width=8)  # zero correction: the DDPM denoiser alone
    assert _train_ce(tiny, load_model(tmp_path / "h")) < _train_ce(tiny, fresh)
    meta = read_config(tmp_path / "h")["metadata"]
    assert [p["iteration"] for p in meta["learning_curve"]] == [0, 20, 40, 60]
    assert meta["denoiser"]["timestep"] == OneShotDenoiser(load_model(tiny["ddpm"]), 0.25).t


def test_a_stopped_run_resumes_to_the_same_head(tiny: dict[str, str], tmp_path: Path) -> None:
    whole = dh.train(_config(tiny, tmp_path / "whole", iterations=12, eval_every=4))
    assert whole is not None
    assert dh.train(_config(tiny, tmp_path / "split", iterations=12, eval_every=4, max_minutes=1e-9)) is None
    assert read_config(tmp_path / "split")["metadata"]["stopped_by_budget"] is True
    resumed = dh.train(_config(tiny, tmp_path / "split", iterations=12, eval_every=4, resume=True))
    assert resumed is not None
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_bad_settings_are_named(tiny: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nothing to learn"):
        dh.train(_config(tiny, tmp_path / "x", classification_weight=0.0))
    with pytest.raises(ValueError, match="none to train on"):
        dh.train(_config(tiny, tmp_path / "x", train_limit=32))
    with pytest.raises(ValueError, match="max_t"):
        dh.train(_config(tiny, tmp_path / "x", noise_sigma=1.0))
    with pytest.raises(ValueError, match="channels"):
        ResidualHead(depth=1)
    with pytest.raises(ValueError, match="estimate and noisy"):
        ResidualHead(channels=1, width=4)(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def test_certify_reads_the_head_and_refuses_it_without_the_ddpm(tiny: dict[str, str], tmp_path: Path) -> None:
    from eval import certify

    dh.train(_config(tiny, tmp_path / "h", iterations=2, eval_every=2))
    args = ["--classifier", tiny["classifier"], "--denoiser", "diffusion", "--ddpm", tiny["ddpm"], "--head",
            str(tmp_path / "h"), "--sigma", "0.25", "--quick", "--num-images", "4", "--images-per-batch", "4",
            "--attack-radii", "0.25", "--out", str(tmp_path / "c")]
    record = certify.main(args)
    assert record is not None and record["head"] == str(tmp_path / "h")
    assert "refined by the head" in (tmp_path / "c" / "certify.md").read_text()
    base = certify.build_base(tiny["classifier"], "diffusion", resolve_domain("fashion_mnist"), 0.25, tiny["ddpm"],
                              head=str(tmp_path / "h"))
    assert isinstance(base[0], RefinedDenoiser)
    with pytest.raises(ValueError, match="not a residual head"):
        certify.build_base(tiny["classifier"], "diffusion", resolve_domain("fashion_mnist"), 0.25, tiny["ddpm"],
                           head=tiny["classifier"])
    with pytest.raises(SystemExit) as exc:
        certify.main(["--classifier", tiny["classifier"], "--head", str(tmp_path / "h"), "--out", str(tmp_path / "n")])
    assert exc.value.code == 2
