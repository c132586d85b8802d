"""The request pipeline: request ids, JSON 404/405, the order of the checks, 500s, no CORS, the lifespan."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import httpx
import pytest
from http_helpers import AUTH, BASE_URL, TOKEN, Gate, client_for, error_of, make_runtime, serving
from starlette.applications import Starlette
from starlette.routing import Mount

from worker_runtime_core import Limits, Runtime
from worker_runtime_http import create_app
from worker_runtime_http import routes as routes_module


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    ok = await client.get("/v1/runtime")
    missing = await client.get("/v1/workers/ghost")
    assert ok.headers["x-request-id"]
    assert missing.headers["x-request-id"]
    assert ok.headers["x-request-id"] != missing.headers["x-request-id"]


async def test_a_sent_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/workers/ghost", headers={"x-request-id": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"


async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runtime", headers={"x-request-id": "x" * 201})
    assert response.headers["x-request-id"] != "x" * 201


async def test_an_unknown_route_is_a_404_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/nothing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert error_of(response)["code"] == "not_found"


async def test_a_trailing_slash_is_not_redirected(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/workers/")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


async def test_an_unknown_method_is_a_405_envelope_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.put("/v1/workers/w1")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD"
    error = error_of(response)
    assert error["code"] == "method_not_allowed"
    assert error["retryable"] is False


async def test_no_cors_headers_even_on_a_preflight(client: httpx.AsyncClient) -> None:
    response = await client.options("/v1/workers", headers={"access-control-request-method": "POST"})
    assert response.status_code == 405
    assert not [h for h in response.headers if h.startswith("access-control-")]


async def test_the_checks_run_host_origin_token_route_media_size_body(gate: Gate) -> None:
    big = b"{" * (1024 * 1024 + 1)
    async with make_runtime(gate) as rt:
        app = create_app(rt, token=TOKEN, bind=("127.0.0.1", 8787))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as bare:
            everything_wrong = {"host": "evil.example:8787", "origin": "http://evil.example"}
            assert error_of(await bare.put("/nope", headers=everything_wrong))["code"] == "forbidden_host"
            assert error_of(await bare.put("/nope", headers={"origin": "null"}))["code"] == "forbidden_origin"
            assert error_of(await bare.put("/nope"))["code"] == "unauthorized"
            assert error_of(await bare.put("/nope", headers=AUTH))["code"] == "not_found"
            text = {**AUTH, "content-type": "text/plain"}
            assert error_of(await bare.put("/v1/workers", headers=text, content=big))["code"] == "method_not_allowed"
            await bare.post("/v1/workers", headers=AUTH, json={"worker_id": "w1"})
            input_path = "/v1/workers/w1/input"
            assert error_of(await bare.post(input_path, headers=text, content=big))["code"] == "unsupported_media_type"
            typed = {**AUTH, "content-type": "application/json"}
            assert error_of(await bare.post(input_path, headers=typed, content=big))["code"] == "payload_too_large"
            assert error_of(await bare.post(input_path, headers=typed, content=b"{"))["code"] == "invalid_json"
            assert error_of(await bare.post(input_path, headers=typed, content=b"{}"))["code"] == "invalid_input"


BODY_ROUTES = ["/v1/workers/{id}/input", "/v1/workers/{id}/stop", "/v1/workers/{id}/cancel"]
UNSUPPORTED = {"content-type": "text/plain"}, b'{"content": "hi"}'
TOO_LARGE = {"content-type": "application/json"}, b'{"content": "' + b"x" * 100 + b'"}'


@pytest.mark.parametrize("route", BODY_ROUTES)
@pytest.mark.parametrize(("body", "later"), [(UNSUPPORTED, 415), (TOO_LARGE, 413)], ids=["415", "413"])
async def test_a_bad_path_id_is_reported_before_the_media_type_and_size(
    gate: Gate, route: str, body: tuple[dict[str, str], bytes], later: int
) -> None:
    headers, content = body
    async with serving(gate, limits=Limits(max_body_bytes=64)) as (_, client):
        await client.post("/v1/workers", json={"worker_id": "w1"})
        assert (await client.post(route.format(id="w1"), headers=headers, content=content)).status_code == later
        response = await client.post(route.format(id="bad%20id"), headers=headers, content=content)
        assert (response.status_code, error_of(response)["code"]) == (400, "invalid_worker_id")


@pytest.mark.parametrize("route", ["/v1/workers", *BODY_ROUTES])
@pytest.mark.parametrize(("body", "later"), [(UNSUPPORTED, 415), (TOO_LARGE, 413)], ids=["415", "413"])
async def test_an_unknown_query_parameter_is_reported_before_the_media_type_and_size(
    gate: Gate, route: str, body: tuple[dict[str, str], bytes], later: int
) -> None:
    headers, content = body
    async with serving(gate, limits=Limits(max_body_bytes=64)) as (_, client):
        await client.post("/v1/workers", json={"worker_id": "w1"})
        path = route.format(id="w1")
        assert (await client.post(path, headers=headers, content=content)).status_code == later
        response = await client.post(f"{path}?colour=red", headers=headers, content=content)
        assert (response.status_code, error_of(response)["code"]) == (422, "invalid_request")
        assert error_of(response)["details"] == {"field": "colour"}


async def test_a_bad_path_id_is_reported_before_an_unknown_query_parameter(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers/bad%20id/input?colour=red", json={"content": "hi"})
    assert error_of(response)["code"] == "invalid_worker_id"


async def test_an_unexpected_exception_is_500_without_a_traceback(
    rt: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(rt, "summary", broken)
    with caplog.at_level(logging.ERROR, logger="worker_runtime_http"):
        response = await client.get("/v1/runtime", headers={"x-request-id": "req-500"})
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error"
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert "req-500" in error["message"]
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "ZeroDivisionError" in caplog.text and "req-500" in caplog.text


async def test_a_config_error_while_serving_is_answered_as_internal_error(
    rt: Runtime, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker_runtime_core import ConfigError

    async def misconfigured(*args: Any, **kwargs: Any) -> Any:
        raise ConfigError("engine options are wrong")

    monkeypatch.setattr(rt, "diagnostics", misconfigured)
    response = await client.get("/v1/diagnostics")
    assert response.status_code == 500
    assert error_of(response)["code"] == "internal_error"


async def test_the_access_log_names_method_path_status_and_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="worker_runtime_http.access"):
        await client.get("/v1/workers/ghost", headers={"x-request-id": "trace-7"})
    (record,) = [r for r in caplog.records if r.name == "worker_runtime_http.access"]
    assert record.__dict__["status"] == 404
    assert record.__dict__["request_id"] == "trace-7"
    assert record.__dict__["path"] == "/v1/workers/ghost"
    assert TOKEN not in caplog.text


async def test_a_success_carries_only_the_headers_it_needs(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/runtime")
    assert set(response.headers) == {"content-type", "content-length", "x-request-id"}


async def test_a_get_route_answers_head_with_the_same_status_and_no_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/v1/runtime")
    assert response.status_code == 200
    assert response.content == b""
    assert (await client.head("/v1/workers/ghost")).status_code == 404


async def test_path_parameters_reach_the_handler_as_written(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/workers", json={"worker_id": "w.1-a_b"})
    assert created.status_code == 201
    found = await client.get("/v1/workers/w.1-a_b")
    assert found.json()["worker"]["worker_ref"]["worker_id"] == "w.1-a_b"
    run = await client.get("/v1/workers/w.1-a_b/runs/run-404")
    assert error_of(run)["code"] == "run_not_found"


async def test_mounted_under_a_prefix_the_routes_answer_below_it(gate: Gate) -> None:
    async with make_runtime(gate) as rt:
        outer = Starlette(routes=[Mount("/rt", app=create_app(rt, token=TOKEN))])
        async with client_for(outer) as client:
            assert (await client.get("/rt/v1/runtime")).json()["runtime"]["runtime_id"] == "rt-test"
            assert error_of(await client.get("/rt/v1/nowhere"))["code"] == "not_found"


async def test_routes_table_is_in_the_app_order(client: httpx.AsyncClient) -> None:
    paths = {(e.method, e.path) for e in routes_module.ENDPOINTS}
    assert ("POST", "/v1/workers/{worker_id}/input") in paths
    assert len(paths) == len(routes_module.ENDPOINTS)


# --- the lifespan --------------------------------------------------------------------------------------------


async def _lifespan(app: Any, *messages: str) -> list[dict[str, Any]]:
    inbox = [{"type": m} for m in messages]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


async def test_the_lifespan_starts_and_closes_a_new_runtime(gate: Gate) -> None:
    rt = make_runtime(gate)
    app = create_app(rt, token=None, allow_unauthenticated=True)
    states: list[str] = []

    async def receive_factory() -> None:
        pass

    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = inbox.pop(0)
        if message["type"] == "lifespan.shutdown":
            states.append(rt.status)
            async with client_for(app, token=None) as client:
                states.append(str((await client.post("/v1/workers")).status_code))
        return message

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert states == ["running", "201"]
    assert rt.status == "closed"


async def test_the_lifespan_leaves_a_runtime_the_caller_started(gate: Gate) -> None:
    async with make_runtime(gate) as rt:
        sent = await _lifespan(create_app(rt, allow_unauthenticated=True), "lifespan.startup", "lifespan.shutdown")
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        assert rt.status == "running"


async def test_after_close_commands_are_503_runtime_unavailable(gate: Gate) -> None:
    rt = make_runtime(gate)
    app = create_app(rt, token=None, allow_unauthenticated=True)
    async with rt:
        pass
    async with client_for(app, token=None) as client:
        response = await client.post("/v1/workers")
        assert response.status_code == 503
        error = error_of(response)
        assert error["code"] == "runtime_unavailable"
        assert error["retryable"] is True
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "stopping"}


async def test_while_the_runtime_starts_health_is_ok_readiness_503_and_the_api_503(gate: Gate) -> None:
    app = create_app(
        make_runtime(gate), token=None, allow_unauthenticated=True
    )  # not started: the process serves HTTP while the store recovers
    async with client_for(app, token=None) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"status": "stopping"})
        for path in ("/v1/runtime", "/v1/diagnostics", "/v1/workers", "/v1/events", "/v1/workers/w1"):
            response = await client.get(path)
            assert response.status_code == 503, path
            assert error_of(response)["code"] == "runtime_unavailable"
