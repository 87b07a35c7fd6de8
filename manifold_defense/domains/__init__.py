"""Room 1, ``domains``: everything the toolkit knows about one kind of image, in one
:class:`Domain` (shape, pixel range, classes, attack budgets, where its data and shipped weights
live), the explicit registry of domains, the readers of IDX / npz / ImageFolder data, and the
shards of generated training data.

May import: ``utils``.

Example:
    >>> from manifold_defense.domains import get_domain
    >>> fm = get_domain("fashion_mnist")
    >>> fm.image_shape, fm.num_classes, fm.chance, fm.budgets.linf_eps
    ((1, 28, 28), 10, 0.1, 0.1)
"""

from .generated import GeneratedDataError, load_generated, save_shard, shard_complete, shard_path
from .idx import DataFileError, idx_dataset, load_idx_split, read_idx
from .registry import (DOMAINS, Budgets, DataSource, Domain, IdxSource, ImageFolderSource, NpzSource, domain_from_path,
                       get_domain, register_domain, resolve_domain, source_for_path, weights_path)

__all__ = ["Budgets", "DataSource", "Domain", "DOMAINS", "IdxSource", "ImageFolderSource", "NpzSource",
           "domain_from_path", "get_domain", "register_domain", "resolve_domain", "source_for_path", "weights_path",
           "DataFileError", "read_idx", "load_idx_split", "idx_dataset", "GeneratedDataError", "load_generated", "save_shard",
           "shard_complete", "shard_path"]
