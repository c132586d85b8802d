"""The worker-runtime Runtime as an HTTP process."""

__version__ = "0.0.1"

__all__ = ["__version__"]
