"""The OpenAPI 3.1 document, generated from the msgspec structs the server encodes and `routes.ENDPOINTS`.

Every route, every status it answers and every error code behind each status are listed; the schemas come from
`msgspec.json.schema_components`. The document is checked into the repository (``openapi.json`` beside this
package's README; a test keeps it in sync) and served at ``GET /openapi.json``. Regenerate the file with
``hatch run openapi`` (``worker-runtime-http openapi --output FILE``).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from worker_runtime_core import (
    ERROR_DETAILS_BY_CODE,
    EVENT_DATA_BY_KIND,
    KNOWN_EVENT_KINDS,
    ErrorEnvelope,
    LimitsInfo,
    OutputDelta,
    StreamEvent,
    WorkerRuntimeError,
    error_class_for_code,
)

from ._version import __version__
from .errors import status_for
from .routes import ENDPOINTS, ID_SCHEMA, Endpoint

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
#: Request schemas are generated apart (see `_components`); their refs carry this prefix until they are named.
_REQUEST_PREFIX = "#/components/schemas/request:"
#: The title generators use to name their package: not ``worker-runtime``, whose client package would clash with
#: ``worker_runtime_client``.
TITLE = "worker-runtime HTTP API"

_DESCRIPTION = """\
The REST command API of a worker-runtime Runtime process. A trusted Backend drives it; browsers never do
(a request with an `Origin` header is 403 `forbidden_origin`, and no CORS headers are ever sent).

Every `/v1` route and this document need `Authorization: Bearer <token>` when the process has a token;
`/healthz` and `/readyz` need none. Every response carries `x-request-id` (echoed when the request sent one).
Every error is `{"error": {"code", "message", "details", "retryable"}}`; `x-error-codes` lists each code with
its status. An unknown route is 404 `not_found` and a known path with another method 405
`method_not_allowed` (with an `Allow` header). Checks run in this order: Host, Origin, token, route, path id
and query parameters, media type and size, body. A query parameter with an empty value (`?limit=`) counts as
absent; an unknown or repeated one is 422 `invalid_request` (`/healthz` and `/readyz` ignore their query). A
request body is `application/json` (a `charset=utf-8` parameter is accepted); an empty body needs no
Content-Type and means `{}`."""


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


def _parameters(endpoint: Endpoint, limits: LimitsInfo) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    if "{worker_id}" in endpoint.path:
        params.append(
            {
                "name": "worker_id",
                "in": "path",
                "required": True,
                "description": "The Worker's id; one that breaks the id pattern is 400 `invalid_worker_id`.",
                "schema": dict(ID_SCHEMA),
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
    shown = _shown(limits)
    for q in endpoint.query:  # `?limit=` is `limit` left out (`_request.parse_query`): say so with allowEmptyValue
        schema = dict(q.schema)
        if q.maximum is not None:
            schema["maximum"] = _number(getattr(limits, q.maximum))
        params.append(
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "allowEmptyValue": True,
                "description": q.description.format_map(shown),
                "schema": schema,
            }
        )
    for h in endpoint.headers:
        params.append(
            {"name": h.name, "in": "header", "required": False, "description": h.description, "schema": dict(h.schema)}
        )
    return params


def _shown(limits: LimitsInfo) -> dict[str, Any]:
    """The limits by name, as descriptions quote them (``{max_page}``)."""
    return {name: _number(value) for name, value in msgspec.structs.asdict(limits).items()}


def _number(value: Any) -> Any:
    """A limit as the document shows it: ``30`` for ``30.0``."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# --- components: one schema per struct, requests and responses apart -------------------------------------------


def _as_response(schema: dict[str, Any]) -> None:
    """A struct's schema as the server sends it, in place: the server encodes every field (no struct omits
    defaults), so every property is required (a nullable one may be null); a default means nothing in an answer;
    and a newer server may add properties, so none is forbidden."""
    properties = schema.get("properties")
    if schema.get("type") != "object" or properties is None:
        return
    required = list(schema.get("required", ()))
    schema["required"] = required + [name for name in properties if name not in required]
    for prop in properties.values():
        prop.pop("default", None)
    if schema.get("additionalProperties") is False:
        del schema["additionalProperties"]


def _as_request(schema: dict[str, Any]) -> None:
    """A request struct's schema, in place: a property whose default is an object (an intent, a profile selector)
    says its default in words and is left out by the server's choice, since generators refuse object defaults."""
    for prop in schema.get("properties", {}).values():
        default = prop.get("default")
        if isinstance(default, dict):
            del prop["default"]
            shown = json.dumps(default, separators=(", ", ": "))
            prop["description"] = f"Optional; when left out the server uses `{shown}`."


def _rename(node: Any, name_of: Callable[[str], str]) -> Any:
    """`node` with every request ref (``$ref`` and discriminator mappings) pointing at its final component."""
    if isinstance(node, dict):
        return {key: _rename(value, name_of) for key, value in node.items()}
    if isinstance(node, list):
        return [_rename(item, name_of) for item in node]
    if isinstance(node, str) and node.startswith(_REQUEST_PREFIX):
        return _REF.format(name=name_of(node.removeprefix(_REQUEST_PREFIX)))
    return node


def _components(
    requests: list[Any], responses: list[Any], described: list[Any]
) -> tuple[dict[int, Any], dict[str, Any]]:
    """The schema of each type (by ``id``) and the components they refer to.

    Response structs are schemas of what the server sends (`_as_response`); request structs keep their optional
    fields and defaults. A struct in both whose two schemas differ gets two components: ``Name`` as the server
    sends it and ``NameInput`` as a request may give it (``AssistantIntentInput``: `purpose` may be left out). The
    wire JSON is the same either way. `described` are structs that only describe a dict (`Event.data`,
    `ErrorBody.details`): their optional fields stay optional.
    """
    schemas, components = msgspec.json.schema_components(responses, ref_template=_REF)
    for component in components.values():
        _as_response(component)
    schema_of = dict(zip((id(t) for t in responses), schemas, strict=True))

    descriptions, extra = msgspec.json.schema_components(described, ref_template=_REF)
    own = {t.__name__ for t in described}
    for name, component in extra.items():
        if name not in components:
            if name not in own:
                _as_response(component)
            components[name] = component
    schema_of.update(zip((id(t) for t in described), descriptions, strict=True))

    request_schemas, request_components = msgspec.json.schema_components(
        requests, ref_template=_REQUEST_PREFIX + "{name}"
    )
    named: dict[str, str] = {}

    def name_of(name: str) -> str:
        if name not in named:
            schema = _rename(request_components[name], name_of)
            _as_request(schema)
            final = name if components.get(name, schema) == schema else f"{name}Input"
            if final != name:
                schema["title"] = final  # generators name their classes by title
            named[name] = final
            components[final] = schema
        return named[name]

    for name in request_components:
        name_of(name)
    schema_of.update(zip((id(t) for t in requests), (_rename(s, name_of) for s in request_schemas), strict=True))
    return schema_of, components


def _open_union(refs: list[str], other: str, description: str) -> dict[str, Any]:
    """One of the components `refs`, or any other object (what a newer server may send)."""
    return {
        "anyOf": [{"$ref": _REF.format(name=name)} for name in refs] + [{"type": "object", "title": other}],
        "description": description,
    }


def _describe_dicts(components: dict[str, Any]) -> None:
    """`Event.data` by kind and `ErrorBody.details` by code, with an open form for what this version lacks."""
    kinds_of: dict[str, list[str]] = {}
    for kind, data_type in EVENT_DATA_BY_KIND.items():
        kinds_of.setdefault(data_type.__name__, []).append(f"`{kind}`")
    kinds_of["`{}`"] = [f"`{kind}`" for kind in KNOWN_EVENT_KINDS if kind not in EVENT_DATA_BY_KIND]
    by_kind = "; ".join(f"{', '.join(kinds)}: {name}" for name, kinds in kinds_of.items())
    event = components["Event"]
    event["properties"]["data"] = _open_union(
        [name for name in kinds_of if name != "`{}`"],
        "OtherEventData",
        f"By kind ({by_kind}); `x-data-by-kind` maps each kind to its schema. A kind a newer server adds may "
        "carry any object.",
    )
    event["x-data-by-kind"] = {kind: _REF.format(name=t.__name__) for kind, t in EVENT_DATA_BY_KIND.items()}
    body = components["ErrorBody"]
    by_code = "; ".join(f"`{code}`: {t.__name__}" for code, t in ERROR_DETAILS_BY_CODE.items())
    body["properties"]["details"] = _open_union(
        list(dict.fromkeys(t.__name__ for t in ERROR_DETAILS_BY_CODE.values())),
        "OtherErrorDetails",
        f"Fixed fields for some codes ({by_code}); `x-details-by-code` maps them to their schema. `invalid_request` "
        "has CursorAheadDetails for an events cursor above the newest id; its other details name the `field` or "
        "`path` that was wrong. Other codes have an object of their own.",
    )
    body["x-details-by-code"] = {code: _REF.format(name=t.__name__) for code, t in ERROR_DETAILS_BY_CODE.items()}


def _apply_limits(components: dict[str, Any], limits: LimitsInfo) -> None:
    """What the limits bound in a body: `content` has at most `max_input_bytes` characters (its UTF-8 bytes are
    checked by the server, see its description)."""
    components["InputRequest"]["properties"]["content"]["maxLength"] = limits.max_input_bytes


#: The payload of each frame an event stream sends, by its ``event:`` name (`x-sse-events`).
SSE_FRAMES: dict[str, type[msgspec.Struct]] = {
    **{kind: StreamEvent for kind in KNOWN_EVENT_KINDS},
    "output_delta": OutputDelta,
}


def _sse_content(schema: dict[str, Any]) -> dict[str, Any]:
    """An event stream's body: each frame's ``data:`` is one of the payloads; `x-sse-events` maps each ``event:``
    name to its payload's schema (a kind a newer server adds has a StreamEvent payload too)."""
    refs = dict.fromkeys(_REF.format(name=t.__name__) for t in SSE_FRAMES.values())
    return {
        "schema": {
            "type": "string",
            "description": "Server-Sent Events: frames `id: <event id>`, `event: <kind>`, `data: <JSON payload>`; "
            "the `data:` payloads are described by `x-sse-events` and `x-sse-data`.",
        },
        "x-sse-data": schema if len(refs) == 1 else {"anyOf": [{"$ref": ref} for ref in refs]},
        "x-sse-events": {name: {"$ref": _REF.format(name=t.__name__)} for name, t in SSE_FRAMES.items()},
    }


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


def build_openapi(limits: LimitsInfo | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API, as a dict.

    `limits` are the process's (the defaults when None): the page `limit`, the long-poll `wait` and the input
    `content` carry their maximum, so the document a process serves states its own bounds.
    """
    limits = limits if limits is not None else LimitsInfo()
    request_types: list[Any] = []
    response_types: list[Any] = [ErrorEnvelope]
    response_types.extend(SSE_FRAMES.values())  # the payloads of the stream's frames, as components
    for endpoint in ENDPOINTS:
        if endpoint.request is not None:
            request_types.append(endpoint.request)
        for kind, _ in documented_responses(endpoint).values():
            response_types.append(kind)
    described = list(dict.fromkeys([*EVENT_DATA_BY_KIND.values(), *ERROR_DETAILS_BY_CODE.values()]))
    schema_of, components = _components(request_types, response_types, described)
    _describe_dicts(components)
    _apply_limits(components, limits)

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
                if "worker_busy" in codes or "queue_full" in codes:
                    headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
                if "unauthorized" in codes:
                    headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWWAuthenticate"}
            else:
                response["description"] = endpoint.summary if status == endpoint.status else "See the summary"
                content: dict[str, Any] = {"schema": schema_of[id(kind)]}
                if endpoint.media_type == "text/event-stream" and status == endpoint.status:
                    content = _sse_content(content["schema"])
                    headers["X-Event-Cursor"] = {"$ref": "#/components/headers/XEventCursor"}
                response["content"] = {
                    endpoint.media_type if status == endpoint.status else "application/json": content
                }
            responses[str(status)] = response
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "x-error-codes": list(_codes(endpoint)),
            "responses": responses,
        }
        if endpoint.description:
            operation["description"] = endpoint.description.format_map(_shown(limits))
        params = _parameters(endpoint, limits)
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
        "info": {"title": TITLE, "version": __version__, "description": _DESCRIPTION},
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
                    "description": "Seconds after which a retry may succeed (on `worker_busy` and `queue_full`).",
                    "schema": {"type": "integer"},
                },
                "WWWAuthenticate": {"description": "The bearer challenge.", "schema": {"type": "string"}},
                "XEventCursor": {
                    "description": "The newest event id when the stream opened: the cursor a client that has no "
                    "cursor yet (a live-only stream before its first frame) resumes from with `Last-Event-ID`.",
                    "schema": {"type": "integer", "minimum": 0},
                },
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
def openapi_bytes(limits: LimitsInfo | None = None) -> bytes:
    """The document as the server serves it and the repository keeps it (under the default limits): sorted keys,
    two-space indent."""
    return msgspec.json.format(msgspec.json.encode(build_openapi(limits), order="sorted"), indent=2) + b"\n"
