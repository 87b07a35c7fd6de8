"""Randomised defenses judged without selection bias (eval.suite.judge): estimates land on the known
accuracy, folding runs that cannot change the input does not lower them, and selection and
judgement never share draws."""

from __future__ import annotations

import math

import pytest
import torch

from eval.suite.judge import JUDGE, SELECT, correct_counts, draw_seed, select_and_judge


class KnownCoin(torch.nn.Module):
    """Right (class 0) with probability p(x) = the image's mean pixel, independently per call; it
    records every random number it draws."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(x.shape[0])
        self.seen += u.tolist()
        right = u < x.flatten(1).mean(1)
        return torch.stack([right.float(), (~right).float()], 1)


def _images(p: torch.Tensor) -> torch.Tensor:
    return p.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()


def test_the_estimates_land_on_the_known_accuracy() -> None:
    p = torch.linspace(0.05, 0.95, 400)
    y = torch.zeros(400, dtype=torch.long)
    j = select_and_judge(KnownCoin(), _images(p)[None], y, select_draws=1, judge_draws=64, seed=0)
    lo, hi = j.interval()
    assert lo <= float(p.mean()) <= hi and hi - lo < 0.06
    assert j.worst_of(10) == pytest.approx(float((p ** 10).mean()), abs=0.02)
    majority = float(sum(math.comb(10, m) * p ** m * (1 - p) ** (10 - m) for m in range(6, 11)).mean())
    assert j.majority_of(10) == pytest.approx(majority, abs=0.02)


def test_folding_runs_that_cannot_change_the_input_does_not_lower_the_estimate() -> None:
    p = torch.full((300,), 0.6)
    y = torch.zeros(300, dtype=torch.long)
    one = select_and_judge(KnownCoin(), _images(p)[None], y, select_draws=4, judge_draws=64, seed=1)
    ten = select_and_judge(KnownCoin(), _images(p)[None].expand(10, -1, -1, -1, -1), y, select_draws=4,
                           judge_draws=64, seed=1)
    for j in (one, ten):
        lo, hi = j.interval()
        assert lo <= 0.6 <= hi
    assert abs(ten.expected() - one.expected()) < 0.03  # worst-of-runs folding would fall to about 0.6 ** 10


def test_selection_prefers_the_candidate_the_defense_gets_wrong_most_often() -> None:
    y = torch.zeros(200, dtype=torch.long)
    weak, strong = _images(torch.full((200,), 0.9)), _images(torch.full((200,), 0.1))
    j = select_and_judge(KnownCoin(), torch.stack([weak, strong]), y, select_draws=8, judge_draws=64, seed=2)
    assert (j.chosen == 1).float().mean() > 0.95 and j.expected() < 0.2


def test_selection_and_judgement_never_share_draws_and_reruns_reproduce_them() -> None:
    x, y = _images(torch.full((50,), 0.5)), torch.zeros(50, dtype=torch.long)
    model = KnownCoin()
    select = correct_counts(model, x, y, draws=8, seed=3, purpose=SELECT)
    selected_draws, model.seen = set(model.seen), []
    judge = correct_counts(model, x, y, draws=64, seed=3, purpose=JUDGE)
    assert not selected_draws & set(model.seen)
    assert torch.equal(judge, correct_counts(KnownCoin(), x, y, draws=64, seed=3, purpose=JUDGE))
    assert select.shape == judge.shape and len({draw_seed(3, s, i) for s in (SELECT, JUDGE) for i in range(1000)}) == 2000
    state = torch.random.get_rng_state()
    correct_counts(model, x, y, draws=2, seed=3, purpose=JUDGE)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left as it was


def test_bad_arguments_are_refused() -> None:
    y = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="candidates"):
        select_and_judge(KnownCoin(), torch.rand(2, 4, 1, 4, 4), y, select_draws=1, judge_draws=4, seed=0)
    with pytest.raises(ValueError, match="draws"):
        select_and_judge(KnownCoin(), torch.rand(1, 3, 1, 4, 4), y, select_draws=0, judge_draws=4, seed=0)
    j = select_and_judge(KnownCoin(), torch.rand(1, 3, 1, 4, 4), y, select_draws=1, judge_draws=4, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        j.worst_of(5)
