"""The `openai` engine against a respx-mocked provider: request shape, usage, errors, secrets, cancel, the extra."""

from __future__ import annotations

import json
import logging
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from engine_helpers import FakeContext, follow_text
from openai_helpers import (
    BASE_URL,
    SSE_HEADERS,
    StreamedReply,
    chunk,
    completion,
    llm_profile,
    llm_runtime,
    llm_worker,
    mock_provider,
    sent_json,
    sse,
    streamed,
    usage_chunk,
)

from worker_runtime_core import ConfigError, EngineError, ProfileConfig, Runtime, UnknownProfileError
from worker_runtime_core.engines.openai import INSTALL_HINT, OpenAIEngine, OpenAIOptions

KEY = "sk-test-7f3c9e1d2b4a6f8e0c1d3b5a7e9f2c4d"

# --- the request -----------------------------------------------------------------------------------------------


async def test_request_carries_model_options_system_prompt_intent_and_input() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed("hi there"))
        async with llm_runtime(system_prompt="Be brief.", temperature=0.2, max_tokens=64) as rt:
            wid = await llm_worker(rt, intent={"kind": "task", "objective": "summarise the logs"})
            ack = await rt.send_input(wid, "what failed?")
            run = await rt.wait_for_run(wid, ack.run_id)
    assert run.status == "completed"
    body = sent_json(route)
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.2 and body["max_tokens"] == 64
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nYou work on one task. Objective: summarise the logs"},
        {"role": "user", "content": "what failed?"},
    ]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_options_left_unset_are_not_sent() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "hi")).run_id)
    body = sent_json(route)
    assert "temperature" not in body and "max_tokens" not in body
    assert body["messages"][0] == {"role": "system", "content": "You are an assistant."}


@pytest.mark.parametrize(
    ("intent", "rendered"),
    [
        (
            {"kind": "assistant", "purpose": "answer billing questions"},
            "You are an assistant. Purpose: answer billing questions",
        ),
        ({"kind": "role", "role": "code reviewer"}, "Your role: code reviewer."),
        (
            {"kind": "role", "role": "tester", "purpose": "find edge cases"},
            "Your role: tester. Purpose: find edge cases",
        ),
    ],
)
async def test_the_intent_is_rendered_as_system_context(intent: dict[str, str], rendered: str) -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt, intent=intent)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "go")).run_id)
    assert sent_json(route)["messages"][0] == {"role": "system", "content": rendered}


async def test_history_sends_the_newest_entries_up_to_the_bound() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions")
        route.side_effect = [streamed(f"reply {i}") for i in range(3)]
        async with llm_runtime(history=3) as rt:
            wid = await llm_worker(rt)
            for text in ("one", "two", "three"):
                await rt.wait_for_run(wid, (await rt.send_input(wid, text)).run_id)
    first, second, third = (sent_json(route, i)["messages"][1:] for i in range(3))
    assert first == [{"role": "user", "content": "one"}]
    assert second == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "reply 0"},
        {"role": "user", "content": "two"},
    ]
    # four entries came before the third input; the bound keeps the newest three
    assert third == [
        {"role": "assistant", "content": "reply 0"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "reply 1"},
        {"role": "user", "content": "three"},
    ]


async def test_history_zero_sends_only_the_context_and_the_input() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        async with llm_runtime(history=0) as rt:
            wid = await llm_worker(rt)
            for text in ("one", "two"):
                await rt.wait_for_run(wid, (await rt.send_input(wid, text)).run_id)
    assert sent_json(route)["messages"][1:] == [{"role": "user", "content": "two"}]


async def test_system_input_is_sent_as_a_system_message() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "user one")).run_id)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "be formal", kind="system")).run_id)
    assert sent_json(route)["messages"][1:] == [
        {"role": "user", "content": "user one"},
        {"role": "assistant", "content": "hello back"},
        {"role": "system", "content": "be formal"},
    ]


async def test_tool_entries_in_the_history_are_sent_as_user_text() -> None:
    """A ``tool`` entry answers no tool call of this request, so it goes as labelled user text."""

    class ToolThenAsk(OpenAIEngine):
        name = "tool-then-ask"

        async def run(self, ctx: Any) -> None:
            if ctx.content == "tool":
                await ctx.emit("exit code 0", role="tool")
            else:
                await super().run(ctx)

    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        profile = llm_profile()
        async with Runtime(
            profiles={"llm": ProfileConfig("tool-then-ask", **profile.options)}, engines={"tool-then-ask": ToolThenAsk}
        ) as rt:
            wid = await llm_worker(rt)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "tool")).run_id)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "and now?")).run_id)
    assert sent_json(route)["messages"][1:] == [
        {"role": "user", "content": "tool"},
        {"role": "user", "content": "[tool output]\nexit code 0"},
        {"role": "user", "content": "and now?"},
    ]


async def test_the_reply_becomes_one_assistant_entry_of_the_run() -> None:
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(return_value=streamed("the answer is 42"))
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            ack = await rt.send_input(wid, "question")
            await rt.wait_for_run(wid, ack.run_id)
            items = (await rt.transcript(wid)).items
    assert [(e.role, e.content, e.run_id) for e in items] == [
        ("user", "question", ack.run_id),
        ("assistant", "the answer is 42", ack.run_id),
    ]


async def test_a_refusal_is_the_reply_when_there_is_no_content() -> None:
    body = sse(chunk(refusal="I can't "), chunk(refusal="help with that."), chunk(finish_reason="stop"))
    with mock_provider() as provider:
        provider.post("/chat/completions").respond(headers=SSE_HEADERS, content=body)
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            items = (await rt.transcript(wid)).items
    assert run.status == "completed" and items[-1].content == "I can't help with that."


async def test_a_retryable_answer_is_retried_up_to_max_retries() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions")
        route.side_effect = [
            httpx.Response(503, json={"error": {"message": "busy"}}, headers={"retry-after-ms": "1"}),
            streamed("second time lucky"),
        ]
        async with llm_runtime(max_retries=1) as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
    assert run.status == "completed" and route.call_count == 2


# --- the API key -----------------------------------------------------------------------------------------------


async def test_without_a_key_no_authorization_header_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the SDK's own variable is not read
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
    assert "authorization" not in route.calls[-1].request.headers


async def test_the_key_from_api_key_env_is_sent_as_a_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_KEY", KEY)
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        async with llm_runtime(api_key_env="LLM_KEY") as rt:
            wid = await llm_worker(rt)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
    assert route.calls[-1].request.headers["authorization"] == f"Bearer {KEY}"


async def test_the_key_from_api_key_file_is_sent_stripped(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY}\n")
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed())
        async with llm_runtime(api_key_file=str(key_file)) as rt:
            wid = await llm_worker(rt)
            await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
    assert route.calls[-1].request.headers["authorization"] == f"Bearer {KEY}"


async def test_an_unset_key_variable_fails_at_profile_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_KEY", raising=False)
    with pytest.raises(ConfigError, match="LLM_KEY"):
        Runtime(profiles={"llm": llm_profile(api_key_env="LLM_KEY")})


@pytest.mark.parametrize("content", [None, "  \n"])
async def test_a_missing_or_empty_key_file_fails_at_profile_load(tmp_path: Path, content: str | None) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(ConfigError, match="api_key_file"):
        Runtime(profiles={"llm": llm_profile(api_key_file=str(key_file))})


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"api_key_env": "A", "api_key_file": "b"}, "at most one"),
        ({"api_key": KEY}, "unknown field `api_key`"),
        ({"api_key_env": KEY}, "api_key_env"),
        ({"model": ""}, "model"),
        ({"base_url": "127.0.0.1:8080/v1"}, "base_url"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"max_retries": 11}, "max_retries"),
        ({"history": 1001}, "history"),
        ({"history": -1}, "history"),
    ],
)
async def test_invalid_options_fail_at_profile_load(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError, match="profile 'llm'") as caught:
        Runtime(profiles={"llm": llm_profile(**options)})
    assert complaint in caught.value.message
    assert KEY not in caught.value.message


async def test_a_profile_without_a_model_is_rejected() -> None:
    with pytest.raises(ConfigError, match="model"):
        Runtime(profiles={"llm": ProfileConfig("openai", base_url=BASE_URL)})


async def test_the_engine_needs_options_so_it_has_no_builtin_profile() -> None:
    async with Runtime() as rt:
        assert "openai" in (await rt.summary()).capabilities.engines
        with pytest.raises(UnknownProfileError):
            await rt.create_worker(profile={"kind": "builtin", "name": "openai"})


async def test_the_key_shows_in_no_error_repr_event_or_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LLM_KEY", KEY)
    echoing = {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}
    with mock_provider() as provider:
        route = provider.post("/chat/completions")
        route.side_effect = [
            httpx.Response(401, json=echoing),
            httpx.Response(500, json={"error": {"message": f"upstream said {KEY}"}}),
            httpx.Response(400, json={"error": {"message": f"bad header Bearer {KEY}"}}),
            httpx.Response(200, json={"error": {"message": f"proxy rejected {KEY}"}}),
        ]
        profiles = {"llm": llm_profile(api_key_env="LLM_KEY")}
        async with Runtime(profiles=profiles) as rt:
            wid = await llm_worker(rt)
            errors = []
            for _ in range(4):
                run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
                assert run.error is not None
                errors.append(run.error)
            shown = [
                repr(profiles),
                repr(rt._profiles.get("llm").engine),  # type: ignore[union-attr]
                repr(rt._profiles.get("llm").engine.options),  # type: ignore[union-attr]
                msgspec.json.encode(await rt.get_worker(wid)).decode(),
                msgspec.json.encode((await rt.read_events()).events).decode(),
                msgspec.json.encode(await rt.diagnostics()).decode(),
                msgspec.json.encode(await rt.summary()).decode(),
            ]
    assert [e.code for e in errors] == [
        "provider_auth",
        "provider_unavailable",
        "provider_bad_request",
        "provider_bad_response",
    ]
    assert "bad header Bearer ***" in errors[2].message  # the provider's text is kept, the key redacted
    for text in [*(e.message for e in errors), *shown, caplog.text]:
        assert KEY not in text
    assert route.call_count == 4


# --- usage -----------------------------------------------------------------------------------------------------


async def test_usage_lands_on_the_run_the_worker_and_the_runtime() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions")
        route.side_effect = [
            streamed("a", usage=(10, 3)),
            streamed("b", usage=(25, 4)),
        ]
        async with llm_runtime() as rt:
            w1 = await llm_worker(rt, "w1")
            w2 = await llm_worker(rt, "w2")
            run1 = await rt.wait_for_run(w1, (await rt.send_input(w1, "q1")).run_id)
            run2 = await rt.wait_for_run(w1, (await rt.send_input(w1, "q2")).run_id)
            detail1, detail2, summary = await rt.get_worker(w1), await rt.get_worker(w2), await rt.summary()
    assert run1.usage is not None and (run1.usage.input_tokens, run1.usage.output_tokens) == (10, 3)
    assert run2.usage is not None and (run2.usage.input_tokens, run2.usage.output_tokens) == (25, 4)
    assert (detail1.usage.runs, detail1.usage.input_tokens, detail1.usage.output_tokens) == (2, 35, 7)
    assert (detail2.usage.runs, detail2.usage.input_tokens, detail2.usage.output_tokens) == (0, 0, 0)
    assert (summary.usage.runs, summary.usage.input_tokens, summary.usage.output_tokens) == (2, 35, 7)


async def test_a_reply_without_usage_counts_the_run_but_no_tokens() -> None:
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(return_value=streamed("a", usage=None))
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            detail = await rt.get_worker(wid)
    assert run.status == "completed" and run.usage is None
    assert (detail.usage.runs, detail.usage.input_tokens, detail.usage.output_tokens) == (1, 0, 0)


async def test_usage_of_a_reply_without_content_is_still_counted() -> None:
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(return_value=streamed("", usage=(40, 64)))
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            summary = await rt.summary()
    assert run.status == "failed" and run.usage is not None and run.usage.output_tokens == 64
    assert summary.usage.output_tokens == 64


# --- provider errors -------------------------------------------------------------------------------------------


def _status(status: int, body: Any = None) -> httpx.Response:
    return httpx.Response(status, json=body if body is not None else {"error": {"message": f"status {status}"}})


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (httpx.Response(200, json={"object": "list"}), "provider_bad_response", "the reply is not a chat completion"),
        (
            httpx.ConnectError("[SSL] /etc/ssl/private/key.pem: bad cert at 10.9.8.7"),
            "provider_connection",
            f"cannot reach {BASE_URL}; is it up?",
        ),
    ],
    ids=["undecodable", "connection"],
)
async def test_provider_failures_keep_the_exception_text_out_of_the_run_error(
    answer: httpx.Response | Exception, code: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with mock_provider() as provider:
        provider.post("/chat/completions").side_effect = [answer]
        async with llm_runtime(max_retries=0) as rt:
            wid = await llm_worker(rt)
            failed = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == (code, message)
    assert "choices" in caplog.text or "key.pem" in caplog.text  # the detail is in the log


@pytest.mark.parametrize(
    ("answer", "code", "fragment"),
    [
        (_status(401), "provider_auth", "HTTP 401"),
        (_status(403), "provider_auth", "HTTP 403"),
        (
            _status(404, {"error": {"message": "The model `nope` does not exist", "code": "model_not_found"}}),
            "provider_not_found",
            "does not exist",
        ),
        (
            _status(400, {"error": {"message": "no such model", "code": "model_not_found"}}),
            "provider_not_found",
            "no such model",
        ),
        (_status(404, {"error": "model 'nope' not found"}), "provider_not_found", "model 'nope' not found"),
        (_status(429), "provider_rate_limited", "HTTP 429"),
        (_status(500), "provider_unavailable", "HTTP 500"),
        (_status(503), "provider_unavailable", "HTTP 503"),
        (_status(408), "provider_timeout", "HTTP 408"),
        (
            _status(400, {"error": {"message": "context length exceeded"}}),
            "provider_bad_request",
            "context length exceeded",
        ),
        (_status(422), "provider_bad_request", "HTTP 422"),
        (httpx.Response(200, text="<html>hello</html>"), "provider_bad_response", "not a chat completion"),
        (httpx.Response(200, json={"object": "list"}), "provider_bad_response", "not a chat completion"),
        (httpx.Response(200, json={"choices": []}), "provider_bad_response", "no choices"),
        (httpx.Response(200, json=completion("")), "provider_bad_response", "no content"),
        (httpx.Response(200, json=completion(None)), "provider_bad_response", "no content"),
        (
            httpx.Response(200, json={"error": {"message": "model is loading"}}),
            "provider_bad_response",
            "model is loading",
        ),
        (httpx.ConnectError("connection refused"), "provider_connection", "cannot reach"),
        (httpx.ReadTimeout("timed out"), "provider_timeout", "did not answer within"),
        (httpx.ConnectTimeout("timed out"), "provider_timeout", "did not answer within"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_provider_errors_fail_the_run_with_their_code_and_the_worker_stays_usable(
    answer: httpx.Response | Exception, code: str, fragment: str
) -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions")
        route.side_effect = [answer, streamed("recovered")]
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            failed = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            after = await rt.get_worker(wid)
            nxt = await rt.wait_for_run(wid, (await rt.send_input(wid, "again")).run_id)
            items = (await rt.transcript(wid)).items
            diagnostics = await rt.diagnostics()
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == code and fragment in failed.error.message
    assert after.status == "idle"
    assert nxt.status == "completed"
    assert [(e.role, e.content) for e in items] == [("user", "q"), ("user", "again"), ("assistant", "recovered")]
    assert [d.code for d in diagnostics] == [code]


async def test_retries_are_spent_before_the_run_fails() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions").respond(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after-ms": "1"}
        )
        async with llm_runtime(max_retries=2) as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
    assert run.error is not None and run.error.code == "provider_rate_limited"
    assert "after 2 retries" in run.error.message and route.call_count == 3


# --- cancel, stop, timeout -------------------------------------------------------------------------------------


class HangingProvider:
    """A route side effect that answers only when released; records whether the request was aborted."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.aborted = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.started.set()
        try:
            await self.release.wait()
        except anyio.get_cancelled_exc_class():
            self.aborted = True
            raise
        return streamed("too late")


async def test_cancel_aborts_the_request_in_flight_and_appends_nothing() -> None:
    hanging = HangingProvider()
    with mock_provider() as provider:
        route = provider.post("/chat/completions")
        route.side_effect = hanging
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            ack = await rt.send_input(wid, "long question")
            await hanging.started.wait()
            cancel = await rt.cancel_worker(wid, reason="enough")
            run = await rt.get_run(wid, ack.run_id)
            items_after_cancel = (await rt.transcript(wid)).items
            route.side_effect = None
            route.mock(return_value=streamed("short answer"))
            nxt = await rt.wait_for_run(wid, (await rt.send_input(wid, "short question")).run_id)
            items = (await rt.transcript(wid)).items
    assert cancel.status == "idle" and cancel.cancelled_run_id == ack.run_id
    assert run.status == "cancelled" and run.error is None and run.usage is None
    assert hanging.aborted
    assert [e.role for e in items_after_cancel] == ["user"]
    assert nxt.status == "completed"
    assert [(e.content, e.run_id) for e in items] == [
        ("long question", ack.run_id),
        ("short question", nxt.run_id),
        ("short answer", nxt.run_id),
    ]


async def test_stop_aborts_the_request_in_flight() -> None:
    hanging = HangingProvider()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=hanging)
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            ack = await rt.send_input(wid, "q")
            await hanging.started.wait()
            stop = await rt.stop_worker(wid)
            run = await rt.get_run(wid, ack.run_id)
            items = (await rt.transcript(wid)).items
    assert stop.status == "stopped" and stop.cancelled_run_id == ack.run_id
    assert run.status == "cancelled" and hanging.aborted
    assert [e.role for e in items] == ["user"]


async def test_the_profile_timeout_ends_a_hanging_request_timed_out() -> None:
    hanging = HangingProvider()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=hanging)
        async with llm_runtime(timeout_s=0.05) as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            items = (await rt.transcript(wid)).items
    assert run.status == "timed_out" and run.error is not None and run.error.code == "timed_out"
    assert hanging.aborted and [e.role for e in items] == ["user"]


async def test_closing_the_runtime_interrupts_a_request_in_flight() -> None:
    hanging = HangingProvider()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=hanging)
        rt = Runtime(profiles={"llm": llm_profile()})
        async with rt:
            wid = await llm_worker(rt)
            ack = await rt.send_input(wid, "q")
            await hanging.started.wait()
        assert rt.status == "closed"
    assert ack.run_id and hanging.aborted


# --- streaming -------------------------------------------------------------------------------------------------


def _engine(**options: Any) -> OpenAIEngine:
    return OpenAIEngine(msgspec.convert(llm_profile(**options).options, OpenAIOptions))


async def _watch(reply: StreamedReply, ctx: FakeContext, seen: str) -> OpenAIEngine:
    """Run the engine on `ctx` against `reply` until the entry reads `seen` while the reply is held."""
    engine = _engine()
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, ctx)
        await ctx.wait_for(lambda c: c.text == seen)
        await reply.held.wait()
        assert not ctx.entries[0].ended  # the reply is not over: it waits to be released
        reply.release.set()
    return engine


async def test_the_reply_streams_into_the_entry_while_it_arrives() -> None:
    reply = StreamedReply(
        sse(chunk("Hel"), chunk("lo, w"), done=False),
        sse(chunk("örld"), chunk(finish_reason="stop"), usage_chunk(5, 3)),
        hold=True,
    )
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        engine = await _watch(reply, ctx, "Hello, w")
        await engine.aclose()
    (entry,) = ctx.entries
    assert entry.writes == ["Hel", "lo, w", "örld"]
    assert entry.ended and ctx.committed == [("assistant", "Hello, wörld")]
    assert ctx.usage == [(5, 3)]  # from the last chunk, once
    assert reply.closed


async def test_multi_byte_characters_split_across_reads_arrive_whole() -> None:
    text = ["żółw ", "🐢 and ", "café", " ok"]  # two-, three- and four-byte characters
    body = sse(*(chunk(t) for t in text), chunk(finish_reason="stop"), usage_chunk())
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: StreamedReply(body, piece=1).response())
        engine = _engine()
        await engine.run(ctx)
        await engine.aclose()
    assert ctx.entries[0].writes == text
    assert ctx.committed == [("assistant", "".join(text))]


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
@pytest.mark.parametrize("done", [True, False], ids=["done", "no-done"])
async def test_every_line_ending_and_a_stream_without_done_are_read(eol: str, done: bool) -> None:
    body = sse(": a comment", chunk("one "), chunk("two"), chunk(finish_reason="stop"), done=done, eol=eol)
    body = body.replace(b"data: : a comment", b": a comment")
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: StreamedReply(body, piece=1).response())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            items = (await rt.transcript(wid)).items
    assert run.status == "completed" and run.usage is None
    assert items[-1].content == "one two"


async def test_what_follows_done_is_read_to_the_end_and_ignored() -> None:
    """Read to its end, the connection can serve the next request; what a server sends after [DONE] is no reply."""
    reply = StreamedReply(sse(chunk("the reply"), chunk(finish_reason="stop")), sse(chunk(" and junk"), done=False))
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        engine = _engine()
        await engine.run(ctx)
        await engine.aclose()
    assert ctx.committed == [("assistant", "the reply")]
    assert reply.exhausted and reply.closed


async def test_a_server_that_keeps_the_body_open_after_done_does_not_hold_the_run() -> None:
    reply = StreamedReply(sse(chunk("the reply"), chunk(finish_reason="stop")), hold=True)  # never ends by itself
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        engine = _engine()
        with anyio.fail_after(30):  # a bound for a hang, far above the engine's short wait for the rest
            await engine.run(ctx)
        await engine.aclose()
    assert ctx.committed == [("assistant", "the reply")]
    assert reply.cancelled and reply.closed


async def test_the_request_asks_for_usage_in_the_stream_and_the_run_counts_it() -> None:
    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(return_value=streamed("counted", usage=(12, 5)))
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
    body = sent_json(route)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert run.usage is not None and (run.usage.input_tokens, run.usage.output_tokens) == (12, 5)


@pytest.mark.parametrize(
    ("status", "refusal"),
    [
        (400, {"error": {"message": "Unrecognized request argument supplied: stream_options", "type": "invalid"}}),
        (422, {"detail": [{"loc": ["body", "stream_options"], "msg": "Extra inputs are not permitted"}]}),
    ],
    ids=["openai-style-400", "pydantic-style-422"],
)
async def test_a_server_that_refuses_stream_options_is_asked_without_it_from_then_on(
    status: int, refusal: dict[str, Any]
) -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if "stream_options" in json.loads(request.content):
            return httpx.Response(status, json=refusal)
        return streamed("streamed anyway", usage=None)

    with mock_provider() as provider:
        route = provider.post("/chat/completions").mock(side_effect=server)
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            first = await rt.wait_for_run(wid, (await rt.send_input(wid, "one")).run_id)
            second = await rt.wait_for_run(wid, (await rt.send_input(wid, "two")).run_id)
            items = (await rt.transcript(wid)).items
    assert (first.status, second.status) == ("completed", "completed")
    assert first.usage is None and second.usage is None
    assert [e.content for e in items] == ["one", "streamed anyway", "two", "streamed anyway"]
    sent = [sent_json(route, i) for i in range(route.call_count)]
    assert ["stream_options" in body for body in sent] == [True, False, False]  # asked again once, then remembered
    assert all(body["stream"] is True for body in sent)


async def test_a_server_that_ignores_stream_and_answers_whole_is_read_as_one_reply() -> None:
    with mock_provider() as provider:
        provider.post("/chat/completions").respond(json=completion("all at once", prompt_tokens=3, completion_tokens=2))
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            items = (await rt.transcript(wid)).items
    assert run.status == "completed" and items[-1].content == "all at once"
    assert run.usage is not None and (run.usage.input_tokens, run.usage.output_tokens) == (3, 2)


async def test_cancel_mid_stream_closes_the_reply_and_leaves_the_text_to_the_run() -> None:
    reply = StreamedReply(sse(chunk("partial "), chunk("answer"), done=False), sse(chunk("never")), hold=True)
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        engine = _engine()
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, ctx)
            await ctx.wait_for(lambda c: c.text == "partial answer")
            await reply.held.wait()
            tg.cancel_scope.cancel()
        await engine.aclose()
    assert reply.cancelled and reply.closed  # the stream was abandoned and its response closed
    (entry,) = ctx.entries
    assert entry.text == "partial answer" and not entry.ended  # left open: the run's end commits it
    assert ctx.usage == []


@pytest.mark.parametrize("end", ["cancel", "stop"])
async def test_a_run_cancelled_or_stopped_mid_stream_keeps_the_partial_reply_as_its_entry(end: str) -> None:
    reply = StreamedReply(sse(chunk("partial "), chunk("answer"), done=False), sse(chunk("never")), hold=True)
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            with rt.open_deltas(worker_id=wid) as sub:
                ack = await rt.send_input(wid, "q")
                await follow_text(sub, lambda text: text == "partial answer")
            await (rt.cancel_worker(wid) if end == "cancel" else rt.stop_worker(wid))
            run = await rt.get_run(wid, ack.run_id)
            items = (await rt.transcript(wid)).items
    assert run.status == "cancelled" and run.usage is None
    assert [(e.role, e.content, e.run_id) for e in items] == [
        ("user", "q", ack.run_id),
        ("assistant", "partial answer", ack.run_id),
    ]
    assert reply.cancelled and reply.closed  # the stream was abandoned and its response closed


async def test_the_deltas_and_the_final_entry_agree_character_for_character() -> None:
    text = ["żółw ", "🐢 and ", "café", " ok"]  # every piece of one byte: each character is cut between reads
    before = sse(*(chunk(t) for t in text), chunk(finish_reason="stop"), usage_chunk(), done=False)
    reply = StreamedReply(before, sse(), piece=1, hold=True)
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            with rt.open_deltas(worker_id=wid) as sub:
                ack = await rt.send_input(wid, "q")
                seen = await follow_text(sub, lambda so_far: so_far == "".join(text))
                reply.release.set()
                run = await rt.wait_for_run(wid, ack.run_id)
            items = (await rt.transcript(wid)).items
    assert run.status == "completed"
    assert items[-1].content == seen == "żółw 🐢 and café ok"


async def test_a_stream_that_breaks_off_fails_the_run_and_keeps_its_text_as_the_entry() -> None:
    reply = StreamedReply(sse(chunk("half a "), chunk("reply"), done=False), fail=httpx.ReadError("peer went away"))
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        async with llm_runtime() as rt:
            wid = await llm_worker(rt)
            run = await rt.wait_for_run(wid, (await rt.send_input(wid, "q")).run_id)
            items = (await rt.transcript(wid)).items
    assert run.status == "failed" and run.error is not None and run.error.code == "provider_connection"
    assert [(e.role, e.content) for e in items] == [("user", "q"), ("assistant", "half a reply")]


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        (httpx.ReadError("peer went away"), "provider_connection", f"the connection to {BASE_URL} broke"),
        (httpx.RemoteProtocolError("incomplete chunked read"), "provider_connection", "broke during the reply"),
        (httpx.ReadTimeout("timed out"), "provider_timeout", "sent nothing for 300s during the reply"),
    ],
    ids=["read-error", "protocol-error", "read-timeout"],
)
async def test_a_stream_that_breaks_off_fails_the_run_and_keeps_the_text_open(
    fault: Exception, code: str, message: str
) -> None:
    reply = StreamedReply(sse(chunk("half"), done=False), fail=fault)
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").mock(side_effect=lambda request: reply.response())
        engine = _engine()
        with pytest.raises(EngineError) as caught:
            await engine.run(ctx)
        await engine.aclose()
    assert caught.value.code == code and message in caught.value.message
    assert ctx.text == "half" and not ctx.entries[0].ended
    assert reply.closed


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ((chunk("so far"), {"error": {"message": "the model is overloaded"}}), "the reply is an error: the model is"),
        ((chunk("so far"), "{not json"), "the reply is not a chat completion stream"),
        ((chunk("so far"), {"choices": [{"index": 0, "delta": {"content": 7}}]}), "not a chat completion stream"),
    ],
    ids=["error-event", "undecodable", "wrong-type"],
)
async def test_a_bad_event_mid_stream_fails_the_run_and_keeps_the_text_open(
    events: tuple[Any, ...], message: str
) -> None:
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").respond(headers=SSE_HEADERS, content=sse(*events))
        engine = _engine()
        with pytest.raises(EngineError) as caught:
            await engine.run(ctx)
        await engine.aclose()
    assert caught.value.code == "provider_bad_response" and message in caught.value.message
    assert ctx.text == "so far" and not ctx.entries[0].ended


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ((), "the reply has no choices"),
        ((usage_chunk(4, 0),), "the reply has no choices"),
        ((chunk(""), chunk(finish_reason="length")), "the reply has no content (finish_reason 'length')"),
    ],
    ids=["empty", "usage-only", "no-content"],
)
async def test_a_stream_without_text_fails_the_run_and_begins_no_entry(events: tuple[Any, ...], message: str) -> None:
    ctx = FakeContext()
    with mock_provider() as provider:
        provider.post("/chat/completions").respond(headers=SSE_HEADERS, content=sse(*events))
        engine = _engine()
        with pytest.raises(EngineError) as caught:
            await engine.run(ctx)
        await engine.aclose()
    assert (caught.value.code, caught.value.message) == ("provider_bad_response", message)
    assert ctx.entries == []


# --- the extra -------------------------------------------------------------------------------------------------


async def test_without_the_sdk_an_openai_profile_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` now raises ImportError
    with pytest.raises(ConfigError) as caught:
        Runtime(profiles={"llm": llm_profile()})
    assert INSTALL_HINT in caught.value.message
    assert INSTALL_HINT == "pip install 'worker-runtime-core[openai]'"


async def test_without_the_sdk_core_still_works_and_knows_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    async with Runtime() as rt:
        wid = (await rt.create_worker()).worker_ref.worker_id
        run = await rt.wait_for_run(wid, (await rt.send_input(wid, "hi")).run_id)
        engines = (await rt.summary()).capabilities.engines
    assert run.status == "completed"
    assert "openai" in engines


def test_options_struct_defaults() -> None:
    opts = msgspec.convert({"model": "m"}, OpenAIOptions)
    assert (opts.base_url, opts.api_key_env, opts.api_key_file) == ("https://api.openai.com/v1", None, None)
    assert (opts.request_timeout_s, opts.max_retries, opts.history) == (300.0, 2, 20)
    assert (opts.system_prompt, opts.temperature, opts.max_tokens) == (None, None, None)


async def test_the_readme_profile_for_a_local_server_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if 'engine = "openai"' in b]
    assert len(blocks) == 1
    profiles = tomllib.loads(blocks[0])["profiles"]
    async with Runtime(profiles=profiles) as rt:
        assert "local-llm" in (await rt.summary()).capabilities.profiles
