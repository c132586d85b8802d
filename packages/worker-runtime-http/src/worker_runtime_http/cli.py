"""``worker-runtime-http``: ``serve`` runs a Runtime process on uvicorn; ``openapi`` prints the API document.

Exit codes of ``serve``: 0 after a graceful stop (SIGTERM or SIGINT), 2 for a configuration mistake, 1 when the
process cannot start (the port is taken, the store is locked by another process, belongs to another runtime id or
cannot be written), 128 + the signal number when a second signal cut the graceful stop short.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus

from worker_runtime_core import ConfigError, Runtime, RuntimeStore, WorkerRuntimeError

from ._logging import configure_logging
from ._version import __version__
from .app import create_app
from .auth import is_loopback_host
from .config import SETTINGS, LoadedConfig, ServerConfig, env_name, flag_name, load_config

__all__ = ["main"]

logger = logging.getLogger("worker_runtime_http")

PROG = "worker-runtime-http"
EXIT_CONFIG = 2
EXIT_START = 1
#: The uvicorn settings `serve` runs with (`tools/bench_http.py` serves both of its apps with them as well).
UVICORN_OPTIONS: dict[str, Any] = {
    "http": "httptools",  # the C parser; h11 spends most of a small request validating headers in Python
    "server_header": False,
    "proxy_headers": False,
}

_HELP: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    # setting: (help, metavar, extra argparse options)
    "host": ("address to listen on (default 127.0.0.1)", "HOST", {}),
    "port": ("port to listen on; 0 picks a free one and logs it (default 8787)", "PORT", {}),
    "runtime_id": ("this Runtime's id (default: generated once and kept by the fs store)", "ID", {}),
    "display_name": ("a label for UIs (default: the runtime id)", "NAME", {}),
    "store": ("where state lives (default fs)", None, {"choices": ["memory", "fs"]}),
    "store_path": ("directory of the fs store (default ./.worker-runtime)", "PATH", {}),
    "fsync": ("fs store durability (default always)", None, {"choices": ["always", "batch", "never"]}),
    "fsync_interval_ms": ("fsync interval of --fsync batch (default 10)", "MS", {}),
    "token": ("bearer token (visible in the process list: prefer --token-file or --token-env)", "TOKEN", {}),
    "token_env": ("name of an environment variable holding the bearer token", "VAR", {}),
    "token_file": ("file holding the bearer token (surrounding whitespace is ignored)", "FILE", {}),
    "insecure": (
        "allow listening on a non-loopback address without a token",
        None,
        {"action": argparse.BooleanOptionalAction},
    ),
    "allowed_hosts": ("comma-separated Host header values to accept (name or name:port)", "HOSTS", {}),
    "shutdown_grace_s": ("on SIGTERM/SIGINT, seconds active runs may finish (default 10)", "SECONDS", {}),
    "default_profile": ("profile of a runtime_default selector (default: default)", "NAME", {}),
    "log_level": ("default info", None, {"choices": ["critical", "error", "warning", "info", "debug"]}),
    "log_format": ("text lines or one JSON object per line (default text)", None, {"choices": ["text", "json"]}),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The worker-runtime Runtime as an HTTP process (a REST command API for a Backend)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run a Runtime process",
        description="Run a Runtime process. Every flag is also an environment variable (--store-path is "
        "WORKER_RUNTIME_STORE_PATH) and a top-level key of the --config TOML file (store_path); a flag beats "
        "the variable, which beats the file. [limits] and [profiles.NAME] come from the file only.",
        epilog="SIGTERM or SIGINT stops gracefully (new input answers 503, active runs get --shutdown-grace-s, "
        "the rest are interrupted, the store is flushed, exit 0); a second signal exits at once.",
    )
    serve.add_argument("--config", metavar="FILE.toml", help=f"TOML configuration file (env {env_name('config')})")
    for setting in SETTINGS:
        text, metavar, extra = _HELP[setting]
        options: dict[str, Any] = {"dest": setting, "default": None, "help": f"{text} [env {env_name(setting)}]"}
        if metavar is not None:
            options["metavar"] = metavar
        options.update(extra)
        serve.add_argument(flag_name(setting), **options)
    doc = commands.add_parser("openapi", help="print the OpenAPI 3.1 document of the HTTP API")
    doc.add_argument("--output", metavar="FILE", help="write it to FILE instead of stdout")
    doc.add_argument("--check", action="store_true", help="exit 1 if FILE differs from the document (with --output)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "openapi":
        return _openapi(args.output, check=args.check)
    return serve(vars(args))


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return code


def _openapi(output: str | None, *, check: bool) -> int:
    from .openapi import openapi_bytes

    document = openapi_bytes()
    if output is None:
        sys.stdout.buffer.write(document)
        return 0
    path = Path(output)
    if check:
        current = path.read_bytes() if path.exists() else b""
        if current != document:
            return _fail(f"{output} is out of date: regenerate it with `hatch run openapi`", 1)
        return 0
    path.write_bytes(document)
    return 0


def serve(flags: dict[str, Any], environ: dict[str, str] | None = None) -> int:
    """``worker-runtime-http serve`` with parsed flags (setting name -> value or None); returns the exit code."""
    try:
        loaded = load_config(flags, os.environ if environ is None else environ)
    except ConfigError as exc:
        return _fail(exc.message, EXIT_CONFIG)
    config = loaded.config
    public = not is_loopback_host(config.host)
    if public and loaded.token is None and not config.insecure:
        return _fail(
            f"refusing to listen on {config.host} (not a loopback address) without a token: give --token-file, "
            "--token-env or --token, or --insecure to allow it",
            EXIT_CONFIG,
        )
    configure_logging(config.log_level, config.log_format)
    if public:
        if loaded.token is None:
            logger.warning("listening on %s without a token (--insecure): anyone who reaches it drives it", config.host)
    if loaded.token_source == flag_name("token"):
        logger.warning("the token was given with --token, which other local users can see; prefer --token-file")
    try:
        _check_store_path(config, loaded.sources)
        runtime = _runtime(config, loaded.file)
    except ConfigError as exc:
        return _fail(exc.message, EXIT_CONFIG)
    try:
        sock = _listen(config.host, config.port)
    except OSError as exc:
        return _fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", EXIT_START)
    try:
        return anyio.run(_serve, runtime, sock, loaded, backend="asyncio")
    finally:
        sock.close()


def app_allowed_hosts(config: ServerConfig) -> list[str]:
    """The Host values `serve` gives `create_app`: `allowed_hosts` when set; else on a loopback bind none (the
    app accepts the bound address's loopback names), and on a public bind ``*``: its Host is not checked, the
    token guards it."""
    if config.allowed_hosts or is_loopback_host(config.host):
        return list(config.allowed_hosts)
    return ["*"]


def _check_store_path(config: ServerConfig, sources: dict[str, str]) -> None:
    """Refuse an fs `store_path` that cannot become a directory because it, or a parent, is a file.

    Raises:
        ConfigError: naming the path and where it came from.
    """
    if config.store != "fs":
        return
    path = Path(config.store_path)
    where = sources.get("store_path", "the default")
    try:
        for candidate in (path, *path.parents):
            if candidate.is_dir():
                return
            if candidate.exists() or candidate.is_symlink():
                what = "is a file" if candidate == path else f"is inside {candidate}, which is a file"
                raise ConfigError(f"{where}: store_path {path} {what}, not a directory")
    except OSError:  # cannot even look: the store reports it when it opens
        return


def _runtime(config: ServerConfig, file: str | None) -> Runtime:
    """The Runtime the settings describe.

    Raises:
        ConfigError: a bad profile or default profile (the message names the file).
    """
    store: RuntimeStore | None = None
    if config.store == "fs":
        from worker_runtime_store_fs import FsRuntimeStore

        store = FsRuntimeStore(
            config.store_path,
            fsync=config.fsync,
            fsync_interval_ms=config.fsync_interval_ms,
        )  # event_retention and idempotency_ttl_s reach it from the Runtime's limits
    try:
        return Runtime(
            runtime_id=config.runtime_id,
            display_name=config.display_name,
            store=store,
            limits=config.limits,
            profiles=config.profile_configs(),
            default_profile=config.default_profile,
        )
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc.message}" if file else exc.message) from None


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host` (IPv4 first when a name resolves to both) and `port` (0: a free one)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = next((i for i in infos if i[0] == socket.AF_INET), infos[0])
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling (the process stops the Runtime first, and uvicorn would
    re-raise the signal after its own shutdown) and with a `ready` event once it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


async def _serve(runtime: Runtime, sock: socket.socket, loaded: LoadedConfig) -> int:
    """Serve HTTP first (``/healthz`` is 200 and ``/readyz`` 503 while the store recovers), then start the Runtime;
    on the first signal close the Runtime while HTTP still answers, then stop HTTP."""
    config = loaded.config
    store_path = runtime.store_info.path
    stop = anyio.Event()  # a signal came, or the HTTP server ended on its own
    closed = anyio.Event()  # the Runtime is closed and its store flushed
    done = anyio.Event()  # the HTTP server has shut down
    failed: list[BaseException] = []
    start_error: list[WorkerRuntimeError] = []

    async def own_runtime(*, task_status: TaskStatus[None]) -> None:
        """Start the Runtime and, once told to stop, close it: in one task, where its task group lives."""
        try:
            await runtime.start()
        except WorkerRuntimeError as exc:  # the store is locked, belongs to another runtime id, cannot be written
            start_error.append(exc)
            closed.set()
            task_status.started()
            return
        task_status.started()
        try:
            await stop.wait()
            logger.info(
                "stopping: new input answers 503, active runs have %gs to finish (a second signal exits at once)",
                config.shutdown_grace_s,
            )
            await runtime.close(grace_s=config.shutdown_grace_s)
            logger.info("runtime %s stopped; store closed", runtime.runtime_id)
        finally:
            closed.set()

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not stop.is_set():
                    logger.info("%s received", signal.Signals(signum).name)
                    stop.set()
                    continue
                logger.warning(
                    "%s again: exiting now; runs still active are marked interrupted at the next start",
                    signal.Signals(signum).name,
                )
                for handler in logging.getLogger().handlers:
                    handler.flush()
                os._exit(128 + signum)

    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    app = create_app(
        runtime,
        token=loaded.token,
        allow_unauthenticated=loaded.token is None,  # `serve` has refused a public bind without one (--insecure)
        allowed_hosts=app_allowed_hosts(config),
        bind=(config.host if is_loopback_host(config.host) else host, port),
        shutdown_grace_s=config.shutdown_grace_s,
    )
    server = _Server(
        uvicorn.Config(
            app,
            lifespan="off",  # the Runtime is started and closed by own_runtime below
            log_config=None,
            access_log=False,  # the app writes its own access log (worker_runtime_http.access)
            timeout_graceful_shutdown=5,
            **UVICORN_OPTIONS,
        )
    )

    async def run_server() -> None:
        try:
            await server.serve(sockets=[sock])
        except (Exception, SystemExit) as exc:  # uvicorn exits on a failed start-up: stop, then report it
            failed.append(exc)
        finally:
            done.set()
            stop.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals)
        tg.start_soon(run_server)
        with anyio.CancelScope() as waiting:
            tg.start_soon(_cancel_when, stop, waiting)
            await server.ready.wait()
        if server.ready.is_set():
            logger.debug("accepting connections on %s; starting the Runtime", url)
            await tg.start(own_runtime)
            if not start_error and not stop.is_set():
                logger.info(
                    "listening on %s (runtime %s, store %s%s, %s)",
                    url,
                    runtime.runtime_id,
                    config.store,
                    f" at {store_path} (fsync {config.fsync})" if config.store == "fs" else "",
                    f"bearer token from {loaded.token_source}" if loaded.token else "no token",
                )
            await closed.wait()
        server.should_exit = True
        await done.wait()
        tg.cancel_scope.cancel()
    if start_error:
        return _fail(start_error[0].message, EXIT_START)
    if failed:
        logger.error("the HTTP server stopped on its own: %r", failed[0])
        return EXIT_START
    return 0


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
