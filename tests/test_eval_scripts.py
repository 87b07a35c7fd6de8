"""The evaluation and benchmark scripts run end to end at --quick sizes and write what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_surrogate_comparison_quick(tmp_path: Path):
    from eval import surrogates

    record = surrogates.main(["--quick", "--out", str(tmp_path)])
    keys = [r["key"] for r in record["rows"]]
    assert keys[0] == "exact" and {"bpda_identity", "bpda_amortised", "bpda_unroll10"} <= set(keys)
    for r in record["rows"]:
        assert len(r["per_example"]) == record["n"] and r["per_example"].count("1") == r["correct"]
        assert r["accuracy"] == r["correct"] / record["n"]
    assert "robust accuracy [95% CI]" in (tmp_path / "surrogates.md").read_text()


@pytest.mark.slow
def test_exact_gradient_benchmark_quick(tmp_path: Path):
    from benchmarks import exact_gradient

    out = tmp_path / "eg.json"
    record = exact_gradient.main(["--quick", "--segments", "none,10", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["device"] == "cpu" and len(saved["results"]) == 2
    for row in record["results"]:
        assert row["ok"], row
        assert row["seconds_per_step"] > 0 and row["grad_norm"] > 0
    # Same gradient with and without checkpointing (same seed, deterministic projection).
    a, b = (r["grad_norm"] for r in record["results"])
    assert abs(a - b) <= 1e-4 * a


@pytest.mark.slow
def test_demo_and_projection_quality_run_on_the_shipped_weights(capsys):
    """The scripts behind `make demo` and the README's projection-quality figure run end to end
    (small sizes; their numbers are checked by the reports, not here)."""
    from eval import demo, projection_quality

    demo.main(["--quick", "--n", "8", "--attacks", "clean,fgsm,exact_apgd_ce", "--apgd-steps", "2"])
    out = capsys.readouterr().out
    assert "Fashion-MNIST test images: first 8" in out and "| defended | APGD-CE, exact gradient |" in out
    record = projection_quality.main(["--n", "16", "--batch-size", "8"])
    assert 0 < record["mse_per_pixel"] < 0.05


def test_robustness_puts_a_checkpoint_path_behind_the_shipped_projection(tmp_path: Path):
    import pytest
    import torch

    from eval.report.defenses import load_defense
    from manifold_defense.models import save_model
    from manifold_defense.domains import get_domain
    from manifold_defense.models import build

    domain = get_domain("fashion_mnist")
    torch.manual_seed(3)
    mine = build("model_a", width=8)
    save_model(mine, tmp_path / "mine")
    defended = load_defense("shipped", str(tmp_path / "mine"), "default", domain)
    assert sum(p.numel() for p in defended.classifier.parameters()) == sum(p.numel() for p in mine.parameters())
    for a, b in zip(defended.classifier.state_dict().values(), mine.state_dict().values()):
        assert torch.equal(a, b)
    shipped = load_defense("shipped", "classifier", "default", domain)  # a shipped name still wins
    assert sum(p.numel() for p in shipped.classifier.parameters()) != sum(p.numel() for p in mine.parameters())
    assert load_defense("shipped", None, "default", domain).config.steps > 0  # the iterative projection
    named = load_defense("amortised_at", None, "default", domain)  # a shipped configuration by name
    assert named.config.steps == 0 and named.encoder is not None
    with pytest.raises(ValueError, match="brings its own"):
        load_defense(str(tmp_path / "some_bundle"), "classifier", "default", domain)
    replaced = load_defense("amortised_at", str(tmp_path / "mine"), "default", domain)
    assert sum(p.numel() for p in replaced.classifier.parameters()) == sum(p.numel() for p in mine.parameters())


def test_a_classifier_for_other_images_is_refused_behind_the_shipped_projection(tmp_path: Path):
    import pytest

    from eval.report.defenses import load_defense
    from manifold_defense.models import save_model
    from manifold_defense.domains import get_domain
    from manifold_defense.models import build

    import torch

    save_model(build("model_a", in_channels=3, width=8), tmp_path / "rgb")
    defended = load_defense("shipped", str(tmp_path / "rgb"), "default", get_domain("fashion_mnist"))
    with pytest.raises(ValueError, match="classifier and generator do not match"):  # the wrapper's own check
        defended(torch.rand(2, 1, 28, 28))


def test_the_break_the_undefended_check_is_skipped_for_adversarially_trained_classifiers():
    from eval.report import checks
    from eval.report.defenses import robust_training
    from manifold_defense.domains import get_domain

    domain = get_domain("fashion_mnist")
    assert robust_training("classifier", domain) is None
    assert "pgd_weight" in (robust_training("classifier_pgd_at", domain) or "")
    assert "amortised" in (robust_training("classifier_amortised_at", domain) or "")
    check = checks.breaks_undefended([], robust_training="pgd_weight 1")
    assert check.skipped and check.line().startswith("SKIPPED")


def test_autoattack_cross_check_runs_and_compares_with_a_report(tmp_path: Path):
    """AutoAttack (torchattacks) breaks the standard classifier and its verdicts line up with the
    saved report's worst case on the same images."""
    from eval import autoattack_check

    record = autoattack_check.main(["--defense", "shipped", "--model", "undefended", "--num-images", "4",
                                    "--batch-size", "4", "--report", "eval/reports/robustness_classifier",
                                    "--out", str(tmp_path)])
    assert len(record["per_example"]) == 4 and record["accuracy"] == record["per_example"].count("1") / 4
    assert record["accuracy"] <= 0.25  # a standard classifier at eps 0.1
    r = record["report"]
    assert r["minimum_of_both"] <= min(r["worst_case"], record["accuracy"])
    assert (tmp_path / "autoattack.json").is_file()


def test_the_report_index_says_when_verdicts_came_from_the_cache(tmp_path) -> None:
    import json

    from eval.report_index import reports_table

    for name, cache in (("resumed", {"dir": "c", "hits": 3, "misses": 1}), ("fresh", {"dir": "c", "hits": 0, "misses": 4})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "robustness.json").write_text(json.dumps(
            {"command": "python -m eval.robustness", "n": 10, "seconds": 5.0, "world_size": 1, "threads": 1,
             "cache": cache}))
    rows = {line.split("`")[1].rsplit("/", 1)[-1]: line for line in reports_table(tmp_path).splitlines()[2:]}
    assert "3 of 4 attack batches read from the cache" in rows["resumed"]
    assert "cache" not in rows["fresh"].split("|")[1]
