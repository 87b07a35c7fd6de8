"""The package version (one place; the root package and export bundles read it)."""

__version__ = "0.1.0"
