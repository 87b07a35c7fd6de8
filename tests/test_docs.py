"""Docs that cannot rot: every ``python -m MODULE ...`` command in README.md and docs/ names a module
whose command line accepts its flags (parsed only, nothing run); every Python block of README.md
runs on tiny models (or is marked ``<!-- not run: why -->`` on the line before it); the README's
headline table, docs/reproduce.md's tables and docs/results.md's certification tables are what their
commands print; README.md is at most
250 lines; relative links point at files that exist."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_STOP = {"|", ">", ">>", "&&", ";", "||", "2>&1", "&"}


def _fenced_blocks(text: str) -> list[tuple[str, str, str]]:
    """(info string, body, the line before the fence) of every fenced code block."""
    blocks = []
    for m in re.finditer(r"(?m)^(?P<before>[^\n]*)\n```(?P<info>[^\n]*)\n(?P<body>.*?)^```", text, re.S):
        blocks.append((m.group("info").strip(), m.group("body"), m.group("before")))
    return blocks


def _commands(text: str) -> list[str]:
    """Every ``python -m`` / ``torchrun ... -m`` command: shell lines of fenced blocks (backslash
    continuations joined, comments dropped) and inline code spans."""
    found = []
    for info, body, _ in _fenced_blocks(text):
        if info not in ("", "bash", "sh", "shell", "console"):
            continue
        joined = re.sub(r"\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            if re.match(r"^(python3? -m |torchrun .*-m )", line):
                found.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose.replace("\n", " ")):
        if re.match(r"^(python3? -m |torchrun .*-m )\S+", span.strip()):
            found.append(span.strip())
    return found


def _split(command: str) -> tuple[str, list[str]]:
    tokens = shlex.split(command)
    i = tokens.index("-m")
    args = []
    for token in tokens[i + 2:]:
        if token in SHELL_STOP:
            break
        if token != "...":  # "python -m eval.robustness ... --cache DIR": the flags shown elsewhere
            args.append(token)
    return tokens[i + 1], args


ALL_COMMANDS = sorted({(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in _commands(page.read_text())})


def test_the_pages_have_commands() -> None:
    pages = {p for p, _ in ALL_COMMANDS}
    assert "README.md" in pages and "docs/reproduce.md" in pages and len(ALL_COMMANDS) > 40


@pytest.mark.parametrize(("page", "command"), ALL_COMMANDS, ids=[f"{p}:{c[:70]}" for p, c in ALL_COMMANDS])
def test_documented_command_parses(page: str, command: str) -> None:
    module_name, args = _split(command)
    module = importlib.import_module(module_name)
    assert hasattr(module, "build_parser"), f"{page}: {module_name} has no build_parser() (not an entry point?)"
    try:
        module.build_parser().parse_args(args)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return
        pytest.fail(f"{page}: `{command}` is refused by {module_name}'s command line (exit {exc.code})")


def _readme_python_blocks() -> list[tuple[str, bool]]:
    text = (ROOT / "README.md").read_text()
    return [(body, "<!-- not run" in before) for info, body, before in _fenced_blocks(text) if info == "python"]


class _LinearGenerator(torch.nn.Module):
    """A user's generator at its smallest: sigmoid(z W + b) as a 1x28x28 image."""

    latent_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 784), torch.nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


@pytest.mark.slow
def test_readme_python_blocks_run_on_tiny_models(tiny_classifier, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import eval as eval_package
    from eval import ReportOptions, SuiteConfig
    from manifold_defense.domains import get_domain

    real_evaluate = eval_package.evaluate

    def quick_evaluate(*args, **kwargs):  # the README's call as written, at smoke-test budgets (like --quick)
        kwargs.setdefault("suite", SuiteConfig(domain=get_domain("fashion_mnist"), attacks=("clean", "fgsm", "exact_apgd_ce"),
                                               apgd_steps=2, batch_size=4))
        kwargs.setdefault("options", ReportOptions(check_n=4, effort_check=False, progress=False))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(eval_package, "evaluate", quick_evaluate)
    monkeypatch.chdir(tmp_path)  # the README writes results/...
    blocks = _readme_python_blocks()
    assert blocks, "the README has no Python example"
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    namespace = {"images": images, "labels": torch.tensor([0, 1, 2, 3]), "my_classifier": tiny_classifier,
                 "my_generator": _LinearGenerator().eval()}
    before = images.clone()
    for body, skipped in blocks:
        if not skipped:
            exec(compile(body, "README.md", "exec"), namespace)  # noqa: S102  (the README's own code)
    assert torch.equal(images, before), "a README example modified the user's images"
    assert namespace["logits"].shape == (4, 10)
    if "report" in namespace:
        assert (tmp_path / "results" / "mine" / "robustness.json").is_file()


def test_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; depth belongs in docs/"


def _table(text: str, after: str) -> str:
    lines = text[text.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def test_readme_headline_table_is_what_its_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    from eval import reference_table

    printed = reference_table.main(["--headline"])
    readme = (ROOT / "README.md").read_text()
    assert "python -m eval.reference_table --headline" in readme
    table = _table(printed, "| configuration")
    assert table in readme, "README's headline table differs from `python -m eval.reference_table --headline`"
    assert len(table.splitlines()) - 2 <= 8


def test_reproduce_page_lists_every_report_and_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from eval import report_index

    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "reproduce.md").read_text()
    for name, table in (("report_index", report_index.reports_table(Path("eval/reports"))),
                        ("weights_index", report_index.weights_table(Path("manifold_defense/weights/fashion_mnist")))):
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        assert page[page.index(begin) + len(begin):page.index(end)].strip() == table.strip(), (
            f"docs/reproduce.md's {name} table is stale: run `python -m eval.report_index --update docs/reproduce.md`")


@pytest.mark.parametrize(("block", "args"), [("certify_all", []), ("certify_first_500", ["--first", "500"])])
def test_results_certify_tables_are_what_their_command_prints(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str], block: str,
                                                              args: list[str]) -> None:
    from eval import certify_table

    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "results.md").read_text()
    begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    printed = certify_table.main(args)
    capsys.readouterr()
    assert page[page.index(begin) + len(begin):page.index(end)].strip() == printed.strip(), (
        f"docs/results.md's {block} table is stale: run `python -m eval.certify_table {' '.join(args)} "
        f"--update docs/results.md --block {block}`")


def test_training_convergence_table_is_what_its_command_prints(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from eval import convergence_table

    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "training.md").read_text()
    begin, end = "<!-- convergence:begin -->", "<!-- convergence:end -->"
    printed = convergence_table.main([])
    capsys.readouterr()
    assert page[page.index(begin) + len(begin):page.index(end)].strip() == printed.strip(), (
        "docs/training.md's convergence table is stale: run `python -m eval.convergence_table --update docs/training.md`")


def test_certify_table_update_rewrites_only_its_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from eval import certify_table

    monkeypatch.chdir(ROOT)
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- t:begin -->\nstale\n<!-- t:end -->\nend\n")
    reports = ["--reports", "eval/reports/certify_lenet_noise_0.5,eval/reports/certify_lenet_noise_1.0"]
    text = certify_table.main([*reports, "--update", str(page), "--block", "t"])
    once = page.read_text()
    assert once == f"intro\n<!-- t:begin -->\n{text.strip()}\n<!-- t:end -->\nend\n"
    certify_table.main([*reports, "--update", str(page), "--block", "t"])
    assert page.read_text() == once
    with pytest.raises(SystemExit) as exit_info:
        certify_table.main([*reports, "--update", str(page)])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: --update PAGE and --block NAME")
    with pytest.raises(ValueError, match="<!-- other:begin -->"):
        certify_table.main([*reports, "--update", str(page), "--block", "other"])
    assert page.read_text() == once


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_report_index_rewrites_only_its_blocks(tmp_path: Path) -> None:
    from eval import report_index

    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- report_index:begin -->\nstale\n<!-- report_index:end -->\nmiddle\n"
                    "<!-- weights_index:begin -->\n<!-- weights_index:end -->\nend\n")
    args = ["--reports", str(ROOT / "eval" / "reports"), "--weights", str(ROOT / "manifold_defense" / "weights" / "fashion_mnist")]
    report_index.main([*args, "--update", str(page)])
    once = page.read_text()
    assert "stale" not in once and once.startswith("intro\n") and "\nmiddle\n" in once and once.endswith("end\n")
    assert report_index.reports_table(ROOT / "eval" / "reports").strip() in once
    report_index.main([*args, "--update", str(page)])
    assert page.read_text() == once
    with pytest.raises(ValueError, match="weights_index:begin"):
        report_index.update_page("no markers", {"weights_index": "x"})
