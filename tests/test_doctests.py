"""Every docstring example in the three packages runs (the examples are part of the API's docs)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import attacks
import eval as eval_package
import manifold_defense

MODULES = sorted(info.name for pkg in (manifold_defense, attacks, eval_package)
                 for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"
