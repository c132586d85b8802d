"""A schema-driven fuzz run (what schemathesis does, on the dev environment's hypothesis): requests built from
the OpenAPI document's parameters and bodies, answers checked against the statuses and structs it documents.

No answer may be a 5xx, every status must be one the document lists for the route, every body must decode
strictly into the documented struct, and every error code must be one the document lists under that status.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import anyio
import httpx
import msgspec
from http_helpers import Gate, client_for, make_runtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker_runtime_core import ErrorEnvelope, InputRequest
from worker_runtime_http import create_app
from worker_runtime_http.openapi import documented_responses
from worker_runtime_http.routes import ENDPOINTS, Endpoint

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
IDS = st.one_of(
    st.just("w1"),
    st.just("w1"),
    st.just("w2"),
    st.just("ghost"),
    st.sampled_from(["-bad", "a b", "x" * 129, "ü", "w1\n", "..", "a/b"]),
    st.text(max_size=12),
)
FIELD_VALUES = {
    "content": st.text(max_size=30) | st.integers(),
    "kind": st.sampled_from(["user", "system", "assistant", "task", "role", "named", "builtin", ""])
    | st.text(max_size=5),
    "input_id": IDS,
    "worker_id": IDS,
    "run_id": st.sampled_from(["run-3", "", "run-1"]) | st.integers(),
    "reason": st.text(max_size=10) | st.none(),
    "display_name": st.text(max_size=10) | st.none() | st.integers(),
    "intent": st.fixed_dictionaries(
        {"kind": st.sampled_from(["assistant", "task", "role", "x"])},
        optional={
            "objective": st.text(max_size=5),
            "role": st.text(max_size=5),
            "purpose": JSON,
        },
    ),  # fmt: skip
    "profile": st.fixed_dictionaries(
        {"kind": st.sampled_from(["runtime_default", "builtin", "named", "x"])},
        optional={
            "name": st.sampled_from(["echo", "gate", "command", "nope"]),
        },
    ),  # fmt: skip
    "requested_capabilities": st.lists(st.fixed_dictionaries({"name": st.text(max_size=5)}), max_size=2),
}
VALID_INPUT = st.fixed_dictionaries(
    {"content": st.text(min_size=1, max_size=20)},
    optional={"kind": st.sampled_from(["user", "system"]), "input_id": st.sampled_from(["in-1", "in-2"])},
)
BODIES = (
    st.none()
    | VALID_INPUT
    | st.fixed_dictionaries({}, optional={"worker_id": IDS, "display_name": st.text(max_size=10)})
    | JSON
    | st.dictionaries(st.sampled_from(sorted(FIELD_VALUES)), JSON, max_size=3)
    | st.fixed_dictionaries({}, optional={name: values for name, values in FIELD_VALUES.items()})
)
QUERY_VALUES = st.sampled_from(["0", "1", "2", "-1", "1000", "1001", "w1", "idle", "stopped", "x", ""]) | st.text(
    max_size=6
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[Endpoint, str, dict[str, str], Any]:
    endpoint = draw(st.sampled_from(ENDPOINTS))
    path = endpoint.path
    for name in ("worker_id", "run_id"):
        if "{" + name + "}" in path:
            value = draw(
                IDS if name == "worker_id" else st.sampled_from(["run-3", "run-99", "x"]) | st.text(max_size=8)
            )
            path = path.replace("{" + name + "}", quote(value, safe="") or "x")
    query: dict[str, str] = {}
    for param in endpoint.query:
        if draw(st.booleans()):
            values = st.sampled_from(["0", "0.01", "-1", "31", "x"]) if param.name == "wait" else QUERY_VALUES
            query[param.name] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        query["unknown"] = "1"
    body: Any = None
    if endpoint.request is InputRequest and draw(st.booleans()):
        body = draw(VALID_INPUT)
    elif endpoint.request is not None:
        body = draw(BODIES)
    return endpoint, path, query, body


async def exercise(endpoint: Endpoint, path: str, query: dict[str, str], body: Any) -> None:
    gate = Gate()
    gate.release.set()
    async with make_runtime(gate) as rt:
        await rt.create_worker(worker_id="w1")
        await rt.send_input("w1", "hello")
        await rt.create_worker(worker_id="w2")
        await rt.stop_worker("w2")
        async with client_for(create_app(rt, allow_unauthenticated=True, bind=("127.0.0.1", 8787))) as client:
            content = b"" if body is None else msgspec.json.encode(body)
            headers = {"content-type": "application/json"} if body is not None else {}
            responses: list[httpx.Response] = []

            async def call() -> None:
                responses.append(
                    await client.request(endpoint.method, path, params=query, content=content, headers=headers)
                )

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    if endpoint.media_type == "text/event-stream":  # an open stream ends when the Runtime stops
                        await anyio.wait_all_tasks_blocked()
                        await rt.close()
    check(endpoint, responses[0])


def check(endpoint: Endpoint, response: httpx.Response) -> None:
    documented = documented_responses(endpoint)
    where = f"{endpoint.method} {response.request.url} -> {response.status_code} {response.text[:300]}"
    assert response.status_code < 500, where
    assert response.status_code in documented, where
    kind, codes = documented[response.status_code]
    if response.status_code == endpoint.status and endpoint.media_type == "text/event-stream":
        assert response.headers["content-type"].startswith("text/event-stream"), where
        assert "event: runtime_stopping\n" in response.text, where  # it ended as the Runtime stopped
        return
    msgspec.json.decode(response.content, type=kind, strict=True)
    if kind is ErrorEnvelope:
        assert response.json()["error"]["code"] in codes, where
    assert response.headers["x-request-id"]


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(requests())
def test_fuzzed_requests_get_documented_answers(request: tuple[Endpoint, str, dict[str, str], Any]) -> None:
    anyio.run(exercise, *request)
