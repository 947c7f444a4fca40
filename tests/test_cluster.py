"""--cluster: shards on a Dask cluster of processes on loopback, against the embedded registrar's core."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from sipload.engine.cluster import (
    HOLD_UNSUPPORTED,
    ClusterAddress,
    ClusterPool,
    check_reachable,
    choose_workers,
    parse_cluster,
    shard_scenario,
)
from sipload.engine.pool import PoolOutcome, WorkerPool
from sipload.engine.run import ExitCode, run_scenario
from sipload.engine.worker import Shard, WorkerError
from sipload.metrics.aggregate import Aggregate
from sipload.metrics.phases import Phase
from sipload.metrics.recorder import Recorder
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import Scenario, parse_scenario

try:
    import distributed
except ImportError:   # a dependency: missing in CI is a failure, elsewhere a skip that says why
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("dask[distributed] is not installed (python3 -m pip install -e '.[test]')", allow_module_level=True)
ROOT = Path(__file__).resolve().parent.parent

BODY = """
name = "cluster"
seed = 7
[target]
registrar = "TARGET"
domain = "sipload.test"
[endpoints]
count = 40
expires = EXPIRES
refresh_at = 0.5
refresh_jitter = 0.0
refresh_margin = "200ms"
[load]
rate = 40
duration = "DURATION"
interval = "500ms"
unregister_timeout = "5s"
"""


def scenario(target: str, *, duration: str = "3500ms", expires: int = 4) -> Scenario:
    text = BODY.replace("TARGET", target).replace("DURATION", duration).replace("EXPIRES", str(expires))
    return parse_scenario(text, Path("cluster.toml"))


@asynccontextmanager
async def registrar() -> AsyncIterator[tuple[RegistrarCore, int]]:
    """The embedded registrar on 127.0.0.1 UDP, in this process, where the Dask worker processes reach it."""
    core = RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1), now=trio.current_time())
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, RegistrarSettings(), [Listen("udp", "127.0.0.1", 0)],
                                              core=core))
        yield core, listens[0].port
        nursery.cancel_scope.cancel()


def held(core: RegistrarCore) -> set[str]:
    return {aor for aor, _ in core.store.aors(trio.current_time())}


class Sink:
    def __init__(self) -> None:
        self.agg = Aggregate(time.time())
        self.shards: set[int] = set()

    def __call__(self, snap: Any, k: int) -> None:
        self.agg.add(snap, k)
        self.shards.add(k)

    def totals(self) -> dict[Phase, tuple[int, int, int]]:
        out = {}
        for p in (Phase.CHALLENGE, Phase.AUTH, Phase.REGISTER, Phase.REFRESH, Phase.UNREGISTER):
            c = self.agg.counts(p)
            out[p] = (c.attempted, c.succeeded, c.failed)
        return out


async def run_watching(pool: ClusterPool | WorkerPool, core: RegistrarCore) -> tuple[PoolOutcome, int]:
    """Run the pool; also the most AoRs the registrar held at once."""
    peak = 0
    outcome: PoolOutcome | None = None

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(held(core)))
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        with trio.fail_after(90):
            outcome = await pool.run()
        nursery.cancel_scope.cancel()
    assert outcome is not None
    return outcome, peak


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[tuple[str, Any]]:
    """A LocalCluster of 2 processes reached by its scheduler address, as a remote cluster would be."""
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address="127.0.0.1:0", memory_limit=0, silence_logs=40)
    client = distributed.Client(cluster, timeout=30)
    try:
        yield cluster.scheduler_address, client
    finally:
        client.close()
        cluster.close()


# --- end to end -----------------------------------------------------------------------------------------


async def test_two_shards_give_the_totals_of_one_local_run() -> None:
    async with registrar() as (core, port):
        sc = scenario(f"sip:127.0.0.1:{port}")
        local, cluster = Sink(), Sink()
        one, one_peak = await run_watching(WorkerPool(sc, ("127.0.0.1", port), 1, local), core)
        assert held(core) == set()
        t0 = time.monotonic()
        pool = ClusterPool(sc, ("127.0.0.1", port), 0, cluster, address="local:2")
        two, two_peak = await run_watching(pool, core)
        wall = time.monotonic() - t0
        assert held(core) == set()                      # every shard unregistered its endpoints
    assert two.lost == [] and one.lost == []
    assert len(pool.assignments) == 2 and len(set(pool.assignments.values())) == 2   # one process per shard
    assert cluster.shards == {0, 1}                     # live snapshots from both shards
    assert one_peak == two_peak == 40                   # all held at the registrar at once
    totals = local.totals()
    assert totals[Phase.REGISTER] == (40, 40, 0) and totals[Phase.REFRESH] == (40, 40, 0)
    assert totals[Phase.UNREGISTER] == (40, 40, 0)
    assert cluster.totals() == totals                   # merged exactly as for local workers
    for phase in (Phase.REGISTER, Phase.REFRESH, Phase.UNREGISTER):
        assert cluster.agg.histogram(phase).count == local.agg.histogram(phase).count == 40
    assert two.report.arrivals_started == one.report.arrivals_started == 40
    assert [e.username for e in two.report.endpoints] == [e.username for e in one.report.endpoints]
    assert {e.state for e in two.report.endpoints} == {"unregistered"}
    assert (two.report.left_bound, two.report.unregister_timed_out) == (0, 0)
    assert wall < 60


async def test_ctrl_c_stops_every_shard_and_each_unregisters() -> None:
    async with registrar() as (core, port):
        sc = scenario(f"sip:127.0.0.1:{port}", duration="60s", expires=30)
        sink = Sink()
        pool = ClusterPool(sc, ("127.0.0.1", port), 2, sink, address="local:2")
        outcome: PoolOutcome | None = None

        async def run() -> None:
            nonlocal outcome
            outcome = await pool.run()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with trio.fail_after(60):
                while len(held(core)) < 40:
                    await trio.sleep(0.05)
            for pid in pool.worker_pids.values():   # a terminal's Ctrl-C reaches the whole process group
                os.kill(pid, signal.SIGINT)
            await trio.sleep(0.3)
            t0 = time.monotonic()
            pool.request_stop()
        stop_s = time.monotonic() - t0
        assert held(core) == set()
    assert outcome is not None and outcome.lost == []
    assert stop_s < 15                                  # not the 60 s duration
    assert len(outcome.report.endpoints) == 40 and {e.state for e in outcome.report.endpoints} == {"unregistered"}
    assert sink.totals()[Phase.UNREGISTER] == (40, 40, 0)
    assert sink.totals()[Phase.REGISTER] == (40, 40, 0)


async def test_a_lost_shard_is_reported_and_the_other_shard_results_stay(dask_cluster: tuple[str, Any]) -> None:
    address, client = dask_cluster
    await trio.to_thread.run_sync(lambda: client.wait_for_workers(2, timeout=30))
    async with registrar() as (core, port):
        sc = scenario(f"sip:127.0.0.1:{port}", duration="60s", expires=60)
        sink = Sink()
        pool = ClusterPool(sc, ("127.0.0.1", port), 2, sink, address=address)
        outcome: PoolOutcome | None = None

        async def run() -> None:
            nonlocal outcome
            outcome = await pool.run()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with trio.fail_after(60):   # all held, and the shards' snapshots saying so arrived
                while len(held(core)) < 40 or sink.totals()[Phase.REGISTER][1] < 40:
                    await trio.sleep(0.05)
            pids = await trio.to_thread.run_sync(lambda: client.run(os.getpid))
            os.kill(pids[pool.assignments[0]], signal.SIGKILL)   # shard 0's Dask worker dies
            await trio.sleep(2.0)                                 # the pool notices within POLL
            pool.request_stop()
        still = held(core)
    assert outcome is not None
    assert len(outcome.lost) == 1 and "shard 0" in outcome.lost[0] and "lost" in outcome.lost[0]
    survivors = outcome.report.endpoints
    assert [e.index for e in survivors] == list(range(1, 40, 2))            # shard 1's endpoints, all of them
    assert {e.state for e in survivors} == {"unregistered"}
    assert still == {f"sip:user{i + 1}@sipload.test" for i in range(0, 40, 2)}   # only shard 0's remain
    assert sink.totals()[Phase.REGISTER] == (40, 40, 0)    # shard 0's snapshots from before it died stay
    assert sink.totals()[Phase.UNREGISTER] == (20, 20, 0)


async def test_a_shard_that_cannot_start_is_a_clear_error(dask_cluster: tuple[str, Any]) -> None:
    address, client = dask_cluster
    await trio.to_thread.run_sync(lambda: client.wait_for_workers(2, timeout=30))
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # bound, not listening: connections are refused
        sc = scenario(f"sip:127.0.0.1:{port};transport=tcp")
        pool = ClusterPool(sc, ("127.0.0.1", port), 2, Sink(), address=address)
        with trio.fail_after(60), pytest.raises(WorkerError, match="cannot connect over TCP"):
            await pool.run()


async def test_more_shards_than_dask_workers_is_a_clear_error(dask_cluster: tuple[str, Any]) -> None:
    address, client = dask_cluster
    await trio.to_thread.run_sync(lambda: client.wait_for_workers(2, timeout=30))
    pool = ClusterPool(scenario("sip:127.0.0.1:5999"), ("127.0.0.1", 5999), 3, Sink(), address=address)
    with trio.fail_after(30), pytest.raises(WorkerError, match="has 2 worker processes"):
        await pool.run()


def _cli_has_cluster() -> bool:
    from click.testing import CliRunner

    from sipload.cli import main

    return "--cluster" in CliRunner().invoke(main, ["run", "--help"]).output


@pytest.mark.skipif(not _cli_has_cluster(), reason="sipload run has no --cluster option yet")
def test_cli_ctrl_c_to_the_process_group_unregisters_every_shard(tmp_path: Path) -> None:
    """As in a terminal: SIGINT to the whole group (client and LocalCluster workers); exit 130, nothing held."""
    reg = subprocess.Popen([sys.executable, "-m", "sipload", "registrar", "--listen", "udp:127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        assert reg.stdout is not None
        line = reg.stdout.readline()
        port = int(line.rsplit(":", 1)[1].split()[0])
        scenario_file = tmp_path / "c.toml"
        scenario_file.write_text(BODY.replace("TARGET", f"sip:127.0.0.1:{port}").replace("DURATION", "60s")
                                 .replace("EXPIRES", "30"))
        run = subprocess.Popen([sys.executable, "-m", "sipload", "run", str(scenario_file), "--cluster", "local:2",
                                "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=ROOT, start_new_session=True)
        assert run.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        for text in run.stdout:
            lines.append(text)
            if "registered 40" in text or time.monotonic() > deadline:
                break
        os.killpg(run.pid, signal.SIGINT)
        out, _ = run.communicate(timeout=60)
        lines.append(out)
        assert run.returncode == 130, "".join(lines)
        assert "unregistrations 40 ok" in out, "".join(lines)
        context = json.loads((tmp_path / "out" / "summary.json").read_text())["run"]
        assert (context["workers"], context["placement"]) == (2, "dask:local:2")   # one shard per Dask process
    finally:
        reg.terminate()
        reg.wait(10)


# --- the parts -----------------------------------------------------------------------------------------


def test_cluster_addresses() -> None:
    assert parse_cluster("local:3") == ClusterAddress(None, 3)
    assert parse_cluster("tcp://10.0.0.5:8786") == ClusterAddress("tcp://10.0.0.5:8786")
    assert parse_cluster("sched.example:8786") == ClusterAddress("tcp://sched.example:8786")
    assert parse_cluster("tls://[::1]:8786") == ClusterAddress("tls://[::1]:8786")
    for bad in ("local:0", "local:x", "http://x:1", "tcp://", "local", "a b:1"):
        with pytest.raises(ValueError, match="--cluster"):
            parse_cluster(bad)
    with pytest.raises(WorkerError, match="--cluster"):
        ClusterPool(scenario("embedded"), ("127.0.0.1", 5060), 0, Sink(), address="nowhere:")


def test_hold_hook_is_refused_clearly() -> None:
    pool = ClusterPool(scenario("embedded"), ("127.0.0.1", 5060), 0, Sink(), address="local:2")
    pool.hold_hook = None
    assert pool.partial_report() is None

    async def hook(states: object) -> None:
        return None

    with pytest.raises(WorkerError, match="holding"):
        pool.hold_hook = hook
    assert "--cluster" in HOLD_UNSUPPORTED


def test_the_target_must_be_reachable_from_every_worker() -> None:
    embedded = scenario("embedded")
    named = scenario("sip:127.0.0.1:5070")
    here = ["tcp://127.0.0.1:4001", "tcp://127.0.0.1:4002"]
    away = ["tcp://127.0.0.1:4001", "tcp://10.1.2.3:4002"]
    check_reachable(embedded, {"UDP": (("127.0.0.1", 5060),)}, here)
    check_reachable(named, {"UDP": (("10.0.0.9", 5070),), "TCP": (("10.0.0.9", 5070),)}, away)
    with pytest.raises(WorkerError, match=r"embedded registrar.*10\.1\.2\.3"):
        check_reachable(embedded, {"UDP": (("127.0.0.1", 5060),)}, away)
    with pytest.raises(WorkerError, match="loopback"):
        check_reachable(named, {"UDP": (("127.0.0.1", 5070),)}, away)
    with pytest.raises(WorkerError, match=r"the target 127\.0\.0\.1:5072 is a loopback"):  # any failover item
        check_reachable(named, {"UDP": (("10.0.0.9", 5070), ("127.0.0.1", 5072))}, away)


def test_shards_are_spread_over_hosts_and_divide_the_source_addresses() -> None:
    workers = ["tcp://10.0.0.1:1", "tcp://10.0.0.1:2", "tcp://10.0.0.2:1", "tcp://10.0.0.2:2"]
    assert choose_workers(workers, 2) == ["tcp://10.0.0.1:1", "tcp://10.0.0.2:1"]
    assert sorted(choose_workers(workers, 4)) == workers
    sc = parse_scenario(BODY.replace("TARGET", "sip:127.0.0.1:5070").replace("DURATION", "1s")
                        .replace("EXPIRES", "4").replace("count = 40", 'count = 40\nsource_addresses = '
                                                          '"127.0.0.2-127.0.0.11"'), Path("s.toml"))
    parts = [shard_scenario(sc, Shard(k, 3)).endpoints.source_addresses for k in range(3)]
    assert [(str(p.first), str(p.last)) for p in parts if p is not None] == [
        ("127.0.0.2", "127.0.0.4"), ("127.0.0.5", "127.0.0.7"), ("127.0.0.8", "127.0.0.11")]
    assert shard_scenario(sc, Shard(0, 20)) is sc          # fewer addresses than shards: all of them


def test_snapshots_reach_the_sink_in_each_shards_order() -> None:
    got: list[tuple[int, float]] = []
    pool = ClusterPool(scenario("embedded"), ("127.0.0.1", 5060), 0, lambda s, k: got.append((k, s.end)),
                       address="local:2")
    from sipload.engine.cluster import _ShardState
    from sipload.engine.cluster_shard import ShardSpec

    pool._shards = [_ShardState(ShardSpec("x", pool.scenario, pool.destinations, Shard(k, 2), 1.0), f"w{k}")
                    for k in range(2)]
    rec = Recorder(0.0)
    snaps = [rec.take_interval(float(t)) for t in range(1, 4)]
    pool._on_snapshot(0, 1, snaps[1])
    pool._on_snapshot(1, 0, snaps[0])
    pool._on_snapshot(0, 2, snaps[2])
    assert got == [(1, 1.0)]
    pool._on_snapshot(0, 0, snaps[0])
    assert got == [(1, 1.0), (0, 1.0), (0, 2.0), (0, 3.0)]


async def test_a_mixed_transport_fleet_with_failover_runs_on_the_cluster(tmp_path: Path) -> None:
    # shards get every transport's failover list, as local workers do: a UDP and a TCP group against
    # the embedded registrar (its UDP and TCP ports differ), all registered and unregistered by 2 shards
    text = BODY.replace("TARGET", "embedded").replace("DURATION", "3s").replace("EXPIRES", "4") + """
[[groups]]
name = "phones"
share = 0.5
transport = "udp"
[[groups]]
name = "softphones"
share = 0.5
transport = "tcp"
"""
    sc = parse_scenario(text, Path("fleet.toml"))
    with trio.fail_after(120):
        outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                     cluster="local:2")
    assert outcome.exit_code is ExitCode.OK, (outcome.result.notes, outcome.result.failures)
    groups = outcome.result.groups
    assert {name: g["endpoints"] for name, g in groups.items()} == {"phones": 20, "softphones": 20}
    assert {name: g["states"] for name, g in groups.items()} == {
        "phones": {"unregistered": 20}, "softphones": {"unregistered": 20}}
    assert outcome.result.registrations.succeeded == 40
