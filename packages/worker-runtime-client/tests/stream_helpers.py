"""A scripted stand-in for a Runtime's event stream, in process (an `httpx.MockTransport` with streamed bodies).

It speaks the stream's frame format: ``id: <id>\\nevent: <kind>\\ndata: <event JSON plus "entry">\\n\\n`` for a
durable event, ``event: output_delta\\ndata: <delta JSON>\\n\\n`` (no ``id:``) for a delta, ``: keep-alive``
comments, and the cursor errors as JSON before any frame. Each connection is served by a `Script` the test
chooses: which frames, then whether the connection ends, breaks (mid-frame too) or stays open.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import msgspec
from client_helpers import T0, runtime_body, worker

RID = "rt-1"


def event(event_id: int | None, kind: str = "worker_created", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": event_id,
        "kind": kind,
        "worker_ref": {"runtime_id": fields.pop("runtime_id", RID), "worker_id": "w1"},
        "run_id": None,
        "created_at": T0,
        "data": {"profile": "default"},
        "entry": None,
    }
    body.update(fields)
    return body


def entry(sequence: int, content: str, run_id: str = "run-1", role: str = "assistant") -> dict[str, Any]:
    return {
        "sequence": sequence,
        "role": role,
        "content": content,
        "run_id": run_id,
        "created_at": T0,
        "event_id": 0,
    }


def appended(event_id: int, sequence: int, content: str, run_id: str = "run-1") -> dict[str, Any]:
    body = entry(sequence, content, run_id)
    body["event_id"] = event_id
    return event(
        event_id,
        "transcript_appended",
        run_id=run_id,
        data={"sequence": sequence, "role": "assistant"},
        entry=body,
    )


def run_info(run_id: str = "run-1", status: str = "completed", **fields: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": run_id,
        "status": status,
        "input_sequence": 0,
        "started_at": T0,
        "ended_at": None if status == "running" else T0,
        "error": None,
        "usage": None,
    }
    info.update(fields)
    return info


def run_ended(event_id: int, status: str = "completed", run_id: str = "run-1", **fields: Any) -> dict[str, Any]:
    return event(event_id, f"run_{status}", run_id=run_id, data={"run": run_info(run_id, status, **fields)})


def delta(sequence: int, offset: int, text: str, run_id: str = "run-1") -> dict[str, Any]:
    return {
        "kind": "output_delta",
        "worker_ref": {"runtime_id": RID, "worker_id": "w1"},
        "run_id": run_id,
        "sequence": sequence,
        "offset": offset,
        "text": text,
    }


def frame(body: dict[str, Any]) -> bytes:
    """The frame of an event or a delta, exactly as the server writes it."""
    data = json.dumps(body, ensure_ascii=False)
    if body["kind"] == "output_delta":
        return f"event: output_delta\ndata: {data}\n\n".encode()
    head = f"id: {body['id']}\n" if body.get("id") else ""  # no id line for one that was not logged
    return f"{head}event: {body['kind']}\ndata: {data}\n\n".encode()


@dataclass
class Script:
    """What one connection sends: `chunks` (bytes), then `end`: ``"close"`` (the server ends the stream),
    ``"break"`` (the connection breaks: a read error) or ``"open"`` (it stays open until the client leaves)."""

    chunks: list[bytes]
    end: str = "open"


@dataclass
class FakeStreamServer:
    """Serves ``GET /v1/events/stream`` from a durable log (`events`), one `Script` per connection.

    `plan(cursor, request)` returns the Script of a connection from the events above `cursor`; the default sends
    them all and stays open. With `event_cursor` it sends ``X-Event-Cursor``. Records each stream request
    (`requests`), answers ``GET /v1/runtime`` (`runtime_id`) and, when set, the other routes through `routes`.
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    plan: Callable[[int, httpx.Request], Script] | None = None
    runtime_id: str = RID
    oldest_id: int = 1
    routes: dict[str, Callable[[httpx.Request], httpx.Response]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    reads: list[httpx.Request] = field(default_factory=list)  # the other routes' requests
    error: Callable[[httpx.Request], httpx.Response | None] | None = None
    closed: int = 0
    event_cursor: bool = False  # send X-Event-Cursor (the newest id when a connection opens), as the server does

    @property
    def newest_id(self) -> int:
        return max((e["id"] for e in self.events if e.get("id") is not None), default=0)

    def after(self, cursor: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("id") is None or e["id"] > cursor]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/runtime":
            return httpx.Response(200, json=runtime_body(self.runtime_id))
        if path != "/v1/events/stream":
            self.reads.append(request)
            handler = self.routes.get(path)
            if handler is None:
                return _error(404, "not_found", f"no route {path}")
            return handler(request)
        self.requests.append(request)
        if self.error is not None:
            answer = self.error(request)
            if answer is not None:
                return answer
        header = request.headers.get("last-event-id")
        after = request.url.params.get("after")
        cursor = int(header) if header is not None else int(after) if after is not None else self.newest_id
        if cursor > self.newest_id:
            return _error(
                422, "invalid_request", "cursor above the newest id", {"field": "after", "newest_id": self.newest_id}
            )
        if cursor < self.oldest_id - 1:
            return _error(410, "cursor_expired", "cursor expired", {"oldest_id": self.oldest_id})
        headers = {"content-type": "text/event-stream"}
        if self.event_cursor:  # the newest id when the stream opened: before `plan` logs anything more
            headers["x-event-cursor"] = str(self.newest_id)
        if self.plan is not None:
            script = self.plan(cursor, request)
        else:
            script = Script([frame(e) for e in self.after(cursor)])
        return httpx.Response(200, headers=headers, stream=self._body(script))

    def _body(self, script: Script) -> _ScriptStream:
        return _ScriptStream(self, script)


class _ScriptStream(httpx.AsyncByteStream):
    """One connection's body: a plain async iterator (no generator left behind), closed by the client."""

    def __init__(self, server: FakeStreamServer, script: Script) -> None:
        self._server = server
        self._chunks = list(script.chunks)
        self._end = script.end
        self._closed = False

    def __aiter__(self) -> _ScriptStream:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise httpx.ReadError("this socket was already closed")  # what a closed connection answers
        if self._chunks:
            await anyio.lowlevel.checkpoint()
            return self._chunks.pop(0)
        if self._end == "break":
            raise httpx.ReadError("connection broken")
        if self._end == "open":
            await anyio.sleep_forever()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.closed += 1


def serve_run(
    server: FakeStreamServer, *, run: dict[str, Any], entries: list[dict[str, Any]], last_event_id: int
) -> None:
    """Add the routes `follow_run` reads first: the Worker (its `last_event_id`), run ``run-1``, the transcript."""

    def get_worker(request: httpx.Request) -> httpx.Response:
        detail = worker("w1", last_event_id=last_event_id)
        return httpx.Response(200, content=msgspec.json.encode({"worker": detail}))

    def get_run(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"run": run})

    def transcript(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("start", "0"))
        limit = int(request.url.params.get("limit", "2"))  # small pages: the paging is exercised
        run_id = request.url.params.get("run_id")
        matching = [e for e in entries if run_id is None or e["run_id"] == run_id]
        items = [e for e in matching if e["sequence"] >= start][:limit]
        more = bool(items) and items[-1]["sequence"] < matching[-1]["sequence"]
        page = {
            "worker_ref": {"runtime_id": "rt-1", "worker_id": "w1"},
            "start": start,
            "limit": limit,
            "total_items": len(matching),
            "items": items,
            "next_start": items[-1]["sequence"] + 1 if more else None,
        }
        return httpx.Response(200, json={"transcript": page})

    server.routes.update(
        {
            "/v1/workers/w1": get_worker,
            "/v1/workers/w1/runs/run-1": get_run,
            "/v1/workers/w1/transcript": transcript,
        }
    )


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "details": details or {}, "retryable": status == 503}}
    return httpx.Response(status, json=body)


class Sleeps:
    """An injected sleep: records each delay and returns at once (no real waiting)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await anyio.lowlevel.checkpoint()
