"""Crash-safe local-disk persistence for worker-runtime."""

__version__ = "0.0.1"

__all__ = ["__version__"]
