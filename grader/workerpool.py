"""A small process pool whose tasks can time out or crash without taking the run down.

``concurrent.futures`` cannot stop one task that hangs, and one worker that
dies breaks the whole pool. Here every worker is a spawned process with its
own pipe: the parent hands it one task at a time, kills it when the task
runs past ``timeout``, and replaces a worker that died; the task that was
running is reported as failed, every other task goes on.

``setup(*setup_args)`` runs once in each worker (import torch, load the test
set) and its return value is passed to ``work(task, state)`` for every task.
Both must be importable module-level functions (workers are spawned).
"""
import multiprocessing
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Deque, Dict, Iterable, Tuple

SETUP_TIMEOUT = 300.0


class SetupError(RuntimeError):
    """A worker could not even start (the message holds its traceback); the run cannot go on."""


@dataclass
class Failure:
    """A task that did not return: it raised, ran past the timeout, or its worker died."""

    reason: str


def _worker(conn: Connection, setup: Callable, setup_args: Tuple, work: Callable) -> None:
    try:
        state = setup(*setup_args)
    except BaseException:
        conn.send(("setup-failed", traceback.format_exc()))
        return
    conn.send(("ready", None))
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            conn.send(("done", work(task, state)))
        except Exception as error:
            conn.send(("done", Failure(f"{type(error).__name__}: {error}")))


class _Worker:
    def __init__(self, context, setup: Callable, setup_args: Tuple, work: Callable) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, setup, setup_args, work), daemon=True)
        self.process.start()
        child.close()
        self.task: Any = None
        self.ready = False
        self.deadline = time.monotonic() + SETUP_TIMEOUT

    def give(self, task: Any, timeout: float) -> None:
        self.task, self.deadline = task, time.monotonic() + timeout
        self.conn.send(task)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def run_tasks(tasks: Iterable[Any], setup: Callable, setup_args: Tuple, work: Callable,
              on_result: Callable[[Any, Any], None], jobs: int = 1, timeout: float = 600.0) -> None:
    """Run ``work(task, state)`` for every task in ``jobs`` worker processes.

    ``on_result(task, result)`` is called in this process as each task ends,
    with ``work``'s return value or a ``Failure``. Raises ``SetupError`` when
    a worker's ``setup`` fails.
    """
    context = multiprocessing.get_context("spawn")
    pending: Deque[Any] = deque(tasks)
    workers: Dict[Connection, _Worker] = {}

    def replace(worker: _Worker, reason: str) -> None:
        """Kill ``worker`` (the next round starts a new one) and report its task as failed."""
        del workers[worker.conn]
        worker.stop(kill=True)
        on_result(worker.task, Failure(reason))

    try:
        while pending or any(w.task is not None for w in workers.values()):
            busy = sum(w.task is not None for w in workers.values())
            for _ in range(min(jobs, len(pending) + busy) - len(workers)):
                worker = _Worker(context, setup, setup_args, work)
                workers[worker.conn] = worker
            remaining = min(w.deadline for w in workers.values()) - time.monotonic()
            for conn in wait(list(workers), timeout=max(remaining, 0.0) if remaining < 1e9 else None):
                worker = workers[conn]
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    worker.process.join(1)
                    if not worker.ready:
                        raise SetupError(f"a worker died while starting (exit code {worker.process.exitcode})")
                    replace(worker, f"the measuring process died (exit code {worker.process.exitcode})")
                    continue
                if kind == "setup-failed":
                    raise SetupError(payload)
                if kind == "done":
                    task, worker.task = worker.task, None
                    on_result(task, payload)
                worker.ready = True
                if pending:
                    worker.give(pending.popleft(), timeout)
                else:
                    del workers[worker.conn]
                    worker.stop()
            now = time.monotonic()
            for worker in [w for w in workers.values() if w.deadline <= now]:
                if not worker.ready:
                    raise SetupError(f"a worker did not start within {SETUP_TIMEOUT:.0f} s")
                replace(worker, f"took longer than {timeout:.0f} s")
    finally:
        for worker in list(workers.values()):
            worker.stop(kill=True)
