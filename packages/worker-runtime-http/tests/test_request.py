"""Request bodies: media type, size, empty bodies, malformed JSON, wrong shapes; query parameters."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from http_helpers import Gate, call_asgi, error_of, make_runtime, serving

from worker_runtime_core import Limits
from worker_runtime_http import create_app
from worker_runtime_http._request import is_json_media_type


async def worker(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/workers", json={"worker_id": "w1"})).status_code == 201


@pytest.mark.parametrize(
    "value",
    [b"application/json", b"Application/JSON", b"application/json; charset=utf-8", b'application/json;charset="UTF-8"'],
)
def test_json_media_types_are_accepted(value: bytes) -> None:
    assert is_json_media_type(value)


@pytest.mark.parametrize(
    "value", [b"text/plain", b"application/jsonx", b"application/json; charset=latin-1", b"multipart/form-data", b""]
)
def test_other_media_types_are_refused(value: bytes) -> None:
    assert not is_json_media_type(value)


async def test_charset_utf8_is_accepted(client: httpx.AsyncClient) -> None:
    await worker(client)
    response = await client.post(
        "/v1/workers/w1/input",
        content='{"content": "héllo"}'.encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 202


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_is_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    await worker(client)
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/v1/workers/w1/input", content=b'{"content": "hi"}', headers=headers)
    assert response.status_code == 415
    assert error_of(response)["code"] == "unsupported_media_type"
    assert (await client.get("/v1/workers/w1")).json()["worker"]["transcript_len"] == 0


async def test_an_empty_body_needs_no_content_type_and_means_an_empty_object(client: httpx.AsyncClient) -> None:
    await worker(client)
    stop = await client.post("/v1/workers/w1/stop", content=b"", headers={"content-type": "text/plain"})
    assert stop.status_code == 200
    assert stop.json()["ack"]["status"] == "stopped"


async def test_an_empty_input_body_is_422_for_the_missing_content(client: httpx.AsyncClient) -> None:
    await worker(client)
    response = await client.post("/v1/workers/w1/input")
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert "content" in error["message"]


@pytest.mark.parametrize("body", [b"{", b"nul", b'{"content": "hi"} trailing', b'{"content": "\xff"}', b" "])
async def test_malformed_json_is_400_invalid_json(client: httpx.AsyncClient, body: bytes) -> None:
    await worker(client)
    response = await client.post("/v1/workers/w1/input", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_json"
    assert error["retryable"] is False


async def test_a_wrong_shape_names_the_failing_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers", json={"intent": {"kind": "task", "objective": 3}})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert "$.intent.objective" in error["message"]
    assert error["details"]["path"] == "$.intent.objective"


async def test_an_unknown_tag_names_the_failing_path(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers", json={"profile": {"kind": "magic"}})
    assert response.status_code == 422
    assert error_of(response)["details"]["path"] == "$.profile.kind"


async def test_an_unknown_field_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/workers", json={"worker_id": "w1", "colour": "red"})
    assert response.status_code == 422
    assert "colour" in error_of(response)["message"]
    assert (await client.get("/v1/workers/w1")).status_code == 404


async def test_a_declared_oversized_body_is_413_before_it_is_read(gate: Gate) -> None:
    async with serving(gate, limits=Limits(max_body_bytes=64)) as (_, client):
        await worker(client)
        response = await client.post("/v1/workers/w1/input", json={"content": "x" * 100})
        assert response.status_code == 413
        error = error_of(response)
        assert error["code"] == "payload_too_large"
        assert error["details"] == {"max_body_bytes": 64}


async def test_a_streamed_oversized_body_is_refused_without_reading_the_rest(gate: Gate) -> None:
    def endless() -> Iterator[bytes]:
        yield b'{"content": "'
        for _ in range(10_000):
            yield b"x" * 16

    async with make_runtime(gate, limits=Limits(max_body_bytes=64)) as rt:
        app = create_app(rt, token=None, allow_unauthenticated=True)
        await rt.create_worker(worker_id="w1")
        headers = [(b"content-type", b"application/json")]  # no Content-Length: a chunked upload
        status, _, body, pulled = await call_asgi(app, "POST", "/v1/workers/w1/input", headers, endless())
        assert status == 413
        assert b'"payload_too_large"' in body
        assert pulled <= 5
        assert (await rt.get_worker("w1")).transcript_len == 0


async def test_a_body_of_exactly_max_body_bytes_is_read(gate: Gate) -> None:
    body = b'{"content": "' + b"x" * 50 + b'"}'
    async with serving(gate, limits=Limits(max_body_bytes=len(body))) as (_, client):
        await worker(client)
        response = await client.post("/v1/workers/w1/input", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 202


async def test_a_body_on_a_get_is_ignored(client: httpx.AsyncClient) -> None:
    response = await client.request("GET", "/v1/runtime", content=b"junk", headers={"content-type": "text/plain"})
    assert response.status_code == 200


async def test_an_empty_query_value_counts_as_absent(client: httpx.AsyncClient) -> None:
    await worker(client)
    response = await client.get("/v1/workers?status=&limit=&after=")
    assert response.status_code == 200
    assert len(response.json()["workers"]) == 1


# --- ids: one message wherever an id is given ------------------------------------------------------------

ID_MESSAGE = "invalid id (1 to 128 characters: letters, digits, '.', '_', '-', starting with a letter or digit)"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"worker_id": "bad id"}, "worker_id"),
        ({"worker_id": "w" * 129}, "worker_id"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "w1\n"}, "worker_id"),
        ({"config_bundle": {"id": "-bundle"}}, "config_bundle.id"),
    ],
)
async def test_a_bad_id_in_a_create_body_is_422_in_words_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/workers", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["message"] == f"{field}: {ID_MESSAGE}"
    assert error["details"]["field"] == field
    assert error["details"]["path"] == f"$.{field}"
    assert (await client.get("/v1/workers")).json()["workers"] == []


async def test_a_bad_input_id_is_422_invalid_input_in_the_same_words(client: httpx.AsyncClient) -> None:
    await worker(client)
    response = await client.post("/v1/workers/w1/input", json={"content": "hi", "input_id": "bad id"})
    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["message"]) == ("invalid_input", f"input_id: {ID_MESSAGE}")
    assert error["details"]["field"] == "input_id"
    assert (await client.get("/v1/workers/w1")).json()["worker"]["transcript_len"] == 0


@pytest.mark.parametrize(
    ("query", "field"), [("/v1/events?worker_id=bad%20id", "worker_id"), ("/v1/workers?after=-w", "after")]
)
async def test_a_bad_id_in_a_query_is_422_in_the_same_words(client: httpx.AsyncClient, query: str, field: str) -> None:
    response = await client.get(query)
    assert response.status_code == 422
    error = error_of(response)
    assert (error["code"], error["message"], error["details"]["field"]) == (
        "invalid_request",
        f"{field}: {ID_MESSAGE}",
        field,
    )


async def test_a_bad_id_in_a_path_is_400_in_the_same_words(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/workers/bad%20id")
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["message"]) == ("invalid_worker_id", f"worker_id: {ID_MESSAGE}")


async def test_an_unknown_or_missing_field_is_named_in_details(client: httpx.AsyncClient) -> None:
    await worker(client)
    unknown = await client.post("/v1/workers", json={"colour": "red"})
    missing = await client.post("/v1/workers/w1/input", json={"kind": "user"})
    assert error_of(unknown)["details"] == {"path": "$", "field": "colour"}
    assert error_of(missing)["details"] == {"path": "$", "field": "content"}
