"""The shard side of a Dask run: one task in one Dask worker process, running the same `Worker` as `--workers`.

Theory of operation
-------------------
`run_shard(spec)` is what the client (`cluster.ClusterPool`) submits, once per shard, pinned to one Dask
worker process. It runs its own trio loop in the Dask worker's task thread and drives `spec.shard` of the
endpoints exactly as a `--workers` process does. What it says goes to the client as Dask events on the run's
topic (`distributed.Worker.log_event`: non-blocking, kept in order from one worker to the client): "ready" once
its sockets are bound and its endpoints built, then every interval snapshot, pickled and numbered. It starts
when the run's go `Event` is set (its start `Variable` then holds the agreed wall-clock time) and that time has
come: every shard sleeps until the same instant. It stops arrivals and unregisters its endpoints when the run's
stop `Event` is set, when the client cancels its task, or when it can no longer reach the scheduler. Its
`WorkerReport` (with the number of snapshots it sent, so that the client knows when it has them all) is the
task's result.

Dask's blocking calls run in trio threads and block for at most `POLL` seconds at a time: the trio loop never
waits on Dask. Dask itself imports lazily, so that `sipload` without `--cluster` never needs it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from sipload.engine.engines import make_worker
from sipload.engine.worker import Destinations, Shard, WorkerError, WorkerReport
from sipload.metrics.recorder import IntervalSnapshot
from sipload.scenario import Scenario

POLL = 0.5  # seconds: the longest a shard's thread blocks on Dask before it looks again


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """Everything one shard task needs (pickled to the Dask worker)."""

    run_id: str
    scenario: Scenario
    destination: Destinations   # per transport (upper case), in failover order
    shard: Shard
    ready_timeout: float  # how long to wait for the start time before giving up

    @property
    def topic(self) -> str:
        return f"sipload-{self.run_id}"

    @property
    def start_name(self) -> str:
        return f"sipload-{self.run_id}-start"

    @property
    def go_name(self) -> str:
        return f"sipload-{self.run_id}-go"

    @property
    def stop_name(self) -> str:
        return f"sipload-{self.run_id}-stop"


@dataclass(frozen=True, slots=True)
class ShardResult:
    report: WorkerReport
    snapshots: int  # how many snapshot events this shard sent


def ignore_sigint() -> int:
    """Run on a local Dask worker's event loop (its main thread): a terminal Ctrl-C reaches the whole process
    group, and only the client may act on it (it stops the shards, which unregister). Returns the pid."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return os.getpid()


class _Control:
    """The shard's handle on the run's Dask primitives; thread-safe, every call blocks for at most POLL s."""

    def __init__(self, spec: ShardSpec) -> None:
        dd: Any = importlib.import_module("distributed")   # untyped: Any at this boundary

        self.spec = spec
        self.dask_worker: Any = dd.get_worker()
        self.key: Any = importlib.import_module("distributed.worker").thread_state.key
        client = dd.get_client()
        self.start: Any = dd.Variable(spec.start_name, client=client)
        self.go: Any = dd.Event(spec.go_name, client=client)
        self.stop: Any = dd.Event(spec.stop_name, client=client)
        self.finished = threading.Event()
        self.sent = 0

    def publish(self, kind: str, data: bytes = b"") -> None:
        """Non-blocking (the Dask worker's loop sends it); safe from the trio thread."""
        msg = {"kind": kind, "shard": self.spec.shard.worker, "seq": self.sent, "data": data}
        if kind == "snap":
            self.sent += 1
        self.dask_worker.log_event(self.spec.topic, msg)

    def snapshot(self, snap: IntervalSnapshot) -> None:
        self.publish("snap", pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL))

    def cancelled(self) -> bool:
        """The client cancelled this task (or released it: the client is gone)."""
        ts = self.dask_worker.state.tasks.get(self.key)
        return ts is None or ts.state not in ("executing", "long-running")

    def already_started(self) -> bool:
        """The run's start time was already given: this task is a re-run (its first worker was lost)."""
        return bool(self.go.is_set())

    def wait_start(self) -> float | None:
        """The agreed wall-clock start time; None to stop without starting (stop, cancel, timeout, no scheduler)."""
        deadline = time.monotonic() + self.spec.ready_timeout
        while not self.finished.is_set() and time.monotonic() < deadline:
            try:
                if self.stop.is_set() or self.cancelled():
                    return None
                if self.go.wait(timeout=POLL):   # (a Variable.get timeout would log an error at the scheduler)
                    return float(self.start.get())
            except Exception:  # the scheduler is out of reach: nobody can start or stop us any more
                return None
        return None

    def wait_stop(self) -> bool:
        """Block until the run is stopped (True) or the shard finished on its own (False)."""
        while not self.finished.is_set():
            if self.cancelled():
                return True
            try:
                if self.stop.wait(timeout=POLL):
                    return True
            except Exception:  # the scheduler is out of reach: unregister and end
                return True
        return False


def run_shard(spec: ShardSpec) -> ShardResult:
    """The Dask task: run one shard to its end and return its report."""
    control = _Control(spec)
    if control.already_started():
        raise WorkerError(f"shard {spec.shard.worker} was started again after the run began; refused "
                          f"(its first Dask worker was lost)")
    resume = _pause_profiler(control.dask_worker)
    try:
        report = trio.run(_shard_main, spec, control)
    except BaseExceptionGroup as group:
        inner = _single(group)
        if isinstance(inner, WorkerError):
            raise inner from None   # a message for the user (e.g. the registrar refused the connection)
        raise
    finally:
        resume()
    return ShardResult(report, control.sent)


async def _shard_main(spec: ShardSpec, control: _Control) -> WorkerReport:
    worker = make_worker(spec.scenario, spec.destination, shard=spec.shard, sink=control.snapshot)
    go = trio.Event()

    async def steer() -> None:
        start_at = await trio.to_thread.run_sync(control.wait_start, abandon_on_cancel=True)
        if start_at is None:
            worker.request_stop()   # nothing was started: the worker ends at once
            go.set()
            return
        await trio.sleep(max(0.0, start_at - time.time()))   # every shard starts at the same wall-clock time
        go.set()
        if await trio.to_thread.run_sync(control.wait_stop, abandon_on_cancel=True):
            worker.request_stop()   # stop arrivals, unregister every bound endpoint

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steer)
            report = await worker.run(ready=lambda: control.publish("ready"), go=go)
            nursery.cancel_scope.cancel()
    finally:
        control.finished.set()   # the helper threads end within POLL seconds
    return report


def _pause_profiler(dask_worker: Any) -> Callable[[], None]:
    """Stop the Dask worker's statistical profiler while the shard runs (it samples the running task's stack
    every 10 ms, on the worker's event loop, under the GIL the shard needs); returns what starts it again."""
    callbacks = getattr(dask_worker, "periodic_callbacks", {})
    paused = [pc for name, pc in callbacks.items() if name in ("profile", "profile-cycle") and pc.is_running()]
    for pc in paused:
        dask_worker.loop.add_callback(pc.stop)

    def resume() -> None:
        for pc in paused:
            dask_worker.loop.add_callback(pc.start)

    return resume


def _single(exc: BaseException) -> BaseException:
    """The one exception inside nested one-member exception groups (trio's nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
