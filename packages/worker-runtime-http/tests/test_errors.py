"""The one table from error classes to statuses: complete, and the envelope it writes."""

from __future__ import annotations

import msgspec
import pytest

import worker_runtime_core as core
from worker_runtime_core import errors as core_errors
from worker_runtime_http.errors import STATUS_BY_ERROR, error_reply, status_for

CORE_ERRORS = [getattr(core, name) for name in core_errors.__all__ if name.endswith("Error") and name != "EngineError"]

CONTRACT_STATUSES = {
    "invalid_json": 400,
    "invalid_worker_id": 400,
    "unauthorized": 401,
    "forbidden_origin": 403,
    "forbidden_host": 403,
    "not_found": 404,
    "worker_not_found": 404,
    "run_not_found": 404,
    "method_not_allowed": 405,
    "worker_exists": 409,
    "capacity_exceeded": 409,
    "worker_busy": 409,
    "worker_stopped": 409,
    "worker_not_stopped": 409,
    "idempotency_conflict": 409,
    "cursor_expired": 410,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422,
    "invalid_input": 422,
    "limit_too_large": 422,
    "unknown_profile": 422,
    "unsupported_capability": 422,
    "internal_error": 500,
    "store_corrupt": 500,
    "runtime_unavailable": 503,
    "operation_timeout": 504,
}


@pytest.mark.parametrize("cls", CORE_ERRORS, ids=lambda c: c.__name__)
def test_every_core_error_class_has_its_own_status(cls: type[core.WorkerRuntimeError]) -> None:
    assert cls in STATUS_BY_ERROR


@pytest.mark.parametrize(("code", "status"), sorted(CONTRACT_STATUSES.items()))
def test_statuses_are_the_contract_s(code: str, status: int) -> None:
    cls = core.error_class_for_code(code)
    assert cls is not None
    assert status_for(cls) == status


def test_an_unlisted_subclass_gets_its_base_s_status() -> None:
    class StoreOffline(core.RuntimeUnavailableError):
        pass

    assert status_for(StoreOffline) == 503


@pytest.mark.parametrize(("code", "status"), sorted(CONTRACT_STATUSES.items()))
def test_the_envelope_carries_code_message_details_and_retryable(code: str, status: int) -> None:
    cls = core.error_class_for_code(code)
    assert cls is not None
    got_status, body, _ = error_reply(cls("what happened", details={"k": 1}))
    assert got_status == status
    assert msgspec.json.decode(body) == {
        "error": {"code": code, "message": "what happened", "details": {"k": 1}, "retryable": cls.retryable}
    }


def test_details_that_do_not_encode_are_dropped_not_fatal() -> None:
    status, body, _ = error_reply(core.InvalidRequestError("bad", details={"x": object()}))
    assert status == 422
    assert msgspec.json.decode(body)["error"]["details"] == {}


def test_a_config_error_is_never_sent_as_such() -> None:
    status, body, _ = error_reply(core.ConfigError("profile is wrong"))
    assert status == 500
    assert msgspec.json.decode(body)["error"]["code"] == "internal_error"
    assert b"profile is wrong" not in body


def test_worker_busy_carries_retry_after() -> None:
    _, _, headers = error_reply(core.WorkerBusyError("busy", details={"run_id": "run-3"}))
    assert (b"retry-after", b"1") in headers
