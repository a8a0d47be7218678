"""Running a load in one process or several, each with its own event loop (uvloop).

Python spends about as much CPU to send a small request as a lean server spends to answer it, so
one generator process can be the bottleneck; `processes > 1` splits connections, request count and
rate across worker processes. Every worker first opens its connections and reports ready; then all
start at the same monotonic instant (the clock is shared by the processes of one machine), so
their windows overlap and their counts add up.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Final

import uvloop

from loadgen.result import LoadResult
from loadgen.runner import LoadSpec, Worker

_START_MARGIN: Final = 0.05  # seconds between "all ready" and the common start


async def generate(spec: LoadSpec) -> LoadResult:
    """Run `spec` in this process on the running loop (`spec.processes` is ignored)."""
    return await Worker(spec).run()


def run_load(spec: LoadSpec) -> LoadResult:
    """Run `spec` to the end and return the merged result (blocks; makes its own loops)."""
    if spec.processes == 1:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(Worker(spec).run())
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    children = []
    for worker in range(spec.processes):
        parent_end, child_end = context.Pipe()
        child = context.Process(
            target=_worker_main, args=(spec.share(worker), worker, child_end), daemon=True
        )
        child.start()
        child_end.close()
        pipes.append(parent_end)
        children.append(child)
    try:
        for pipe in pipes:
            ready = pipe.recv()
            if isinstance(ready, BaseException):
                raise ready
        start_at = time.monotonic() + _START_MARGIN
        for pipe in pipes:
            pipe.send(start_at)
        merged = LoadResult()
        for pipe in pipes:
            outcome = pipe.recv()
            if isinstance(outcome, BaseException):
                raise outcome
            merged.merge(outcome)
        return merged
    finally:
        for pipe in pipes:
            pipe.close()
        for child in children:
            child.join(timeout=spec.timeout + 5)
            if child.is_alive():
                child.kill()
                child.join()


def _worker_main(spec: LoadSpec, worker: int, pipe: Connection) -> None:
    async def main() -> LoadResult:
        runner = Worker(spec, worker)
        await runner.connect()
        pipe.send("ready")
        start_at: float = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        return await runner.run(start_at)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(main())
    except Exception as exc:
        pipe.send(exc)
        return
    pipe.send(result)
