"""worker-runtime-http: the worker-runtime Runtime as an HTTP process.

`create_app` serves a `worker_runtime_core.Runtime` under the HTTP wire contract (Starlette routing, msgspec
bodies); ``worker-runtime-http serve`` runs it on uvicorn with the FS store, a bearer token and graceful
shutdown. `build_openapi` gives the OpenAPI 3.1 document.
"""

from ._version import __version__
from .app import RuntimeApp, create_app
from .config import ServerConfig, load_config
from .errors import STATUS_BY_ERROR, status_for
from .openapi import build_openapi

__all__ = [
    # the application
    "RuntimeApp",
    "create_app",
    # the process's settings
    "ServerConfig",
    "load_config",
    # statuses and the API document
    "STATUS_BY_ERROR",
    "build_openapi",
    "status_for",
    # the package
    "__version__",
]
