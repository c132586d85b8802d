"""Helpers of the `openai` engine tests: respx routes for the provider, whichever HTTP client the SDK is built on.

openai 1.x and 2.x send through httpx, which respx mocks as it is. openai 3.x sends through httpx2, which respx does
not know: `HTTPX2_MOCKER` teaches it, by patching `httpx2.AsyncClient` to send through a transport that hands each
request to respx's routes as an `httpx.Request` and turns the route's answer (or transport error) back into httpx2's.
Use ``respx.mock(using=RESPX_USING, ...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

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
            content = await answer.aread()
            headers = [(k, v) for k, v in answer.headers.multi_items() if k.lower() != "content-encoding"]
            return httpx2.Response(answer.status_code, headers=headers, content=content, request=request)

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
