import pytest

import worker_runtime_core as core
from worker_runtime_core import errors

CONTRACT_CODES = {
    "invalid_json", "invalid_request", "invalid_input", "invalid_worker_id", "limit_too_large", "unknown_profile",
    "unsupported_capability", "worker_not_found", "run_not_found", "not_found", "worker_exists",
    "capacity_exceeded", "worker_busy", "worker_stopped", "worker_not_stopped", "idempotency_conflict",
    "cursor_expired", "unauthorized", "forbidden_origin", "forbidden_host", "method_not_allowed",
    "payload_too_large", "unsupported_media_type", "runtime_unavailable", "operation_timeout", "store_corrupt",
    "internal_error",
}  # fmt: skip


def test_every_wire_code_has_its_own_class() -> None:
    for code in CONTRACT_CODES:
        cls = core.error_class_for_code(code)
        assert cls is not None, code
        assert cls.code == code
        assert issubclass(cls, core.WorkerRuntimeError)


def test_only_busy_unavailable_and_timeout_are_retryable() -> None:
    retryable = {code for code in CONTRACT_CODES if core.error_class_for_code(code).retryable}  # type: ignore[union-attr]
    assert retryable == {"worker_busy", "runtime_unavailable", "operation_timeout"}


def test_error_from_wire_builds_the_typed_class_with_details_and_status() -> None:
    exc = core.error_from_wire("worker_busy", "busy", {"run_id": "run-7"}, status=409)
    assert isinstance(exc, core.WorkerBusyError)
    assert exc.run_id == "run-7"
    assert exc.status == 409
    assert exc.retryable


def test_an_unknown_code_gives_the_base_class_and_keeps_the_code() -> None:
    exc = core.error_from_wire("brand_new_code", "something new", {"x": 1})
    assert type(exc).__mro__[1] is core.WorkerRuntimeError
    assert isinstance(exc, core.WorkerRuntimeError)
    assert exc.code == "brand_new_code"
    assert exc.details == {"x": 1}
    assert not exc.retryable


def test_operation_timeout_is_also_a_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        raise core.OperationTimeoutError("slow")


def test_every_error_class_is_exported() -> None:
    classes = {name for name in errors.__all__ if name.endswith("Error")}
    assert classes <= set(core.__all__)
