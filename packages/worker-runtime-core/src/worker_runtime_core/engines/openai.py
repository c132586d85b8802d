"""The `openai` engine: one streamed Chat Completions request per input, to any OpenAI-compatible endpoint.

It needs the extra ``worker-runtime-core[openai]`` (the official ``openai`` SDK). The SDK is imported only when a
profile naming this engine is built, so core without the extra imports and works; building such a profile without
the SDK raises `ConfigError` naming the extra to install.

Provider errors end the run ``failed`` with one of these codes (`PROVIDER_ERROR_CODES`)::

    provider_auth            401 or 403: the credentials were refused
    provider_not_found       404, or an error whose code is ``model_not_found``: unknown model or endpoint
    provider_rate_limited    429 after the retries
    provider_unavailable     5xx after the retries
    provider_timeout         no answer within ``request_timeout_s`` (or 408) after the retries, or a reply that
                             stalls that long
    provider_connection      the endpoint cannot be reached, or the connection breaks during the reply
    provider_bad_request     any other 4xx (a request the provider rejects, e.g. a context too long)
    provider_bad_response    a reply that is not a chat completion (stream): undecodable, no choices, empty
                             content, an error event in the stream

No message ever contains the API key, nor an exception's text: what the SDK or the decoder said is logged
(logger ``worker_runtime_core.engines.openai``); a message may quote the provider's own error text.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import os
import re
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast

import anyio
import msgspec

from ..errors import ConfigError, EngineError
from ..models import AssistantIntent, Intent, RoleIntent, TaskIntent, TranscriptEntry
from .base import Engine, EntryWriter, RunContext

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAIError

__all__ = ["INSTALL_HINT", "PROVIDER_ERROR_CODES", "OpenAIEngine", "OpenAIOptions"]

logger = logging.getLogger(__name__)

#: What to run when the SDK is missing.
INSTALL_HINT = "pip install 'worker-runtime-core[openai]'"

#: Every code this engine fails a run with.
PROVIDER_ERROR_CODES = frozenset(
    {
        "provider_auth",
        "provider_not_found",
        "provider_rate_limited",
        "provider_unavailable",
        "provider_timeout",
        "provider_connection",
        "provider_bad_request",
        "provider_bad_response",
    }
)

_DETAIL_MAX = 500  # characters of a provider's error text kept in a run's error message
_NO_KEY = "unused"  # the SDK insists on a key; without one configured the Authorization header is omitted instead
_CHAT_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
_DRAIN_S = 0.1  # how long the rest of a finished reply is read before its response is closed


class OpenAIOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Options of the `openai` engine (the keys of its ``[profiles.NAME]`` table beside ``engine``).

    Attributes:
        model: the model name the endpoint serves, e.g. ``gpt-4o-mini`` or ``llama3.1:8b``.
        base_url: the API root ending in ``/v1``; OpenAI's when not given. The process's ``OPENAI_BASE_URL`` is
            not read.
        api_key_env: name of the environment variable holding the API key.
        api_key_file: path of a file holding the API key (surrounding whitespace is stripped). At most one of
            the two; with neither, no ``Authorization`` header is sent (a local server without auth). The key is
            read when the Runtime is built; the process's ``OPENAI_API_KEY`` is not read.
        system_prompt: sent first, as the system message.
        temperature: sampling temperature, 0 to 2; the provider's default when not given.
        max_tokens: most tokens of one reply (sent as ``max_tokens``); the provider's default when not given.
        request_timeout_s: how long one provider request may wait (to connect, and for each read or write);
            past it the request is retried, then the run fails with ``provider_timeout``.
        max_retries: retries of a request that timed out, could not connect or got 408, 409, 429 or 5xx.
        history: how many of the newest transcript entries before the input are sent with it (0 to 1000).
    """

    model: Annotated[str, msgspec.Meta(min_length=1)]
    base_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$")] = "https://api.openai.com/v1"
    api_key_env: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    api_key_file: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    system_prompt: str | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 300.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    history: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 20

    def __post_init__(self) -> None:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("set at most one of `api_key_env` and `api_key_file`")


class _Message(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: Annotated[int, msgspec.Meta(ge=0)] | None = None
    completion_tokens: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    refusal: str | None = None


class _ChunkChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    """One ``chat.completion.chunk`` of a stream; the last one (asked for with ``stream_options``) has no choices
    and the usage of the whole request. A server may send ``{"error": ...}`` instead."""

    choices: list[_ChunkChoice] = msgspec.field(default_factory=list)
    usage: _Usage | None = None
    error: Any = None


_completion_decoder = msgspec.json.Decoder(_Completion)
_chunk_decoder = msgspec.json.Decoder(_Chunk)


class _Reply(Protocol):
    """The part of the HTTP library's response (httpx or httpx2, by the SDK's version) the engine reads."""

    @property
    def headers(self) -> Any: ...

    def aiter_bytes(self) -> AsyncGenerator[bytes, None]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


class OpenAIEngine(Engine):
    """Per input, one streamed Chat Completions request (``stream: true``, usage asked for with ``stream_options:
    {"include_usage": true}``): the system prompt and the Worker's intent as one system message, the newest
    `history` transcript entries, then the input (``user`` or ``system`` by its kind). The reply streams into one
    ``assistant`` entry as its pieces arrive; the usage of the stream's last chunk is added to the run. A server that
    refuses ``stream_options`` (a 400 or 422 naming it) is asked again without it, once, and from then on this
    engine never sends it there (its runs have no usage); one that ignores it streams without usage; one that ignores
    ``stream`` and answers with a whole completion is read as one. On cancel, stop or the run's timeout the request
    or stream in flight is abandoned at once (its response is closed); what the stream had written stays in the
    entry, which the run's end commits, as it does when the stream breaks or ends in an error.

    Raises:
        ConfigError: when built without the SDK (names the extra to install), or when the key's variable is unset
            or its file cannot be read.
    """

    name = "openai"
    options_type = OpenAIOptions

    options: OpenAIOptions

    def __init__(self, options: msgspec.Struct) -> None:
        super().__init__(options)
        self._sdk = _import_sdk()
        self._api_key = _read_key(self.options)
        self._client: AsyncOpenAI | None = None
        #: False once the server refused ``stream_options``: then it is never sent there again.
        self._usage_in_stream = True

    def __repr__(self) -> str:
        return f"OpenAIEngine(model={self.options.model!r}, base_url={self.options.base_url!r})"

    async def run(self, ctx: RunContext) -> None:
        opts = self.options
        messages = _messages(opts, ctx, await ctx.history(opts.history) if opts.history else [])
        params: dict[str, Any] = {}
        if opts.temperature is not None:
            params["temperature"] = opts.temperature
        if opts.max_tokens is not None:
            params["max_tokens"] = opts.max_tokens
        if self._api_key is None:
            params["extra_headers"] = {"Authorization": self._sdk.Omit()}  # drops the SDK's header
        reply = await self._request(messages, params)
        try:
            if "text/event-stream" in (reply.headers.get("content-type") or ""):
                await self._read_stream(ctx, reply)
            else:  # a server that ignores `stream` answers with the whole completion
                await self._answer(ctx, self._decode(await reply.aread()))
        except Exception as exc:
            failure = self._broken(exc, reply)
            if failure is None:
                raise
            raise failure from None
        finally:
            with anyio.CancelScope(shield=True):
                await reply.aclose()  # on cancel too: the stream is abandoned, its connection closed

    async def _request(self, messages: list[dict[str, str]], params: dict[str, Any]) -> _Reply:
        """Send the request (retried by the SDK as configured); the response's body is not read yet."""
        if self._usage_in_stream:
            try:
                return await self._send(messages, {**params, "stream_options": {"include_usage": True}})
            except self._sdk.OpenAIError as exc:
                if not self._refuses_stream_options(exc):
                    raise self._failure(exc) from None
            self._usage_in_stream = False
            logger.warning("%s refused stream_options; asking without it from now on (no usage)", self.options.base_url)
        try:
            return await self._send(messages, params)
        except self._sdk.OpenAIError as exc:
            raise self._failure(exc) from None

    async def _send(self, messages: list[dict[str, str]], params: dict[str, Any]) -> _Reply:
        create = self._sdk_client().chat.completions.with_raw_response.create
        raw = await create(model=self.options.model, messages=cast(Any, messages), stream=True, **params)
        return cast(_Reply, raw.http_response)

    def _refuses_stream_options(self, exc: OpenAIError) -> bool:
        if not isinstance(exc, self._sdk.APIStatusError) or exc.status_code not in (400, 422):
            return False
        return "stream_options" in f"{exc.body!r} {exc.message}"

    async def _read_stream(self, ctx: RunContext, reply: _Reply) -> None:
        state = _Streamed()
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character split across reads stays whole
        events = _EventData()
        async with contextlib.aclosing(reply.aiter_bytes()) as body:
            try:
                done = False
                async for piece in body:
                    if self._take(ctx, state, events.feed(text.decode(piece))):
                        done = True  # [DONE]
                        break
                if not done:  # the body ended without [DONE]: what it sent is the reply
                    self._take(ctx, state, [*events.feed(text.decode(b"", True)), *events.end()])
            except EngineError:
                await _drain(body)
                raise
            if done:
                await _drain(body)
        self._count(ctx, state.usage)
        if state.entry is None:
            if not state.choices:
                raise EngineError("provider_bad_response", "the reply has no choices")
            reason = f" (finish_reason {state.finish_reason!r})" if state.finish_reason else ""
            raise EngineError("provider_bad_response", f"the reply has no content{reason}")
        await state.entry.end()

    def _take(self, ctx: RunContext, state: _Streamed, events: list[str]) -> bool:
        """Write the pieces of these events' chunks into the entry; True at ``[DONE]``."""
        for data in events:
            if data == "[DONE]":
                return True
            chunk = self._decode_chunk(data)
            if chunk.error is not None:
                self._count(ctx, state.usage)
                detail = _provider_detail({"error": chunk.error})
                message = f"the reply is an error: {detail}" if detail else "the reply is an error"
                raise EngineError("provider_bad_response", self._redact(message))
            if chunk.usage is not None:
                state.usage = chunk.usage
            for choice in chunk.choices:
                if choice.index != 0:
                    continue  # one reply: the first choice
                state.choices = True
                state.finish_reason = choice.finish_reason or state.finish_reason
                delta = choice.delta
                if delta is not None and (delta.content or delta.refusal):
                    if state.entry is None:
                        state.entry = ctx.begin_entry()
                    state.entry.write(delta.content or "")
                    state.entry.write(delta.refusal or "")  # a refusal streams where the content would
        return False

    async def _answer(self, ctx: RunContext, completion: _Completion) -> None:
        self._count(ctx, completion.usage)
        if not completion.choices:
            raise EngineError("provider_bad_response", "the reply has no choices")
        choice = completion.choices[0]
        text = choice.message.content or choice.message.refusal
        if not text:
            reason = f" (finish_reason {choice.finish_reason!r})" if choice.finish_reason else ""
            raise EngineError("provider_bad_response", f"the reply has no content{reason}")
        await ctx.emit(text)

    @staticmethod
    def _count(ctx: RunContext, usage: _Usage | None) -> None:
        if usage is not None and (usage.prompt_tokens is not None or usage.completion_tokens is not None):
            ctx.add_usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _sdk_client(self) -> AsyncOpenAI:
        # Made on first use, inside the event loop that runs the Runtime; shared by every run of this profile.
        if self._client is None:
            opts = self.options
            self._client = cast(
                "AsyncOpenAI",
                self._sdk.AsyncOpenAI(
                    api_key=self._api_key or _NO_KEY,
                    base_url=opts.base_url,
                    timeout=opts.request_timeout_s,
                    max_retries=opts.max_retries,
                ),
            )
        return self._client

    def _decode(self, body: bytes) -> _Completion:
        try:
            return _completion_decoder.decode(body)
        except msgspec.DecodeError as exc:  # a ValidationError too
            detail = _error_detail(body)
            if detail:
                raise EngineError("provider_bad_response", self._redact(f"the reply is an error: {detail}")) from None
            logger.warning("%s: the reply is not a chat completion: %s", self.options.base_url, exc)
            raise EngineError("provider_bad_response", "the reply is not a chat completion") from None

    def _decode_chunk(self, data: str) -> _Chunk:
        try:
            return _chunk_decoder.decode(data)
        except msgspec.DecodeError as exc:  # a ValidationError too
            logger.warning("%s: a piece of the reply is not a chat completion chunk: %s", self.options.base_url, exc)
            raise EngineError("provider_bad_response", "the reply is not a chat completion stream") from None

    def _broken(self, exc: Exception, reply: _Reply) -> EngineError | None:
        """The `EngineError` for a transport error while the reply is read (the SDK only maps those of the request
        itself), else None. The HTTP library is the response's own: httpx, or httpx2 under openai 3."""
        library = sys.modules.get(type(reply).__module__.partition(".")[0])
        opts = self.options
        if isinstance(exc, getattr(library, "TimeoutException", ())):
            return EngineError(
                "provider_timeout", f"{opts.base_url} sent nothing for {opts.request_timeout_s:g}s during the reply"
            )
        if isinstance(exc, getattr(library, "RequestError", ())):
            logger.warning("the reply from %s broke off: %s", opts.base_url, self._redact(repr(exc)))
            return EngineError("provider_connection", f"the connection to {opts.base_url} broke during the reply")
        return None

    def _failure(self, exc: OpenAIError) -> EngineError:
        """The `EngineError` for an SDK error; its message names no key."""
        sdk = self._sdk
        opts = self.options
        retries = f" (after {opts.max_retries} retries)" if opts.max_retries else ""
        if isinstance(exc, sdk.APITimeoutError):
            return EngineError(
                "provider_timeout", f"{opts.base_url} did not answer within {opts.request_timeout_s:g}s{retries}"
            )
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__
            logger.warning(
                "cannot reach %s: %s", opts.base_url, self._redact(repr(cause if cause is not None else exc))
            )
            return EngineError("provider_connection", f"cannot reach {opts.base_url}{retries}; is it up?")
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            if status in (401, 403):
                # The provider's text may quote part of the key ("Incorrect API key provided: sk-...abcd"): not kept.
                hint = "check api_key_env / api_key_file" if self._api_key is not None else "no API key is configured"
                return EngineError("provider_auth", f"{opts.base_url} refused the credentials (HTTP {status}); {hint}")
            detail = _provider_detail(exc.body)
            suffix = f": {detail}" if detail else ""
            if status == 404 or exc.code == "model_not_found":
                message = f"{opts.base_url} does not serve model {opts.model!r} (HTTP {status}){suffix}"
                return EngineError("provider_not_found", self._redact(message))
            if status == 429:
                return EngineError("provider_rate_limited", self._redact(f"rate limited (HTTP 429){retries}{suffix}"))
            if status == 408:
                return EngineError("provider_timeout", self._redact(f"request timeout (HTTP 408){retries}{suffix}"))
            if status >= 500:
                return EngineError("provider_unavailable", self._redact(f"HTTP {status}{retries}{suffix}"))
            return EngineError("provider_bad_request", self._redact(f"HTTP {status}{suffix}"))
        logger.warning("the request to %s failed: %s", opts.base_url, self._redact(repr(exc)))
        return EngineError("provider_bad_response", f"the request to {opts.base_url} failed; see the Runtime's log")

    def _redact(self, text: str) -> str:
        key = self._api_key
        return text.replace(key, "***") if key else text


def _import_sdk() -> ModuleType:
    try:
        import openai
    except ImportError:
        raise ConfigError(
            f"the 'openai' engine needs the OpenAI Python SDK, which is not installed: {INSTALL_HINT}"
        ) from None
    return openai


def _read_key(opts: OpenAIOptions) -> str | None:
    """The API key named by the options, or None when neither `api_key_env` nor `api_key_file` is set."""
    where = f"engine 'openai' (model {opts.model!r} at {opts.base_url})"
    if opts.api_key_env is not None:
        key = os.environ.get(opts.api_key_env, "").strip()
        if not key:
            raise ConfigError(f"{where}: the environment variable {opts.api_key_env} (api_key_env) is not set")
        return key
    if opts.api_key_file is not None:
        try:
            key = Path(opts.api_key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"{where}: api_key_file cannot be read ({why})") from None
        if not key:
            raise ConfigError(f"{where}: api_key_file is empty")
        return key
    return None


def _messages(opts: OpenAIOptions, ctx: RunContext, history: list[TranscriptEntry]) -> list[dict[str, str]]:
    """The request's messages: one system message (prompt and intent), the history, then the input."""
    context = "\n\n".join(part for part in (opts.system_prompt, _render_intent(ctx.intent)) if part)
    messages = [{"role": "system", "content": context}] if context else []
    for entry in history:
        role = _CHAT_ROLES.get(entry.role)
        if role is None:  # a `tool` entry has no tool call to answer here: the model reads it as user text
            messages.append({"role": "user", "content": f"[{entry.role} output]\n{entry.content}"})
        else:
            messages.append({"role": role, "content": entry.content})
    messages.append({"role": "system" if ctx.kind == "system" else "user", "content": ctx.content})
    return messages


def _render_intent(intent: Intent) -> str:
    match intent:
        case TaskIntent(objective=objective):
            return f"You work on one task. Objective: {objective}"
        case RoleIntent(role=role, purpose=purpose):
            return f"Your role: {role}." + (f" Purpose: {purpose}" if purpose else "")
        case AssistantIntent(purpose=purpose):
            return "You are an assistant." + (f" Purpose: {purpose}" if purpose else "")
    return ""  # pragma: no cover  # Intent is a closed union


async def _drain(body: AsyncGenerator[bytes, None]) -> None:
    """Read what is left of a reply the engine is done with (after ``[DONE]`` or an error event), for at most
    `_DRAIN_S`: a server ends the body there, and a body read to its end lets the connection be used again and
    leaves none of the HTTP library's readers suspended half-way. What it holds, or an error reading it, changes
    nothing."""
    with anyio.move_on_after(_DRAIN_S):
        try:
            async for _ in body:
                pass
        except Exception:  # the reply is complete already: a broken tail is not the run's
            pass


class _Streamed:
    """What a stream has given so far."""

    __slots__ = ("choices", "entry", "finish_reason", "usage")

    def __init__(self) -> None:
        self.entry: EntryWriter | None = None  # begun with the first piece of text
        self.usage: _Usage | None = None
        self.choices = False  # a chunk of the first choice arrived
        self.finish_reason: str | None = None


_LINE_END = re.compile(r"\r\n|\r|\n")


class _EventData:
    """The ``data`` of each server-sent event, from the stream's text as it arrives (lines end with CRLF, LF or CR;
    ``event``, ``id``, ``retry`` and comments say nothing a chat completion stream needs)."""

    __slots__ = ("_data", "_rest")

    def __init__(self) -> None:
        self._rest = ""  # an unfinished line
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        text = self._rest + text
        held = "\r" if text.endswith("\r") else ""  # may be half of a CRLF
        lines = _LINE_END.split(text[: len(text) - len(held)])
        self._rest = lines.pop() + held
        return self._lines(lines)

    def end(self) -> list[str]:
        """The events left when the stream ends (a last one without its blank line counts)."""
        rest, self._rest = self._rest.rstrip("\r"), ""
        return self._lines([rest, ""] if rest else [""])

    def _lines(self, lines: list[str]) -> list[str]:
        events: list[str] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
            elif line == "data":
                self._data.append("")
        return events


def _error_detail(body: bytes) -> str:
    """The error text of a JSON error body such as ``{"error": {"message": ...}}``, else ``""``."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return ""
    return _provider_detail(decoded) if isinstance(decoded, dict) and "error" in decoded else ""


def _provider_detail(body: object) -> str:
    """The provider's error text from an error body (``{"error": {"message": ...}}`` and the usual variants)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str):
            return message.strip()[:_DETAIL_MAX]
        return ""
    if isinstance(body, str) and not body.lstrip().startswith("<"):  # not an HTML error page
        return body.strip()[:_DETAIL_MAX]
    return ""
