"""Run twice: the second start finds the Worker and its transcript, and the repeated input is not run again."""

import sys

import anyio

from worker_runtime_core import Runtime, WorkerNotFoundError
from worker_runtime_store_fs import FsRuntimeStore


async def main(path: str) -> None:
    async with Runtime(store=FsRuntimeStore(path)) as rt:
        try:
            await rt.get_worker("w1")
        except WorkerNotFoundError:
            await rt.create_worker(worker_id="w1")
        ack = await rt.send_input("w1", "hello", input_id="hello-1")  # a retry-safe key
        await rt.wait_for_run("w1", ack.run_id)
        page = await rt.transcript("w1")
        print(f"runtime {rt.runtime_id}: duplicate={ack.duplicate}, {page.total_items} entries")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "./.worker-runtime")
