"""``python -m eval.judged``: a randomised defense's candidates are attacked, stored, selected and
judged on independent draws; a rerun resumes from its cache with the same figures; folding and the
doubling check read earlier runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eval import judged


@pytest.mark.slow
def test_a_quick_judged_run_resumes_folds_and_records_its_doubling(tmp_path: Path) -> None:
    first = judged.main(["--quick", "--out", str(tmp_path / "a")])
    assert first["randomized"] and first["judge_draws"] >= 64 and first["candidates_per_image"] == 3
    assert 0 <= first["expected_one_shot"] <= 1 and 0 <= first["worst_of_10"] <= first["majority_of_10"] + 1e-9
    assert len(first["correct_of_draws"]) == 4 and all(0 <= k <= 64 for k in first["correct_of_draws"])
    deltas = np.load(tmp_path / "a" / "candidates.npz")["deltas"]
    assert deltas.shape == (2, 4, 1, 28, 28) and deltas.dtype == np.int8
    again = judged.main(["--quick", "--out", str(tmp_path / "a")])  # from the cache: same candidates, same draws
    assert again["correct_of_draws"] == first["correct_of_draws"] and again["chosen_candidate"] == first["chosen_candidate"]
    folded = judged.main(["--quick", "--fold", str(tmp_path / "a"), "--doubling-of", str(tmp_path / "a"),
                          "--out", str(tmp_path / "b")])
    assert folded["candidates_per_image"] == 5 and folded["folded"] == [str(tmp_path / "a")]
    assert set(folded["doubling"]) >= {"expected_one_shot_points", "majority_of_10_points", "converged"}
    assert json.loads((tmp_path / "b" / "judged.json").read_text())["n"] == 4
    # Folding a run's candidates alone (nothing attacked) chooses and judges them on the same draws.
    refold = judged.main(["--quick", "--runs", "0", "--fold", str(tmp_path / "a"), "--out", str(tmp_path / "c")])
    assert refold["candidates_per_image"] == 3 and refold["correct_of_draws"] == first["correct_of_draws"]
    with pytest.raises(ValueError, match="--runs 0"):
        judged.main(["--quick", "--runs", "0", "--out", str(tmp_path / "d")])


def test_judged_reports_print_as_a_table_with_their_doubling_check(tmp_path: Path) -> None:
    from eval.report.tables import ReportError, judged_markdown

    record = {"n": 100, "votes": 10, "interval": [0.5, 0.6], "clean_expected": 0.8, "expected_one_shot": 0.55,
              "majority_of_10": 0.52, "worst_of_10": 0.4, "candidates_per_image": 3, "judge_draws": 64,
              "doubling": {"expected_one_shot_points": -0.5, "majority_of_10_points": -1.0, "worst_of_10_points": 0.0,
                           "converged": True}}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "judged.json").write_text(json.dumps(record))
    table = judged_markdown([("DiffPure", tmp_path / "r")])
    assert "| DiffPure | 100 | 80.0% | 55.0% [50.0, 60.0] | 52.0% (of 10) | 40.0% (of 10) | 3 / 64 |" in table
    assert "converged" in table
    with pytest.raises(ReportError, match="no judged report"):
        judged_markdown([("missing", tmp_path / "nothing")])
