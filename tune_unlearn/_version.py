"""The package version, in a module of its own: every module may import it without
importing the public API."""

__version__ = "0.2.0"
