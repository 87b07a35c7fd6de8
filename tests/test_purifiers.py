"""The purifier contract: a user's own purifier module, unknown to the library, goes through the
same wrapper, suite, report and checks as the projection; the generic checkpointed loop gives the
exact gradient of a stochastic loop (its random draws replayed); the diffusion purifier is such a loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks import ExactGradient
from eval import ReportOptions, SuiteConfig, evaluate
from manifold_defense import DefendedClassifier, ProjectionConfig, PurifiedClassifier, as_purifier
from manifold_defense.models import DDPM, MLP, load_model, save_model
from manifold_defense.purify import DiffusionPurifier, ProjectionPurifier, Purifier
from manifold_defense.domains import get_domain
from manifold_defense.projection import checkpointed_loop


class UserDenoiser(nn.Module):
    """The user's purifier: a fixed 3x3 blur, optionally with noise, clamped to [0, 1]."""

    def __init__(self, noise: float = 0.0) -> None:
        super().__init__()
        self.noise = noise
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.noise:
            out = out + self.noise * torch.randn_like(out)
        return out.clamp(0, 1)


ATTACKS = ("clean", "fgsm", "pgd", "bpda_pgd", "eot_pgd", "exact_apgd_ce", "exact_apgd_dlr", "latent", "square",
           "on_manifold")


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_a_user_purifier_goes_through_the_suite_and_the_report(trained_mlp: MLP, noise: float) -> None:
    fashion = get_domain("fashion_mnist")
    x, y = fashion.load("test", limit=8)
    before = x.clone()
    purifier = as_purifier(UserDenoiser(noise), randomized=noise > 0)
    suite = SuiteConfig(domain=fashion, attacks=ATTACKS, apgd_steps=3, pgd_steps=3, eot_steps=2, eot_samples=2,
                        square_queries=10, batch_size=4, draws=3)
    report = evaluate(trained_mlp, x, y, purifier=purifier, suite=suite, eps=[0.1],
                      options=ReportOptions(check_n=4, effort_check=False, progress=False))
    assert torch.equal(x, before)
    rows = report.rows[0.1]
    defended_keys = {r.key for r in rows if r.model == "defended"}
    assert {"clean", "fgsm", "bpda_pgd", "exact_apgd_ce", "exact_apgd_dlr", "square"} <= defended_keys
    assert not {"latent", "on_manifold"} & defended_keys  # attacks that need a generator are skipped, not faked
    worst = report.robust_accuracy()
    clean = next(r.accuracy for r in rows if r.model == "defended" and r.key == "clean")
    assert 0.0 <= worst <= clean
    randomized = [r for r in rows if r.model == "defended" and r.correct_all is not None]
    assert bool(randomized) == (noise > 0)  # worst-of-N and majority only for a randomised purifier
    for r in randomized:
        assert bool((r.correct_all <= r.correct).all())  # draw 0 is the one-shot verdict, one of the N
    assert report.record["defense"]["kind"] == "ModulePurifier"
    assert report.checks  # the checks ran on it


def test_the_exact_gradient_of_a_user_purifier_is_autograd_through_it(trained_mlp: MLP) -> None:
    purifier = as_purifier(UserDenoiser(), randomized=False)
    defended = PurifiedClassifier(trained_mlp, purifier).eval()
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    (g_exact,) = torch.autograd.grad(ExactGradient(defended)(x).sum(), x)
    x2 = x.detach().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(trained_mlp(UserDenoiser()(x2)).sum(), x2)
    assert torch.allclose(g_exact, g_ref, atol=1e-6)
    # the deployed wrapper's default is the naive view: zero gradient; bpda: the identity's
    (g_naive,) = torch.autograd.grad(defended(x).sum(), x)
    assert torch.count_nonzero(g_naive) == 0


def test_the_contract_is_checked_with_errors_that_name_the_problem() -> None:
    with pytest.raises(ValueError, match="randomized"):
        as_purifier(UserDenoiser())
    with pytest.raises(TypeError, match="as_purifier"):
        PurifiedClassifier(MLP(), UserDenoiser())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        as_purifier(nn.AvgPool2d(2), randomized=False)(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="outside the pixel range"):
        as_purifier(nn.Identity(), randomized=False)(torch.rand(2, 1, 28, 28) * 3)
    blur = as_purifier(UserDenoiser(), randomized=False)
    with pytest.raises(ValueError, match="NaN|finite"):
        blur(torch.full((1, 1, 28, 28), float("nan")))
    with pytest.raises(ValueError):
        blur(torch.rand(1, 28, 28))  # no batch dimension
    with pytest.raises(ValueError):
        blur(torch.rand(1, 1, 28, 28) + 2)  # outside the pixel range
    with pytest.raises((TypeError, ValueError)):
        blur(torch.rand(1, 1, 28, 28, dtype=torch.float64))
    with pytest.raises(ValueError):
        DiffusionPurifier(DDPM(width=4, timesteps=20).eval(), t_star=5)(torch.rand(2, 1, 28, 28) * 3)
    noisy = as_purifier(UserDenoiser(0.1), randomized=True)
    assert as_purifier(noisy) is noisy
    with pytest.raises(ValueError, match="declares randomized=True"):
        as_purifier(noisy, randomized=False)


def test_the_projection_is_a_purifier_of_the_same_contract(tiny_generator, tiny_classifier) -> None:
    config = ProjectionConfig(restarts=2, steps=3, seed=0)
    defended = DefendedClassifier(tiny_classifier, tiny_generator, config)
    assert isinstance(defended, PurifiedClassifier) and isinstance(defended.purifier, ProjectionPurifier)
    assert isinstance(defended.purifier, Purifier) and not defended.randomized
    assert DefendedClassifier(tiny_classifier, tiny_generator, config.replace(seed=None)).randomized
    x = torch.rand(2, 1, 28, 28)
    same = PurifiedClassifier(tiny_classifier, ProjectionPurifier(tiny_generator, config))
    assert torch.equal(defended(x), same(x))


def test_checkpointed_loop_replays_the_randomness_of_the_forward_pass() -> None:
    weight = torch.randn(5, 5) / 3

    def step(i: int, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(s @ weight) + 0.3 * torch.randn_like(s)

    x = torch.randn(4, 5, requires_grad=True)
    torch.manual_seed(7)
    plain = x
    for i in range(9):
        plain = step(i, plain)
    (g_plain,) = torch.autograd.grad(plain.pow(2).sum(), x)
    for segment in (1, 2, 4, 20):
        torch.manual_seed(7)
        out = checkpointed_loop(step, x, 9, segment=segment)
        assert torch.allclose(out, plain)
        (g,) = torch.autograd.grad(out.pow(2).sum(), x)
        assert torch.allclose(g, g_plain, atol=1e-6), segment
    with pytest.raises(ValueError, match="segment"):
        checkpointed_loop(step, x, 3, segment=0)


def test_a_shortened_diffusion_purifier_is_a_suite_surrogate(trained_mlp: MLP) -> None:
    from eval.suite import run_suite

    torch.manual_seed(0)
    ddpm = DDPM(width=4, timesteps=30).eval()
    defended = PurifiedClassifier(trained_mlp, DiffusionPurifier(ddpm, t_star=6, steps=6)).eval()
    assert defended.purifier.shortened(2).steps == 2
    fashion = get_domain("fashion_mnist")
    x, y = fashion.load("test", limit=4)
    suite = SuiteConfig(domain=fashion, attacks=("bpda_apgd_short",), apgd_steps=2, eot_samples=2, draws=2,
                        surrogate_steps=2, batch_size=4, models=("defended",))
    rows = run_suite(trained_mlp, defended, x, y, suite, progress=False)
    assert [r.key for r in rows] == ["bpda_apgd_short"] and rows[0].correct_all is not None
    blur = PurifiedClassifier(trained_mlp, as_purifier(UserDenoiser(), randomized=False))
    assert run_suite(trained_mlp, blur, x, y, suite, progress=False) == []  # no iterations: no such surrogate


def test_diffusion_purifier_gradient_is_the_unrolled_samplers(tmp_path) -> None:
    torch.manual_seed(0)
    ddpm = DDPM(width=8, timesteps=50, max_t=30).eval()
    save_model(ddpm, tmp_path / "ddpm")
    loaded = load_model(tmp_path / "ddpm").eval()
    assert isinstance(loaded, DDPM) and loaded.max_t == 30 and torch.equal(loaded.alpha_bar, ddpm.alpha_bar)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    grads = []
    for every in (1, 3, 100):
        torch.manual_seed(3)
        out = DiffusionPurifier(loaded, t_star=10, steps=5, checkpoint_every=every)(x)
        assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
        grads.append(torch.autograd.grad(out.sum(), x)[0])
    assert all(torch.allclose(g, grads[0], atol=1e-5) for g in grads[1:])
    assert DiffusionPurifier(loaded, t_star=10).randomized
    with pytest.raises(ValueError, match="t_star"):
        DiffusionPurifier(loaded, t_star=31)
    with pytest.raises(ValueError, match="steps"):
        DiffusionPurifier(loaded, t_star=10, steps=11)


def test_a_diffusion_defense_exports_and_runs_without_the_library(tmp_path, trained_mlp: MLP) -> None:
    from manifold_defense import export

    torch.manual_seed(0)
    defended = PurifiedClassifier(trained_mlp, DiffusionPurifier(DDPM(width=4, timesteps=20).eval(), t_star=5, steps=3))
    path = export(defended, tmp_path / "diffusion.pt", image_shape=(1, 28, 28))
    loaded = torch.jit.load(str(path))
    x = torch.rand(3, 1, 28, 28)
    torch.manual_seed(1)
    ours = defended(x)
    torch.manual_seed(1)
    theirs = loaded(x)
    assert theirs.shape == (3, 10) and torch.allclose(ours, theirs, atol=1e-4)  # same draws, same logits
    with pytest.raises(ValueError, match="image_shape"):
        export(defended, tmp_path / "again.pt")


@pytest.mark.slow
def test_the_report_cli_runs_a_diffusion_purifier(tmp_path) -> None:
    from eval import robustness

    torch.manual_seed(0)
    save_model(DDPM(width=4, timesteps=40, max_t=20).eval(), tmp_path / "ddpm")
    record = robustness.main(["--purifier", "diffusion", "--ddpm", str(tmp_path / "ddpm"), "--t-star", "10",
                              "--sampler-steps", "2", "--quick", "--num-images", "4", "--batch-size", "4",
                              "--attacks", "clean,exact_apgd_ce,latent", "--models", "defended", "--no-checks",
                              "--draws", "2", "--eot-samples", "2", "--out", str(tmp_path / "r")])
    assert record is not None and record["defense"]["kind"] == "DiffusionPurifier"
    assert "t_star=10" in record["defense"]["settings"] and record["exact_gradient_step"]["seconds_per_image"] > 0
    with pytest.raises(ValueError, match="drop --defense"):
        robustness.main(["--purifier", "diffusion", "--defense", "amortised_at", "--quick", "--out", str(tmp_path / "x")])
