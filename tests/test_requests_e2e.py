"""Requests for input through the real process and the client: an approvals inbox (`open_requests`) built again
after the Backend reconnects, and a waiting run answered from it."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from e2e_helpers import runtime_process

from worker_runtime_client import RequestClosed, RequestClosedError, RequestOpened, RuntimeClient

TOKEN = "e2e-token"
ASK = {"kind": "builtin", "name": "ask"}


async def test_a_waiting_run_is_answered_after_the_backend_reconnects(tmp_path: Path) -> None:
    args = ["--store", "fs", "--store-path", str(tmp_path / "store"), "--token", TOKEN]
    async with runtime_process(args, tmp_path) as url:
        with anyio.fail_after(30):  # a bound against a hang, not a wait
            async with RuntimeClient(url, token=TOKEN) as first:  # this Backend asks, then goes away
                await first.create_worker(worker_id="w1", profile=ASK)
                ack = await first.send_input("w1", "deploy to prod")
                async with first.open_requests() as inbox:
                    opened = await inbox.__anext__()
                assert isinstance(opened, RequestOpened) and opened.run_id == ack.run_id
            async with RuntimeClient(url, token=TOKEN) as backend:  # the Backend came back: its inbox again
                async with backend.open_requests() as inbox:
                    items = inbox.__aiter__()
                    again = await items.__anext__()
                    assert isinstance(again, RequestOpened)
                    assert (again.worker_ref.worker_id, again.run_id, again.request) == (
                        "w1",
                        ack.run_id,
                        opened.request,
                    )
                    assert (again.request.kind, again.request.prompt) == ("approval", "deploy to prod")
                    assert set(inbox.open) == {again.request.request_id}
                    # one that opens while the inbox follows the stream comes too
                    await backend.create_worker(worker_id="w2", profile=ASK)
                    later = await backend.send_input("w2", "?which region")
                    second = await items.__anext__()
                    assert isinstance(second, RequestOpened) and second.run_id == later.run_id
                    assert second.request.kind == "question"
                    answer = await backend.respond("w1", ack.run_id, again.request.request_id, approved=True)
                    assert (answer.status, answer.duplicate) == ("running", False)
                    closed = await items.__anext__()
                    assert isinstance(closed, RequestClosed)
                    assert (closed.request_id, closed.outcome, closed.approved) == (
                        again.request.request_id,
                        "answered",
                        True,
                    )
                    assert set(inbox.open) == {second.request.request_id}
                run = await backend.wait_for_run("w1", ack.run_id)
                assert run.status == "completed"
                assert (await backend.transcript("w1")).items[-1].content == "approved"
                with pytest.raises(RequestClosedError) as late:
                    await backend.respond("w1", ack.run_id, again.request.request_id, approved=False)
                assert late.value.details["outcome"] == "answered"
                await backend.respond("w2", later.run_id, second.request.request_id, content="eu-west")
                await backend.wait_for_run("w2", later.run_id)
                assert (await backend.transcript("w2")).items[-1].content == "eu-west"
