"""The convergence rule read off a learning curve (manifold_defense.training.convergence)."""

from __future__ import annotations

import pytest

from manifold_defense.training.convergence import convergence


def curve(values: list[float], key: str = "val_pgd10", every: int = 1000, **extra: list[float]) -> list[dict[str, float]]:
    return [{"iteration": every * (i + 1), key: v, **{k: vs[i] for k, vs in extra.items()}} for i, v in enumerate(values)]


def test_the_last_quarter_decides():
    flat_end = curve([0.5, 0.6, 0.7, 0.705, 0.709, 0.70, 0.701, 0.702])  # 8,000 its: the rule starts at 6,000
    verdict = convergence(flat_end)
    assert (verdict["from_iteration"], verdict["to_iteration"]) == (6000, 8000) and verdict["converged"]
    rising = curve([0.5, 0.6, 0.65, 0.68, 0.70, 0.72, 0.74, 0.76])
    assert not convergence(rising)["converged"] and convergence(rising)["moved"] == pytest.approx(0.04)
    falling = curve([0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.69, 0.68])  # robust overfitting is not convergence either
    assert not convergence(falling)["converged"]
    one_point = curve([0.7, 0.7, 0.7, 0.7, 0.7, 0.742, 0.7, 0.752], key="val_pgd10")
    one_point[5]["val_pgd10"], one_point[7]["val_pgd10"] = 0.7419999837875366, 0.7519999742507935  # as float32 stores them
    assert not convergence(one_point)["converged"]  # a move of exactly one point is not "less than one point"


def test_worst_case_is_read_when_present_and_the_gap_is_reported():
    masked = curve([0.77] * 8, val_worst=[0.60, 0.62, 0.64, 0.66, 0.68, 0.66, 0.64, 0.62], val_square=[0.6] * 8)
    verdict = convergence(masked)
    assert verdict["key"] == "val_worst" and not verdict["converged"]
    assert verdict["gradient_free_gap"] == pytest.approx(0.77 - 0.62) and verdict["masking_suspected"]
    honest = convergence(curve([0.77] * 8, val_worst=[0.76] * 8, val_square=[0.765] * 8))
    assert honest["converged"] and not honest["masking_suspected"]
    assert convergence(curve([0.77] * 8))["converged"]  # PGD-10 alone would have passed it


def test_a_single_point_is_never_converged_and_bad_curves_are_refused():
    assert not convergence(curve([0.7]))["converged"]
    with pytest.raises(ValueError, match="empty"):
        convergence([])
    with pytest.raises(ValueError, match="val_pgd10"):
        convergence([{"iteration": 1, "val_clean": 0.9}])
    with pytest.raises(ValueError, match="tail"):
        convergence(curve([0.7, 0.7]), tail=0.0)


def test_the_table_reads_every_shipped_run_and_refuses_a_checkpoint_without_a_curve(capsys):
    from eval import convergence_table

    table = convergence_table.main([])
    rows = table.splitlines()[2:]
    assert len(rows) == len(convergence_table.RUNS)
    for run, row in zip(convergence_table.RUNS, rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        start, end, moved = (float(c.rstrip("%")) for c in cells[3:6])
        assert cells[0] == run and abs(end - start - moved) <= 0.11
        assert cells[6].startswith("converged") == (abs(moved) < 1.0 - 0.05) or abs(abs(moved) - 1.0) <= 0.05
    with pytest.raises(ValueError, match="learning curve"):
        convergence_table.main(["manifold_defense/weights/fashion_mnist/classifier"])
