"""The OpenAPI 3.1 document: generated from the structs, in sync with the checked-in file, complete, served."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
from http_helpers import client_for

from worker_runtime_core import (
    ERROR_DETAILS_BY_CODE,
    EVENT_DATA_BY_KIND,
    ID_PATTERN,
    KNOWN_EVENT_KINDS,
    KNOWN_RUN_STATUSES,
    Limits,
    Runtime,
    error_class_for_code,
)
from worker_runtime_http import build_openapi, create_app
from worker_runtime_http.errors import status_for
from worker_runtime_http.openapi import normalise_descriptions, openapi_bytes
from worker_runtime_http.routes import ENDPOINTS

CHECKED_IN = Path(__file__).resolve().parents[1] / "openapi.json"

CONTRACT_ROUTES = {
    ("get", "/v1/runtime"),
    ("get", "/v1/workers"),
    ("post", "/v1/workers"),
    ("get", "/v1/workers/{worker_id}"),
    ("delete", "/v1/workers/{worker_id}"),
    ("get", "/v1/workers/{worker_id}/runs/{run_id}"),
    ("post", "/v1/workers/{worker_id}/input"),
    ("post", "/v1/workers/{worker_id}/stop"),
    ("post", "/v1/workers/{worker_id}/cancel"),
    ("get", "/v1/workers/{worker_id}/transcript"),
    ("post", "/v1/workers/{worker_id}/runs/{run_id}/respond"),
    ("get", "/v1/requests"),
    ("get", "/v1/events"),
    ("get", "/v1/events/stream"),
    ("get", "/v1/diagnostics"),
    ("get", "/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}

CONTRACT_SUCCESS = {
    ("post", "/v1/workers"): "201",
    ("post", "/v1/workers/{worker_id}/input"): "202",
}


def test_the_checked_in_file_is_in_sync() -> None:
    assert CHECKED_IN.read_bytes() == openapi_bytes(), "regenerate it: hatch run openapi"


def _indent_like_msgspec_0_22(node: Any) -> None:
    """Put back the indentation msgspec 0.22 leaves in a docstring's later lines (0.23 strips it)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = value.replace("\n", "\n    ")
            else:
                _indent_like_msgspec_0_22(value)
    elif isinstance(node, list):
        for item in node:
            _indent_like_msgspec_0_22(item)


def test_descriptions_are_the_same_whichever_msgspec_formats_the_docstrings() -> None:
    as_0_22 = (
        "Limits of a Runtime.\n\n    Attributes:\n        max_page: largest page.\n        max_wait_s: longest wait."
    )
    as_0_23 = "Limits of a Runtime.\n\nAttributes:\n    max_page: largest page.\n    max_wait_s: longest wait."
    assert normalise_descriptions({"description": as_0_22}) == {"description": as_0_23}
    assert normalise_descriptions({"description": as_0_23}) == {"description": as_0_23}
    doc = build_openapi()
    indented = copy.deepcopy(doc)
    _indent_like_msgspec_0_22(indented)
    assert indented != doc  # some description has more than one line
    assert normalise_descriptions(indented) == doc
    assert normalise_descriptions(copy.deepcopy(doc)) == doc


def test_no_description_points_at_a_file_outside_the_document() -> None:
    assert b".md" not in openapi_bytes()  # a served document names no notes a reader cannot see


def test_it_is_openapi_3_1_with_bearer_auth() -> None:
    doc = build_openapi()
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_it_lists_exactly_the_contract_s_routes() -> None:
    doc = build_openapi()
    listed = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert listed == CONTRACT_ROUTES
    assert {(e.method.lower(), e.path) for e in ENDPOINTS} == CONTRACT_ROUTES


def test_the_stream_route_is_an_event_stream_with_its_frame_payloads_named_per_event() -> None:
    doc = build_openapi()
    op = doc["paths"]["/v1/events/stream"]["get"]
    content = op["responses"]["200"]["content"]
    assert list(content) == ["text/event-stream"]
    frames = content["text/event-stream"]["x-sse-events"]
    assert set(frames) == {*KNOWN_EVENT_KINDS, "output_delta"}
    assert frames["transcript_appended"] == {"$ref": "#/components/schemas/StreamEvent"}
    assert frames["output_delta"] == {"$ref": "#/components/schemas/OutputDelta"}
    assert set(doc["components"]["schemas"]["OutputDelta"]["properties"]) >= {"sequence", "offset", "text", "kind"}
    stream_event = doc["components"]["schemas"]["StreamEvent"]
    assert "entry" in stream_event["properties"] and "entry" in stream_event["required"]
    params = {(p["in"], p["name"]) for p in op["parameters"]}
    assert params == {("query", n) for n in ("after", "worker_id", "run_id", "deltas")} | {("header", "Last-Event-ID")}
    assert "application/json" in op["responses"]["422"]["content"]  # errors stay JSON
    assert set(op["x-error-codes"]) >= {"invalid_request", "cursor_expired", "runtime_unavailable"}
    assert op["responses"]["200"]["headers"]["X-Event-Cursor"] == {"$ref": "#/components/headers/XEventCursor"}
    assert doc["components"]["headers"]["XEventCursor"]["schema"] == {"type": "integer", "minimum": 0}


def test_success_statuses_are_the_contract_s() -> None:
    doc = build_openapi()
    for method, path in CONTRACT_ROUTES:
        expected = CONTRACT_SUCCESS.get((method, path), "200")
        assert expected in doc["paths"][path][method]["responses"], (method, path)


def test_every_error_code_is_listed_under_its_status() -> None:
    doc = build_openapi()
    codes = set(doc["x-error-codes"])
    for code, entry in doc["x-error-codes"].items():
        cls = error_class_for_code(code)
        assert cls is not None
        assert entry["status"] == status_for(cls)
        assert entry["retryable"] == cls.retryable
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for code in op["x-error-codes"]:
                status = str(status_for(error_class_for_code(code)))  # type: ignore[arg-type]
                assert f"`{code}`" in op["responses"][status]["description"], (method, path, code)
                assert code in codes
    contract_codes = {
        "invalid_json", "invalid_request", "invalid_input", "invalid_worker_id", "limit_too_large",
        "unknown_profile", "unsupported_capability", "worker_not_found", "run_not_found", "not_found",
        "worker_exists", "capacity_exceeded", "worker_busy", "worker_stopped", "worker_not_stopped",
        "idempotency_conflict", "cursor_expired", "unauthorized", "forbidden_origin", "forbidden_host",
        "method_not_allowed", "payload_too_large", "unsupported_media_type", "runtime_unavailable",
        "operation_timeout", "store_corrupt", "internal_error", "queue_full", "request_not_found", "request_closed",
    }  # fmt: skip
    assert codes == contract_codes


def test_schemas_are_the_structs_and_refs_resolve() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    assert {"InputRequest", "InputAck", "WorkerDetail", "ErrorBody", "EventPage", "RuntimeSummary"} <= set(schemas)
    text = msgspec.json.encode(doc).decode()
    for ref in set(re.findall(r'"\$ref":"#/components/(\w+)/([^"]+)"', text)):
        assert ref[1] in doc["components"][ref[0]], ref
    body = doc["paths"]["/v1/workers/{worker_id}/input"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/InputRequest"}


def test_busy_documents_retry_after() -> None:
    doc = build_openapi()
    conflict = doc["paths"]["/v1/workers/{worker_id}/input"]["post"]["responses"]["409"]
    assert "Retry-After" in conflict["headers"]


async def test_the_served_document_is_the_file(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.content == CHECKED_IN.read_bytes()


# --- what a generated client needs --------------------------------------------------------------------------

DESCRIBED = {t.__name__ for t in (*EVENT_DATA_BY_KIND.values(), *ERROR_DETAILS_BY_CODE.values())}


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/schemas/"):
                yield value.removeprefix("#/components/schemas/")
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _reachable(doc: dict[str, Any], roots: list[Any]) -> set[str]:
    schemas = doc["components"]["schemas"]
    seen: set[str] = set()
    todo = [name for root in roots for name in _refs(root)]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_refs(schemas[name]))
    return seen


def _sides(doc: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The components a response refers to, and those a request body refers to."""
    operations = [op for ops in doc["paths"].values() for op in ops.values()]
    responses = _reachable(doc, [r for op in operations for r in op["responses"].values()])
    requests = _reachable(doc, [op["requestBody"] for op in operations if "requestBody" in op])
    return responses, requests


def test_a_response_schema_requires_every_field_and_forbids_none() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    responses, requests = _sides(doc)
    assert {"WorkerDetail", "LimitsInfo", "AssistantIntent", "RoleIntent", "CapabilityRequest"} <= responses
    assert responses.isdisjoint({"AssistantIntentInput", "RoleIntentInput", "CapabilityRequestInput", "Limits"})
    for name in responses - DESCRIBED:
        schema = schemas[name]
        assert sorted(schema["required"]) == sorted(schema["properties"]), name
        assert "additionalProperties" not in schema, name
        assert all("default" not in prop for prop in schema["properties"].values()), name
    assert schemas["AssistantIntent"]["properties"]["purpose"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert "run" in schemas["RunEventData"]["required"] and "reason" not in schemas["RunEventData"]["required"]


def test_a_request_schema_keeps_its_optional_fields_and_no_object_default() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    _, requests = _sides(doc)
    assert {"CreateWorkerRequest", "AssistantIntentInput", "RoleIntentInput", "CapabilityRequestInput"} <= requests
    assert {"TaskIntent", "NamedProfile", "ResourceRef"} <= requests  # the same in both: one component
    assert schemas["AssistantIntentInput"]["required"] == ["kind"]
    assert schemas["CapabilityRequestInput"]["required"] == ["name"]
    assert schemas["CreateWorkerRequest"]["required"] == []
    for name in requests:
        for field, prop in schemas[name].get("properties", {}).items():
            assert not isinstance(prop.get("default"), dict), (name, field)  # generators refuse object defaults
    create = schemas["CreateWorkerRequest"]["properties"]
    assert '`{"kind": "assistant", "purpose": null}`' in create["intent"]["description"]
    assert '`{"kind": "runtime_default"}`' in create["profile"]["description"]
    for body in ("CreateWorkerRequest", "InputRequest", "StopRequest", "CancelRequest"):
        assert schemas[body]["additionalProperties"] is False, body


def test_timestamps_are_date_times() -> None:
    text = msgspec.json.encode(build_openapi()["components"]["schemas"]).decode()
    stamps = re.findall(r'"(\w+_at)":\{(?:"anyOf":\[)?\{?"format":"date-time"', text)
    assert set(stamps) == {"created_at", "updated_at", "started_at", "ended_at", "expires_at"}
    assert not re.search(r'"\w+_at":\{"type":"string"\}', text)


def test_kinds_and_statuses_are_open_string_enums() -> None:
    schemas = build_openapi()["components"]["schemas"]
    for schema, known in ((schemas["Event"]["properties"]["kind"], KNOWN_EVENT_KINDS),
                          (schemas["RunInfo"]["properties"]["status"], KNOWN_RUN_STATUSES)):  # fmt: skip
        assert schema["type"] == "string"
        enum, other = schema["anyOf"]
        assert enum["enum"] == list(known) and other == {"type": "string"}


def test_event_data_is_described_by_kind_and_error_details_by_code() -> None:
    schemas = build_openapi()["components"]["schemas"]
    event = schemas["Event"]
    data = event["properties"]["data"]["anyOf"]
    assert data[-1] == {"type": "object", "title": "OtherEventData"}  # what a newer server's kinds carry
    assert {r["$ref"].rsplit("/", 1)[1] for r in data[:-1]} == {t.__name__ for t in EVENT_DATA_BY_KIND.values()}
    assert set(event["x-data-by-kind"]) == set(EVENT_DATA_BY_KIND) <= set(KNOWN_EVENT_KINDS)
    for kind in KNOWN_EVENT_KINDS:
        assert f"`{kind}`" in event["properties"]["data"]["description"], kind
    assert schemas["WorkerStoppedEventData"]["required"] == ["reason", "cancelled_run_id"]
    body = schemas["ErrorBody"]
    details = body["properties"]["details"]["anyOf"]
    assert details[-1] == {"type": "object", "title": "OtherErrorDetails"}
    assert body["x-details-by-code"] == {
        "worker_busy": "#/components/schemas/WorkerBusyDetails",
        "queue_full": "#/components/schemas/QueueFullDetails",
        "cursor_expired": "#/components/schemas/CursorExpiredDetails",
        "invalid_request": "#/components/schemas/CursorAheadDetails",
        "store_corrupt": "#/components/schemas/StoreCorruptDetails",
    }
    assert schemas["WorkerBusyDetails"]["required"] == ["run_id"]
    assert schemas["CursorAheadDetails"]["required"] == ["newest_id"]
    assert schemas["StoreCorruptDetails"]["required"] == ["path", "offset"]


def test_query_ids_have_the_path_ids_pattern() -> None:
    doc = build_openapi()
    path_id = doc["paths"]["/v1/workers/{worker_id}"]["get"]["parameters"][0]["schema"]
    for path, name in (("/v1/workers", "after"), ("/v1/events", "worker_id")):
        params = {p["name"]: p["schema"] for p in doc["paths"][path]["get"]["parameters"]}
        assert params[name] == path_id == {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID_PATTERN}


def test_the_title_is_not_our_client_packages_name() -> None:
    title = build_openapi()["info"]["title"]
    assert title == "worker-runtime HTTP API"
    assert re.sub(r"\W+", "_", title.lower()) + "_client" != "worker_runtime_client"


async def test_the_served_document_states_the_process_limits() -> None:
    limits = Limits(max_page=50, default_page=20, max_wait_s=2.5, max_input_bytes=64)
    async with (
        Runtime(limits=limits) as rt,
        client_for(create_app(rt, allow_unauthenticated=True, bind=("127.0.0.1", 8787))) as c,
    ):
        served = (await c.get("/openapi.json")).json()
    assert served == build_openapi(limits) != build_openapi()
    events = {p["name"]: p for p in served["paths"]["/v1/events"]["get"]["parameters"]}
    assert (events["limit"]["schema"]["maximum"], events["wait"]["schema"]["maximum"]) == (50, 2.5)
    assert "`default_page` (20)" in events["limit"]["description"]
    assert served["components"]["schemas"]["InputRequest"]["properties"]["content"]["maxLength"] == 64
