"""The generator contract's former address, kept so that code written against earlier releases still
imports: it lives in :mod:`manifold_defense.models` (``from manifold_defense.models import RangeAdapter``).
"""

from .models.range_adapter import GeneratorContract, RangeAdapter, check_generator

__all__ = ["GeneratorContract", "RangeAdapter", "check_generator"]
