"""The OpenAPI 3.1 document, generated from the msgspec structs the server encodes and `routes.ENDPOINTS`.

Every route, every status it answers and every error code behind each status are listed; the schemas come from
`msgspec.json.schema_components`. The document is checked into the repository (``openapi.json`` beside this
package's README; a test keeps it in sync) and served at ``GET /openapi.json``. Regenerate the file with
``hatch run openapi`` (``worker-runtime-http openapi --output FILE``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, TypeVar

import msgspec

from worker_runtime_core import ID_PATTERN, ErrorEnvelope, WorkerRuntimeError, error_class_for_code

from ._version import __version__
from .errors import status_for
from .routes import ENDPOINTS, Endpoint

__all__ = [
    "BODY_ERRORS",
    "COMMON_ERRORS",
    "PUBLIC_ERRORS",
    "build_openapi",
    "documented_responses",
    "normalise_descriptions",
    "openapi_bytes",
]

#: Codes every ``/v1`` route and ``/openapi.json`` may answer.
COMMON_ERRORS = ("forbidden_host", "forbidden_origin", "unauthorized", "invalid_request", "internal_error")
#: Codes ``/healthz`` and ``/readyz`` may answer (they need no token and take no parameters).
PUBLIC_ERRORS = ("forbidden_host", "forbidden_origin", "internal_error")
#: Codes every route with a request body may answer.
BODY_ERRORS = ("invalid_json", "unsupported_media_type", "payload_too_large")
#: Codes of no single route.
ROUTING_ERRORS = ("not_found", "method_not_allowed")

_T = TypeVar("_T")
_REF = "#/components/schemas/{name}"

_DESCRIPTION = """\
The REST command API of a worker-runtime Runtime process. A trusted Backend drives it; browsers never do
(a request with an `Origin` header is 403 `forbidden_origin`, and no CORS headers are ever sent).

Every `/v1` route and this document need `Authorization: Bearer <token>` when the process has a token;
`/healthz` and `/readyz` need none. Every response carries `x-request-id` (echoed when the request sent one).
Every error is `{"error": {"code", "message", "details", "retryable"}}`; `x-error-codes` lists each code with
its status. An unknown route is 404 `not_found` and a known path with another method 405
`method_not_allowed` (with an `Allow` header). Checks run in this order: Host, Origin, token, route, media
type and size, body. A query parameter with an empty value (`?limit=`) counts as absent; an unknown or
repeated one is 422 `invalid_request` (`/healthz` and `/readyz` ignore their query). A request body is
`application/json` (a `charset=utf-8` parameter is accepted); an empty body needs no Content-Type and means
`{}`."""


def _error_class(code: str) -> type[WorkerRuntimeError]:
    cls = error_class_for_code(code)
    if cls is None:  # pragma: no cover - a code in the tables above that core does not know
        raise LookupError(f"core has no error class for {code!r}")
    return cls


def _codes(endpoint: Endpoint) -> tuple[str, ...]:
    codes = list(PUBLIC_ERRORS if endpoint.public else COMMON_ERRORS)
    if endpoint.request is not None:
        codes.extend(BODY_ERRORS)
    codes.extend(endpoint.errors)
    if "{" in endpoint.path:  # a path parameter with an (encoded) slash leaves the route: 404 `not_found`
        codes.append("not_found")
    return tuple(dict.fromkeys(codes))


def documented_responses(endpoint: Endpoint) -> dict[int, tuple[Any, tuple[str, ...]]]:
    """Status -> (the type of its body, the error codes it carries) for one route, as the document lists it."""
    found: dict[int, tuple[Any, tuple[str, ...]]] = {endpoint.status: (endpoint.response, ())}
    for status, kind in endpoint.alternatives.items():
        found[status] = (kind, ())
    by_status: dict[int, list[str]] = {}
    for code in _codes(endpoint):
        by_status.setdefault(status_for(_error_class(code)), []).append(code)
    for status, codes in by_status.items():
        if status in found:  # a documented non-error body and an error share a status (readyz 503)
            continue
        found[status] = (ErrorEnvelope, tuple(codes))
    return dict(sorted(found.items()))


def _example(code: str) -> dict[str, Any]:
    cls = _error_class(code)
    summary = (cls.__doc__ or code).strip().splitlines()[0]
    return {
        "summary": summary,
        "value": {"error": {"code": code, "message": summary, "details": {}, "retryable": cls.retryable}},
    }


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if "{worker_id}" in endpoint.path:
        params.append(
            {
                "name": "worker_id",
                "in": "path",
                "required": True,
                "description": "The Worker's id; one that breaks the id pattern is 400 `invalid_worker_id`.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID_PATTERN},
            }
        )
    if "{run_id}" in endpoint.path:
        params.append(
            {
                "name": "run_id",
                "in": "path",
                "required": True,
                "description": "A run id from an input ack.",
                "schema": {"type": "string", "minLength": 1},
            }
        )
    for q in endpoint.query:  # `?limit=` is `limit` left out (`_request.parse_query`): say so with allowEmptyValue
        params.append(
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "allowEmptyValue": True,
                "description": q.description,
                "schema": q.schema,
            }
        )
    return params


def normalise_descriptions(node: _T) -> _T:
    """`node` with every ``description`` string passed through `inspect.cleandoc`, in place (and returned).

    msgspec puts a struct's docstring into its schema, and how it strips the indentation of the lines after the
    first changed between releases (0.22 keeps it, 0.23 removes it); cleaning every description here makes the
    document the same bytes whichever release is installed. Idempotent.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = inspect.cleandoc(value)
            else:
                normalise_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            normalise_descriptions(item)
    return node


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API, as a dict."""
    types: list[Any] = [ErrorEnvelope]
    for endpoint in ENDPOINTS:
        if endpoint.request is not None:
            types.append(endpoint.request)
        for kind, _ in documented_responses(endpoint).values():
            types.append(kind)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip((id(t) for t in types), schemas, strict=True))

    x_request_id = {"$ref": "#/components/headers/XRequestId"}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        responses: dict[str, Any] = {}
        for status, (kind, codes) in documented_responses(endpoint).items():
            headers: dict[str, Any] = {"x-request-id": x_request_id}
            response: dict[str, Any] = {"headers": headers}
            if codes:
                response["description"] = "Error: " + ", ".join(f"`{c}`" for c in codes)
                response["content"] = {
                    "application/json": {
                        "schema": schema_of[id(kind)],
                        "examples": {code: {"$ref": f"#/components/examples/{code}"} for code in codes},
                    }
                }
                if "worker_busy" in codes:
                    headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
                if "unauthorized" in codes:
                    headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWWAuthenticate"}
            else:
                response["description"] = endpoint.summary if status == endpoint.status else "See the summary"
                response["content"] = {"application/json": {"schema": schema_of[id(kind)]}}
            responses[str(status)] = response
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "x-error-codes": list(_codes(endpoint)),
            "responses": responses,
        }
        if endpoint.description:
            operation["description"] = endpoint.description
        params = _parameters(endpoint)
        if params:
            operation["parameters"] = params
        if endpoint.request is not None:
            operation["requestBody"] = {
                "required": endpoint.request_required,
                "description": "application/json; an empty body means `{}`"
                if not endpoint.request_required
                else "application/json",
                "content": {"application/json": {"schema": schema_of[id(endpoint.request)]}},
            }
        if endpoint.public:
            operation["security"] = []
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation

    all_codes = sorted(
        {code for e in ENDPOINTS for code in _codes(e)} | set(ROUTING_ERRORS),
        key=lambda c: (status_for(_error_class(c)), c),
    )
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "worker-runtime", "version": __version__, "description": _DESCRIPTION},
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "examples": {code: _example(code) for code in all_codes},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "headers": {
                "XRequestId": {
                    "description": "The request's id: the caller's `x-request-id` when it sent a valid one "
                    "(1 to 200 visible ASCII characters), else one the server made.",
                    "schema": {"type": "string"},
                },
                "RetryAfter": {
                    "description": "Seconds after which a retry may succeed (on `worker_busy`).",
                    "schema": {"type": "integer"},
                },
                "WWWAuthenticate": {"description": "The bearer challenge.", "schema": {"type": "string"}},
            },
        },
        "x-error-codes": {
            code: {
                "status": status_for(_error_class(code)),
                "retryable": _error_class(code).retryable,
                "description": (_error_class(code).__doc__ or code).strip().splitlines()[0],
            }
            for code in all_codes
        },
    }
    return normalise_descriptions(document)


@functools.cache
def openapi_bytes() -> bytes:
    """The document as the server serves it and the repository keeps it: sorted keys, two-space indent."""
    return msgspec.json.format(msgspec.json.encode(build_openapi(), order="sorted"), indent=2) + b"\n"
