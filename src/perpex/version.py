"""The package version, in a leaf module: the journal records it without importing the root."""

__version__ = "0.1.0"
