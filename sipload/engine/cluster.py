"""`--cluster`: the run's shards as tasks on a Dask cluster (one machine or many), with WorkerPool's interface.

Theory of operation
-------------------
One load host tops out at its cores, so `--cluster ADDRESS` runs the shards on a Dask cluster instead of local
processes: `tcp://SCHEDULER:8786` (a `dask scheduler` with `dask worker`s on other hosts, or one that
dask-kubernetes / dask-jobqueue started) or `local:N` (a LocalCluster of N processes on this host, one thread
each). Each shard is one task (`cluster_shard.run_shard`, submitted with `pure=False`, pinned to its own Dask
worker process, never moved or retried) running the same `Worker` as `--workers`: every N-th endpoint on the same
global schedule (so the rate is divided), and its slice of the source addresses.

The handshake is WorkerPool's, over Dask's own facilities. Shards announce "ready" and stream their interval
snapshots as Dask events on the run's topic (`Client.subscribe_topic`). When all are ready the client sets the
run's start `Variable` to an agreed wall-clock time a little ahead (`START_MARGIN`), then its go `Event`, and
every shard sleeps until that instant. Snapshots go to the trio side in each shard's order, into the same sink
as local workers' snapshots, so merging is identical. Ctrl-C (`request_stop`) sets the run's stop `Event`: every
shard stops arrivals and unregisters its endpoints, then returns its `WorkerReport`; the reports are merged. A
shard whose task fails, or whose Dask worker leaves the cluster (the client looks every `POLL` seconds), is
reported in `PoolOutcome.lost`, and the other shards' results stay valid.

The Dask client is synchronous and runs in trio threads (`trio.to_thread`); its callbacks come back with
`TrioToken.run_sync_soon`. Nothing here blocks the trio loop. Dask is imported only when a cluster run starts.
"""

from __future__ import annotations

import importlib
import ipaddress
import pickle
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from sipload.engine.cluster_shard import POLL, ShardResult, ShardSpec, ignore_sigint, run_shard
from sipload.engine.pool import PoolOutcome, SnapshotSink
from sipload.engine.worker import Destinations, Shard, WorkerError, merge_reports
from sipload.metrics.recorder import IntervalSnapshot
from sipload.report.result import EndpointState
from sipload.scenario import AddressRange, Scenario
from sipload.transport.udp import Address

START_MARGIN = 1.0        # s between "go" and the agreed start: time for every shard to read it
READY_TIMEOUT = 120.0     # s for every shard to bind its sockets and build its endpoints
CONNECT_TIMEOUT = 10.0    # s to reach the scheduler
WORKERS_TIMEOUT = 60.0    # s for the cluster to have a worker (local:N: all N)
RESULT_TIMEOUT = 60.0     # s to fetch a finished shard's report
SNAPSHOT_GRACE = 10.0     # s to wait for a finished shard's last snapshots
_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
# Dask workers' own periodic work shares the GIL with the shard's trio loop: the statistical profiler (it walks
# the running task's stack every 10 ms), the event-loop tick check (20 ms), the system and memory monitors.
# A LocalCluster runs with them off or slowed down; docs/README show the same for `dask worker`.
QUIET_WORKERS = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "200ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
}
HOLD_UNSUPPORTED = "a cross-check while holding (crosscheck.when = 'holding') cannot run with --cluster"


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    """Where the shards run: a scheduler address, or a LocalCluster of `local_workers` processes."""

    scheduler: str | None
    local_workers: int = 0

    def __str__(self) -> str:
        return self.scheduler if self.scheduler is not None else f"local:{self.local_workers}"


def parse_cluster(text: str) -> ClusterAddress:
    """`local:N` or a Dask scheduler address (`tcp://HOST:PORT`; `HOST:PORT` means tcp). ValueError otherwise."""
    value = text.strip()
    if value.startswith("local:"):
        n = value.removeprefix("local:")
        if not n.isdigit() or not 1 <= int(n) <= 256:
            raise ValueError(f"--cluster: local:N needs N from 1 to 256 worker processes, got {text!r}")
        return ClusterAddress(None, int(n))
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "tcp", value
    port = r"(:\d{1,5})?" if sep else r":\d{1,5}"   # a bare word could be a typo of local:N
    if scheme not in _SCHEMES or not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[\w.-]+)" + port, rest):
        raise ValueError(f"--cluster: expected a Dask scheduler address such as tcp://10.0.0.5:8786, "
                         f"or local:N; got {text!r}")
    return ClusterAddress(f"{scheme}://{rest}")


def shard_scenario(scenario: Scenario, shard: Shard) -> Scenario:
    """The scenario a shard runs: its own contiguous slice of the source addresses (all of them if too few)."""
    sources = scenario.endpoints.source_addresses
    if sources is None or len(sources) < shard.workers:
        return scenario
    size = len(sources)
    lo = shard.worker * size // shard.workers
    hi = (shard.worker + 1) * size // shard.workers - 1
    first = type(sources.first)(int(sources.first) + lo)
    last = type(sources.first)(int(sources.first) + hi)
    sliced = AddressRange(first, last)
    return replace(scenario, endpoints=replace(scenario.endpoints, source_addresses=sliced))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def worker_host(address: str) -> str:
    """'tcp://10.0.0.7:40123' -> '10.0.0.7'."""
    rest = address.partition("://")[2] or address
    return rest.rsplit(":", 1)[0].strip("[]")


def choose_workers(available: list[str], shards: int) -> list[str]:
    """`shards` Dask workers, spread over the hosts (one per host in turn), each at most once."""
    by_host: dict[str, list[str]] = {}
    for addr in sorted(available):
        by_host.setdefault(worker_host(addr), []).append(addr)
    order: list[str] = []
    while len(order) < len(available):
        for addrs in by_host.values():
            if addrs:
                order.append(addrs.pop(0))
    return order[:shards]


def check_reachable(scenario: Scenario, destinations: Destinations, workers: list[str]) -> None:
    """The target must be reachable from every shard: refuse a loopback target with workers on other hosts."""
    remote = sorted({worker_host(w) for w in workers if not _is_loopback(worker_host(w))})
    if not remote:
        return
    if scenario.target.embedded:
        raise WorkerError(
            f"the embedded registrar runs inside this process, and Dask workers on other hosts "
            f"({', '.join(remote)}) cannot reach it: use a registrar the workers can reach "
            f"(--target sip:HOST:PORT) or --cluster local:N"
        )
    for destination in (a for addresses in destinations.values() for a in addresses):
        if _is_loopback(destination[0]):
            raise WorkerError(
                f"the target {destination[0]}:{destination[1]} is a loopback address, which Dask workers on other "
                f"hosts ({', '.join(remote)}) cannot reach: name the registrar by an address they can reach"
            )


@dataclass(slots=True)
class _ShardState:
    spec: ShardSpec
    worker: str
    future: Any = None
    ready: bool = False
    done: bool = False           # the task ended (finished, failed or cancelled)
    lost: str | None = None
    result: ShardResult | None = None
    received: int = 0
    pending: dict[int, IntervalSnapshot] = field(default_factory=dict)


class _Dask:
    """The synchronous Dask client (and the LocalCluster it may own). Every method blocks: call from a thread."""

    def __init__(self, where: ClusterAddress) -> None:
        try:
            distributed: Any = importlib.import_module("distributed")   # untyped: Any at this boundary
        except ImportError:
            raise WorkerError("--cluster needs Dask: python3 -m pip install 'dask[distributed]'") from None
        self.distributed = distributed
        self.where = where
        self.cluster: Any = None
        self.client: Any = None
        self.pids: dict[str, int] = {}
        what = "start a local Dask cluster" if where.scheduler is None else f"reach the Dask scheduler {where}"
        try:
            if where.scheduler is None:
                dask: Any = importlib.import_module("dask")
                with dask.config.set(QUIET_WORKERS):   # the Nanny hands this configuration to its worker process
                    self.cluster = distributed.LocalCluster(
                        n_workers=where.local_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0", memory_limit=0, silence_logs=40,
                    )
                self.client = distributed.Client(self.cluster, timeout=CONNECT_TIMEOUT)
            else:
                self.client = distributed.Client(where.scheduler, timeout=CONNECT_TIMEOUT)
            what = "see any Dask worker"
            self.client.wait_for_workers(max(1, where.local_workers), timeout=WORKERS_TIMEOUT)
            if self.cluster is not None:
                self.pids = self.client.run(ignore_sigint)   # the client alone acts on a terminal's Ctrl-C
        except (OSError, TimeoutError, RuntimeError) as exc:   # RuntimeError: "Nanny failed to start"
            self.close()
            raise WorkerError(f"--cluster {where}: cannot {what}: {exc or type(exc).__name__}") from None

    def workers(self) -> list[str]:
        """The Dask workers the scheduler knows now (a round trip to it, never a cached view)."""
        return sorted(self.client.nthreads())

    def close(self) -> None:
        if self.client is not None:
            self.client.close(timeout=10)
        if self.cluster is not None:
            self.cluster.close(timeout=20)


class ClusterPool:
    """WorkerPool's interface (`run`, `request_stop`, `partial_report`), with shards on a Dask cluster."""

    def __init__(self, scenario: Scenario, destination: Address | Destinations, workers: int, sink: SnapshotSink, *,
                 address: str, ready_timeout: float = READY_TIMEOUT) -> None:
        try:
            self.where = parse_cluster(address)
        except ValueError as exc:
            raise WorkerError(str(exc)) from None
        self.scenario = scenario
        # every transport's failover list, as the local pool gets it
        single = {scenario.target.transport.value.upper(): (destination,)} if isinstance(destination, tuple) else {}
        self.destinations: Destinations = destination if isinstance(destination, Mapping) else single
        self.workers = workers          # shards; 0: one per Dask worker process (local:N: N)
        self.sink = sink
        self.ready_timeout = ready_timeout
        self.run_id = uuid.uuid4().hex[:12]
        self.assignments: dict[int, str] = {}   # shard -> Dask worker address, once the run started
        self.worker_pids: dict[str, int] = {}   # local:N only
        self.lost: list[str] = []               # as in the outcome: lost shards, then missing snapshots
        self._notes: list[str] = []
        self._shards: list[_ShardState] = []
        self._stop_requested = False
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    # --- WorkerPool's interface ---------------------------------------------------------------------
    @property
    def hold_hook(self) -> Callable[[list[EndpointState]], Awaitable[None]] | None:
        return None

    @hold_hook.setter
    def hold_hook(self, hook: Callable[[list[EndpointState]], Awaitable[None]] | None) -> None:
        if hook is not None:
            raise WorkerError(HOLD_UNSUPPORTED)

    def partial_report(self) -> None:
        """Reports come from the shards only at their end: there is nothing partial to show."""
        return None

    def request_stop(self) -> None:
        """Every shard stops its arrivals and unregisters (from the trio thread, e.g. on Ctrl-C)."""
        self._stop_requested = True
        self._wake.set()

    async def run(self) -> PoolOutcome:
        self._token = trio.lowlevel.current_trio_token()
        dask: _Dask | None = None
        try:
            dask = await trio.to_thread.run_sync(_Dask, self.where)
            self.worker_pids = dict(dask.pids)
            return await self._run_on(dask)
        finally:
            if dask is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(40):
                    await trio.to_thread.run_sync(self._clean_up, dask, abandon_on_cancel=True)

    # --- the run --------------------------------------------------------------------------------------
    async def _run_on(self, dask: _Dask) -> PoolOutcome:
        available = await trio.to_thread.run_sync(dask.workers)
        count = self.workers if self.workers > 0 else len(available)
        if count > len(available):
            raise WorkerError(f"--workers {count}: the Dask cluster {self.where} has {len(available)} worker "
                              f"processes, and each shard needs its own")
        count = min(count, self.scenario.load.max_in_flight)  # each shard holds its share of the cap, >= 1
        chosen = choose_workers(available, count)
        check_reachable(self.scenario, self.destinations, chosen)
        for k, addr in enumerate(chosen):
            shard = Shard(k, count)
            spec = ShardSpec(self.run_id, shard_scenario(self.scenario, shard), self.destinations, shard,
                             self.ready_timeout + START_MARGIN + 10.0)
            self._shards.append(_ShardState(spec, addr))
            self.assignments[k] = addr
        await trio.to_thread.run_sync(self._submit, dask)

        # 1. every shard ready (or one failed, lost, a stop, or the ready timeout)
        with trio.move_on_after(self.ready_timeout) as waited:
            while not self._stop_requested and not all(s.ready for s in self._shards):
                if any(s.done or s.lost for s in self._shards):
                    break
                await self._sleep_and_check(dask)
        if waited.cancelled_caught:
            for s in self._shards:
                if not s.ready and not s.done and s.lost is None:
                    s.lost = f"shard {s.spec.shard.worker} on {s.worker} was not ready within {self.ready_timeout:g} s"
        go = not self._stop_requested and all(s.ready and not s.done and s.lost is None for s in self._shards)
        stopped = False
        if go:
            # 2. the agreed start: the same wall-clock instant on every host
            await trio.to_thread.run_sync(self._set_start, dask, time.time() + START_MARGIN)
        else:
            await trio.to_thread.run_sync(self._set_stop, dask)
            stopped = True

        # 3. until every shard ended or was lost; Ctrl-C stops them all
        while not all(s.done or s.lost for s in self._shards):
            if self._stop_requested and not stopped:
                await trio.to_thread.run_sync(self._set_stop, dask)
                stopped = True
            await self._sleep_and_check(dask)

        # 4. reports, and every snapshot each shard sent
        for s in self._shards:
            if s.done and s.lost is None:
                await self._collect(dask, s)
        errors = [s.lost for s in self._shards if s.lost is not None]
        reports = [s.result.report for s in self._shards if s.result is not None]
        if errors and not reports:
            raise WorkerError(errors[0])
        self.lost = [*errors, *self._notes]
        return PoolOutcome(merge_reports(reports), self.lost)

    def _submit(self, dask: _Dask) -> None:
        client = dask.client
        client.subscribe_topic(self._shards[0].spec.topic, self._on_event)
        for s in self._shards:
            k = s.spec.shard.worker
            s.future = client.submit(run_shard, s.spec, key=f"sipload-{self.run_id}-shard-{k}", workers=[s.worker],
                                     allow_other_workers=False, pure=False, retries=0)
            s.future.add_done_callback(lambda _f, k=k: self._call_soon(self._on_done, k))

    def _set_start(self, dask: _Dask, start_at: float) -> None:
        spec = self._shards[0].spec
        dask.distributed.Variable(spec.start_name, client=dask.client).set(start_at)
        dask.distributed.Event(spec.go_name, client=dask.client).set()

    def _set_stop(self, dask: _Dask) -> None:
        dask.distributed.Event(self._shards[0].spec.stop_name, client=dask.client).set()

    async def _sleep_and_check(self, dask: _Dask) -> None:
        """Wait up to POLL s (less when something happens), then look for shards whose Dask worker left."""
        with trio.move_on_after(POLL):
            await self._wake.wait()
        self._wake = trio.Event()
        running = [s for s in self._shards if not s.done and s.lost is None]
        if not running:
            return
        try:
            present = set(await trio.to_thread.run_sync(dask.workers))
        except Exception as exc:   # the scheduler is gone: no shard can report any more
            for s in running:
                s.lost = f"shard {s.spec.shard.worker} on {s.worker}: lost contact with the Dask scheduler ({exc})"
            return
        gone = [s for s in running if s.worker not in present]
        for s in gone:
            s.lost = (f"shard {s.spec.shard.worker} on Dask worker {s.worker} was lost (the worker left the cluster): "
                      f"its endpoints' results are missing and they may stay registered until they expire")
        if gone:
            await trio.to_thread.run_sync(dask.client.cancel, [s.future for s in gone])

    async def _collect(self, dask: _Dask, s: _ShardState) -> None:
        k = s.spec.shard.worker
        future = s.future
        status = future.status
        if status != "finished":
            exc = await trio.to_thread.run_sync(_exception_of, future)
            s.lost = f"shard {k} on {s.worker} failed: {exc}" if status == "error" else f"shard {k}: {status}"
            return
        try:
            s.result = await trio.to_thread.run_sync(lambda: future.result(timeout=RESULT_TIMEOUT))
        except Exception as exc:
            s.lost = f"shard {k} on {s.worker}: its report could not be fetched: {exc}"
            return
        assert s.result is not None
        with trio.move_on_after(SNAPSHOT_GRACE):
            while s.received < s.result.snapshots:
                await trio.sleep(0.02)
        if s.received < s.result.snapshots:
            self._notes.append(f"shard {k}: {s.result.snapshots - s.received} of its {s.result.snapshots} interval "
                             f"snapshots did not arrive (live figures are short by them)")

    def _clean_up(self, dask: _Dask) -> None:
        """After every way out: stop and cancel what may still run, drop the run's Dask state, close."""
        try:
            if self._shards:
                spec = self._shards[0].spec
                if not all(s.done for s in self._shards):
                    self._set_stop(dask)
                    dask.client.cancel([s.future for s in self._shards if s.future is not None])
                dask.client.unsubscribe_topic(spec.topic)
                dask.distributed.Variable(spec.start_name, client=dask.client).delete()
                dask.distributed.Event(spec.stop_name, client=dask.client).clear()
                dask.distributed.Event(spec.go_name, client=dask.client).clear()
        except Exception:  # the scheduler is gone: nothing left to tidy
            pass
        finally:
            dask.close()

    # --- callbacks from Dask's threads, run on the trio thread ------------------------------------------
    def _call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        if self._token is None:
            return
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        """A Dask event on the run's topic (on the client's loop thread)."""
        msg = event[1]
        kind = msg.get("kind")
        k = int(msg.get("shard", -1))
        if kind == "snap":
            snap = pickle.loads(msg["data"])
            self._call_soon(self._on_snapshot, k, int(msg["seq"]), snap)
        elif kind == "ready":
            self._call_soon(self._on_ready, k)

    def _on_ready(self, k: int) -> None:
        if 0 <= k < len(self._shards):
            self._shards[k].ready = True
            self._wake.set()

    def _on_snapshot(self, k: int, seq: int, snap: IntervalSnapshot) -> None:
        """Hand snapshots to the sink in each shard's order (events are ordered; this only makes sure)."""
        if not 0 <= k < len(self._shards):
            return
        s = self._shards[k]
        s.pending[seq] = snap
        while s.received in s.pending:
            self.sink(s.pending.pop(s.received), k)
            s.received += 1

    def _on_done(self, k: int) -> None:
        self._shards[k].done = True
        self._wake.set()


def _exception_of(future: Any) -> str:
    try:
        exc = future.exception(timeout=RESULT_TIMEOUT)
    except Exception as err:   # cancelled, or the scheduler is gone
        return f"{type(err).__name__}: {err}"
    return str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"

