"""Dependencies point one way: the core package never imports ``attacks`` or ``eval``, and no
module outside a domain's entry names a data set's constants."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_never_imports_attacks_or_eval():
    offenders = {str(p.relative_to(REPO)): sorted(_imports(p) & {"attacks", "eval"})
                 for p in (REPO / "manifold_defense").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_attacks_never_import_eval():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "attacks").rglob("*.py") if "eval" in _imports(p)]
    assert offenders == []


def test_fashion_mnist_facts_live_only_in_its_domain_entry():
    """The data set's location and class names appear in manifold_defense/domains.py and nowhere else."""
    needles = ("/usr/share/datasets/fashion-mnist", "Ankle boot")
    hits = [str(p.relative_to(REPO)) for folder in ("manifold_defense", "attacks", "eval")
            for p in (REPO / folder).rglob("*.py") if any(n in p.read_text() for n in needles)]
    assert hits == ["manifold_defense/domains.py"]
