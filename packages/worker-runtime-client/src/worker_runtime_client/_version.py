"""The version of worker-runtime-client."""

__version__ = "0.2.0"
