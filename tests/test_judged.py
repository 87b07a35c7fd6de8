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
