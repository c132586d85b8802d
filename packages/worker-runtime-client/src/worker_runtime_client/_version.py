"""The version of worker-runtime-client."""

__version__ = "0.1.0"
