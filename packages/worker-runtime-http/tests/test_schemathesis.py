"""Schemathesis against the served OpenAPI document (issue 5).

The schema is loaded from the app's own ``GET /openapi.json`` (`schemathesis.openapi.from_asgi`); every operation
gets a bounded, derandomized number of schema-valid and schema-invalid requests through the app's ASGI interface,
with the token set as the document's ``bearerAuth`` scheme. Checked on every answer: no 5xx; the status, the
Content-Type, the documented headers and the body are what the document says for that operation; schema-invalid
requests are refused; a 2xx route refuses the same request without the token or with a wrong one.

Workers exist before the run, so requests reach the Runtime's real paths, not only 404s: each operation with a
``{worker_id}`` gets its own idle, busy and stopped Worker (one operation's stops and deletes leave the next one's
Workers as they were), and schema-valid cases use one of those ids (and its run id) about half the time.

Not checked: ``positive_data_acceptance`` (every schema-valid request is accepted). The limits and the profile
names are the operator's configuration, which a static document cannot encode: ``limit=5000`` is schema-valid
and 422 `limit_too_large`, a profile name that is not configured is 422 `unknown_profile`; both answers are
documented, and the conformance checks hold them to the document.

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
from http_helpers import AUTH, TOKEN, Gate, make_runtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from worker_runtime_core import Runtime
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


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
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
        documented = {p["name"]: p for p in doc["paths"][endpoint.path][endpoint.method.lower()].get("parameters", ())}
        for param in endpoint.query:
            assert documented[param.name]["allowEmptyValue"] is True
            path = endpoint.path.replace("{worker_id}", "w1")
            response = await client.request(endpoint.method, path, params={param.name: ""})
            assert response.status_code == 200, (endpoint.path, param.name, response.text)
