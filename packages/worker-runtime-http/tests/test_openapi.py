"""The OpenAPI 3.1 document: generated from the structs, in sync with the checked-in file, complete, served."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import msgspec

from worker_runtime_core import error_class_for_code
from worker_runtime_http import build_openapi
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
    ("get", "/v1/events"),
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
        "operation_timeout", "store_corrupt", "internal_error",
    }  # fmt: skip
    assert codes == contract_codes


def test_schemas_are_the_structs_and_refs_resolve() -> None:
    doc = build_openapi()
    schemas = doc["components"]["schemas"]
    assert {"InputRequest", "InputAck", "WorkerDetail", "ErrorBody", "EventPage", "RuntimeSummary"} <= set(schemas)
    text = msgspec.json.encode(doc).decode()
    for ref in set(__import__("re").findall(r'"\$ref":"#/components/(\w+)/([^"]+)"', text)):
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
