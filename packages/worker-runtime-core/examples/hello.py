"""Create a Worker, send it input, wait for the run and print the transcript: ``python hello.py``."""

import anyio

from worker_runtime_core import Runtime


async def main() -> None:
    async with Runtime() as rt:  # memory store, echo default profile
        worker = await rt.create_worker()
        wid = worker.worker_ref.worker_id
        ack = await rt.send_input(wid, "hello")
        run = await rt.wait_for_run(wid, ack.run_id)
        print(f"run {run.run_id}: {run.status}")
        for entry in (await rt.transcript(wid)).items:
            print(f"{entry.sequence} {entry.role}: {entry.content}")


if __name__ == "__main__":
    anyio.run(main)
