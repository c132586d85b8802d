"""The lifecycle tables: every (state, event) pair either is a listed transition or raises, naming both."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from worker_runtime_core.errors import IllegalTransitionError, InternalError
from worker_runtime_core.lifecycle import (
    RUN_EVENTS,
    RUN_STATES,
    RUN_TRANSITIONS,
    WORKER_EVENTS,
    WORKER_STATES,
    WORKER_TRANSITIONS,
    next_run_state,
    next_worker_state,
)

WORKER_EXPECTED = {
    ("idle", "accept"): "accepting",
    ("idle", "accepted"): "running",
    ("idle", "stop"): "stopping",
    ("accepting", "accept_committed"): "running",
    ("accepting", "accept_refused"): "idle",
    ("running", "run_ended"): "idle",
    ("running", "stop"): "stopping",
    ("stopping", "run_ended"): "stopping",
    ("stopping", "run_handed_over"): "stopping",
    ("stopping", "stop_committed"): "stopped",
    ("stopping", "stop_refused"): "idle",
    ("stopping", "stop_abandoned"): "running",
    ("stopped", "delete"): "deleting",
    ("deleting", "delete_committed"): "deleted",
    ("deleting", "delete_refused"): "stopped",
    ("running", "enqueue"): "enqueuing",
    ("running", "enqueued"): "running",
    ("running", "run_handed_over"): "running",
    ("running", "start"): "starting",
    ("enqueuing", "enqueue_committed"): "running",
    ("enqueuing", "enqueue_refused"): "running",
    ("starting", "start_committed"): "running",
    ("starting", "start_refused"): "running",
}
RUN_EXPECTED = {
    ("running", "end"): "ending",
    ("ending", "end_committed"): "ended",
    ("ending", "end_refused"): "ending",
    ("ending", "abandon"): "abandoned",
    ("running", "queue"): "queued",
    ("queued", "start"): "running",
    ("queued", "end"): "ending",
    ("running", "ask"): "waiting",
    ("waiting", "answer"): "running",
    ("waiting", "end"): "ending",
    ("ending", "answer"): "ending",
}
WORKER_PAIRS = [(s, e) for s in WORKER_STATES for e in WORKER_EVENTS]
RUN_PAIRS = [(s, e) for s in RUN_STATES for e in RUN_EVENTS]


@pytest.mark.parametrize(("state", "event"), WORKER_PAIRS)
def test_every_worker_state_and_event_is_a_listed_transition_or_an_error(state: str, event: str) -> None:
    expected = WORKER_EXPECTED.get((state, event))
    if expected is not None:
        assert next_worker_state(state, event) == expected
    else:
        with pytest.raises(IllegalTransitionError) as info:
            next_worker_state(state, event)
        assert (info.value.machine, info.value.state, info.value.event) == ("worker", state, event)
        assert repr(state) in info.value.message and repr(event) in info.value.message


@pytest.mark.parametrize(("state", "event"), RUN_PAIRS)
def test_every_run_state_and_event_is_a_listed_transition_or_an_error(state: str, event: str) -> None:
    expected = RUN_EXPECTED.get((state, event))
    if expected is not None:
        assert next_run_state(state, event) == expected
    else:
        with pytest.raises(IllegalTransitionError) as info:
            next_run_state(state, event)
        assert info.value.details == {"machine": "run", "state": state, "event": event}


def test_the_tables_hold_exactly_the_expected_transitions_and_known_names_only() -> None:
    worker = {(s, e): t for s, row in WORKER_TRANSITIONS.items() for e, t in row.items()}
    run = {(s, e): t for s, row in RUN_TRANSITIONS.items() for e, t in row.items()}
    assert worker == WORKER_EXPECTED and run == RUN_EXPECTED
    assert set(worker.values()) <= set(WORKER_STATES) and {e for _, e in worker} <= set(WORKER_EVENTS)
    assert set(run.values()) <= set(RUN_STATES) and {e for _, e in run} <= set(RUN_EVENTS)


def test_an_unknown_state_is_an_illegal_transition_too() -> None:
    with pytest.raises(IllegalTransitionError):
        next_worker_state("paused", "accept")


def test_every_worker_state_is_reachable_from_idle_and_only_deleted_is_final() -> None:
    seen, frontier = {"idle"}, ["idle"]
    while frontier:
        for target in WORKER_TRANSITIONS[frontier.pop()].values():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(WORKER_STATES)
    assert [s for s in WORKER_STATES if not WORKER_TRANSITIONS[s]] == ["deleted"]


def test_an_illegal_transition_is_an_internal_error_on_the_wire() -> None:
    assert issubclass(IllegalTransitionError, InternalError)
    assert IllegalTransitionError("worker", "idle", "delete").code == "internal_error"


def test_the_tables_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        WORKER_TRANSITIONS["idle"]["delete"] = "deleted"  # type: ignore[index]


def _mermaid(table: Mapping[str, Mapping[str, str]], first: str) -> str:
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {first}"]
    lines += [f"    {state} --> {target}: {event}" for state, row in table.items() for event, target in row.items()]
    lines += [f"    {state} --> [*]" for state, row in table.items() if not row]
    return "\n".join([*lines, "```"])


def test_the_readme_draws_both_state_machines_from_the_tables() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert _mermaid(WORKER_TRANSITIONS, "idle") in readme
    assert _mermaid(RUN_TRANSITIONS, "running") in readme
