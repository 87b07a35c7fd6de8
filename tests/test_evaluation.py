"""The robustness report: its checks fire on a gradient-masked toy, and sharding gives identical totals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from attacks import LinfPGD, TorchAttack
from attacks.base import predict
from eval.report import checks
from eval.suite import Row
from manifold_defense import DefendedClassifier, ProjectionConfig, save_bundle
from manifold_defense.models import ModelA, WGANGenerator

REPO = Path(__file__).resolve().parents[1]


class Quantized(nn.Module):
    """A deliberately gradient-masked 'defense': classify the input rounded to 3 grey levels."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.round(x * 2) / 2)


def test_checks_fire_on_a_gradient_masked_toy(trained_mlp, fmnist_small):
    _, _, x, y = fmnist_small
    toy = Quantized(trained_mlp).eval()
    clean = predict(toy, x) == y
    assert float(clean.float().mean()) > 0.5
    pgd = LinfPGD(eps=0.2, steps=10, seed=0)(toy, x, y)  # the gradient is zero almost everywhere
    square = TorchAttack("Square", eps=0.2, n_queries=200, seed=0)(toy, x, y)
    rows = [Row("defended", "clean", "none", clean, key="clean"),
            Row("defended", "PGD (naive on defended)", "Linf 0.2", ~pgd.success, key="pgd"),
            Row("defended", "Square (gradient-free)", "Linf 0.2", ~square.success, key="square")]
    assert not checks.gradient_health("toy", toy, x, y).passed
    assert not checks.whitebox_beats_gradient_free(rows, "defended").passed
    large = LinfPGD(eps=0.5, steps=10, seed=0)(toy, x, y)
    assert not checks.falls_to_chance(1 - large.success_rate, 0.5, chance=0.1).passed
    assert not checks.more_effort_is_stable(0.6, 0.3).passed
    # ...and stay quiet on the honest, undefended classifier.
    assert checks.gradient_health("mlp", trained_mlp, x, y).passed
    honest = LinfPGD(eps=0.5, steps=10, seed=0)(trained_mlp, x, y)
    assert checks.falls_to_chance(1 - honest.success_rate, 0.5, chance=0.1).passed
    assert checks.more_effort_is_stable(0.31, 0.30).passed
    assert not checks.more_effort_is_stable(0.16, 0.14).passed  # exactly 2 points is not "less than 2"
    assert not checks.more_effort_is_stable(0.18, 0.16).passed


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = DefendedClassifier(ModelA(width=4).eval(), WGANGenerator(latent_dim=16, dim=4).eval(),
                           ProjectionConfig(restarts=2, steps=5, optimizer="adam", lr=0.05))
    return save_bundle(d, tmp_path_factory.mktemp("bundle") / "tiny")


ARGS = ["--num-images", "12", "--batch-size", "4", "--eps", "0.1", "--no-checks", "--attacks", "clean,fgsm,bpda_pgd,exact_apgd_dlr,latent",
        "--quick"]


@pytest.mark.slow
def test_report_writes_outputs(tiny_bundle, tmp_path: Path):
    from eval import robustness

    record = robustness.main(["--defense", str(tiny_bundle), "--out", str(tmp_path), *ARGS])
    assert record is not None
    for name in ("robustness.json", "robustness.md", "accuracy_vs_eps.png", "examples.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "robustness.json").read_text())
    assert saved["defense"]["projection"]["restarts"] == 2 and "torch" in saved["versions"]
    attacks = {r["attack"] for r in saved["results"]["0.1"]}
    assert "worst case (per example)" in attacks
    # The per-example record reproduces every reported accuracy.
    for r in saved["results"]["0.1"]:
        bits = saved["per_example"]["0.1"][f"{r['model']} | {r['attack']}"]
        assert len(bits) == r["n"] == 12 and bits.count("1") / len(bits) == pytest.approx(r["accuracy"])


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
@pytest.mark.slow
def test_torchrun_two_processes_give_identical_totals(tiny_bundle, tmp_path: Path, free_port: int):
    from eval import robustness

    single = robustness.main(["--defense", str(tiny_bundle), "--out", str(tmp_path / "one"), *ARGS])
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_PYTHON_REFRESH": "quiet"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "--master_port", str(free_port), "-m", "eval.robustness",
         "--defense", str(tiny_bundle), "--out", str(tmp_path / "two"), *ARGS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads((tmp_path / "two" / "robustness.json").read_text())
    assert sharded["world_size"] == 2
    key = lambda rows: [(r["model"], r["attack"], r["accuracy"], r["n"]) for r in rows]  # noqa: E731
    assert key(sharded["results"]["0.1"]) == key(single["results"]["0.1"])
    # A randomised defense's candidates are gathered in batch order: rank 0 judges the same examples.
    assert "judged" in single and sharded["judged"] == single["judged"]


def _fake_report(path: Path, n: int, bits: dict[str, str], seed: int = 0, per_example: bool = True) -> Path:
    record = {"command": "python -m eval.robustness --fake", "dataset": "fashion-mnist", "n": n, "seed": seed,
              "results": {}}
    if per_example:
        record["per_example"] = {"0.1": bits}
    path.mkdir(parents=True)
    (path / "robustness.json").write_text(json.dumps(record))
    return path


def test_reference_table_recomputes_accuracy_on_the_first_images(tmp_path: Path):
    from eval.reference_table import Column, ReportError, reference_table, summary_table

    a = _fake_report(tmp_path / "a", 8, {"undefended | clean": "11110000", "undefended | worst case (per example)": "10100000"})
    b = _fake_report(tmp_path / "b", 4, {"defended | clean": "1101", "defended | BPDA-PGD": "0101",
                                         "defended | worst case (per example)": "0101"})
    cols = [Column("A", a, "undefended"), Column("B", b, "defended")]
    table = reference_table(cols, first=4, eps=0.1)
    rows = {line.split(" | ")[0].strip("| *"): line for line in table.splitlines()[2:]}
    assert "| 100% [51, 100] | 75% [30, 95] |" in rows["clean"]   # A: 4/4 of its first four; B: 3/4 (Wilson 95%)
    assert "| – | 50% [" in rows["BPDA-PGD"]                     # A never ran BPDA-PGD
    assert rows["worst case (per example)"].count("**50% [15, 85]**") == 2
    with pytest.raises(ReportError, match="fewer than"):
        reference_table(cols, first=8, eps=0.1)
    with pytest.raises(ReportError, match="eps 0.2"):
        reference_table(cols, first=4, eps=0.2)
    old = _fake_report(tmp_path / "old", 8, {}, per_example=False)
    with pytest.raises(ReportError, match="no per-example"):
        reference_table([Column("old", old, "defended")], first=4, eps=0.1)
    other_seed = _fake_report(tmp_path / "s1", 8, {"defended | clean": "1" * 8}, seed=1)
    with pytest.raises(ReportError, match="seed"):
        reference_table([cols[0], Column("s1", other_seed, "defended")], first=4, eps=0.1)
    summary = summary_table(cols, first=4, eps=0.1).splitlines()
    assert summary[2].startswith("| A | 100% [51, 100] | **50% [15, 85]** | – | 0 |")  # deterministic: no worst-of-N
    assert summary[3].startswith("| B | 75% [30, 95] | **50% [15, 85]** | – | 1 |")  # BPDA-PGD counts, clean does not
    with pytest.raises(ValueError, match="TITLE=REPORT_DIR"):
        Column.parse("no-model-here")
    with pytest.raises(ValueError, match="undefended"):
        Column.parse("t=dir:other")


def test_families_agree_flags_a_family_far_above_the_strongest():
    n = 100
    exact = torch.zeros(n, dtype=torch.bool)
    exact[:15] = True
    bpda = torch.zeros(n, dtype=torch.bool)
    bpda[:60] = True
    rows = [Row("defended", "APGD-DLR, exact gradient", "Linf 0.1", exact, key="exact_apgd_dlr"),
            Row("defended", "BPDA-PGD", "Linf 0.1", bpda, key="bpda_pgd"),
            Row("defended", "PGD (naive on defended)", "Linf 0.1", torch.ones(n, dtype=torch.bool), key="pgd")]  # not adaptive
    check = checks.families_agree(rows, "defended")
    assert not check.passed and "bpda-identity 60.0%" in check.detail and "exact-gradient 15.0%" in check.detail
    agreeing = [rows[0], Row("defended", "BPDA-PGD", "Linf 0.1", exact.clone(), key="bpda_pgd")]
    assert checks.families_agree(agreeing, "defended").passed
    # A surrogate below the exact gradient means the exact-gradient attack is not converged.
    below = checks.families_agree([Row("defended", "APGD-DLR, exact gradient", "Linf 0.1", bpda, key="exact_apgd_dlr"),
                                   Row("defended", "BPDA-PGD", "Linf 0.1", exact, key="bpda_pgd")], "defended")
    assert not below.passed and "not the strongest" in below.detail


def test_randomized_defense_is_judged_one_shot_worst_of_n_and_by_majority(trained_mlp, pca_generator, fmnist_small):
    from eval.suite import SuiteConfig, format_table, is_randomized, run_suite, worst_case

    _, _, x, y = fmnist_small
    x, y = x[:16], y[:16]
    stochastic = DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, steps=3, lr=0.3,
                                                                                 init_std=1.0)).eval()
    assert is_randomized(stochastic)
    assert not is_randomized(DefendedClassifier(trained_mlp, pca_generator, stochastic.config.replace(seed=0)))
    cfg = SuiteConfig(attacks=("clean", "bpda_pgd", "exact_apgd_dlr"), pgd_steps=2, apgd_steps=2, eot_samples=2,
                      draws=5, batch_size=8, models=("defended",), eps=0.2)
    rows = run_suite(trained_mlp, stochastic, x, y, cfg, progress=False)
    worst = worst_case(rows, "defended")
    assert worst is not None
    for r in [*rows, worst]:
        assert r.correct_all is not None and r.correct_vote is not None
        assert bool((r.correct_all <= r.correct).all())        # all N right implies the first run right
        assert bool((r.correct_all <= r.correct_vote).all())   # ...and the majority right
    assert "worst-of-N" in format_table(rows) and "[" in format_table(rows)
    assert {r.model for r in rows} == {"defended"}


@pytest.mark.slow
def test_skip_effort_check_runs_the_other_checks(tiny_bundle, tmp_path: Path):
    from eval import robustness
    from eval.report.checks import EFFORT_CHECK

    record = robustness.main(["--defense", str(tiny_bundle), "--quick", "--attacks", "clean,fgsm,pgd,bpda_pgd",
                              "--num-images", "8", "--check-n", "8", "--skip-effort-check", "--out", str(tmp_path)])
    assert record is not None
    by_name = {c["name"]: c for c in record["checks"]}
    assert by_name[EFFORT_CHECK]["skipped"] and not by_name[EFFORT_CHECK]["passed"]
    assert sum(not c["skipped"] for c in record["checks"]) >= 4  # chance, families, gradients... still ran
    assert "SKIPPED" in (tmp_path / "robustness.md").read_text()


@pytest.mark.slow
def test_batch_cache_resumes_with_identical_results(tiny_bundle, tmp_path: Path):
    """A second run with --cache reads every (attack, batch) verdict back and reports the same
    per-example results; a changed budget is a different key (nothing stale is reused)."""
    from eval import robustness

    common = ["--defense", str(tiny_bundle), "--quick", "--no-checks", "--attacks", "clean,fgsm,pgd",
              "--num-images", "16", "--batch-size", "8", "--cache", str(tmp_path / "cache")]
    first = robustness.main([*common, "--out", str(tmp_path / "a")])
    files = sorted((tmp_path / "cache").glob("*.json"))
    assert len(files) == 3 * 2  # attacks x batches
    second = robustness.main([*common, "--out", str(tmp_path / "b")])
    assert first is not None and second is not None and first["per_example"] == second["per_example"]
    assert sorted((tmp_path / "cache").glob("*.json")) == files
    assert (first["cache"]["hits"], first["cache"]["misses"]) == (0, 6)
    assert (second["cache"]["hits"], second["cache"]["misses"]) == (6, 0)  # its seconds spent no attack
    robustness.main([*common, "--eps", "0.05", "--out", str(tmp_path / "c")])
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2 * 3 * 2


@pytest.mark.slow
def test_extend_reproduces_the_full_run_and_refuses_another_evaluation(tiny_bundle, tmp_path: Path):
    """--extend keeps a report's first images and attacks only the rest: the result is the one-go
    run's, image by image; a report of a different evaluation is refused with the setting named."""
    from eval import robustness

    common = ["--defense", str(tiny_bundle), "--quick", "--no-checks", "--attacks", "clean,fgsm,bpda_pgd,exact_apgd_dlr",
              "--batch-size", "4", "--eps", "0.1"]
    full = robustness.main([*common, "--num-images", "12", "--out", str(tmp_path / "full")])
    robustness.main([*common, "--num-images", "4", "--out", str(tmp_path / "first")])
    extended = robustness.main([*common, "--num-images", "12", "--extend", str(tmp_path / "first"),
                                "--out", str(tmp_path / "extended")])
    assert full is not None and extended is not None
    assert extended["per_example"] == full["per_example"]
    assert [r["accuracy"] for r in extended["results"]["0.1"]] == [r["accuracy"] for r in full["results"]["0.1"]]
    assert extended["extends"]["images"] == 4 and "--num-images 4" in extended["extends"]["command"]
    with pytest.raises(ValueError, match="suite.attacks"):
        robustness.main([*common, "--attacks", "clean,fgsm", "--num-images", "12", "--extend", str(tmp_path / "first"),
                         "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="already covers"):
        robustness.main([*common, "--num-images", "4", "--extend", str(tmp_path / "first"), "--out", str(tmp_path / "y")])
    robustness.main([*common, "--num-images", "6", "--out", str(tmp_path / "ragged")])
    with pytest.raises(ValueError, match="whole batches"):
        robustness.main([*common, "--num-images", "12", "--extend", str(tmp_path / "ragged"), "--out", str(tmp_path / "z")])


@pytest.mark.slow
def test_survivors_of_attacks_only_what_earlier_reports_left_unbroken(tiny_bundle, tmp_path: Path, capsys):
    """--survivors-of A: only the images A's worst case leaves correct under some protocol are
    attacked, every other one is 0 in every row; A+THIS folds it in; misuse is refused by name."""
    from eval import robustness
    from eval.reference_table import Column, ReportError, reference_table
    from eval.report import ReportOptions, evaluate, plan
    from eval.suite import SuiteConfig
    from manifold_defense import load
    from manifold_defense.domains import get_domain

    common = ["--defense", str(tiny_bundle), "--quick", "--models", "defended", "--batch-size", "4", "--eps", "0.1",
              "--num-images", "12", "--no-checks"]
    first = robustness.main([*common, "--attacks", "clean,bpda_pgd", "--out", str(tmp_path / "a")])
    assert first is not None
    worst = [bits for key, bits in first["per_example"]["0.1"].items() if key.startswith("defended | worst case")]
    alive = [any(b[i] == "1" for b in worst) for i in range(12)]
    assert 0 < sum(alive) < 12, "the tiny defense should leave some but not all images (change the fixture's seed)"
    survivors = [*common, "--attacks", "clean,exact_apgd_dlr", "--survivors-of", str(tmp_path / "a")]
    # --dry-run: the plan, and nothing attacked or written.
    capsys.readouterr()
    assert robustness.main([*survivors, "--dry-run", "2", "--out", str(tmp_path / "dry")]) is None
    told = capsys.readouterr().out
    assert f"would attack {sum(alive)} of the 12 images: the survivors among images 0..11" in told and not (tmp_path / "dry").exists()
    assert f"--batch-size {-(-sum(alive) // 2)} gives each process one batch" in told
    the_plan = plan(load(tiny_bundle), 12, suite=SuiteConfig(domain=get_domain("fashion_mnist"), batch_size=4,
                                                             models=("defended",)), eps=[0.1], world=2,
                    options=ReportOptions(checks=False, name=str(tiny_bundle), survivors_of=(str(tmp_path / "a"),)))
    assert the_plan.attacked == tuple(i for i, a in enumerate(alive) if a)
    assert sum(the_plan.per_process) == the_plan.batches == -(-sum(alive) // 4)
    then = robustness.main([*survivors, "--out", str(tmp_path / "s")])
    assert then is not None and then["survivors_of"]["attacked"] == sum(alive)
    # No examples.png for a survivors run (its sample need not be what it attacked).
    assert (tmp_path / "s" / "accuracy_vs_eps.png").is_file() and not (tmp_path / "s" / "examples.png").exists()
    for bits in then["per_example"]["0.1"].values():
        assert len(bits) == 12 and all(b == "0" for b, a in zip(bits, alive) if not a)
    assert f"Only {sum(alive)} of the 12 images" in (tmp_path / "s" / "robustness.md").read_text()
    table = reference_table([Column.parse(f"x={tmp_path / 'a'}+{tmp_path / 's'}:defended")], first=12, eps=0.1)
    assert "APGD-DLR, exact gradient [s]" in table
    with pytest.raises(ReportError, match="left unbroken"):
        reference_table([Column.parse(f"x={tmp_path / 's'}:defended")], first=12, eps=0.1)
    for extra, match in ((["--eps", "0.2"], "no per-example results at eps 0.2"),
                         (["--models", "undefended,defended"], "defended model"),
                         (["--check-n", "4"], "checks"), (["--num-images", "16"], "fewer than"),
                         (["--survivors-of", str(tmp_path / "nowhere")], "no robustness.json")):
        argv = [*common, "--attacks", "clean,fgsm", "--survivors-of", str(tmp_path / "a"), *extra, "--out", str(tmp_path / "x")]
        if match == "checks":
            argv.remove("--no-checks")
        with pytest.raises(ValueError, match=match):
            robustness.main(argv)
    with pytest.raises(ValueError, match="another defense"):
        robustness.main([*common, "--defense", "shipped", "--attacks", "clean", "--survivors-of", str(tmp_path / "a"),
                         "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="one eps"):
        evaluate(load(tiny_bundle), *get_domain("fashion_mnist").load("test", limit=4), eps=[0.1, 0.2],
                 suite=SuiteConfig(domain=get_domain("fashion_mnist"), attacks=("clean",), models=("defended",)),
                 options=ReportOptions(checks=False, progress=False, survivors_of=(str(tmp_path / "a"),)))


@pytest.mark.slow
def test_a_survivors_run_extends_with_its_sources_extended_and_its_own_batches(tiny_bundle, tmp_path: Path):
    """A survivors_of report extends to more images when each source report is the old one or extends
    it, with a batch size of its own (survivors form their own batches); its first images keep the old
    verdicts; a column may hold the extended sources in place of the ones a later report names."""
    from eval import robustness
    from eval.reference_table import Column, ReportError, reference_table
    from eval.report import extended_reports

    common = ["--defense", str(tiny_bundle), "--quick", "--models", "defended", "--eps", "0.1", "--no-checks"]
    base = [*common, "--batch-size", "4", "--attacks", "clean,fgsm"]
    robustness.main([*base, "--num-images", "12", "--out", str(tmp_path / "a12")])
    a24 = robustness.main([*base, "--num-images", "24", "--extend", str(tmp_path / "a12"), "--out", str(tmp_path / "a24")])
    assert a24 is not None
    assert extended_reports(tmp_path / "a24") == [str(tmp_path / "a24"), str(tmp_path / "a12")]
    assert extended_reports(tmp_path / "nowhere") == [str(tmp_path / "nowhere")]
    then = [*common, "--attacks", "clean,bpda_pgd"]
    s12 = robustness.main([*then, "--batch-size", "4", "--num-images", "12", "--survivors-of", str(tmp_path / "a12"),
                          "--out", str(tmp_path / "s12")])
    s24 = robustness.main([*then, "--batch-size", "3", "--num-images", "24", "--extend", str(tmp_path / "s12"),
                           "--survivors-of", str(tmp_path / "a24"), "--out", str(tmp_path / "s24")])
    assert s12 is not None and s24 is not None
    worst = [b for k, b in a24["per_example"]["0.1"].items() if k.startswith("defended | worst case")]
    alive = [any(b[i] == "1" for b in worst) for i in range(24)]
    assert s24["survivors_of"]["attacked"] == sum(alive[12:])  # only the new images' survivors were attacked
    for key, bits in s24["per_example"]["0.1"].items():
        assert bits[:12] == s12["per_example"]["0.1"][key]
        assert all(b == "0" for b, a in zip(bits, alive) if not a)
    with pytest.raises(ValueError, match="same survivors_of"):  # a source that is not a12 nor extends it
        robustness.main([*then, "--batch-size", "3", "--num-images", "24", "--extend", str(tmp_path / "s12"),
                         "--survivors-of", str(tmp_path / "s24"), "--out", str(tmp_path / "x")])
    # A report on the survivors of a12 + s12 folds into a column holding a24 + s24, which extend them.
    t12 = robustness.main([*common, "--attacks", "clean,exact_apgd_dlr", "--batch-size", "4", "--num-images", "12",
                          "--survivors-of", f"{tmp_path / 'a12'}+{tmp_path / 's12'}", "--out", str(tmp_path / "t12")])
    assert t12 is not None
    table = reference_table([Column.parse(f"x={tmp_path / 'a24'}+{tmp_path / 's24'}+{tmp_path / 't12'}:defended#12")],
                            first=24, eps=0.1)
    assert "[t12, first 12]" in table and "(first 12 test images," in table  # the header says what #12 covers
    # Without #12 the column keeps its 24 images: t12 lowers only its own first 12.
    from eval.report.tables import WORST, load_column
    both = load_column(Column.parse(f"x={tmp_path / 'a24'}+{tmp_path / 's24'}:defended"))["per_example"]["0.1"]
    folded = load_column(Column.parse(f"x={tmp_path / 'a24'}+{tmp_path / 's24'}+{tmp_path / 't12'}:defended"))
    assert folded["n"] == 24
    for key, bits in folded["per_example"]["0.1"].items():
        assert len(bits) == 24
        if key.split(" | ")[1] == WORST:
            assert bits[12:] == both[key][12:]
            assert bits[:12] == "".join(min(a, b) for a, b in zip(both[key][:12], t12["per_example"]["0.1"][key]))
    with pytest.raises(ReportError, match="left unbroken"):
        reference_table([Column.parse(f"x={tmp_path / 'a24'}+{tmp_path / 't12'}:defended#12")], first=24, eps=0.1)


def test_the_shipped_reports_print_the_readme_tables(capsys):
    """Every report the README's tables come from is in the repository, keeps per-example results and
    covers the images of its comparison; the worst case never exceeds any attack row of its column."""
    from eval import reference_table as rt
    from eval.report import tables

    assert rt.main(["--first", "100"]).count("worst case") >= 1
    assert rt.mcnemar_p(6, 16) == rt.mcnemar_p(16, 6) and rt.mcnemar_p(5, 5) == 1.0 and rt.mcnemar_p(0, 0) == 1.0
    assert rt.mcnemar_p(0, 10) < 0.01 < rt.mcnemar_p(3, 7)
    for first, specs in rt.COMPARISONS.items():
        text = rt.main(["--summary", "--first", str(first)])
        assert f"first {first} test images" in text
        columns = [rt.Column.parse(c) for c in specs]
        records = [tables.load_column(c) for c in columns]
        for column, cell in zip(specs, tables._cells(columns, records, first=first, eps=0.1)):
            counted = [acc for attack, acc in cell.items() if attack not in ("clean", tables.WORST) and tables._counts(attack)]
            assert counted and cell[tables.WORST] <= min(counted) + 1e-9, column

def test_a_summary_column_can_show_one_attack_instead_of_the_worst_case():
    from eval import reference_table as rt

    column = rt.Column.parse("paper=eval/reports/robustness_pgd_at_500:undefended@exact_apgd_ce")
    assert column.attack == "exact_apgd_ce" and column.model == "undefended"
    with pytest.raises(ValueError, match="unknown attack key"):
        rt.Column.parse("x=eval/reports/robustness_pgd_at_500:undefended@nosuch")
    table = rt.summary_table([rt.Column.parse("all=eval/reports/robustness_pgd_at_500:undefended"), column],
                             first=100, eps=0.1)
    worst_row, apgd_row = table.splitlines()[2:4]
    assert "| 1 |" in apgd_row  # one attack, not the suite
    worst = float(worst_row.split("**")[1].split("%")[0])
    apgd = float(apgd_row.split("**")[1].split("%")[0])
    assert apgd >= worst  # one attack never finds more than the per-example minimum over all of them


def test_a_column_can_take_the_worst_case_over_some_attacks_only(tmp_path: Path):
    """@A,B: the per-example minimum over those attacks (and the clean run), per protocol, with the
    rows of every report of the column; two reports then compare under the same families."""
    from eval.reference_table import Column, ReportError, summary_table

    a = _fake_report(tmp_path / "a", 4, {
        "defended | clean": "1110", "defended | BPDA-PGD": "1101", "defended | Square (gradient-free)": "0111",
        "defended | APGD-CE, exact gradient": "1011", "defended | worst case (per example)": "0000",
        "defended | clean | worst-of-N": "1100", "defended | BPDA-PGD | worst-of-N": "1101",
        "defended | Square (gradient-free) | worst-of-N": "0111", "defended | APGD-CE, exact gradient | worst-of-N": "1011",
        "defended | worst case (per example) | worst-of-N": "0000"})
    b = _fake_report(tmp_path / "b", 4, {"defended | clean": "1111", "defended | BPDA-PGD": "1011",
                                         "defended | worst case (per example)": "1011"})
    column = Column.parse(f"x={a}:defended@bpda_pgd,square")
    assert column.attacks == ("bpda_pgd", "square")
    row = summary_table([column], first=4, eps=0.1).splitlines()[2]
    # clean 1110 & BPDA 1101 & Square 0111 = 0100; worst-of-N: 1100 & 1101 & 0111 = 0100
    assert "**25% [" in row and "| 25% [" in row and "| 2 |" in row
    folded = summary_table([Column.parse(f"x={a}+{b}:defended@bpda_pgd,square")], first=4, eps=0.1).splitlines()[2]
    assert "**0% [" in folded  # b's BPDA-PGD row (1011) breaks image 1 too
    with pytest.raises(ReportError, match="no defended rows"):
        summary_table([Column.parse(f"x={b}:defended@bpda_pgd,square")], first=4, eps=0.1)
    with pytest.raises(ValueError, match="unknown attack key 'nosuch'"):
        Column.parse(f"x={a}:defended@bpda_pgd,nosuch")


def test_the_summary_gives_worst_of_n_and_peak_memory_of_a_randomised_report(tmp_path: Path):
    from eval.reference_table import Column, summary_table

    base = _fake_report(tmp_path / "base", 4, {"undefended | clean": "1111", "undefended | worst case (per example)": "1100"})
    rnd = _fake_report(tmp_path / "rnd", 4, {"defended | clean": "1111", "defended | worst case (per example)": "1110",
                                             "defended | worst case (per example) | worst-of-N": "1000"})
    record = json.loads((rnd / "robustness.json").read_text())
    (rnd / "robustness.json").write_text(json.dumps({**record, "peak_rss_mib": 1234.4}))
    lines = summary_table([Column("base", base, "undefended"), Column("rnd", rnd, "defended")], first=4, eps=0.1).splitlines()
    cells = [c.strip() for c in lines[3].split("|")]
    assert cells[3] == "**75% [30, 95]**" and cells[4] == "25% [5, 70]"  # one-shot 3/4, worst-of-N 1/4
    assert cells[7] == "1234"
    assert [c.strip() for c in lines[2].split("|")][4] == "–"  # deterministic: no worst-of-N column value


def test_a_column_folds_in_the_attacks_of_another_report_of_the_same_defense(tmp_path: Path):
    """REPORT+REPORT2: the second report's attack rows join the column and the worst case becomes the
    per-example minimum over both, on the images both cover; a report of another defense is refused."""
    from eval.reference_table import Column, ReportError, reference_table, summary_table

    def report(name: str, n: int, bits: dict[str, str], defense: str = "d") -> Path:
        path = _fake_report(tmp_path / name, n, bits)
        record = json.loads((path / "robustness.json").read_text())
        (path / "robustness.json").write_text(json.dumps({**record, "defense": {"spec": defense}}))
        return path

    suite = report("suite", 6, {"defended | clean": "111110", "defended | BPDA-PGD": "111100",
                                "defended | worst case (per example)": "111100"})
    strong = report("strong", 4, {"defended | clean": "1111", "defended | APGD-CE, exact gradient": "0110",
                                  "defended | worst case (per example)": "0110",
                                  "undefended | worst case (per example)": "0000"})
    column = Column.parse(f"both={suite}+{strong}:defended")
    assert column.reports == (suite, strong)
    rows = {line.split(" | ")[0].strip("| *"): line for line in reference_table([column], first=4, eps=0.1).splitlines()[2:]}
    assert "APGD-CE, exact gradient [strong]" in rows and "clean [strong]" not in " ".join(rows)
    assert "**50% [" in rows["worst case (per example)"]  # 1111 & 0110 on the first 4: 2 of 4
    alone = summary_table([Column("suite", suite, "defended")], first=4, eps=0.1).splitlines()[2]
    both = summary_table([Column("suite", suite, "defended"), column], first=4, eps=0.1).splitlines()[3]
    assert "**100% [" in alone and "**50% [" in both and "| 2 |" in both  # two attack rows count
    with pytest.raises(ReportError, match="covers 4 images"):
        reference_table([column], first=6, eps=0.1)
    other = report("other", 6, {"defended | worst case (per example)": "000000"}, defense="e")
    with pytest.raises(ReportError, match="defense"):
        reference_table([Column.parse(f"x={suite}+{other}:defended")], first=4, eps=0.1)
    with pytest.raises(ValueError, match="TITLE=REPORT_DIR"):
        Column.parse(f"x={suite}+:defended")


def test_a_column_folds_in_a_report_whose_defense_description_gained_a_key_at_its_default(tmp_path: Path):
    """A report written before the defense description had ``kind`` combines with a newer one of the
    same projection (as ``--survivors-of`` and ``--extend`` accept it), and not with another kind."""
    from eval.reference_table import Column, ReportError, reference_table

    def report(name: str, defense: dict[str, object]) -> Path:
        path = _fake_report(tmp_path / name, 4, {"defended | clean": "1111",
                                                 "defended | worst case (per example)": "1110"})
        record = json.loads((path / "robustness.json").read_text())
        (path / "robustness.json").write_text(json.dumps({**record, "defense": defense}))
        return path

    old = report("old", {"spec": "shipped", "projection": {"restarts": 10}})
    new = report("new", {"spec": "shipped", "kind": "projection", "projection": {"restarts": 10}})
    diffusion = report("diffusion", {"spec": "shipped", "kind": "diffusion", "projection": {"restarts": 10}})
    other = report("other", {"spec": "shipped", "kind": "projection", "projection": {"restarts": 1}})
    assert "worst case" in reference_table([Column.parse(f"x={old}+{new}:defended")], first=4, eps=0.1)
    with pytest.raises(ReportError, match="'kind'"):
        reference_table([Column.parse(f"x={old}+{diffusion}:defended")], first=4, eps=0.1)
    with pytest.raises(ReportError, match="projection.restarts"):
        reference_table([Column.parse(f"x={new}+{other}:defended")], first=4, eps=0.1)


def test_a_column_can_cover_fewer_images_than_the_table(tmp_path: Path):
    """``#N`` keeps one column to its first N images: its accuracies and intervals are over N, the
    summary pairs it with the first row on those N, and it still needs a report of N images."""
    from eval.reference_table import Column, ReportError, reference_table, summary_table

    base = _fake_report(tmp_path / "base", 8, {"undefended | clean": "11111111",
                                               "undefended | worst case (per example)": "11110000"})
    slow = _fake_report(tmp_path / "slow", 4, {"defended | clean": "1111",
                                               "defended | worst case (per example)": "0110"})
    column = Column.parse(f"slow (first 4)={slow}:defended#4")
    assert column.images == 4 and column.count(8) == 4 and column.count(2) == 2
    rows = summary_table([Column("base", base, "undefended"), column], first=8, eps=0.1).splitlines()
    assert "**50% [22, 78]**" in rows[2] and "**50% [15, 85]**" in rows[3]  # 4 of 8; 2 of 4 (Wilson on n = 4)
    assert "0 / 2 (p =" in rows[3]  # paired on the first 4: 1111 against 0110
    assert "**50% [" in reference_table([column], first=8, eps=0.1)
    with pytest.raises(ReportError, match="fewer than its #6"):
        reference_table([Column.parse(f"x={base}+{slow}:undefended#6")], first=8, eps=0.1)
    for bad in ("0", "x", ""):
        with pytest.raises(ValueError, match="IMAGES must be a positive integer"):
            Column.parse(f"x={slow}:defended#{bad}")
