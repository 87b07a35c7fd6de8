"""Dependencies point one way (docs/architecture.md): the core package never imports ``attacks`` or
``eval``; inside ``manifold_defense`` a room imports only rooms below it (siblings not at all); the
library of ``eval`` never imports its command lines, nor one command line another; no two files import each other; and no module
outside a domain's entry names a data set's constants. Imports are read from the source (``ast``),
lazy ones inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# manifold_defense's rooms, lowest first; rooms of equal rank are siblings and may not import each other.
ROOM_RANK = {"utils": 0, "domains": 1, "models": 2, "projection": 3, "purify": 4, "inverse": 4, "certify": 4,
             "<front>": 5, "training": 6}
EVAL_LIBRARY = {"eval/__init__.py", "eval/suite", "eval/report"}  # files or folders


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imported_modules(path: Path) -> set[str]:
    """Absolute dotted names of every module ``path`` imports (``from P import name`` counts both P
    and P.name, so that ``from . import checks`` finds the module ``checks``)."""
    package = _module_of(path) if path.name == "__init__.py" else _module_of(path)[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # a submodule if there is one, else a name defined in ``module``
                found.add(f"{module}.{alias.name}" if _file_of(f"{module}.{alias.name}") else module)
    return found


def _file_of(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _project_files() -> list[Path]:
    return [p for folder in ("manifold_defense", "attacks", "eval") for p in (REPO / folder).rglob("*.py")]


GRAPH = {p: {f for m in _imported_modules(p) if (f := _file_of(m)) is not None and f != p} for p in _project_files()}


def _room(path: Path) -> str:
    parts = path.relative_to(REPO / "manifold_defense").parts
    return parts[0] if len(parts) > 1 else "<front>"


def test_core_never_imports_attacks_or_eval():
    offenders = {str(p.relative_to(REPO)): sorted({m.split(".")[0] for m in _imported_modules(p)} & {"attacks", "eval"})
                 for p in (REPO / "manifold_defense").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_attacks_never_import_eval():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "attacks").rglob("*.py")
                 if any(m.split(".")[0] == "eval" for m in _imported_modules(p))]
    assert offenders == []


def test_every_room_of_the_core_is_ranked():
    rooms = {_room(p) for p in (REPO / "manifold_defense").rglob("*.py")}
    assert rooms <= set(ROOM_RANK), sorted(rooms - set(ROOM_RANK))


def test_rooms_import_only_rooms_below_them():
    core = REPO / "manifold_defense"
    offenders = []
    for source, targets in GRAPH.items():
        if core not in source.parents:
            continue
        for target in targets:
            if core not in target.parents or _room(source) == _room(target):
                continue
            if ROOM_RANK[_room(target)] >= ROOM_RANK[_room(source)]:
                offenders.append(f"{source.relative_to(REPO)} -> {target.relative_to(REPO)}")
    assert offenders == []


def _is_library(path: Path) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == entry or rel.startswith(entry + "/") for entry in EVAL_LIBRARY)


def test_the_eval_library_never_imports_a_command_line():
    offenders = [f"{s.relative_to(REPO)} -> {t.relative_to(REPO)}" for s, targets in GRAPH.items() for t in targets
                 if s.parts[len(REPO.parts)] == "eval" and _is_library(s)
                 and t.parts[len(REPO.parts)] == "eval" and not _is_library(t)]
    assert offenders == []


def test_no_command_line_imports_another():
    """What two commands share belongs in the library (eval/suite, eval/report)."""
    offenders = [f"{s.relative_to(REPO)} -> {t.relative_to(REPO)}" for s, targets in GRAPH.items() for t in targets
                 if s.parent == REPO / "eval" and t.parent == REPO / "eval" and not _is_library(s) and not _is_library(t)]
    assert offenders == []


def test_every_eval_command_line_is_a_module_with_a_parser():
    """The naming rule: a plain module directly in eval/ (not the library) is a command line."""
    commands = [p for p in (REPO / "eval").glob("*.py") if not _is_library(p)]
    assert commands and all("def build_parser" in p.read_text() for p in commands), commands


def test_no_two_files_import_each_other():
    pairs = sorted({tuple(sorted((str(a.relative_to(REPO)), str(b.relative_to(REPO)))))
                    for a, targets in GRAPH.items() for b in targets if a in GRAPH.get(b, set())})
    assert pairs == []


@pytest.mark.parametrize("limit", [500])
def test_no_library_file_is_over_the_limit(limit: int):
    long = {str(p.relative_to(REPO)): n for folder in ("manifold_defense", "eval") for p in (REPO / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > limit}
    assert long == {}


def test_fashion_mnist_facts_live_only_in_its_domain_entry():
    """The data set's location and class names appear in manifold_defense/domains/registry.py and nowhere else."""
    needles = ("/usr/share/datasets/fashion-mnist", "Ankle boot")
    hits = [str(p.relative_to(REPO)) for folder in ("manifold_defense", "attacks", "eval")
            for p in (REPO / folder).rglob("*.py") if any(n in p.read_text() for n in needles)]
    assert hits == ["manifold_defense/domains/registry.py"]
