"""The bearer token, the refusal of browsers (Origin), and the Host allow list against DNS rebinding."""

from __future__ import annotations

import logging

import httpx
import pytest
from http_helpers import TOKEN, Gate, client_for, error_of, make_runtime

from worker_runtime_core import ConfigError, ForbiddenHostError, WorkerRuntimeError
from worker_runtime_http import create_app
from worker_runtime_http.auth import Guard, is_loopback_host


async def test_a_missing_token_is_401_with_a_bearer_challenge(gate: Gate) -> None:
    async with make_runtime(gate) as rt, client_for(create_app(rt, token=TOKEN), token=None) as client:
        response = await client.get("/v1/runtime")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert error_of(response)["code"] == "unauthorized"


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer "]
)
async def test_a_wrong_token_is_401(gate: Gate, authorization: str) -> None:
    async with make_runtime(gate) as rt, client_for(create_app(rt, token=TOKEN), token=None) as client:
        response = await client.post("/v1/workers", headers={"authorization": authorization})
        assert response.status_code == 401
        assert TOKEN not in response.text
        assert (await rt.summary()).workers.total == 0


async def test_the_bearer_scheme_is_case_insensitive(gate: Gate) -> None:
    async with make_runtime(gate) as rt, client_for(create_app(rt, token=TOKEN), token=None) as client:
        response = await client.get("/v1/runtime", headers={"authorization": f"bearer {TOKEN}"})
        assert response.status_code == 200


@pytest.mark.parametrize("path", ["/v1/runtime", "/v1/workers", "/v1/events", "/v1/diagnostics", "/openapi.json"])
async def test_every_v1_route_and_the_document_need_the_token(gate: Gate, path: str) -> None:
    async with make_runtime(gate) as rt, client_for(create_app(rt, token=TOKEN), token=None) as client:
        assert (await client.get(path)).status_code == 401


async def test_health_needs_no_token_and_reveals_nothing(gate: Gate) -> None:
    async with make_runtime(gate) as rt, client_for(create_app(rt, token=TOKEN), token=None) as client:
        for path in ("/healthz", "/readyz"):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.json() == {"status": "ok"}


async def test_without_a_token_configured_no_token_is_needed(gate: Gate) -> None:
    async with (
        make_runtime(gate) as rt,
        client_for(create_app(rt, token=None, allow_unauthenticated=True), token=None) as client,
    ):
        assert (await client.get("/v1/runtime")).status_code == 200


async def test_the_token_is_never_logged(gate: Gate, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        async with make_runtime(gate) as rt, client_for(create_app(rt, token=TOKEN)) as client:
            await client.get("/v1/runtime")
            await client.get("/v1/runtime", headers={"authorization": "Bearer guess"})
    assert TOKEN not in caplog.text
    assert "guess" not in caplog.text


@pytest.mark.parametrize("path", ["/v1/runtime", "/healthz", "/nope"])
async def test_a_browser_origin_is_403_even_with_the_token(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"origin": "http://localhost:3000"})
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden_origin"
    assert not [h for h in response.headers if h.startswith("access-control-")]


@pytest.mark.parametrize("host", ["127.0.0.1:8787", "localhost:8787", "LOCALHOST:8787", "[::1]:8787"])
async def test_a_loopback_bind_accepts_loopback_hosts_with_its_port(gate: Gate, host: str) -> None:
    async with make_runtime(gate) as rt:
        app = create_app(rt, token=None, allow_unauthenticated=True, bind=("127.0.0.1", 8787))
        async with client_for(app, token=None) as client:
            assert (await client.get("/v1/runtime", headers={"host": host})).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example:8787", "127.0.0.1:9999", "localhost", "127.0.0.1.evil.example:8787", ""]
)
async def test_a_loopback_bind_refuses_other_hosts(gate: Gate, host: str) -> None:
    async with make_runtime(gate) as rt:
        app = create_app(rt, token=None, allow_unauthenticated=True, bind=("127.0.0.1", 8787))
        async with client_for(app, token=None) as client:
            response = await client.get("/healthz", headers={"host": host})
            assert response.status_code == 403
            assert error_of(response)["code"] == "forbidden_host"


async def test_allowed_hosts_on_a_public_bind(gate: Gate) -> None:
    async with make_runtime(gate) as rt:
        app = create_app(rt, token=TOKEN, bind=("10.0.0.5", 8787), allowed_hosts=["runtime.internal", "10.0.0.5:8787"])
        async with client_for(app) as client:
            for host in ("runtime.internal", "runtime.internal:443", "10.0.0.5:8787"):
                assert (await client.get("/v1/runtime", headers={"host": host})).status_code == 200, host
            for host in ("10.0.0.5:8788", "127.0.0.1:8787", "evil.example"):
                assert (await client.get("/v1/runtime", headers={"host": host})).status_code == 403, host


@pytest.mark.parametrize("bind", [None, ("0.0.0.0", 8787), ("10.0.0.5", 8787)])
async def test_without_allowed_hosts_or_a_loopback_bind_only_loopback_names_are_accepted(
    gate: Gate, bind: tuple[str, int] | None
) -> None:
    async with make_runtime(gate) as rt:
        app = create_app(rt, token=TOKEN, bind=bind)
        async with client_for(app) as client:
            for host in ("localhost:9000", "127.0.0.1:8787", "[::1]:1", "LOCALHOST"):
                assert (await client.get("/v1/runtime", headers={"host": host})).status_code == 200, host
            for host in ("anything:1", "10.0.0.5:8787", "127.0.0.2:8787", "localhost.evil.example"):
                response = await client.get("/v1/runtime", headers={"host": host})
                assert (response.status_code, error_of(response)["code"]) == (403, "forbidden_host"), host


async def test_allowed_hosts_star_accepts_any_host(gate: Gate) -> None:
    async with make_runtime(gate) as rt:
        app = create_app(rt, token=TOKEN, bind=("0.0.0.0", 8787), allowed_hosts=["*"])
        async with client_for(app) as client:
            assert (await client.get("/v1/runtime", headers={"host": "anything:1"})).status_code == 200


async def test_without_a_token_create_app_refuses_to_build_unless_told(gate: Gate) -> None:
    async with make_runtime(gate) as rt:
        with pytest.raises(ConfigError) as info:
            create_app(rt)
        assert "allow_unauthenticated=True" in info.value.message and "token" in info.value.message
        with pytest.raises(ConfigError):
            create_app(rt, token=None, bind=("127.0.0.1", 8787))
        async with client_for(create_app(rt, allow_unauthenticated=True), token=None) as client:
            assert (await client.get("/v1/runtime")).status_code == 200


@pytest.mark.parametrize("token", ["", " ", "two words", "t\u00f6ken"])
async def test_a_token_that_no_header_could_carry_is_refused(gate: Gate, token: str) -> None:
    async with make_runtime(gate) as rt:
        with pytest.raises(ConfigError, match="visible ASCII"):
            create_app(rt, token=token)


def test_an_ipv6_loopback_bind_accepts_its_bracketed_address() -> None:
    guard = Guard(bind=("::1", 9000))
    guard.check_host(b"[::1]:9000")
    guard.check_host(b"localhost:9000")
    with pytest.raises(ForbiddenHostError):
        guard.check_host(b"[::1]:9001")


def test_a_missing_host_header_is_refused_when_hosts_are_checked() -> None:
    with pytest.raises(ForbiddenHostError):
        Guard(bind=("127.0.0.1", 8787)).check_host(None)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True)]
    + [("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def _one_by_one(guard: Guard, host: bytes | None, origin: bytes | None, auth: bytes | None, public: bool) -> str:
    """The outcome of the three checks called one after another, in the contract's order."""
    try:
        guard.check_host(host)
        guard.check_origin(origin)
        if not public:
            guard.check_token(auth)
    except WorkerRuntimeError as exc:
        return exc.code
    return "ok"


def test_check_answers_as_the_three_checks_one_by_one_for_every_combination() -> None:
    hosts = [b"127.0.0.1:8787", b"LOCALHOST:8787", b"127.0.0.1:9", b"evil.example", None]
    origins = [None, b"http://127.0.0.1:8787"]
    auths = [f"Bearer {TOKEN}".encode(), f"bearer {TOKEN} ".encode(), b"Bearer nope", b"Bearer ", b"Basic x", None]
    for guard in (Guard(token=TOKEN, bind=("127.0.0.1", 8787)), Guard(bind=("127.0.0.1", 8787))):
        for host in hosts:
            for origin in origins:
                for auth in auths:
                    for public in (False, True):
                        expected = _one_by_one(guard, host, origin, auth, public)
                        try:
                            guard.check(host, origin, auth, public)
                            got = "ok"
                        except WorkerRuntimeError as exc:
                            got = exc.code
                        assert got == expected, (host, origin, auth, public)
