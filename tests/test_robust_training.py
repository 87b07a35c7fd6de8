"""Robust training: runs, saves config, resumes, and keeps DDP replicas identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from manifold_defense.models import Encoder, WGANGenerator, load_model, read_config, save_model
from eval import train_robust
from manifold_defense.training import robust

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    save_model(WGANGenerator(latent_dim=16, dim=4), d / "g")
    save_model(Encoder(latent_dim=16, dim=4, hidden=32), d / "e")
    return {"generator": str(d / "g"), "encoder": str(d / "e")}


def args(parts: dict[str, str], out: Path, *extra: str) -> list[str]:
    return ["--quick", "--generator", parts["generator"], "--encoder", parts["encoder"], "--init", "",
            "--architecture", "mlp", "--device", "cpu", "--out", str(out), "--pgd-weight", "1", *extra]


def test_all_losses_train_save_and_resume(parts, tmp_path: Path):
    train_robust.main(args(parts, tmp_path / "c"))
    meta = read_config(tmp_path / "c")["metadata"]
    assert meta["config"]["pgd_weight"] == 1.0 and 0 <= meta["test_accuracy_first_2000"] <= 1
    first = load_model(tmp_path / "c")
    state = tmp_path / "c.state.json"
    saved = json.loads(state.read_text())
    assert saved["train_seconds"] == pytest.approx(meta["train_seconds"], abs=1.0)
    state.write_text(json.dumps({**saved, "train_seconds": 1000.0}))  # as if the first piece had run 1,000 s
    train_robust.main(args(parts, tmp_path / "c", "--resume", "true", "--iterations", "6"))
    assert read_config(tmp_path / "c")["metadata"]["train_seconds"] >= 1000.0  # every piece counts
    resumed = load_model(tmp_path / "c")
    changed = any(not torch.equal(a, b) for a, b in zip(first.parameters(), resumed.parameters()))
    assert changed and read_config(tmp_path / "c")["metadata"]["config"]["iterations"] == 6


@pytest.mark.slow
def test_ddp_two_gloo_processes_keep_replicas_identical(parts, tmp_path: Path, free_port: int):
    torchrun = Path(sys.executable).parent / "torchrun"
    result = tmp_path / "result.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_PYTHON_REFRESH": "quiet"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port), str(REPO / "tests" / "ddp_robust_worker.py"),
         str(result), *args(parts, tmp_path / "ddp")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result.read_text().split() == ["2", "1"]
    assert read_config(tmp_path / "ddp")["metadata"]["world_size"] == 2


def test_trades_defense_terms_curve_and_budget(parts, tmp_path: Path):
    """TRADES and defense-AT terms train; the learning curve lands in the checkpoint JSON; a spent
    wall-clock budget stops early and says so; resume continues the same schedule."""
    out = tmp_path / "t"
    train_robust.main(args(parts, out, "--trades-beta", "6", "--defense-weight", "1", "--val-size", "32",
                           "--eval-every", "2", "--lr-schedule", "cosine"))
    meta = read_config(out)["metadata"]
    curve = meta["learning_curve"]
    assert [p["iteration"] for p in curve] == [2, 4] and all(0 <= p["val_pgd10"] <= p["val_clean"] + 1 for p in curve)
    assert meta["iterations_done"] == 4 and not meta["stopped_by_budget"]
    stopped = tmp_path / "s"
    train_robust.main(args(parts, stopped, "--max-minutes", "1e-9"))
    assert read_config(stopped)["metadata"]["stopped_by_budget"]


def test_train_encoder_trains_the_amortised_defense_and_ships_a_bundle(parts, tmp_path: Path):
    """``--train-encoder``: E and C change, G does not; the bundle is the deployed defense C(G(E(x)))
    (no projection steps) made of the saved parts; settings that do not fit are refused."""
    from manifold_defense.export import load

    out = tmp_path / "a"
    train_robust.main(args(parts, out, "--train-encoder", "true", "--manifold-weight", "0", "--projection-weight", "0",
                           "--reconstruction-weight", "0.1", "--trades-beta", "1"))
    E0, E1 = load_model(parts["encoder"]), load_model(tmp_path / "a_encoder")
    assert any(not torch.equal(a, b) for a, b in zip(E0.parameters(), E1.parameters()))
    defense = load(tmp_path / "a_defense")
    G0 = load_model(parts["generator"])
    assert all(torch.equal(a, b) for a, b in zip(G0.parameters(), defense.generator.parameters()))
    assert defense.config.steps == 0 and defense.config.use_encoder
    x = torch.rand(5, 1, 28, 28)
    C = load_model(out)
    with torch.no_grad():
        assert torch.allclose(defense(x), C(G0(E1(x))), atol=1e-5)
    with pytest.raises(ValueError, match="manifold_weight"):
        train_robust.main(args(parts, tmp_path / "b", "--train-encoder", "true"))
    with pytest.raises(ValueError, match="reconstruction_weight"):
        train_robust.main(args(parts, tmp_path / "b", "--reconstruction-weight", "1", "--manifold-weight", "0"))
    with pytest.raises(ValueError, match="encoder"):
        train_robust.main(args(parts, tmp_path / "b", "--train-encoder", "true", "--encoder", "", "--manifold-weight",
                               "0", "--projection-weight", "0"))


def test_lr_schedules_and_bad_settings(parts, tmp_path: Path):
    cfg = robust.RobustConfig(lr=1.0, iterations=100, lr_schedule="step")
    assert [robust.lr_at(cfg, i) for i in (0, 49, 50, 75, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])
    cos = robust.RobustConfig(lr=1.0, iterations=100, lr_schedule="cosine")
    assert robust.lr_at(cos, 0) == 1.0 and robust.lr_at(cos, 50) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lr_schedule"):
        robust.train(robust.RobustConfig(lr_schedule="linear", manifold_weight=0))
    with pytest.raises(ValueError, match="trades"):
        robust.train(robust.RobustConfig(trades_beta=1.0, manifold_weight=0))
    with pytest.raises(ValueError, match="val_size"):
        train_robust.main(args(parts, tmp_path / "v", "--eval-every", "2"))


def test_trades_inner_step_stays_in_the_ball_and_raises_the_kl(trained_mlp, fmnist_small):
    import torch.nn.functional as F

    from attacks import TradesPGD

    _, _, x, _ = fmnist_small
    x_before = x.clone()
    x_adv = TradesPGD(eps=0.1, steps=10, seed=0)(trained_mlp, x)
    assert torch.equal(x, x_before) and float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert 0 <= float(x_adv.min()) and float(x_adv.max()) <= 1
    with torch.no_grad():
        p = F.softmax(trained_mlp(x), 1)
        kl = F.kl_div(F.log_softmax(trained_mlp(x_adv), 1), p, reduction="batchmean")
        kl_noise = F.kl_div(F.log_softmax(trained_mlp((x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)), 1), p,
                            reduction="batchmean")
    assert float(kl) > 5 * float(kl_noise)


def test_trades_kl_keeps_finite_gradients_when_a_prediction_saturates():
    """A clean probability that underflows to 0 made the reference form F.kl_div(log_softmax,
    softmax) backpropagate NaN (a TRADES run diverged that way at iteration ~1,330); the log-space
    form stays finite and equals the KL elsewhere."""
    import torch.nn.functional as F

    clean = torch.tensor([[300.0, 0.0, -300.0], [1.0, 2.0, 3.0]], requires_grad=True)
    adv = torch.tensor([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]], requires_grad=True)
    robust.trades_kl(adv, clean).backward()
    assert clean.grad is not None and adv.grad is not None
    assert bool(torch.isfinite(clean.grad).all()) and bool(torch.isfinite(adv.grad).all())
    plain = F.kl_div(F.log_softmax(adv[1:], 1), F.softmax(clean[1:], 1), reduction="batchmean")
    assert float(robust.trades_kl(adv[1:], clean[1:]).detach()) == pytest.approx(float(plain.detach()), rel=1e-5)


def test_a_diverged_loss_stops_training_with_a_named_error(parts, tmp_path: Path):
    nan_pgd = lambda C, x, y, eps, steps, seed: x * float("nan")  # noqa: E731
    cfg = robust.RobustConfig(generator=parts["generator"], encoder=parts["encoder"], init="", architecture="mlp",
                              out=str(tmp_path / "nan"), iterations=3, batch_size=8, train_limit=64, clean_weight=1,
                              pgd_weight=1, manifold_weight=0, projection_weight=0, device="cpu")
    with pytest.raises(FloatingPointError, match=r"iteration 0: loss terms \['pgd'\]"):
        robust.train(cfg, robust.Adversaries(pgd=nan_pgd))


def test_croce_recipe_knobs(parts, tmp_path: Path):
    """The recipe of Croce et al. 2019: LeNetSmall, half of each batch adversarial (the rest clean),
    PGD step 2 eps / steps, lr / 10 for the last tenth, shuffled epochs split over DDP ranks."""
    from manifold_defense.models import LeNetSmall

    cfg = robust.RobustConfig(lr=1e-3, iterations=100, lr_schedule="final_tenth", batch_size=4, sampling="epochs")
    assert robust.lr_at(cfg, 89) == pytest.approx(1e-3) and robust.lr_at(cfg, 90) == pytest.approx(1e-4)
    # One epoch of 16 images at 2 x 4 per step: every image once, the ranks disjoint, the next epoch reshuffled.
    epoch = [robust.batch_indices(cfg, it, 16, torch.Generator(), rank=r, world=2) for it in range(2) for r in (0, 1)]
    assert sorted(torch.cat(epoch).tolist()) == list(range(16))
    assert not torch.equal(robust.batch_indices(cfg, 2, 16, torch.Generator()), epoch[0])
    # The same steps on one process with the whole global batch see the same images.
    one = robust.RobustConfig(batch_size=8, sampling="epochs")
    assert torch.equal(robust.batch_indices(one, 0, 16, torch.Generator()), torch.cat(epoch[:2]))
    assert LeNetSmall()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    seen: list[int] = []

    def pgd(C, x, y, eps, steps, seed):  # records how many examples the loop asks to perturb
        seen.append(len(x))
        assert steps == 3
        return (x + eps * torch.randn_like(x).sign()).clamp(0, 1)

    config = robust.RobustConfig(init="", architecture="lenet_small", clean_weight=0, pgd_weight=1, manifold_weight=0,
                                 projection_weight=0, ae_frac=0.5, pgd_steps=3, pgd_step_factor=2, batch_size=8,
                                 iterations=3, sampling="epochs", lr_schedule="final_tenth", train_limit=64,
                                 out=str(tmp_path / "lenet"), device="cpu")
    robust.train(config, robust.Adversaries(pgd=pgd))
    assert seen == [4, 4, 4]
    meta = read_config(tmp_path / "lenet")
    assert meta["architecture"] == "lenet_small" and meta["metadata"]["config"]["ae_frac"] == 0.5
    with pytest.raises(ValueError, match="ae_frac"):
        robust.train(robust.RobustConfig(ae_frac=0.0, manifold_weight=0, projection_weight=0), robust.Adversaries())


def test_mixed_batches_take_the_exact_fraction_are_seeded_and_disjoint_across_ranks():
    from manifold_defense.training.mixing import mixed_indices, split_batch

    assert split_batch(64, 0.7) == (19, 45) and split_batch(10, 0.0) == (10, 0) and split_batch(10, 1.0) == (0, 10)
    for it in range(12):
        ranks = [mixed_indices(it, batch_size=10, fraction=0.7, n_real=50, n_generated=400, seed=3, rank=r, world=2)
                 for r in (0, 1)]
        for real, fake in ranks:
            assert len(real) == 3 and len(fake) == 7
        assert not set(ranks[0][0].tolist()) & set(ranks[1][0].tolist())
        assert not set(ranks[0][1].tolist()) & set(ranks[1][1].tolist())
        again = mixed_indices(it, batch_size=10, fraction=0.7, n_real=50, n_generated=400, seed=3, rank=1, world=2)
        assert all(torch.equal(a, b) for a, b in zip(again, ranks[1]))
    other = mixed_indices(0, batch_size=10, fraction=0.7, n_real=50, n_generated=400, seed=4)
    assert not torch.equal(other[1], mixed_indices(0, batch_size=10, fraction=0.7, n_real=50, n_generated=400, seed=3)[1])
    with pytest.raises(ValueError, match="fraction"):
        split_batch(10, 1.5)
    with pytest.raises(ValueError, match="exceeds"):
        mixed_indices(0, batch_size=10, fraction=0.5, n_real=4, n_generated=400, seed=0)


def test_the_weight_ema_lags_the_weights_and_refuses_a_decay_of_one():
    from manifold_defense.training.ema import WeightEMA

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = WeightEMA(net, decay=0.99)
    start = [p.clone() for p in ema.module.parameters()]
    for _ in range(50):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1)
        net(torch.randn(8, 3))  # moves the BatchNorm statistics
        ema.update(net)
    for p0, p_ema, p in zip(start, ema.module.parameters(), net.parameters()):
        assert bool((p0 < p_ema).all()) and bool((p_ema < p).all())  # between the start and the last iterate
    assert torch.equal(ema.module[1].running_mean, net[1].running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(net, decay=1.0)


def test_training_on_generated_data_saves_the_ema_and_resumes(parts, tmp_path: Path):
    from manifold_defense.domains import save_shard, shard_path

    torch.manual_seed(0)
    save_shard(shard_path(tmp_path / "gen", 0), torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,)), seed=0)
    extra = ("--generated", str(tmp_path / "gen"), "--generated-fraction", "0.75", "--ema", "0.9",
             "--label-smoothing", "0.1", "--sampling", "epochs", "--manifold-weight", "0", "--projection-weight", "0")
    train_robust.main(args(parts, tmp_path / "m", *extra))
    meta = read_config(tmp_path / "m")["metadata"]
    assert meta["config"]["generated_fraction"] == 0.75 and meta["config"]["ema"] == 0.9
    saved = load_model(tmp_path / "m")
    tensors = load_file(str(tmp_path / "m.state.safetensors"))
    ema_weights = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    last = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    assert ema_weights and all(torch.equal(saved.state_dict()[k], v) for k, v in ema_weights.items())
    assert any(not torch.equal(ema_weights[k], last[k]) for k in ema_weights)  # the EMA, not the last iterate
    train_robust.main(args(parts, tmp_path / "m", *extra, "--resume", "true", "--iterations", "6"))
    assert read_config(tmp_path / "m")["metadata"]["iterations_done"] == 6
    with pytest.raises(ValueError, match="decay"):
        train_robust.main(args(parts, tmp_path / "bad", "--ema", "1.0"))


def test_the_adversarial_part_of_a_mixed_batch_holds_both_sources_in_proportion() -> None:
    from manifold_defense.training.mixing import stratified_order

    for n_real, n_gen, first in [(38, 90, 64), (64, 64, 64), (0, 10, 5), (10, 0, 3), (3, 7, 10), (5, 5, 0)]:
        order = stratified_order(n_real, n_gen, first)
        assert sorted(order.tolist()) == list(range(n_real + n_gen))  # a permutation of the batch
        real_first = int((order[:first] < n_real).sum())
        assert abs(real_first - first * n_real / max(1, n_real + n_gen)) <= 1
    with pytest.raises(ValueError, match="n_first"):
        stratified_order(2, 2, 5)


def test_square_on_the_learning_curve_and_the_convergence_verdict(parts, tmp_path: Path):
    """``--val-square-queries``: each curve point holds Square's accuracy and the per-image worst case,
    which is no higher than either attack alone; the JSON's verdict then reads the worst case."""
    out = tmp_path / "sq"
    train_robust.main(args(parts, out, "--manifold-weight", "0", "--projection-weight", "0", "--val-size", "32",
                           "--eval-every", "2", "--val-square-queries", "20"))
    meta = read_config(out)["metadata"]
    for p in meta["learning_curve"]:
        assert p["val_worst"] <= min(p["val_pgd10"], p["val_square"]) and p["val_square"] <= p["val_clean"]
    verdict = meta["convergence"]
    assert verdict["key"] == "val_worst" and verdict["to_iteration"] == 4
    assert verdict["gradient_free_gap"] == pytest.approx(meta["learning_curve"][-1]["val_pgd10"] - meta["learning_curve"][-1]["val_worst"], abs=1e-6)
    with pytest.raises(ValueError, match="val_square_queries"):
        robust.train(robust.RobustConfig(**{**robust.RobustConfig().quick(), "val_square_queries": 5, "eval_every": 2,
                                            "val_size": 8, "manifold_weight": 0, "projection_weight": 0}))


def test_the_curve_s_square_leaves_the_global_rng_alone():
    """torchattacks' Square reseeds torch's global RNG; the training script's wrapper must not let it."""
    square = train_robust.adversaries(robust.RobustConfig()).gradient_free
    assert square is not None
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    x_adv = square(net, x, y, 0.1, 5, 0)
    assert torch.equal(torch.rand(3), expected)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_held_out_check_repeats_the_curve_s_pgd10_and_adds_square(parts, tmp_path: Path):
    """eval.convergence_table --square-queries: on the run's own held-out images the final weights'
    PGD-10 accuracy is the curve's last point (same attack, same seed); the worst case is no higher
    than either attack."""
    from eval import convergence_table

    out = tmp_path / "h"
    train_robust.main(args(parts, out, "--manifold-weight", "0", "--projection-weight", "0", "--val-size", "32",
                           "--eval-every", "4"))
    check = convergence_table.held_out_check(str(out), 10)
    assert check["pgd10"] == pytest.approx(read_config(out)["metadata"]["learning_curve"][-1]["val_pgd10"])
    assert check["worst"] <= min(check["pgd10"], check["square"])
    table = convergence_table.convergence_table([str(out)], square_queries=10)
    assert table.splitlines()[0].endswith("| worst |") and table.count("\n") == 2
    no_val = tmp_path / "n"
    train_robust.main(args(parts, no_val, "--manifold-weight", "0", "--projection-weight", "0"))
    with pytest.raises(ValueError, match="held out no"):
        convergence_table.held_out_check(str(no_val), 10)
