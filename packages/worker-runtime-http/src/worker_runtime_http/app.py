"""`create_app`: the ASGI application of a Runtime, and its lifespan.

One pure-ASGI callable does the per-request work in a single pass: the request id, the Host, Origin and token
checks (`auth.Guard`), routing over Starlette `Route` objects, the handler (`routes.py`), and the response with
its ``x-request-id``. Errors become envelopes through `errors.py`, the one place that knows statuses. There are
no Request or Response objects, no middleware chain and no task per request on this path.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.convertors import StringConvertor
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from worker_runtime_core import ConfigError, MethodNotAllowedError, NotFoundError, Runtime, WorkerRuntimeError

from . import routes
from ._request import ClientGone
from .auth import Guard
from .errors import Headers, error_reply, internal_error_reply
from .stream import EventStream

__all__ = ["RuntimeApp", "create_app"]

logger = logging.getLogger("worker_runtime_http")
access_logger = logging.getLogger("worker_runtime_http.access")

_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")
_TOKEN = re.compile(r"[\x21-\x7e]+")
_JSON = (b"content-type", b"application/json")


class _Routes:
    """Starlette routes in `routes.ENDPOINTS` order; a path that matches with another method is a 405.

    Routes are grouped by the number of ``/`` in their path (a ``{param}`` never holds one), so a request is
    matched against the few routes of its shape only, with each `Route`'s compiled path pattern. Every parameter
    is a plain string, so the pattern's groups are the path parameters as they are (`Route.matches` would build
    a child scope per candidate route).
    """

    __slots__ = ("_by_shape",)

    def __init__(self, endpoints: Iterable[routes.Endpoint]) -> None:
        self._by_shape: dict[int, list[tuple[re.Pattern[str], frozenset[str], routes.Handler]]] = {}
        for e in endpoints:
            route = Route(e.path, e.handler, methods=[e.method], name=e.operation_id)
            if any(not isinstance(c, StringConvertor) for c in route.param_convertors.values()):
                raise ValueError(f"{e.path}: only string path parameters are supported")
            shape = self._by_shape.setdefault(e.path.count("/"), [])
            shape.append((route.path_regex, frozenset(route.methods or ()), e.handler))

    def match(self, method: str, path: str) -> tuple[routes.Handler, dict[str, Any]]:
        allow: list[str] = []
        for pattern, methods, handler in self._by_shape.get(path.count("/"), ()):
            found = pattern.match(path)
            if found is None:
                continue
            if method in methods:
                return handler, found.groupdict()
            allow.extend(m for m in methods if m not in allow)
        if allow:
            allow.sort()
            raise MethodNotAllowedError(
                f"{method} is not allowed on {path[:200]} (allowed: {', '.join(allow)})",
                details={"allow": allow},
            )
        raise NotFoundError(f"no route {path[:200]!r}", details={"path": path[:200]})


class RuntimeApp:
    """The ASGI application: HTTP requests, and a lifespan that starts and closes the Runtime it was given.

    Build it with `create_app`.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        guard: Guard,
        shutdown_grace_s: float,
        openapi: Callable[[], bytes],
    ) -> None:
        self.runtime = runtime
        self.guard = guard
        self.shutdown_grace_s = shutdown_grace_s
        self._ctx = routes.Context(runtime, openapi)
        self._routes = _Routes(routes.ENDPOINTS)
        self._public = routes.PUBLIC_PATHS
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008, "reason": "no websockets here"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        logged = access_logger.isEnabledFor(logging.INFO)
        started = time.perf_counter() if logged else 0.0
        host = origin = authorization = request_id = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"authorization":
                authorization = value
            elif name == b"origin":
                origin = value
            elif name == b"x-request-id" and _REQUEST_ID.fullmatch(value):
                request_id = value
        if request_id is None:
            request_id = b"%s-%d" % (self._id_prefix, next(self._ids))
        headers: Headers | None = None
        events: EventStream | None = None
        try:
            path = _route_path(scope) if scope.get("root_path") else scope["path"]
            self.guard.check(host, origin, authorization, path in self._public)
            handler, params = self._routes.match(scope["method"], path)
            reply = await handler(self._ctx, scope, receive, params)
            if isinstance(reply, EventStream):  # its checks passed: it sends its own frames (outside this try)
                events = reply
            else:
                status, body = reply
        except WorkerRuntimeError as exc:
            status, body, headers = error_reply(exc)
        except ClientGone:
            if logged:
                _access_log(scope, 499, request_id, started)
            return
        except Exception as exc:
            status, body, headers = internal_error_reply(
                exc, method=scope["method"], path=scope["path"], request_id=request_id.decode()
            )
        if events is not None:
            await events(receive, send, [(b"x-request-id", request_id)])
            if logged:
                _access_log(scope, 200, request_id, started)
            return
        if headers is None:
            headers = [_JSON, (b"content-length", b"%d" % len(body)), (b"x-request-id", request_id)]
        else:
            headers.append((b"content-length", b"%d" % len(body)))
            headers.append((b"x-request-id", request_id))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        if logged:
            _access_log(scope, status, request_id, started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start the Runtime if nobody has, serve, then close it with the grace period if it was started here."""
        await receive()  # lifespan.startup
        started_here = False
        if self.runtime.status == "new":
            try:
                await self.runtime.start()
            except Exception as exc:
                logger.error("the Runtime failed to start: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            started_here = True
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        if started_here:
            await self.runtime.close(grace_s=self.shutdown_grace_s)
        await send({"type": "lifespan.shutdown.complete"})


def _route_path(scope: Scope) -> str:
    """The path below the mount point: `scope["path"]` without `root_path`, when the app is mounted under one."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("/", ""):
        return path[len(root) :] or "/"
    return path


def _access_log(scope: Scope, status: int, request_id: bytes, started: float) -> None:
    client = scope.get("client")
    query = scope.get("query_string", b"")
    target = scope["path"] + ("?" + query.decode("latin-1") if query else "")
    duration_ms = (time.perf_counter() - started) * 1000
    access_logger.info(
        '%s "%s %s" %d %.2fms %s',
        f"{client[0]}:{client[1]}" if client else "-",
        scope["method"],
        target,
        status,
        duration_ms,
        request_id.decode(),
        extra={
            "request_id": request_id.decode(),
            "method": scope["method"],
            "path": target,
            "status": status,
            "duration_ms": round(duration_ms, 3),
            "client": f"{client[0]}:{client[1]}" if client else None,
        },
    )


def create_app(
    runtime: Runtime,
    *,
    token: str | None = None,
    allow_unauthenticated: bool = False,
    allowed_hosts: Iterable[str] = (),
    bind: tuple[str, int] | None = None,
    shutdown_grace_s: float = 10.0,
) -> RuntimeApp:
    """The ASGI application serving `runtime` under the HTTP wire contract (docs/wire.md).

    ::

        runtime = Runtime(store=FsRuntimeStore("./.worker-runtime"))
        app = create_app(runtime, token=os.environ["RUNTIME_TOKEN"], bind=("127.0.0.1", 8787))

    The defaults are the safe choice: without a token it refuses to build unless told `allow_unauthenticated`,
    and without `allowed_hosts` or a loopback `bind` it answers only to the loopback names.

    Args:
        runtime: the Runtime to serve. When it is new, the app's ASGI lifespan starts it and closes it at
            shutdown; a Runtime started by the caller is left to the caller.
        token: the bearer token every route but ``/healthz`` and ``/readyz`` requires (visible ASCII, no spaces).
        allow_unauthenticated: serve without a token (`token` None): anyone who reaches the app drives it.
        allowed_hosts: Host header values to accept (``name`` for any port, ``name:port``; ``*`` for any Host).
            Without them (and without a loopback `bind`) only ``localhost``, ``127.0.0.1`` and ``[::1]`` are
            accepted, with any port.
        bind: the address the server listens on; on a loopback address the Host header must name it,
            ``localhost``, ``127.0.0.1`` or ``[::1]`` with that port (beside `allowed_hosts`).
        shutdown_grace_s: how long the lifespan lets active runs finish at shutdown before interrupting them.

    Raises:
        ConfigError: no token and not `allow_unauthenticated`, or a token that is empty or has spaces or
            non-ASCII characters (it could never be sent in a header).
    """
    from .openapi import openapi_bytes

    if token is None and not allow_unauthenticated:
        raise ConfigError(
            "create_app: no token given: pass token=... (every route but /healthz and /readyz will require it), "
            "or allow_unauthenticated=True to serve without one"
        )
    if token is not None and _TOKEN.fullmatch(token) is None:
        raise ConfigError("create_app: the token must be visible ASCII characters with no spaces (and not empty)")
    return RuntimeApp(
        runtime,
        guard=Guard(token=token, allowed_hosts=allowed_hosts, bind=bind),
        shutdown_grace_s=shutdown_grace_s,
        openapi=functools.partial(openapi_bytes, runtime.limits),  # the document states this process's limits
    )
