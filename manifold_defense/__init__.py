"""manifold-defense: classify inputs after projecting them onto a generative model's range.

Three lines wrap a classifier:

    >>> from manifold_defense import DefendedClassifier, ProjectionConfig
    >>> defended = DefendedClassifier(classifier, generator, ProjectionConfig()).eval()   # doctest: +SKIP
    >>> logits = defended(images)                                                          # doctest: +SKIP

The library is built in rooms, lowest first (docs/architecture.md): ``utils``, ``domains``,
``models``, ``projection``, then ``purify`` / ``inverse`` / ``certify``, then this front door
(``pretrained``: the shipped weights; ``export``: bundles that run without this repo), then
``training``. A room imports only rooms below it.

Any other purifier (a diffusion purifier, your own module) goes behind the same wrapper:

    >>> from manifold_defense import PurifiedClassifier, as_purifier
    >>> defended = PurifiedClassifier(classifier, as_purifier(my_module, randomized=False))  # doctest: +SKIP
"""

from .utils.version import __version__
from .models.checkpoint import CheckpointError, load_model, save_model
from .purify.defended import DefendedClassifier, PurifiedClassifier
from .export import export, export_onnx, load, save_bundle
from .projection import ProjectionConfig, ProjectionResult, project
from .purify.purifiers import ProjectionPurifier, Purifier, as_purifier

__all__ = [
    "CheckpointError", "DefendedClassifier", "ProjectionConfig", "ProjectionPurifier", "ProjectionResult",
    "PurifiedClassifier", "Purifier", "as_purifier",
    "__version__", "export", "export_onnx", "load", "load_model", "project", "save_bundle", "save_model",
]
