"""The `openai` engine: one Chat Completions request per input, to any OpenAI-compatible endpoint.

It needs the extra ``worker-runtime-core[openai]`` (the official ``openai`` SDK). The SDK is imported only when a
profile naming this engine is built, so core without the extra imports and works; building such a profile without
the SDK raises `ConfigError` naming the extra to install.

Provider errors end the run ``failed`` with one of these codes (`PROVIDER_ERROR_CODES`)::

    provider_auth            401 or 403: the credentials were refused
    provider_not_found       404, or an error whose code is ``model_not_found``: unknown model or endpoint
    provider_rate_limited    429 after the retries
    provider_unavailable     5xx after the retries
    provider_timeout         no answer within ``request_timeout_s`` (or 408) after the retries
    provider_connection      the endpoint cannot be reached
    provider_bad_request     any other 4xx (a request the provider rejects, e.g. a context too long)
    provider_bad_response    a reply that is not a chat completion: undecodable, no choices, empty content

No message ever contains the API key, nor an exception's text: what the SDK or the decoder said is logged
(logger ``worker_runtime_core.engines.openai``); a message may quote the provider's own error text.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, cast

import msgspec

from ..errors import ConfigError, EngineError
from ..models import AssistantIntent, Intent, RoleIntent, TaskIntent, TranscriptEntry
from .base import Engine, RunContext

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


_completion_decoder = msgspec.json.Decoder(_Completion)


class OpenAIEngine(Engine):
    """Per input, one Chat Completions request: the system prompt and the Worker's intent as one system message,
    the newest `history` transcript entries, then the input (``user`` or ``system`` by its kind). The reply becomes
    one ``assistant`` entry; the response's token usage is added to the run. On cancel, stop or the run's timeout
    the request in flight is abandoned at once (its connection is closed) and nothing is appended.

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
        try:
            raw = await self._sdk_client().chat.completions.with_raw_response.create(
                model=opts.model, messages=cast(Any, messages), **params
            )
            body = raw.http_response.content
        except self._sdk.OpenAIError as exc:
            raise self._failure(exc) from None
        completion = self._decode(body)
        usage = completion.usage
        if usage is not None and (usage.prompt_tokens is not None or usage.completion_tokens is not None):
            ctx.add_usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)
        if not completion.choices:
            raise EngineError("provider_bad_response", "the reply has no choices")
        choice = completion.choices[0]
        text = choice.message.content or choice.message.refusal
        if not text:
            reason = f" (finish_reason {choice.finish_reason!r})" if choice.finish_reason else ""
            raise EngineError("provider_bad_response", f"the reply has no content{reason}")
        await ctx.emit(text)

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
