"""Workers: one in-process, or N worker processes each running its own trio loop and shard.

Theory of operation
-------------------
Past ~50-70 % of one core a load generator measures its own backlog (DESIGN.md), so a run uses
every core: `--workers N` starts N processes (spawned, not forked: trio and fork do not mix).
Each builds its shard (every N-th endpoint, the same global open-loop schedule, so the shards
together offer the scenario's rate), binds its own sockets and reports "ready". When all are
ready the parent says "go" to all of them at once; from then on each sends its interval
snapshots over a pipe and, at the end, its report. Ctrl-C reaches the parent only (workers ignore
SIGINT); the parent sends "stop" and every worker unregisters its own endpoints. A worker that
dies is reported as such and the others' results stay valid.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from sipload.engine.engines import make_worker
from sipload.engine.native_worker import NativeWorker
from sipload.engine.split_worker import SplitWorker
from sipload.engine.worker import Destinations, Shard, Worker, WorkerError, WorkerReport, merge_reports
from sipload.gcpolicy import hold_long_lived
from sipload.metrics.recorder import IntervalSnapshot
from sipload.report.result import EndpointState
from sipload.scenario import Scenario
from sipload.transport.udp import Address

SnapshotSink = Callable[[IntervalSnapshot, int], None]


# arrivals a second one native worker serves with room to spare (bench/RESULTS.md: ~16 µs of CPU per
# registration, a third of a core at 20,000/s); a second process beside it only adds wake-ups
NATIVE_RATE_PER_WORKER = 20_000.0


def default_workers(scenario: Scenario) -> int:
    """All cores, but no more workers than a few hundred endpoints each justify; on the native engine,
    no more than the arrival rate needs (one per NATIVE_RATE_PER_WORKER arrivals a second) unless Python runs
    some of its groups."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cores, scenario.endpoints.count // 200 or 1)
    if scenario.load.engine == "native" and not scenario.load.python_groups:
        workers = min(workers, math.ceil(scenario.load.peak_rate / NATIVE_RATE_PER_WORKER))
    return max(1, workers)


@dataclass(slots=True)
class PoolOutcome:
    report: WorkerReport
    lost: list[str]          # workers that died or failed, with the reason


class WorkerPool:
    def __init__(self, scenario: Scenario, destination: Address | Destinations, workers: int,
                 sink: SnapshotSink) -> None:
        self.scenario = scenario
        self.destination = destination
        self.workers = max(1, workers)
        self.sink = sink
        self._local: Worker | NativeWorker | SplitWorker | None = None
        self._conns: list[multiprocessing.connection.Connection] = []
        self._stop_requested = False
        self.hold_hook: Callable[[list[EndpointState]], Awaitable[None]] | None = None  # one worker only

    def partial_report(self) -> WorkerReport | None:
        """The in-process worker's report so far (also after a cancelled run)."""
        return self._local.report if self._local is not None else None

    def request_stop(self) -> None:
        self._stop_requested = True
        if self._local is not None:
            self._local.request_stop()
        for conn in self._conns:
            try:
                conn.send(("stop", None))
            except (OSError, ValueError):
                pass

    async def run(self) -> PoolOutcome:
        # What lives in this process before the run (modules, the scenario, an embedded registrar
        # already listening) is left out of the collector's passes while the run goes: shorter full
        # collections, i.e. shorter pauses in the embedded registrar's answers, and rarer ones (gcpolicy).
        # Undone at the end.
        release_gc = hold_long_lived()
        try:
            if self.workers == 1:
                self._local = make_worker(self.scenario, self.destination, sink=lambda snap: self.sink(snap, 0))
                self._local.hold_hook = self.hold_hook
                if self._stop_requested:
                    self._local.request_stop()
                return PoolOutcome(await self._local.run(), [])
            return await self._run_processes()
        finally:
            release_gc()

    async def _run_processes(self) -> PoolOutcome:
        ctx = multiprocessing.get_context("spawn")
        procs: list[Any] = []
        for k in range(self.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_process,
                args=(self.scenario, self.destination, Shard(k, self.workers), child),
                name=f"sipload-worker-{k}",
                daemon=True,
            )
            proc.start()
            child.close()
            procs.append(proc)
            self._conns.append(parent)
        reports: dict[int, WorkerReport] = {}
        lost: list[str] = []
        ready = 0
        all_ready = trio.Event()
        errors: list[str] = []
        try:
            async with trio.open_nursery() as nursery:

                async def listen(k: int, conn: multiprocessing.connection.Connection) -> None:
                    nonlocal ready
                    while True:
                        try:
                            await trio.lowlevel.wait_readable(conn.fileno())
                            kind, payload = conn.recv()
                        except (EOFError, OSError):
                            if k not in reports:
                                lost.append(f"worker {k} exited without a report (exit code {procs[k].exitcode})")
                            if not all_ready.is_set():
                                errors.append(lost[-1] if lost else f"worker {k} died")
                                all_ready.set()
                            return
                        if kind == "ready":
                            ready += 1
                            if ready == self.workers:
                                all_ready.set()
                        elif kind == "snap":
                            self.sink(payload, k)
                        elif kind == "done":
                            reports[k] = payload
                            return
                        elif kind == "error":
                            errors.append(str(payload))
                            all_ready.set()
                            return

                for k, conn in enumerate(self._conns):
                    nursery.start_soon(listen, k, conn)
                await all_ready.wait()
                if errors:
                    self.request_stop()
                else:
                    for conn in self._conns:
                        try:
                            conn.send(("go", None))
                        except (OSError, ValueError):
                            pass  # that worker died after "ready" (e.g. a signal): its listener reports it lost
                    if self._stop_requested:
                        self.request_stop()
        finally:
            with trio.CancelScope(shield=True):
                for proc in procs:
                    await trio.to_thread.run_sync(proc.join, 10.0)
                    if proc.is_alive():
                        proc.kill()
            for conn in self._conns:
                conn.close()
        if errors and not reports:
            raise WorkerError(errors[0])
        lost.extend(e for e in errors if e not in lost)
        return PoolOutcome(merge_reports([reports[k] for k in sorted(reports)]), lost)


def worker_process(scenario: Scenario, destination: Address | Destinations, shard: Shard,
                   conn: multiprocessing.connection.Connection) -> None:
    """The body of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and tells us to stop
    try:
        trio.run(_worker_main, scenario, destination, shard, conn)
    except WorkerError as exc:
        conn.send(("error", str(exc)))
    finally:
        conn.close()


async def _worker_main(scenario: Scenario, destination: Address | Destinations, shard: Shard,
                       conn: multiprocessing.connection.Connection) -> None:
    worker = make_worker(scenario, destination, shard=shard, sink=lambda snap: conn.send(("snap", snap)))
    go = trio.Event()

    async def listen() -> None:
        while True:
            await trio.lowlevel.wait_readable(conn.fileno())
            try:
                kind, _ = conn.recv()
            except (EOFError, OSError):
                worker.request_stop()   # the parent is gone: unregister and end
                go.set()
                return
            if kind == "go":
                go.set()
            elif kind == "stop":
                go.set()
                worker.request_stop()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        report = await worker.run(ready=lambda: conn.send(("ready", None)), go=go)
        conn.send(("done", report))
        nursery.cancel_scope.cancel()
