"""Schemathesis against the served OpenAPI document (issue 5).

The schema is loaded from the app's own ``GET /openapi.json`` (`schemathesis.openapi.from_asgi`); every operation
gets a bounded, derandomized number of schema-valid and schema-invalid requests through the app's ASGI interface,
with the token set as the document's ``bearerAuth`` scheme. Checked on every answer: no 5xx; the status, the
Content-Type, the documented headers and the body are what the document says for that operation; schema-invalid
requests are refused and schema-valid ones accepted; a 2xx route refuses the same request without the token or with
a wrong one.

Workers exist before the run, so requests reach the Runtime's real paths, not only 404s: each operation with a
``{worker_id}`` gets its own idle, busy and stopped Worker (one operation's stops and deletes leave the next one's
Workers as they were), and schema-valid cases use one of those ids (and its run id) about half the time.

Schema-valid requests are accepted (`positive_data_accepted`): answered 2xx, or refused for the state of a
Worker (404, 409), or with one of the refusals the document states in words because a schema cannot: a profile
or capability this process is not configured with (422 `unknown_profile`, `unsupported_capability`), a `content`
whose UTF-8 is longer than `max_input_bytes` though its characters are within `maxLength` (422 `invalid_input`),
and an events cursor above the newest id (422 `invalid_request` with `details.newest_id`). The limits are in the
schemas (the served document carries this process's `max_page`, `max_wait_s` and `max_input_bytes`).

One sync test, with a subtest per operation. `from_asgi` starts the app's lifespan (and so the Runtime) on
schemathesis' event-loop thread; schemathesis' pytest plugin ends it when the test ends. (The per-operation form,
`schemathesis.pytest.from_fixture`, fails on pytest 9.2, which no longer has the ``Node._nodeid`` it rewrites.)
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from http_helpers import AUTH, TOKEN, Gate, error_of, make_runtime, serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from worker_runtime_core import Limits, Runtime
from worker_runtime_http import build_openapi, create_app
from worker_runtime_http.routes import ENDPOINTS

HOST = "127.0.0.1:8787"
BASE_URL = f"http://{HOST}"
#: Examples per operation and generation mode (schema-valid, schema-invalid).
MAX_EXAMPLES = 25
#: Longest long poll a generated ``wait`` may ask for here (the document allows 30 s).
MAX_WAIT_S = 0.05


def documented_error_code(ctx: Any, response: Any, case: Any) -> None:
    """A check of this document's own conventions: an error's code is one the operation lists under that status
    (its examples), and every answer carries ``x-request-id``."""
    assert response.headers.get("x-request-id"), "no x-request-id"
    documented = case.operation.definition.raw["responses"].get(str(response.status_code), {})
    codes = documented.get("content", {}).get("application/json", {}).get("examples", {})
    if codes:
        code = json.loads(response.content)["error"]["code"]
        assert code in codes, f"{code!r} is not documented under {response.status_code} (only {sorted(codes)})"


#: 422 codes a schema-valid request may get for what its schema cannot say (see the module's docstring).
CONFIGURATION_CODES = frozenset({"unknown_profile", "unsupported_capability"})


def _stated_in_words(error: dict[str, Any], case: Any) -> bool:
    """True for a 422 the document states in a description rather than a schema."""
    if error["code"] in CONFIGURATION_CODES:
        return True
    if error["code"] == "invalid_input" and isinstance(case.body, dict) and isinstance(case.body.get("content"), str):
        return len(case.body["content"].encode("utf-8", "surrogatepass")) > Limits().max_input_bytes
    return error["code"] == "invalid_request" and "newest_id" in error["details"]


def positive_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' `positive_data_acceptance` (2xx, or 404 and 409 for the state of a Worker), except for the
    refusals the document states in words (`_stated_in_words`)."""
    if case.meta is not None and case.meta.generation.mode.is_positive and response.status_code == 422:
        if _stated_in_words(json.loads(response.content)["error"], case):
            return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_accepted,
    ignored_auth,
    documented_error_code,
]


class Pool:
    """One operation's Workers, made over HTTP: idle (a finished run), busy (an active run), stopped."""

    def __init__(self, schema: Any, prefix: str) -> None:
        self.runs: dict[str, str] = {}
        for state, profile in (("idle", "default"), ("busy", "gate"), ("stopped", "default")):
            wid = f"{prefix}-{state}"
            create = {"worker_id": wid, "profile": {"kind": "named", "name": profile}}
            _call(schema, "POST", "/v1/workers", 201, body=create)
            ack = _call(schema, "POST", "/v1/workers/{worker_id}/input", 202, {"worker_id": wid}, {"content": "hi"})
            self.runs[wid] = ack["ack"]["run_id"]
            if state == "stopped":
                _call(schema, "POST", "/v1/workers/{worker_id}/stop", 200, {"worker_id": wid}, {})

    def path_parameters(self) -> st.SearchStrategy[dict[str, str]]:
        """A known worker id with its run id or an unknown one."""
        pairs = [(wid, run) for wid, known_run in self.runs.items() for run in (known_run, "run-999")]
        return st.sampled_from(pairs).map(lambda pair: {"worker_id": pair[0], "run_id": pair[1]})


def _call(
    schema: Any, method: str, path: str, status: int, path_parameters: dict[str, str] | None = None, body: Any = None
) -> Any:
    case = schema[path][method].Case(path_parameters=path_parameters or {}, body=body)
    response = case.call(base_url=BASE_URL, headers=AUTH)  # a hand-made case gets no credentials of its own
    assert response.status_code == status, response.text
    return response.json()


def _adjust(case: Any, known: dict[str, str] | None) -> None:
    """Cap a schema-valid ``wait``; point a schema-valid case at a known Worker when `known` is given.

    Both swap a valid value for another valid one, so a schema-invalid case stays invalid in the part its checks
    know about; path parameters of a schema-invalid case are left as generated all the same.
    """
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 <= wait <= 30:
        case.query["wait"] = min(wait, MAX_WAIT_S)
    if known is not None and case.path_parameters and case.meta.generation.mode.is_positive:
        case.path_parameters = {name: known[name] for name in case.path_parameters}


def run_operation(operation: Any, pool: Pool | None) -> None:
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)
    known = st.none() | pool.path_parameters() if pool is not None else st.none()

    @settings(
        max_examples=2 * MAX_EXAMPLES,
        derandomize=True,
        database=None,  # nothing written under .hypothesis/
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],  # big generated bodies on a slow machine: not a finding
    )
    @given(case=cases, known=known)
    def run(case: Any, known: dict[str, str] | None) -> None:
        _adjust(case, known)
        case.call_and_validate(base_url=BASE_URL, checks=CHECKS)

    run()


def test_schemathesis_run(subtests: pytest.Subtests) -> None:
    gate = Gate()  # never released: a `gate` run stays active until cancelled, stopped or closed
    app = create_app(make_runtime(gate), token=TOKEN, bind=("127.0.0.1", 8787), shutdown_grace_s=0)
    config = schemathesis.Config.from_dict(
        {"auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}}, "request-timeout": 5}
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config, headers={"host": HOST, **AUTH})
    # Every route, `GET /openapi.json` included (schemathesis leaves out the operation that served the schema).
    for endpoint in ENDPOINTS:
        if endpoint.media_type == "text/event-stream":  # never ends through ASGI; test_stream.py covers it
            continue
        operation = schema[endpoint.path][endpoint.method]
        pool = Pool(schema, endpoint.operation_id) if "{worker_id}" in endpoint.path else None
        with subtests.test(operation.label):
            run_operation(operation, pool)


# --- what the run found --------------------------------------------------------------------------------------


async def test_an_empty_query_value_is_documented_and_counts_as_absent(rt: Runtime, client: httpx.AsyncClient) -> None:
    """``?limit=`` is answered as if `limit` were absent; the document said `limit` was an integer (schemathesis:
    "Schema-violating request accepted"). Every query parameter now has ``allowEmptyValue: true``."""
    await rt.create_worker(worker_id="w1")
    doc = build_openapi()
    for endpoint in ENDPOINTS:
        if endpoint.media_type == "text/event-stream":  # a stream does not end: test_stream.py checks its empty values
            continue
        documented = {p["name"]: p for p in doc["paths"][endpoint.path][endpoint.method.lower()].get("parameters", ())}
        for param in endpoint.query:
            assert documented[param.name]["allowEmptyValue"] is True
            path = endpoint.path.replace("{worker_id}", "w1")
            response = await client.request(endpoint.method, path, params={param.name: ""})
            assert response.status_code == 200, (endpoint.path, param.name, response.text)


LIST_ROUTES = ("/v1/workers", "/v1/workers/{worker_id}/transcript", "/v1/events")


async def test_a_limit_above_max_page_is_outside_the_served_schema(gate: Gate) -> None:
    """``limit=5000`` was schema-valid and 422 `limit_too_large` on the three list routes (schemathesis: "Valid data
    should have been accepted"). The `limit` parameter's schema now has ``maximum: max_page``, taken from the
    process's limits in the document it serves."""
    async with serving(gate, limits=Limits(max_page=5, default_page=5)) as (rt, client):
        await rt.create_worker(worker_id="w1")
        served = (await client.get("/openapi.json")).json()
        for path in LIST_ROUTES:
            params = {p["name"]: p for p in served["paths"][path]["get"]["parameters"]}
            assert params["limit"]["schema"]["maximum"] == 5, path
            assert "`max_page` (5)" in params["limit"]["description"]
            response = await client.get(path.replace("{worker_id}", "w1"), params={"limit": 6})
            assert (response.status_code, error_of(response)["code"]) == (422, "limit_too_large"), path
            assert (await client.get(path.replace("{worker_id}", "w1"), params={"limit": 5})).status_code == 200
    assert {p["name"]: p for p in build_openapi()["paths"]["/v1/events"]["get"]["parameters"]}["limit"]["schema"][
        "maximum"
    ] == Limits().max_page


async def test_an_empty_capability_name_is_outside_the_schema_and_an_invalid_request(
    rt: Runtime, client: httpx.AsyncClient
) -> None:
    """A requested capability named ``""`` was schema-valid and refused as `unsupported_capability`. The name now
    has ``minLength: 1`` and an empty one is 422 `invalid_request` (nothing created); a name the engine lacks is
    still `unsupported_capability`."""
    schemas = build_openapi()["components"]["schemas"]
    assert schemas["CapabilityRequestInput"]["properties"]["name"]["minLength"] == 1
    response = await client.post("/v1/workers", json={"worker_id": "w1", "requested_capabilities": [{"name": ""}]})
    error = error_of(response)
    assert (response.status_code, error["code"]) == (422, "invalid_request")
    assert error["details"]["path"] == "$.requested_capabilities[0].name"
    assert (await client.get("/v1/workers/w1")).status_code == 404
    response = await client.post("/v1/workers", json={"requested_capabilities": [{"name": "fs.read"}]})
    assert (response.status_code, error_of(response)["code"]) == (422, "unsupported_capability")


async def test_an_integral_decimal_query_value_is_that_integer(rt: Runtime, client: httpx.AsyncClient) -> None:
    """``limit=10.0`` is an integer to JSON Schema (schemathesis sent it as schema-valid) and was 422
    `invalid_request`; it now counts as ``10``. ``2.5`` is still refused."""
    await rt.create_worker(worker_id="w1")
    for n in range(3):
        await rt.create_worker(worker_id=f"w{n + 2}")
    page = await client.get("/v1/workers", params={"limit": "2.0"})
    assert page.status_code == 200 and len(page.json()["workers"]) == 2
    transcript = await client.get("/v1/workers/w1/transcript", params={"start": "0.00", "limit": "+3.0"})
    assert transcript.status_code == 200 and (transcript.json()["transcript"]["limit"]) == 3
    response = await client.get("/v1/events", params={"after": "2.5"})
    assert (response.status_code, error_of(response)["code"]) == (422, "invalid_request")


async def test_query_numbers_in_their_shortest_form_and_up_to_64_bits_are_accepted(
    rt: Runtime, client: httpx.AsyncClient
) -> None:
    """A `wait` of ``1e-05`` (how a small number prints) was refused; a `start` of 35 digits was schema-valid (an
    integer of no maximum) and refused. `start` and `after` now have ``maximum: 2**63 - 1`` and the server reads
    every integer up to it and refuses the ones above it."""
    await rt.create_worker(worker_id="w1")
    assert (await client.get("/v1/events", params={"wait": "1e-05"})).status_code == 200
    params = {p["name"]: p["schema"] for p in build_openapi()["paths"]["/v1/events"]["get"]["parameters"]}
    assert params["after"]["maximum"] == 2**63 - 1
    most = await client.get("/v1/workers/w1/transcript", params={"start": str(2**63 - 1)})
    assert most.status_code == 200 and most.json()["transcript"]["items"] == []
    above = await client.get("/v1/workers/w1/transcript", params={"start": str(2**63)})
    assert (above.status_code, error_of(above)["code"]) == (422, "invalid_request")
