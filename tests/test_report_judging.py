"""The report judges a randomised defense on independent draws (issue #45): every worst-case row keeps
its candidates, the report chooses among them and judges on fresh draws, and extend, the cache and
eval.judged --fold keep the candidates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.report import ReportOptions, evaluate
from eval.report.judging import judge_rows
from eval.suite import SuiteConfig
from eval.suite.judge import dequantise
from manifold_defense import DefendedClassifier, ProjectionConfig

EPS = 0.1


@pytest.fixture
def stochastic(trained_mlp, pca_generator) -> DefendedClassifier:
    return DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, steps=3, lr=0.3, init_std=1.0)).eval()


def _suite(**kw) -> SuiteConfig:
    return SuiteConfig(attacks=("clean", "fgsm", "bpda_pgd"), pgd_steps=2, draws=5, batch_size=8, models=("defended",), **kw)


def _options(**kw) -> ReportOptions:
    return ReportOptions(**{"checks": False, "progress": False, "select_draws": 2, "judge_draws": 16, **kw})


def test_a_randomised_report_is_judged_on_its_stored_candidates(stochastic, fmnist_small, tmp_path: Path) -> None:
    _, _, x, y = fmnist_small
    x, y = x[:16], y[:16]
    report = evaluate(stochastic, x, y, suite=_suite(), eps=[EPS], options=_options())
    section = report.record["judged"][str(EPS)]
    assert section["candidates"][0] == "clean" and len(section["candidates"]) == 4  # clean, FGSM, BPDA-PGD, + clean row
    k = torch.tensor(section["correct_of_draws"])
    assert k.shape == (16,) and bool(((k >= 0) & (k <= 16)).all())
    assert all(0 <= c < len(section["candidates"]) for c in section["chosen_candidate"])
    assert section["worst_of_5"] <= section["expected_one_shot"] + 1e-9  # E[p^5] <= E[p]
    lo, hi = section["interval"]
    assert lo <= section["expected_one_shot"] <= hi
    kept = report.candidates()
    assert set(kept) == {f"{EPS!r} | {r.attack}" for r in report.rows[EPS] if r.candidates is not None} and len(kept) == 3
    for deltas in kept.values():
        assert deltas.dtype == torch.int8 and deltas.shape == x.shape
        assert float((dequantise(deltas, x, EPS, (0.0, 1.0)) - x).abs().max()) <= EPS + 1e-6
    # What is stored is what is judged: the same seeds on the same candidates give the same verdicts.
    again = judge_rows(stochastic, x, y, report.rows[EPS], eps=EPS, bounds=(0.0, 1.0), select_draws=2, judge_draws=16,
                       votes=5, seed=0, batch_size=256)
    assert again is not None and again["correct_of_draws"] == section["correct_of_draws"]
    report.write(tmp_path, figures=False)
    assert "Judged on independent draws" in (tmp_path / "robustness.md").read_text()
    with np.load(tmp_path / "candidates.npz") as data:
        assert sorted(data.files) == sorted(kept)


def test_a_deterministic_report_keeps_no_candidates(trained_mlp, pca_generator, fmnist_small, tmp_path: Path) -> None:
    _, _, x, y = fmnist_small
    fixed = DefendedClassifier(trained_mlp, pca_generator, ProjectionConfig(restarts=2, steps=3, lr=0.3, init_std=1.0,
                                                                            seed=0)).eval()
    report = evaluate(fixed, x[:8], y[:8], suite=_suite(), eps=[EPS], options=_options())
    assert "judged" not in report.record and report.candidates() == {}
    report.write(tmp_path, figures=False)
    assert not (tmp_path / "candidates.npz").exists()


def test_judge_draws_below_the_votes_are_refused(stochastic, fmnist_small) -> None:
    _, _, x, y = fmnist_small
    with pytest.raises(ValueError, match="judge_draws"):
        evaluate(stochastic, x[:8], y[:8], suite=_suite(), eps=[EPS], options=_options(judge_draws=3))


@pytest.mark.slow
def test_extend_and_the_cache_keep_the_candidates(stochastic, fmnist_small, tmp_path: Path) -> None:
    _, _, x, y = fmnist_small
    first = evaluate(stochastic, x[:8], y[:8], suite=_suite(), eps=[EPS], options=_options(cache=tmp_path / "cache"))
    first.write(tmp_path / "first", figures=False)
    longer = evaluate(stochastic, x[:16], y[:16], suite=_suite(), eps=[EPS],
                      options=_options(cache=tmp_path / "cache", extend=tmp_path / "first"))
    for name, deltas in first.candidates().items():
        assert torch.equal(longer.candidates()[name][:8], deltas)
    assert len(longer.record["judged"][str(EPS)]["correct_of_draws"]) == 16
    cached = evaluate(stochastic, x[:8], y[:8], suite=_suite(), eps=[EPS], options=_options(cache=tmp_path / "cache"))
    assert cached.record["cache"]["hits"] == 3 and cached.record["cache"]["misses"] == 0
    assert cached.record["judged"] == first.record["judged"]
    for name, deltas in first.candidates().items():
        assert torch.equal(cached.candidates()[name], deltas)


def test_fold_reads_a_reports_candidates(stochastic, fmnist_small, tmp_path: Path) -> None:
    from eval.judged import _load_folded
    from eval.report import describe_purifier

    _, _, x, y = fmnist_small
    report = evaluate(stochastic, x[:8], y[:8], suite=_suite(), eps=[EPS], options=_options())
    report.write(tmp_path / "r", figures=False)
    (folded,) = _load_folded([str(tmp_path / "r")], 8, EPS, describe_purifier(stochastic))
    assert folded.shape == (3, 8, 1, 28, 28) and folded.dtype == np.int8
    with pytest.raises(ValueError, match="no candidates at eps"):
        _load_folded([str(tmp_path / "r")], 8, 0.2, describe_purifier(stochastic))
    with pytest.raises(ValueError, match="covers 8 images"):
        _load_folded([str(tmp_path / "r")], 16, EPS, describe_purifier(stochastic))
    record = json.loads((tmp_path / "r" / "robustness.json").read_text())
    assert record["judged"][str(EPS)]["judge_draws"] == 16
    from eval.report.tables import ReportError, judged_markdown

    line = judged_markdown([("the toy", tmp_path / "r")]).splitlines()[-1]
    assert line.startswith("| the toy | 8 |") and "(of 5)" in line and "/ 16 |" in line
    with pytest.raises(ReportError, match="no judged report"):
        judged_markdown([("none", tmp_path / "missing")])
