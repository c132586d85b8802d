"""`RuntimePool`: many Runtime processes, one pooled client each, addressed by `runtime_id + worker_id`."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import msgspec

from worker_runtime_core import (
    ConfigError,
    Diagnostic,
    Event,
    EventPage,
    InputAck,
    OnBusy,
    RequestsPage,
    RespondAck,
    RunInfo,
    RuntimeSummary,
    TranscriptEntry,
    TranscriptPage,
    WorkerAck,
    WorkerDetail,
    WorkerRef,
    WorkersPage,
    WorkerStatus,
    WorkerSummary,
    is_valid_id,
)

from ._client import RuntimeClient
from ._config import DEFAULT_RETRY, DEFAULT_TIMEOUT, RetryPolicy
from ._errors import UnknownRuntimeError
from ._follow import RunFollower
from ._inbox import RequestInbox
from ._stream import EventStream

__all__ = ["RuntimeEntry", "RuntimePool"]


class RuntimeEntry(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where one runtime is and how to authenticate: at most one of `token`, `token_env`, `token_file`."""

    base_url: str
    token: str | None = None
    token_env: str | None = None
    token_file: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"RuntimeEntry(base_url={self.base_url!r}, token_env={self.token_env!r}, token_file={self.token_file!r})"

    def resolve_token(self, runtime_id: str) -> str | None:
        """The token from its source. Raises ConfigError when the source is missing or more than one is set."""
        sources = [s for s in (self.token, self.token_env, self.token_file) if s is not None]
        if len(sources) > 1:
            raise ConfigError(f"runtime {runtime_id!r}: give at most one of token, token_env, token_file")
        if self.token_env is not None:
            value = os.environ.get(self.token_env)
            if not value:
                raise ConfigError(f"runtime {runtime_id!r}: environment variable {self.token_env} is not set")
            return value
        if self.token_file is not None:
            try:
                return Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"runtime {runtime_id!r}: cannot read {self.token_file}: {exc.strerror}") from None
        return self.token


class _PoolFile(msgspec.Struct, forbid_unknown_fields=True):
    runtimes: dict[str, RuntimeEntry]


class RuntimePool:
    """A registry of runtimes for a Backend that drives many::

        pool = RuntimePool.from_file("runtimes.toml")   # {"runtimes": {"rt-eu-1": {"base_url": ..., "token_env": ...}}}
        async with pool:
            ack = await pool.send_input(WorkerRef(runtime_id="rt-eu-1", worker_id="w1"), "hi")

    Each runtime gets one `RuntimeClient` (made on first use) that checks it talks to that runtime id. Methods
    that name a Worker take a `WorkerRef`; an unknown runtime id raises `UnknownRuntimeError`.
    """

    def __init__(
        self,
        runtimes: Mapping[str, RuntimeEntry | Mapping[str, Any]],
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retries: RetryPolicy = DEFAULT_RETRY,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        self._entries: dict[str, RuntimeEntry] = {}
        for runtime_id, entry in runtimes.items():
            if not is_valid_id(runtime_id):
                raise ConfigError(f"invalid runtime id {runtime_id!r}")
            try:
                self._entries[runtime_id] = (
                    entry if isinstance(entry, RuntimeEntry) else msgspec.convert(entry, RuntimeEntry)
                )
            except msgspec.ValidationError as exc:
                raise ConfigError(f"runtime {runtime_id!r}: {exc}") from None
            self._entries[runtime_id].resolve_token(runtime_id)  # fail now, not at first use
        self._timeout = timeout
        self._retries = retries
        self._transports = dict(transports or {})
        self._clients: dict[str, RuntimeClient] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> RuntimePool:
        """Read ``{"runtimes": {...}}`` from a ``.toml`` or ``.json`` file.

        Raises:
            ConfigError: unreadable file, unknown key or wrong type (the message names the file).
        """
        file = Path(path)
        try:
            raw = file.read_bytes()
            data = tomllib.loads(raw.decode()) if file.suffix == ".toml" else json.loads(raw)
            parsed = msgspec.convert(data, _PoolFile)
        except (OSError, ValueError, msgspec.ValidationError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
        return cls(parsed.runtimes, **kwargs)

    def __repr__(self) -> str:
        return f"RuntimePool(runtimes={sorted(self._entries)!r})"

    @property
    def runtime_ids(self) -> list[str]:
        return sorted(self._entries)

    def client(self, runtime_id: str) -> RuntimeClient:
        """The pooled client of one runtime (made on first use)."""
        client = self._clients.get(runtime_id)
        if client is None:
            entry = self._entries.get(runtime_id)
            if entry is None:
                raise UnknownRuntimeError(f"no runtime {runtime_id!r} in this pool", details={"runtime_id": runtime_id})
            client = RuntimeClient(
                entry.base_url,
                token=entry.resolve_token(runtime_id),
                timeout=self._timeout,
                retries=self._retries,
                transport=self._transports.get(runtime_id),
                runtime_id=runtime_id,
            )
            self._clients[runtime_id] = client
        return client

    async def __aenter__(self) -> RuntimePool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    # --- runtime-wide --------------------------------------------------------------------------------------

    async def runtime(self, runtime_id: str) -> RuntimeSummary:
        return await self.client(runtime_id).runtime()

    async def diagnostics(self, runtime_id: str) -> list[Diagnostic]:
        return await self.client(runtime_id).diagnostics()

    async def list_workers(
        self, runtime_id: str, *, status: WorkerStatus | None = None, limit: int | None = None, after: str | None = None
    ) -> WorkersPage:
        return await self.client(runtime_id).list_workers(status=status, limit=limit, after=after)

    def iter_workers(
        self, runtime_id: str, *, status: WorkerStatus | None = None, page_size: int | None = None
    ) -> AsyncIterator[WorkerSummary]:
        return self.client(runtime_id).iter_workers(status=status, page_size=page_size)

    async def create_worker(self, runtime_id: str, /, **fields: Any) -> WorkerDetail:
        return await self.client(runtime_id).create_worker(**fields)

    async def events(self, runtime_id: str, after: int = 0, **kwargs: Any) -> EventPage:
        return await self.client(runtime_id).events(after, **kwargs)

    def watch_events(
        self, runtime_id: str, after: int = 0, *, worker_id: str | None = None, wait: float = 25.0
    ) -> AsyncIterator[Event]:
        return self.client(runtime_id).watch_events(after, worker_id=worker_id, wait=wait)

    def stream_events(
        self,
        runtime_id: str,
        after: int | None = None,
        *,
        worker_id: str | None = None,
        run_id: str | None = None,
        deltas: bool = False,
    ) -> EventStream:
        """That runtime's `RuntimeClient.stream_events`; the stream checks every reconnect is still that runtime."""
        return self.client(runtime_id).stream_events(after, worker_id=worker_id, run_id=run_id, deltas=deltas)

    async def list_requests(self, runtime_id: str, *, after: int = 0, limit: int | None = None) -> RequestsPage:
        return await self.client(runtime_id).list_requests(after=after, limit=limit)

    def open_requests(self, runtime_id: str, *, page_size: int | None = None) -> RequestInbox:
        """That runtime's `RuntimeClient.open_requests`: its approvals inbox."""
        return self.client(runtime_id).open_requests(page_size=page_size)

    # --- one Worker, by its WorkerRef ---------------------------------------------------------------------

    async def get_worker(self, ref: WorkerRef) -> WorkerDetail:
        return await self.client(ref.runtime_id).get_worker(ref.worker_id)

    async def send_input(
        self,
        ref: WorkerRef,
        content: str,
        *,
        kind: str = "user",
        input_id: str | None = None,
        on_busy: OnBusy = "reject",
    ) -> InputAck:
        return await self.client(ref.runtime_id).send_input(
            ref.worker_id, content, kind=kind, input_id=input_id, on_busy=on_busy
        )

    async def get_run(self, ref: WorkerRef, run_id: str) -> RunInfo:
        return await self.client(ref.runtime_id).get_run(ref.worker_id, run_id)

    async def wait_for_run(
        self,
        ref: WorkerRef,
        run_id: str,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        poll_wait: float = 25.0,
    ) -> RunInfo:
        return await self.client(ref.runtime_id).wait_for_run(ref.worker_id, run_id, timeout, poll_wait=poll_wait)

    def follow_run(self, ref: WorkerRef, run_id: str) -> RunFollower:
        return self.client(ref.runtime_id).follow_run(ref.worker_id, run_id)

    async def stop_worker(self, ref: WorkerRef, reason: str | None = None) -> WorkerAck:
        return await self.client(ref.runtime_id).stop_worker(ref.worker_id, reason)

    async def cancel_worker(self, ref: WorkerRef, *, run_id: str | None = None, reason: str | None = None) -> WorkerAck:
        return await self.client(ref.runtime_id).cancel_worker(ref.worker_id, run_id=run_id, reason=reason)

    async def delete_worker(self, ref: WorkerRef) -> WorkerAck:
        return await self.client(ref.runtime_id).delete_worker(ref.worker_id)

    async def respond(
        self,
        ref: WorkerRef,
        run_id: str,
        request_id: str,
        *,
        approved: bool | None = None,
        content: str | None = None,
        response_id: str | None = None,
    ) -> RespondAck:
        return await self.client(ref.runtime_id).respond(
            ref.worker_id, run_id, request_id, approved=approved, content=content, response_id=response_id
        )

    async def transcript(
        self, ref: WorkerRef, start: int = 0, limit: int | None = None, *, run_id: str | None = None
    ) -> TranscriptPage:
        return await self.client(ref.runtime_id).transcript(ref.worker_id, start, limit, run_id=run_id)

    def iter_transcript(
        self, ref: WorkerRef, start: int = 0, *, page_size: int | None = None, run_id: str | None = None
    ) -> AsyncIterator[TranscriptEntry]:
        return self.client(ref.runtime_id).iter_transcript(ref.worker_id, start, page_size=page_size, run_id=run_id)
