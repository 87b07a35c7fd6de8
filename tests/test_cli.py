"""Command lines answer like tools: a bad flag value is one line, ``error: argument --FLAG: ...``
naming the value and what is allowed, with exit status 2; a corrupt data or checkpoint file is the
project's named error with the path (a library call raises it; a script prints it as one line)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from manifold_defense.utils import ToolParser, integer, names, real, reals, run

ROOT = Path(__file__).resolve().parents[1]

# (entry point, bad flags, the flag the error must name, the bad value it must quote)
BAD_FLAGS = [
    ("eval.robustness", ["--eps", "-0.1"], "--eps", "-0.1"),
    ("eval.robustness", ["--eps", "0.1,abc"], "--eps", "abc"),
    ("eval.robustness", ["--apgd-steps", "-5"], "--apgd-steps", "-5"),
    ("eval.robustness", ["--attacks", "clean,nosuch"], "--attacks", "nosuch"),
    ("eval.robustness", ["--num-images", "0"], "--num-images", "0"),
    ("eval.demo", ["--n", "0"], "--n", "0"),
    ("eval.demo", ["--eps", "inf"], "--eps", "inf"),
    ("eval.reference_table", ["--first", "-3"], "--first", "-3"),
    ("eval.surrogates", ["--steps", "0"], "--steps", "0"),
    ("eval.projection_quality", ["--batch-size", "0"], "--batch-size", "0"),
    ("eval.compressed_sensing", ["--m", "10,abc"], "--m", "abc"),
    ("eval.compressed_sensing", ["--noise", "-1"], "--noise", "-1"),
    ("eval.autoattack_check", ["--eps", "-1"], "--eps", "-1"),
    ("eval.train_robust", ["--ae-frac", "1.5"], "--ae-frac", "1.5"),
    ("eval.certify", ["--alpha", "1.5"], "--alpha", "1.5"),
    ("eval.certify", ["--sigma", "0.5,-1"], "--sigma", "-1"),
    ("eval.train_robust", ["--lr-schedule", "sometimes"], "--lr-schedule", "sometimes"),
    ("eval.train_robust", ["--train-encoder", "maybe"], "--train-encoder", "maybe"),
    ("eval.report_index", ["--reports"], "--reports", ""),
    ("benchmarks.projection", ["--n", "-1"], "--n", "-1"),
    ("benchmarks.exact_gradient", ["--segments", "x"], "--segments", "x"),
    ("manifold_defense.export", ["--steps", "-1"], "--steps", "-1"),
    ("manifold_defense.training.wgan_gp", ["--lr", "0"], "--lr", "0"),
    ("manifold_defense.training.classifier", ["--epochs", "0"], "--epochs", "0"),
    ("manifold_defense.training.encoder", ["--iterations", "nan"], "--iterations", "nan"),
    ("manifold_defense.training.ddpm", ["--ema", "1.5"], "--ema", "1.5"),
    ("manifold_defense.training.denoiser_head", ["--noise-sigma", "0"], "--noise-sigma", "0"),
    ("manifold_defense.training.denoiser_head", ["--depth", "1"], "--depth", "1"),
    ("eval.robustness", ["--t-star", "0"], "--t-star", "0"),
    ("eval.robustness", ["--purifier", "magic"], "--purifier", "magic"),
    ("eval.robustness", ["--transfer-from", ","], "--transfer-from", ","),
    ("eval.certify", ["--attack-steps", "0"], "--attack-steps", "0"),
    ("benchmarks.diffusion_gradient", ["--segments", "0"], "--segments", "0"),
    ("benchmarks.certify_throughput", ["--denoisers", "nope"], "--denoisers", "nope"),
    ("eval.ambient_quality", ["--cs-n", "0"], "--cs-n", "0"),
    ("eval.certify_table", ["--radius", "-1"], "--radius", "-1"),
    ("eval.generate_data", ["--n", "0"], "--n", "0"),
    ("eval.judged", ["--judge-draws", "10"], "--judge-draws", "10"),
    ("eval.judged", ["--runs", "-1"], "--runs", "-1"),
    ("benchmarks.device_suite", ["--jobs", "nosuch"], "--jobs", "nosuch"),
    ("benchmarks.device_suite", ["--max-minutes", "0"], "--max-minutes", "0"),
    ("benchmarks.training_throughput", ["--iters", "0"], "--iters", "0"),
    ("eval.generate_data", ["--guidance", "-1"], "--guidance", "-1"),
    ("eval.train_robust", ["--val-square-queries", "-1"], "--val-square-queries", "-1"),
    ("eval.convergence_table", ["--tail", "0"], "--tail", "0"),
]


@pytest.mark.parametrize(("module_name", "argv", "flag", "value"), BAD_FLAGS,
                         ids=[f"{m} {' '.join(a)}" for m, a, _, _ in BAD_FLAGS])
def test_bad_flag_is_one_error_line_and_status_2(module_name: str, argv: list[str], flag: str, value: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit) as exc:
        module.build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: argument {flag}"), err
    assert value in err


def _entry_points() -> list[Path]:
    files = [*ROOT.glob("eval/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("manifold_defense/**/*.py")]
    return sorted(f for f in files if 'if __name__ == "__main__":' in f.read_text())


def test_every_entry_point_has_a_checked_parser_and_one_line_errors() -> None:
    entry_points = _entry_points()
    assert len(entry_points) >= 14
    tested = {m for m, *_ in BAD_FLAGS}
    for path in entry_points:
        module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        text = path.read_text()
        assert "def build_parser(" in text, f"{module_name}: no build_parser() (the docs test parses through it)"
        assert "run(main)" in text, f"{module_name}: __main__ must call manifold_defense.utils.cli.run(main)"
        assert module_name in tested, f"{module_name}: add a bad-flag case to BAD_FLAGS"


def test_argument_types_say_what_is_allowed() -> None:
    parser = ToolParser(prog="t")
    parser.add_argument("--k", type=integer(1, 9))
    parser.add_argument("--x", type=real(0.0, 1.0, low_open=True))
    parser.add_argument("--xs", type=reals(0.0))
    parser.add_argument("--names", type=names(["a", "b"]))
    args = parser.parse_args(["--k", "9", "--x", "1", "--xs", "0,0.5", "--names", "b,a"])
    assert (args.k, args.x, args.xs, args.names) == (9, 1.0, [0.0, 0.5], ("b", "a"))
    for argv in (["--k", "10"], ["--x", "0"], ["--xs", ","], ["--names", "c"], ["--x", "nan"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def _truncated_npz(tmp_path: Path) -> Path:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=np.random.default_rng(0).integers(0, 255, (64, 28, 28), dtype=np.uint8),
                        y=np.arange(64) % 10)
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return bad


def test_truncated_npz_is_a_named_error_with_the_path(tmp_path: Path) -> None:
    from manifold_defense.domains import DataFileError
    from manifold_defense.domains import domain_from_path

    bad = _truncated_npz(tmp_path)
    with pytest.raises(DataFileError, match="truncated.npz.*truncated or corrupt"):
        domain_from_path(bad, name="broken")


def test_truncated_checkpoint_is_a_named_error_with_the_path(tmp_path: Path, tiny_classifier) -> None:
    from manifold_defense.models import CheckpointError, load_model, save_model

    save_model(tiny_classifier, tmp_path / "clf")
    weights = tmp_path / "clf.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="clf"):
        load_model(tmp_path / "clf")


def test_script_prints_a_corrupt_file_as_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eval import robustness

    bad = _truncated_npz(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run(robustness.main, ["--data", str(bad), "--domain", "broken", "--quick", "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(bad) in err


def test_transfer_without_sources_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    from eval import robustness

    with pytest.raises(SystemExit) as exc:
        run(robustness.main, ["--attacks", "clean,transfer", "--quick"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "error: --attacks transfer needs --transfer-from (the models whose adversarials transfer)\n"


@pytest.mark.slow
def test_python_m_answers_a_bad_flag_without_a_traceback() -> None:
    env = {**os.environ, "GIT_PYTHON_REFRESH": "quiet"}
    env.pop("MANIFOLD_DEFENSE_TRACEBACK", None)
    done = subprocess.run([sys.executable, "-m", "eval.robustness", "--eps", "-0.1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: argument --eps: '-0.1' is out of range: it must be a number > 0 (in the list '-0.1')"]
