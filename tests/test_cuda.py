"""The CUDA path gives the CPU's answers: projection, the exact gradient, the shipped default's
verdicts, DDPM sampling and a report all run on the GPU (these tests skip cleanly without one;
``python -m benchmarks.device_suite`` runs them on a lent machine)."""

from __future__ import annotations

import pytest
import torch

from manifold_defense import ProjectionConfig, project
from manifold_defense.domains import get_domain
from manifold_defense.models import DDPM, WGANGenerator
from manifold_defense.pretrained import defended_pretrained

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_projection_on_cuda_matches_the_cpu() -> None:
    torch.manual_seed(0)
    G = WGANGenerator(latent_dim=16, dim=4).eval()
    x = G(torch.randn(8, 16)).detach()
    cfg = ProjectionConfig(restarts=3, steps=30, seed=0)
    cpu = project(G, x, cfg)
    gpu = project(G.cuda(), x.cuda(), cfg)
    assert gpu.x_hat.is_cuda and x.device.type == "cpu"  # the caller's tensor is not moved
    assert torch.allclose(cpu.residual, gpu.residual.cpu(), rtol=1e-3, atol=1e-4)


def test_the_exact_gradient_on_cuda_matches_the_cpu() -> None:
    torch.manual_seed(0)
    G = WGANGenerator(latent_dim=16, dim=4).eval()
    cfg = ProjectionConfig(restarts=2, steps=20, seed=0)
    grads = []
    for device in ("cpu", "cuda"):
        x = torch.rand(3, 1, 28, 28, device=device, requires_grad=True)
        with torch.no_grad():
            x.copy_(torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)).to(device))
        project(G.to(device), x, cfg, create_graph=True, checkpoint_every=5).x_hat.sum().backward()
        grads.append(x.grad.cpu())
    assert torch.allclose(grads[0], grads[1], rtol=1e-2, atol=1e-4)


def test_the_shipped_default_gives_the_same_verdicts_on_cuda() -> None:
    x, y = get_domain("fashion_mnist").load("test", limit=256)
    defended = defended_pretrained().eval()
    with torch.no_grad():
        cpu = defended(x).argmax(1)
        gpu = defended.cuda()(x.cuda()).argmax(1).cpu()
    assert (cpu == gpu).float().mean() >= 0.99 and (gpu == y).float().mean() > 0.5


def test_ddpm_sampling_on_cuda_is_seeded_like_the_cpu() -> None:
    torch.manual_seed(0)
    model = DDPM(width=4, timesteps=50, num_classes=10).eval()
    labels = torch.tensor([1, 2, 3])
    cpu = model.sample(labels, steps=5, guidance=2.0, generator=torch.Generator().manual_seed(0))
    gpu = model.cuda().sample(labels, steps=5, guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert gpu.is_cuda and torch.allclose(cpu, gpu.cpu(), atol=1e-4)


def test_a_quick_report_runs_on_cuda(tmp_path) -> None:
    from eval import robustness

    record = robustness.main(["--quick", "--device", "cuda", "--no-checks", "--out", str(tmp_path / "r")])
    assert record is not None and record["device"].startswith("cuda")


def test_the_training_curve_s_square_leaves_both_rngs_alone_on_cuda() -> None:
    from eval.suite.adversaries import adversaries
    from manifold_defense.training.robust import RobustConfig

    square = adversaries(RobustConfig()).gradient_free
    assert square is not None
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).cuda()
    x, y = torch.rand(4, 1, 28, 28, device="cuda"), torch.arange(4, device="cuda")
    torch.manual_seed(7)
    expected = (torch.rand(3), torch.rand(3, device="cuda"))
    torch.manual_seed(7)
    x_adv = square(net, x, y, 0.1, 5, 0)
    assert torch.equal(torch.rand(3), expected[0]) and torch.equal(torch.rand(3, device="cuda"), expected[1])
    assert x_adv.is_cuda and (x_adv - x).abs().max() <= 0.1 + 1e-6
