"""The typed async client a Backend uses to drive worker-runtime processes."""

__version__ = "0.0.1"

__all__ = ["__version__"]
