"""manifold-defense: classify inputs after projecting them onto a generative model's range.

Three lines wrap a classifier:

    >>> from manifold_defense import DefendedClassifier, ProjectionConfig
    >>> defended = DefendedClassifier(classifier, generator, ProjectionConfig()).eval()   # doctest: +SKIP
    >>> logits = defended(images)                                                          # doctest: +SKIP
"""

from .checkpoint import CheckpointError, load_model, save_model
from .defended import DefendedClassifier
from .projection import ProjectionConfig, ProjectionResult, project

__all__ = [
    "CheckpointError", "DefendedClassifier", "ProjectionConfig", "ProjectionResult",
    "load_model", "save_model", "project",
]
__version__ = "0.1.0"
