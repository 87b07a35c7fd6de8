"""manifold-defense: classify inputs after projecting them onto a generative model's range.

Three lines wrap a classifier:

    >>> from manifold_defense import DefendedClassifier, ProjectionConfig
    >>> defended = DefendedClassifier(classifier, generator, ProjectionConfig()).eval()   # doctest: +SKIP
    >>> logits = defended(images)                                                          # doctest: +SKIP

Any other purifier (a diffusion purifier, your own module) goes behind the same wrapper:

    >>> from manifold_defense import PurifiedClassifier, as_purifier
    >>> defended = PurifiedClassifier(classifier, as_purifier(my_module, randomized=False))  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .checkpoint import CheckpointError, load_model, save_model
from .defended import DefendedClassifier, PurifiedClassifier
from .export import export, export_onnx, load, save_bundle
from .projection import ProjectionConfig, ProjectionResult, project
from .purifiers import ProjectionPurifier, Purifier, as_purifier

__all__ = [
    "CheckpointError", "DefendedClassifier", "ProjectionConfig", "ProjectionPurifier", "ProjectionResult",
    "PurifiedClassifier", "Purifier", "as_purifier",
    "export", "export_onnx", "load", "load_model", "project", "save_bundle", "save_model",
]
