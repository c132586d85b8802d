"""The version of worker-runtime-core."""

__version__ = "0.2.0"
