"""The certification report: Cohen et al.'s CERTIFY per sigma, certified accuracy at radii, the
average certified radius, a cache that resumes, a denoiser in front of the classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from eval import certify
from manifold_defense.models import MLP, save_model


def _tiny(tmp_path: Path, seed: int, sigma: str = "0.5", *extra: str) -> list[str]:
    """A tiny MLP saved under tmp_path and the --quick certify arguments for it (batches of 4 images)."""
    torch.manual_seed(seed)
    save_model(MLP(hidden=16, depth=1), tmp_path / "clf")
    return ["--classifier", str(tmp_path / "clf"), "--sigma", sigma, "--quick", "--images-per-batch", "4", *extra]


def test_certify_report_on_a_checkpoint_resumes_from_its_cache(tmp_path: Path) -> None:
    common = _tiny(tmp_path, 0, "0.25,0.5", "--cache", str(tmp_path / "cache"))
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


def test_the_report_attacks_the_smoothed_classifier_and_counts_soundness(tmp_path: Path) -> None:
    torch.manual_seed(1)
    save_model(MLP(hidden=16, depth=1), tmp_path / "clf")
    record = certify.main(["--classifier", str(tmp_path / "clf"), "--sigma", "0.5", "--quick", "--images-per-batch",
                           "4", "--attack-radii", "0.1,0.5", "--out", str(tmp_path / "r")])
    assert record is not None and record["attack"]["radii"] == [0.1, 0.5]
    res = record["results"]["0.5"]
    examples = res["per_example"]
    for r in ("0.1", "0.5"):
        sound = res["soundness"][r]
        certified_here = sum(1 for c, rad in zip(examples["correct"], examples["radius"]) if c and rad >= float(r))
        assert sound["tried"] == certified_here
        assert sound["held"] + sound["abstained"] + sound["changed"] == sound["tried"]
        assert sound["changed"] == 0  # an attack inside a certified radius contradicts no certificate
        assert len(examples["attacked"][r]) == 8 and 0.0 <= res["empirical_accuracy"][r] <= 1.0
    assert "SmoothAdv" in (tmp_path / "r" / "certify.md").read_text()


def test_the_diffusion_denoiser_matches_the_noise_level(tmp_path: Path) -> None:
    from manifold_defense.purify import OneShotDenoiser
    from manifold_defense.models import DDPM

    torch.manual_seed(0)
    save_model(DDPM(width=4, timesteps=200, max_t=150), tmp_path / "ddpm")
    save_model(MLP(hidden=16, depth=1), tmp_path / "clf")
    record = certify.main(["--classifier", str(tmp_path / "clf"), "--denoiser", "diffusion", "--ddpm",
                           str(tmp_path / "ddpm"), "--sigma", "0.1,0.25", "--quick", "--num-images", "4",
                           "--images-per-batch", "4", "--attack-radii", "0.25", "--out", str(tmp_path / "d")])
    assert record is not None and set(record["results"]) == {"0.1", "0.25"}
    base = certify.build_base(str(tmp_path / "clf"), "diffusion", certify.resolve_domain("fashion_mnist", None), 0.25,
                              str(tmp_path / "ddpm"))
    denoiser = base[0]
    assert isinstance(denoiser, OneShotDenoiser)
    ab = float(denoiser.ddpm.alpha_bar[denoiser.t])
    assert abs(((1 - ab) / ab) ** 0.5 - 0.5) < 0.02  # noise-to-signal of t = 2 sigma in the [-1, 1] scale
    import pytest

    with pytest.raises(ValueError, match="max_t"):
        certify.build_base(str(tmp_path / "clf"), "diffusion", certify.resolve_domain("fashion_mnist", None), 1.0,
                           str(tmp_path / "ddpm"))


def test_the_certification_table_puts_reports_side_by_side(tmp_path: Path) -> None:
    from eval import certify_table

    torch.manual_seed(2)
    save_model(MLP(hidden=16, depth=1), tmp_path / "clf")
    for sigma in ("0.25", "0.5"):
        certify.main(["--classifier", str(tmp_path / "clf"), "--sigma", sigma, "--quick", "--images-per-batch", "4",
                      "--attack-radii", "0.5", "--out", str(tmp_path / sigma)])
    text = certify_table.main(["--reports", f"{tmp_path / '0.25'},{tmp_path / '0.5'}", "--radii", "0.5,1",
                               "--radius", "0.5"])
    lines = [line for line in text.splitlines() if line.startswith("| ") and "sigma" not in line]
    assert len(lines) == 2 and all("(" in line for line in lines)  # certified (empirical) at r = 0.5
    records = [json.loads((tmp_path / s / "certify.json").read_text()) for s in ("0.25", "0.5")]
    label, sigma, acc = certify_table.best_at(records, 0.5)
    assert acc == max(r["results"][s]["certified_accuracy"]["0.5"] for r, s in zip(records, ("0.25", "0.5")))
    assert f"sigma {sigma}: {100 * acc:.1f}%" in text and "--first" not in text  # the same 8 images in both
    twice = certify_table.main(["--reports", f"{tmp_path / '0.5'},{tmp_path / '0.5'}", "--radii", "0.5",
                                "--radius", "0.5"])  # a tie is named, not broken by the labels' spelling
    assert len(certify_table.leaders_at([records[1], records[1]], 0.5)) == 2 and "Level with it:" in twice
    assert "Level with it" not in text or len(certify_table.leaders_at(records, 0.5)) == 2
    tried = sum(c["tried"] for r in records for res in r["results"].values() for c in res["soundness"].values())
    assert f"the attack was run on {tried} certified-correct" in text.splitlines()[-1]  # summed over every row


def test_first_cuts_every_report_to_the_same_images_and_recomputes_its_figures(tmp_path: Path) -> None:
    import pytest

    from eval import certify_table

    common = _tiny(tmp_path, 4, "0.5", "--attack-radii", "0.5")
    whole = certify.main([*common, "--num-images", "8", "--out", str(tmp_path / "whole")])
    half = certify.main([*common, "--num-images", "4", "--out", str(tmp_path / "half")])
    assert whole is not None and half is not None
    assert whole["results"]["0.5"]["per_example"]["truth"] == certify.resolve_domain("fashion_mnist", None).load(
        "test", limit=8)[1].tolist()
    unequal = certify_table.main(["--reports", f"{tmp_path / 'whole'},{tmp_path / 'half'}", "--radii", "0.5"])
    assert "The rows cover 4 to 8 images" in unequal and "McNemar" not in unequal
    assert "McNemar" in certify_table.main(["--reports", f"{tmp_path / 'whole'},{tmp_path / 'half'}", "--radii", "0.5",
                                            "--first", "4"])
    cut = certify_table.first_images(whole, 4)
    keys = ("certified_accuracy", "average_certified_radius", "abstain_rate", "empirical_accuracy", "soundness",
            "per_example")
    assert cut["num_images"] == 4
    assert {k: cut["results"]["0.5"][k] for k in keys} == {k: half["results"]["0.5"][k] for k in keys}
    same = certify_table.first_images(whole, 8)
    assert {k: same["results"]["0.5"][k] for k in keys} == {k: whole["results"]["0.5"][k] for k in keys}
    older = json.loads(json.dumps(whole))  # a report from before true classes were kept per example
    del older["results"]["0.5"]["per_example"]["truth"]
    with pytest.raises(ValueError, match="no true classes"):
        certify_table.first_images(older, 4)
    text = certify_table.main(["--reports", f"{tmp_path / 'whole'},{tmp_path / 'half'}", "--first", "4"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "sigma" not in line]
    assert len(rows) == 2 and rows[0].split("|")[3:-2] == rows[1].split("|")[3:-2]  # same images, same figures
    assert rows[0].endswith("| – |") and rows[1].endswith("| 0 / 0 (p = 1) |")  # paired with the first row
    with pytest.raises(ValueError, match="covers 4 images, fewer than 8"):
        certify_table.main(["--reports", str(tmp_path / "half"), "--first", "8"])
    text = certify_table.main(["--reports", f"{tmp_path / 'whole'},{tmp_path / 'half'}", "--first", "8"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "sigma" not in line]
    assert len(rows) == 1 and f"Left out, on fewer than 8 images: {tmp_path / 'half'}." in text


def test_extend_adds_images_with_the_results_of_one_run(tmp_path: Path) -> None:
    common = _tiny(tmp_path, 3, "0.25,0.5", "--attack-radii", "0.5")
    whole = certify.main([*common, "--num-images", "8", "--out", str(tmp_path / "whole")])
    certify.main([*common, "--num-images", "4", "--out", str(tmp_path / "half")])
    extended = certify.main([*common, "--num-images", "8", "--extend", str(tmp_path / "half"),
                             "--out", str(tmp_path / "ext")])
    assert whole is not None and extended is not None and extended["extends"]["images"] == 4
    for sigma in ("0.25", "0.5"):
        a, b = whole["results"][sigma], extended["results"][sigma]
        assert a["per_example"] == b["per_example"] and a["certified_accuracy"] == b["certified_accuracy"]
    import pytest

    with pytest.raises(ValueError, match="alpha"):
        certify.main([*common, "--num-images", "8", "--alpha", "0.01", "--extend", str(tmp_path / "half"),
                      "--out", str(tmp_path / "bad")])


def test_start_certifies_a_selection_split_the_table_keeps_apart(tmp_path: Path) -> None:
    from eval import certify_table

    common = _tiny(tmp_path, 5, "0.5", "--attack-radii", "0.5")
    whole = certify.main([*common, "--num-images", "8", "--out", str(tmp_path / "whole")])
    later = certify.main([*common, "--num-images", "4", "--start", "4", "--out", str(tmp_path / "later")])
    assert whole is not None and later is not None and later["start"] == 4 and later["num_images"] == 4
    a, b = whole["results"]["0.5"]["per_example"], later["results"]["0.5"]["per_example"]
    # the same images with the same seeds: the second batch of the whole report, example for example
    assert {k: v[4:] for k, v in a.items() if isinstance(v, list)} == {k: v for k, v in b.items() if isinstance(v, list)}
    assert b["truth"] == certify.resolve_domain("fashion_mnist", None).load("test", limit=8)[1].tolist()[4:]
    assert "images 4 to 7 of the" in (tmp_path / "later" / "certify.md").read_text()
    both = f"{tmp_path / 'whole'},{tmp_path / 'later'}"
    text = certify_table.main(["--reports", both, "--first", "4", "--radii", "0.5"])
    assert f"Left out, on other test images than the first row: {tmp_path / 'later'}." in text
    side = certify_table.main(["--reports", both, "--radii", "0.5"])
    assert "(test images 4 to 7)" in side and "McNemar" not in side  # never paired with other images
    with pytest.raises(ValueError, match="starts at test image 4"):
        certify.main([*common, "--num-images", "8", "--extend", str(tmp_path / "later"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit) as bad:
        certify.main([*common, "--start", "3", "--out", str(tmp_path / "bad")])
    assert bad.value.code == 2


@pytest.mark.slow
def test_the_amortised_denoiser_takes_another_encoder(tmp_path: Path) -> None:
    from manifold_defense.training import encoder as encoder_training
    from manifold_defense.models import load_model

    enc = str(tmp_path / "enc")
    encoder_training.main(["--quick", "--iterations", "2", "--noise-sigma", "0.5", "--out", enc, "--device", "cpu"])
    domain = certify.resolve_domain("fashion_mnist", None)
    base = certify.build_base("classifier", "amortised", domain, 0.5, encoder=enc)
    used = dict(base.model.encoder.state_dict())  # type: ignore[union-attr]
    for name, tensor in load_model(enc).state_dict().items():
        assert torch.equal(used[name], tensor)
    record = certify.main(["--classifier", "classifier", "--denoiser", "amortised", "--encoder", enc, "--sigma", "0.5",
                           "--quick", "--num-images", "4", "--images-per-batch", "4", "--out", str(tmp_path / "r")])
    assert record is not None and record["encoder"] == enc and record["settings"]["encoder"] == enc
    assert f"(encoder {enc})" in (tmp_path / "r" / "certify.md").read_text()


def test_an_encoder_without_a_generative_denoiser_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        certify.main(["--encoder", "encoder_noise_0.5", "--denoiser", "diffusion", "--quick"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --encoder") and "diffusion" in err


@pytest.mark.slow
def test_compile_draws_the_same_counts_as_eager(tmp_path: Path) -> None:
    common = _tiny(tmp_path, 5, "0.5", "--num-images", "4", "--attack-radii", "0.5")
    eager = certify.main([*common, "--out", str(tmp_path / "eager")])
    compiled = certify.main([*common, "--compile", "--out", str(tmp_path / "compiled")])
    assert eager is not None and compiled is not None
    a, b = eager["results"]["0.5"]["per_example"], compiled["results"]["0.5"]["per_example"]
    assert a["label"] == b["label"] and a["attacked"] == b["attacked"]
    assert all(abs(r - s) < 1e-4 for r, s in zip(a["radius"], b["radius"]))
