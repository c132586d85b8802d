"""One run's stream as AG-UI events, for a Backend that forwards them to its browsers (the ``agui`` extra).

Needs the official ``ag-ui-protocol`` package: ``pip install "worker-runtime-client[agui]"``. Browsers still never
talk to a Runtime: the Backend follows the run and forwards what this module makes. The ids:

* ``threadId`` = ``runtime_id/worker_id`` (a Worker is a conversation);
* ``runId`` = ``run_id``;
* ``messageId`` = ``run_id:sequence`` (one message per transcript entry the run produces).

A run becomes ``RUN_STARTED``, then for each entry ``TEXT_MESSAGE_START``, a ``TEXT_MESSAGE_CONTENT`` per piece of
text as it grows and ``TEXT_MESSAGE_END`` when the entry is committed, then ``RUN_FINISHED`` (``completed``; a
``cancelled`` run with the ``cancelled`` outcome) or ``RUN_ERROR`` (``failed``, ``timed_out``, ``interrupted``, or a
status this version does not know; `code` is the run's error code, else its status)::

    from starlette.responses import StreamingResponse
    from worker_runtime_client.agui import run_sse

    async def answer(request):   # a Backend route
        return StreamingResponse(run_sse(rt, worker_id, run_id), media_type="text/event-stream")
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

from ag_ui.core import (
    PROTOCOL_VERSION,
    BaseEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
)
from ag_ui.encoder import EventEncoder

from worker_runtime_core import RunInfo

from ._client import RuntimeClient
from ._follow import EntryDone, FollowItem, RunDone, TextDelta

__all__ = ["message_id", "run_events", "run_sse", "thread_id", "to_agui"]

_TEXT_ROLES = frozenset({"developer", "system", "assistant", "user"})  # AG-UI's TextMessageRole


def thread_id(runtime_id: str, worker_id: str) -> str:
    """The AG-UI ``threadId`` of a Worker: ``runtime_id/worker_id``."""
    return f"{runtime_id}/{worker_id}"


def message_id(run_id: str, sequence: int) -> str:
    """The AG-UI ``messageId`` of a run's transcript entry: ``run_id:sequence``."""
    return f"{run_id}:{sequence}"


async def to_agui(items: AsyncIterable[FollowItem], *, thread: str, run_id: str) -> AsyncIterator[BaseEvent]:
    """Map what `RuntimeClient.follow_run` yields to AG-UI events (validated pydantic models of ``ag_ui.core``).

    Args:
        items: the `TextDelta`, `EntryDone` and `RunDone` items of one run.
        thread: the ``threadId`` (`thread_id`).
        run_id: the run's id, its ``runId``.
    """
    yield RunStartedEvent(thread_id=thread, run_id=run_id, protocol_version=PROTOCOL_VERSION)
    open_messages: set[int] = set()
    async for item in items:
        if isinstance(item, TextDelta):
            if item.sequence not in open_messages:
                open_messages.add(item.sequence)
                yield TextMessageStartEvent(message_id=message_id(run_id, item.sequence), role="assistant")
            if item.text:
                yield TextMessageContentEvent(message_id=message_id(run_id, item.sequence), delta=item.text)
        elif isinstance(item, EntryDone):
            sequence = item.entry.sequence
            if sequence not in open_messages:  # an entry with no text: a message all the same
                role = item.entry.role if item.entry.role in _TEXT_ROLES else "assistant"
                yield TextMessageStartEvent(message_id=message_id(run_id, sequence), role=role)  # type: ignore[arg-type]
            open_messages.discard(sequence)
            yield TextMessageEndEvent(message_id=message_id(run_id, sequence))
        elif isinstance(item, RunDone):
            for sequence in sorted(open_messages):
                yield TextMessageEndEvent(message_id=message_id(run_id, sequence))
            yield _run_end(item.run, thread, run_id)
            return


def _run_end(run: RunInfo, thread: str, run_id: str) -> BaseEvent:
    usage = None
    if run.usage is not None:
        total = run.usage.input_tokens + run.usage.output_tokens
        usage = [
            TokenUsage(input_tokens=run.usage.input_tokens, output_tokens=run.usage.output_tokens, total_tokens=total)
        ]
    if run.status == "completed":
        return RunFinishedEvent(thread_id=thread, run_id=run_id, usage=usage)
    if run.status == "cancelled":
        return RunFinishedEvent(thread_id=thread, run_id=run_id, outcome=RunFinishedCancelledOutcome(), usage=usage)
    code = run.error.code if run.error is not None else run.status
    message = run.error.message if run.error is not None else f"run {run.status}"
    return RunErrorEvent(message=message, code=code, usage=usage)


async def run_events(client: RuntimeClient, worker_id: str, run_id: str) -> AsyncIterator[BaseEvent]:
    """Follow one run (`RuntimeClient.follow_run`) and yield its AG-UI events, ending with its RUN_FINISHED or
    RUN_ERROR. The runtime id of ``threadId`` is the client's, or ``GET /v1/runtime``'s."""
    runtime_id = client.runtime_id or (await client.runtime()).runtime_id
    async with client.follow_run(worker_id, run_id) as follow:
        async for event in to_agui(follow, thread=thread_id(runtime_id, worker_id), run_id=run_id):
            yield event


async def run_sse(client: RuntimeClient, worker_id: str, run_id: str) -> AsyncIterator[str]:
    """`run_events` encoded as server-sent events by ``ag_ui``'s own `EventEncoder` (``data: {...}\\n\\n`` each),
    ready to be a ``text/event-stream`` response body."""
    encoder = EventEncoder()
    async for event in run_events(client, worker_id, run_id):
        yield encoder.encode(event)
