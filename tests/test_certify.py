"""The certification report: Cohen et al.'s CERTIFY per sigma, certified accuracy at radii, the
average certified radius, a cache that resumes, a denoiser in front of the classifier."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eval import certify
from manifold_defense.checkpoint import save_model
from manifold_defense.models import MLP


def test_certify_report_on_a_checkpoint_resumes_from_its_cache(tmp_path: Path) -> None:
    torch.manual_seed(0)
    save_model(MLP(hidden=16, depth=1), tmp_path / "clf")
    common = ["--classifier", str(tmp_path / "clf"), "--sigma", "0.25,0.5", "--quick", "--images-per-batch", "4",
              "--cache", str(tmp_path / "cache")]
    first = certify.main([*common, "--out", str(tmp_path / "a")])
    assert first is not None and (tmp_path / "a" / "certify.md").is_file()
    for sigma in ("0.25", "0.5"):
        res = first["results"][sigma]
        accuracies = list(res["certified_accuracy"].values())
        assert accuracies == sorted(accuracies, reverse=True)  # a larger radius certifies no more images
        assert len(res["per_example"]["radius"]) == 8 and 0.0 <= res["abstain_rate"] <= 1.0
        assert res["average_certified_radius"] <= max(res["per_example"]["radius"]) + 1e-9
    assert first["n"] == 200 and first["n0"] == 10  # the report says which n it used
    second = certify.main([*common, "--out", str(tmp_path / "b")])  # every batch read back from the cache
    assert second is not None
    assert json.dumps(second["results"], sort_keys=True) == json.dumps(first["results"], sort_keys=True)


def test_a_denoiser_clips_the_noisy_input_into_the_pixel_range(tmp_path: Path) -> None:
    record = certify.main(["--classifier", "classifier", "--denoiser", "amortised", "--sigma", "1.0", "--quick",
                           "--num-images", "4", "--images-per-batch", "4", "--out", str(tmp_path)])
    assert record is not None and record["denoiser"] == "amortised"
    seen = []
    probe = certify.ClampInput(torch.nn.Identity(), (0.0, 1.0))
    seen.append(probe(torch.tensor([-2.0, 0.5, 3.0])))
    assert seen[0].tolist() == [0.0, 0.5, 1.0]
