"""worker-runtime-store-fs: durable, crash-safe persistence of a worker-runtime Runtime on the local disk."""

from .errors import StoreFormatError, StoreLockedError, StoreUnwritableError
from .layout import FORMAT_VERSION
from .store import FsRuntimeStore, FsyncPolicy

__version__ = "0.2.0"

__all__ = [
    "FORMAT_VERSION",
    "FsRuntimeStore",
    "FsyncPolicy",
    "StoreFormatError",
    "StoreLockedError",
    "StoreUnwritableError",
    "__version__",
]
