"""The lifecycles of a Worker and of a run: every state, every event and every allowed transition, in two tables.

Everything that decides what state a Worker or a run moves to lives here, as tables; nothing here does I/O, reads
a clock or starts a task (the Runtime drives it, the journal and the engines live around it). A transition that is
not in a table is a bug and raises `IllegalTransitionError` naming the machine, the state and the event; a command
that changes nothing (a cancel with nothing running, a repeated stop) is not a transition and never reaches here.

The states name what is in flight, not only what is committed: a change is written first and shown after, so
between the two a Worker is ``accepting`` (an input's write is in flight), ``stopping`` (its run is being ended and
``worker_stopped`` written) or ``deleting``. Readers see the committed status, kept in the Worker's record; a
command that arrives in an in-flight state waits for the write to be confirmed (``*_committed``) or refused
(``*_refused``) and is then decided on the committed state.

Worker::

    idle ──accept──▶ accepting ──accept_committed──▶ running ──run_ended──▶ idle
      ▲                  │                              │
      └──accept_refused──┘                            stop
    idle ──accepted──▶ running   (a store whose writes never suspend: written and shown in one step)
    idle ──stop──▶ stopping ◀───────────────────────────┘   (stopping ──run_ended──▶ stopping)
    stopping ──stop_committed──▶ stopped ──delete──▶ deleting ──delete_committed──▶ deleted
    stopping ──stop_refused──▶ idle        deleting ──delete_refused──▶ stopped
    stopping ──stop_abandoned──▶ running   (shutdown: the run's end could not be written; or queued runs remain)
    stopping ──run_handed_over──▶ stopping (the run ended with runs queued behind it: busy until they end too)

Run::

    running ──end──▶ ending ──end_committed──▶ ended
                       ├──end_refused──▶ ending   (retried until written)
                       └──abandon──▶ abandoned    (shutdown: recovery marks it interrupted)
    running ──ask──▶ waiting ──answer──▶ running   (input_requested committed; answered or timed out)
    waiting ──end──▶ ending                        (cancel, stop, shutdown: its end closes the request first)
    ending ──answer──▶ ending                      (an answer committed while the run was already ending)

Queued runs (``on_busy="enqueue"``): a busy Worker accepts input behind its active run, and when that run ends
the next queued one starts in its place (the Worker stays busy)::

    running ──enqueue──▶ enqueuing ──enqueue_committed / enqueue_refused──▶ running
    running ──enqueued──▶ running          (a store whose writes never suspend)
    running ──run_handed_over──▶ running   (the run ended with runs queued behind it: the Worker stays busy)
    running ──start──▶ starting ──start_committed──▶ running   (the next queued run starts: ``run_started``)
                         └──start_refused──▶ running   (retried; at shutdown it stays queued)

A queued run waits in ``queued``; it ``start``s (running) or ends without starting (cancel, stop, a vanished
profile: ``end``). ``queue`` makes a new run queued instead of running: its input was accepted behind the active
run, so it is born ``queued``.

Runs waiting for an answer (a request for input) add ``waiting`` (``ask`` / ``answer``) to the run table only (the
Worker stays ``running``). Each feature adds rows and events without changing the existing ones;
`tests/test_lifecycle.py` checks every pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

from .errors import IllegalTransitionError

__all__ = [
    "IN_FLIGHT_STATES",
    "RESTING_STATES",
    "STATUS_AFTER",
    "RUN_EVENTS",
    "RUN_STATES",
    "RUN_TRANSITIONS",
    "WORKER_EVENTS",
    "WORKER_STATES",
    "WORKER_TRANSITIONS",
    "RunEvent",
    "RunState",
    "WorkerEvent",
    "WorkerState",
    "next_run_state",
    "next_worker_state",
]

WorkerState = Literal[
    "idle", "accepting", "running", "stopping", "stopped", "deleting", "deleted", "enqueuing", "starting"
]
WorkerEvent = Literal[
    "accept",  # an input passed every check; its write is in flight
    "accept_committed",  # the store has the input: its run starts
    "accept_refused",  # the store refused it: nothing happened
    "accepted",  # an input written at once (a store whose writes never suspend: nothing is in flight): its run starts
    "run_ended",  # the run's terminal event is committed
    "stop",  # a stop begins (the active run, if any, is being ended)
    "stop_committed",  # worker_stopped is committed
    "stop_refused",  # the store refused worker_stopped (the run, if any, has ended)
    # shutdown: the run's end could not be written, or a queued run's end was refused, so the Worker cannot stop
    # (it stays running, and its queued runs start in turn)
    "stop_abandoned",
    "delete",  # a delete passed its checks; its write is in flight
    "delete_committed",
    "delete_refused",
    "enqueue",  # an input to queue behind the active run passed every check; its write is in flight
    "enqueue_committed",  # the store has it: its run is queued
    "enqueue_refused",  # the store refused it: nothing happened
    "enqueued",  # an input queued at once (a store whose writes never suspend)
    "run_handed_over",  # the run's terminal event is committed and a queued run is next: the Worker stays busy
    "start",  # the next queued run starts; its run_started is in flight
    "start_committed",  # the store has it: the run is active
    "start_refused",  # the store refused it: the run stays queued (retried)
]
RunState = Literal["running", "waiting", "ending", "ended", "abandoned", "queued"]
RunEvent = Literal[
    "queue",  # a new run whose input was accepted behind the active run: it waits (born queued, not running)
    "start",  # a queued run starts: its input's entry is appended
    "ask",  # the run's request for input (input_requested) is committed: it waits for the answer
    "answer",  # its input_responded is committed (answered or timed out): it runs on
    "end",  # the terminal status is decided and its event staged
    "end_committed",  # the store has the terminal event
    "end_refused",  # the store refused it: it is retried
    "abandon",  # shutdown gave up on writing it: on disk the run stays running
]


def _frozen(table: dict[str, dict[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType({state: MappingProxyType(row) for state, row in table.items()})


#: ``WORKER_TRANSITIONS[state][event] -> new state``; a pair not in it is a bug.
WORKER_TRANSITIONS: Final[Mapping[str, Mapping[str, str]]] = _frozen(
    {
        "idle": {"accept": "accepting", "accepted": "running", "stop": "stopping"},
        "accepting": {"accept_committed": "running", "accept_refused": "idle"},
        "running": {
            "run_ended": "idle",
            "stop": "stopping",
            "enqueue": "enqueuing",
            "enqueued": "running",
            "run_handed_over": "running",
            "start": "starting",
        },
        "enqueuing": {"enqueue_committed": "running", "enqueue_refused": "running"},
        "starting": {"start_committed": "running", "start_refused": "running"},
        "stopping": {
            "run_ended": "stopping",
            "run_handed_over": "stopping",
            "stop_committed": "stopped",
            "stop_refused": "idle",
            "stop_abandoned": "running",
        },
        "stopped": {"delete": "deleting"},
        "deleting": {"delete_committed": "deleted", "delete_refused": "stopped"},
        "deleted": {},
    }
)

#: ``RUN_TRANSITIONS[state][event] -> new state``; a pair not in it is a bug.
RUN_TRANSITIONS: Final[Mapping[str, Mapping[str, str]]] = _frozen(
    {
        "running": {"end": "ending", "queue": "queued", "ask": "waiting"},
        "waiting": {"answer": "running", "end": "ending"},
        "ending": {"end_committed": "ended", "end_refused": "ending", "abandon": "abandoned", "answer": "ending"},
        "ended": {},
        "abandoned": {},
        "queued": {"start": "running", "end": "ending"},
    }
)

#: The committed status readers see (``WorkerRecord.status``) -> the state of a Worker with no change in flight.
RESTING_STATES: Final[Mapping[str, WorkerState]] = MappingProxyType(
    {"idle": "idle", "busy": "running", "stopped": "stopped"}
)
#: States in which a change of the Worker is in flight: readers still see its committed status.
IN_FLIGHT_STATES: Final[frozenset[str]] = frozenset({"accepting", "stopping", "deleting", "enqueuing", "starting"})
#: The committed status an event sets, for the events that change it (the others leave it as it is).
STATUS_AFTER: Final[Mapping[str, str]] = MappingProxyType(
    {
        "accept_committed": "busy",
        "accepted": "busy",
        "run_ended": "idle",
        "stop_committed": "stopped",
        "run_handed_over": "busy",
    }
)

WORKER_STATES: Final[tuple[str, ...]] = tuple(WORKER_TRANSITIONS)
WORKER_EVENTS: Final[tuple[str, ...]] = get_args(WorkerEvent)
RUN_STATES: Final[tuple[str, ...]] = tuple(RUN_TRANSITIONS)
RUN_EVENTS: Final[tuple[str, ...]] = get_args(RunEvent)


def _flat(table: Mapping[str, Mapping[str, str]]) -> dict[tuple[str, str], str]:
    """The table as one plain dict by ``(state, event)``: one subscript per transition on the Runtime's hot path (a
    miss, a bug, costs the exception)."""
    return {(state, event): target for state, row in table.items() for event, target in row.items()}


_WORKER_NEXT: Final = _flat(WORKER_TRANSITIONS)
_RUN_NEXT: Final = _flat(RUN_TRANSITIONS)


def next_worker_state(state: str, event: str) -> WorkerState:
    """The state a Worker in `state` moves to on `event`.

    Raises:
        IllegalTransitionError: the table has no such transition (a bug in the caller).
    """
    try:
        return _WORKER_NEXT[state, event]  # type: ignore[return-value]  # WorkerState values only
    except KeyError:
        raise IllegalTransitionError("worker", state, event) from None


def next_run_state(state: str, event: str) -> RunState:
    """The state a run in `state` moves to on `event`.

    Raises:
        IllegalTransitionError: the table has no such transition (a bug in the caller).
    """
    try:
        return _RUN_NEXT[state, event]  # type: ignore[return-value]  # RunState values only
    except KeyError:
        raise IllegalTransitionError("run", state, event) from None
