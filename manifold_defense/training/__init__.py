"""Training loops and their command-line scripts (``python -m manifold_defense.training.<name> --help``)."""
