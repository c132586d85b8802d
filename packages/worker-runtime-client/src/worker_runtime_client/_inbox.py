"""`open_requests`: the requests for input of one runtime's Workers, as they open and close (an approvals inbox).

It starts from ``GET /v1/requests`` (what is open now) and then follows the event stream (``input_requested``,
``input_responded``), so a Backend that restarts builds its inbox again from the runtime, not from its own memory.
The stream is connected before the list is read: nothing that happens in between is missed.

What it yields (`InboxItem`):

* `RequestOpened`: a run waits for the answer to `request` (answer it with `RuntimeClient.respond`). Each request
  opens once in an inbox, whether the list or the stream showed it first.
* `RequestClosed`: a request closed (``answered``, ``timed_out``, or ``closed`` with its run); it may name a request
  this inbox did not yield open (one that opened and closed while the inbox started).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, TypeAlias

import msgspec

from worker_runtime_core import InputRequestedEvent, InputRespondedEvent, PendingRequest, WorkerRef

from ._following import Following

if TYPE_CHECKING:
    from ._client import RuntimeClient

__all__ = ["InboxItem", "RequestClosed", "RequestInbox", "RequestOpened"]


class RequestOpened(msgspec.Struct, frozen=True, kw_only=True):
    """Run `run_id` of the Worker `worker_ref` waits for the answer to `request`."""

    worker_ref: WorkerRef
    run_id: str
    request: PendingRequest


class RequestClosed(msgspec.Struct, frozen=True, kw_only=True):
    """The request `request_id` of run `run_id` closed: `outcome` ``answered``, ``timed_out`` or ``closed``."""

    worker_ref: WorkerRef
    run_id: str
    request_id: str
    outcome: str
    approved: bool | None
    content: str | None


InboxItem: TypeAlias = RequestOpened | RequestClosed


class RequestInbox(Following[InboxItem]):
    """What `RuntimeClient.open_requests` returns: an async iterator of `InboxItem` and an async context manager
    (leaving it closes the stream). It runs until closed; `open` holds the requests open now, by request id."""

    def __init__(self, client: RuntimeClient, *, page_size: int | None = None) -> None:
        self._client = client
        self._page_size = page_size
        #: The requests open now (as far as this inbox has seen), by request id.
        self.open: dict[str, RequestOpened] = {}
        self._items: AsyncGenerator[InboxItem, None] = self._follow()

    def __repr__(self) -> str:
        return f"RequestInbox(client={self._client!r}, open={len(self.open)})"

    async def _follow(self) -> AsyncGenerator[InboxItem, None]:
        client = self._client
        # The stream first (live: its cursor is the newest id when it opened), then the list: a request that opens
        # or closes after the cursor comes on the stream, one opened before it is in the list.
        async with client.stream_events() as stream:
            await stream._connect()
            after = 0
            while True:
                page = await client.list_requests(after=after, limit=self._page_size)
                for found in page.requests:
                    item = RequestOpened(worker_ref=found.worker_ref, run_id=found.run_id, request=found.request)
                    if found.request.request_id not in self.open:
                        self.open[found.request.request_id] = item
                        yield item
                if page.next_after is None:
                    break
                after = page.next_after
            async for event in stream:
                if isinstance(event, InputRequestedEvent):
                    request = event.data.request
                    if request.request_id in self.open or event.worker_ref is None or event.run_id is None:
                        continue  # the list showed it already
                    item = RequestOpened(worker_ref=event.worker_ref, run_id=event.run_id, request=request)
                    self.open[request.request_id] = item
                    yield item
                elif isinstance(event, InputRespondedEvent):
                    if event.worker_ref is None or event.run_id is None:
                        continue
                    data = event.data
                    self.open.pop(data.request_id, None)
                    yield RequestClosed(
                        worker_ref=event.worker_ref,
                        run_id=event.run_id,
                        request_id=data.request_id,
                        outcome=data.outcome,
                        approved=data.approved,
                        content=data.content,
                    )
