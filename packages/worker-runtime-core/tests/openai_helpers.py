"""Helpers of the `openai` engine tests: respx routes for the provider, whichever HTTP client the SDK is built on.

openai 1.x and 2.x send through httpx, which respx mocks as it is. openai 3.x sends through httpx2, which respx does
not know: `HTTPX2_MOCKER` teaches it, by patching `httpx2.AsyncClient` to send through a transport that hands each
request to respx's routes as an `httpx.Request` and turns the route's answer (or transport error) back into httpx2's,
its body streamed through piece by piece. Use ``respx.mock(using=RESPX_USING, ...)``.

The provider streams as OpenAI does: `streamed(...)` is a ``text/event-stream`` of ``chat.completion.chunk`` events
(`chunk`, then `usage_chunk` when the request asked for usage) ending ``data: [DONE]``; `StreamedReply` hands its
body out in pieces of a few bytes (multi-byte characters cut), may hold after a piece until released, and records
whether the client closed it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import openai
import respx
from respx.mocks import Mocker

from worker_runtime_core import ProfileConfig, Runtime

BASE_URL = "http://127.0.0.1:9/v1"  # never reached: every request is answered by respx (port 9 refuses anyway)
COMPLETIONS_URL = f"{BASE_URL}/chat/completions"


def _sdk_uses_httpx2() -> bool:
    try:
        import httpx2
    except ImportError:
        return False
    return issubclass(openai.DefaultAsyncHttpxClient, httpx2.AsyncClient)


if _sdk_uses_httpx2():
    import httpx2

    class _Bridge(httpx2.AsyncBaseTransport):
        def __init__(self, handler: Callable[[httpx.Request], Awaitable[httpx.Response]]) -> None:
            self._handler = handler

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            body = await request.aread()
            mirrored = httpx.Request(
                request.method, str(request.url), headers=request.headers.multi_items(), content=body
            )
            try:
                answer = await self._handler(mirrored)
            except httpx.TransportError as exc:  # e.g. a route's side_effect=httpx.ConnectError
                raise getattr(httpx2, type(exc).__name__)(str(exc), request=request) from exc
            skip = {"content-encoding", "content-length", "transfer-encoding"}
            headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() not in skip]
            return httpx2.Response(answer.status_code, headers=headers, stream=_Relay(answer), request=request)

    class _Relay(httpx2.AsyncByteStream):
        """An httpx answer's body as httpx2's, piece by piece: a pause, a transport error and a close pass through."""

        def __init__(self, answer: httpx.Response) -> None:
            self._answer = answer

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                body: bytes | None = self._answer.content  # respx has read a body given as bytes already
            except httpx.ResponseNotRead:
                body = None
            if body is not None:
                yield body
                return
            try:
                # the answer's own stream (no generator of httpx's between, which trio would find abandoned)
                async for piece in self._answer.stream:
                    yield piece
            except httpx.TransportError as exc:
                raise getattr(httpx2, type(exc).__name__)(str(exc)) from exc

        async def aclose(self) -> None:
            await self._answer.aclose()

    class HTTPX2Mocker(Mocker):
        """respx's mocker for httpx2: every `httpx2.AsyncClient` sends through respx's routes."""

        name = "httpx2"
        targets = ["httpx2._client.AsyncClient"]
        target_methods = ["_transport_for_url"]

        @classmethod
        def mock(cls, spec: Any) -> Any:
            def _transport_for_url(self: Any, *args: Any, **kwargs: Any) -> _Bridge:
                return _Bridge(cls.async_handler)

            return _transport_for_url

    RESPX_USING = HTTPX2Mocker.name
else:
    RESPX_USING = "httpx"


def mock_provider() -> respx.MockRouter:
    """A respx router for the fake provider at `BASE_URL`; every request must match a route."""
    return respx.mock(using=RESPX_USING, base_url=BASE_URL, assert_all_called=False)


def completion(
    content: str | None = "hello back", *, prompt_tokens: int | None = 11, completion_tokens: int = 7
) -> dict[str, Any]:
    """A Chat Completions response body."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
    }
    if prompt_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return body


def chunk(
    content: str | None = None, *, refusal: str | None = None, finish_reason: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` of the first choice."""
    delta: dict[str, Any] = {"role": "assistant"}
    if content is not None:
        delta["content"] = content
    if refusal is not None:
        delta["refusal"] = refusal
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        "usage": None,
    }


def usage_chunk(prompt_tokens: int = 11, completion_tokens: int = 7) -> dict[str, Any]:
    """The last chunk of a stream that asked for usage: no choices, the usage of the whole request."""
    total = prompt_tokens + completion_tokens
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "test-model",
            "choices": [], "usage": usage}  # fmt: skip


def sse(*events: dict[str, Any] | str, done: bool = True, eol: str = "\n") -> bytes:
    """A ``text/event-stream`` body: each event as ``data: <json>`` (a str as it is), then ``data: [DONE]``; lines
    end with `eol`."""
    data = [e if isinstance(e, str) else json.dumps(e, ensure_ascii=False) for e in events]
    if done:
        data.append("[DONE]")
    return "".join(f"data: {d}{eol}{eol}" for d in data).encode()


def reply_chunks(text: str = "hello back", *, usage: tuple[int, int] | None = (11, 7)) -> list[dict[str, Any]]:
    """The chunks of a streamed reply: the text two characters a chunk, a finish, and the usage chunk if given."""
    chunks = [chunk(text[i : i + 2]) for i in range(0, len(text), 2)]
    chunks.append(chunk(finish_reason="stop"))
    if usage is not None:
        chunks.append(usage_chunk(*usage))
    return chunks


def streamed(text: str = "hello back", *, usage: tuple[int, int] | None = (11, 7)) -> httpx.Response:
    """A streamed reply of `text` (usage in its last chunk unless None), as one body."""
    return httpx.Response(200, headers=SSE_HEADERS, content=sse(*reply_chunks(text, usage=usage)))


SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}


class StreamedReply(httpx.AsyncByteStream):
    """A reply body handed out `piece` bytes at a time (so multi-byte characters are cut between pieces): the
    pieces of `before`, then, with `hold`, a pause until `release` is set (`held` is set then), then `after`.

    `fail` is raised where it would pause (a connection that breaks); `cancelled` says the reader was cancelled
    while it paused, `closed` that the client closed the body, `exhausted` that it was read to its end.
    """

    def __init__(
        self, before: bytes, after: bytes = b"", *, piece: int = 3, hold: bool = False, fail: Exception | None = None
    ) -> None:
        self.before = [before[i : i + piece] for i in range(0, len(before), piece)]
        self.after = [after[i : i + piece] for i in range(0, len(after), piece)]
        self.hold = hold or fail is not None
        self.fail = fail
        self.held = anyio.Event()
        self.release = anyio.Event()
        self.closed = False
        self.cancelled = False
        self.exhausted = False

    def __aiter__(self) -> StreamedReply:
        # an iterator object, not an async generator: nothing for trio to find abandoned when the client stops early
        self._pieces = iter(self.before)
        self._paused = False
        return self

    async def __anext__(self) -> bytes:
        piece = next(self._pieces, None)
        if piece is None and self.hold and not self._paused:
            self._paused = True
            self.held.set()
            if self.fail is not None:
                raise self.fail
            try:
                await self.release.wait()
            except anyio.get_cancelled_exc_class():
                self.cancelled = True
                raise
            self._pieces = iter(self.after)
            piece = next(self._pieces, None)
        elif piece is None and not self._paused:
            self._paused = True
            self._pieces = iter(self.after)
            piece = next(self._pieces, None)
        if piece is None:
            self.exhausted = True
            raise StopAsyncIteration
        await anyio.lowlevel.checkpoint()
        return piece

    async def aclose(self) -> None:
        self.closed = True

    def response(self) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, stream=self)


def llm_profile(**options: Any) -> ProfileConfig:
    """An `openai` profile against the fake provider; no retries unless asked (retries back off for real)."""
    fields: dict[str, Any] = {"base_url": BASE_URL, "model": "test-model", "max_retries": 0}
    fields.update(options)
    return ProfileConfig("openai", **fields)


@asynccontextmanager
async def llm_runtime(**options: Any) -> AsyncIterator[Runtime]:
    """A Runtime whose ``llm`` profile is `llm_profile(**options)` (a ``timeout_s`` option is the profile's)."""
    async with Runtime(runtime_id="rt-llm", profiles={"llm": llm_profile(**options)}) as rt:
        yield rt


async def llm_worker(rt: Runtime, worker_id: str = "w1", **fields: Any) -> str:
    """Create a Worker on the ``llm`` profile; `fields` go to `create_worker` (an `intent`, say)."""
    await rt.create_worker(worker_id=worker_id, profile={"kind": "named", "name": "llm"}, **fields)
    return worker_id


def sent_json(route: respx.Route, call: int = -1) -> Any:
    """The JSON body of one request a route received."""
    import json

    return json.loads(route.calls[call].request.content)
