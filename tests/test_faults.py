"""Faults: loss and delay at the embedded registrar, Kamailio restarted in the middle of a run, and
SIGINT / SIGTERM at random moments of runs against Kamailio.

* Loss and delay (the registrar's own fault injection, on virtual time and over real UDP):
  retransmissions recover every registration and the counts agree with the registrar's.
* Kamailio stopped once every endpoint is registered, started again once every refresh has failed:
  the endpoints register again (a failed refresh falls back to a new one after retry_backoff_max),
  intervals.jsonl shows the bindings dropping to none and coming back, and at the end Kamailio
  holds no contact.
* A signal at a random moment (seeded; the seed is in the failure message): exit 130, partial
  results on disk (complete=false, valid JSON, no temporary file left), no contact left in Kamailio.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from interop_helpers import kamailio_scenario as interop_kamailio_scenario

import sipload.engine.run as run_module
from peers import HOW_TO_INSTALL_KAMAILIO, KamailioPeer, free_port, have, require_peer, start_kamailio, stop_kamailio
from scenarios import refreshing_run
from sipload.engine.embedded import registrar_settings
from sipload.engine.run import ExitCode, run_scenario
from sipload.providers.kamailio import KamailioRpc
from sipload.providers.status import ProviderState
from sipload.registrar.settings import DelayKind
from sipload.report.intervals import INTERVALS
from sipload.scenario import RegistrarConfig, parse_scenario
from sipload.testing.harness import memory_worker

ROOT = Path(__file__).resolve().parent.parent

LOSSY = """
name = "lossy"
seed = 11
thresholds = ["register.success_rate == 100%", "refresh.success_rate == 100%", "failures == 0"]
[target]
registrar = "embedded"
domain = "sipload.test"
[endpoints]
count = 20
expires = 600
refresh_jitter = 0.0
[load]
rate = 10
duration = "1h"
interval = "10m"
unregister_timeout = "60s"
[registrar]
min_expires = 60
nonce_lifetime = "2h"
drop = 0.2
delay = { distribution = "uniform", min = "10ms", max = "900ms" }   # beyond T1 at times
"""


async def test_loss_and_delay_at_the_registrar_recover_and_the_counts_agree(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = parse_scenario(LOSSY, Path("lossy.toml"))
    config = sc.registrar or RegistrarConfig()
    settings = registrar_settings(config, 1)
    assert settings.drop == 0.2 and settings.delay.kind is DelayKind.UNIFORM
    worker, core, _wire, agg = memory_worker(sc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run)
        await trio.sleep(1800)
        assert core.store.count(trio.current_time()).aors == 20    # all held mid-run, despite the faults
    agg.flush_interval(1.0)
    v = agg.metric_values()
    report = worker.report
    assert v["registrations.succeeded"] == 20 and v["failures"] == 0
    assert v["refreshes.succeeded"] == sum(e.refreshes for e in report.endpoints) > 20
    assert v["unregistrations.succeeded"] == 20
    assert v["retransmissions"] > 0
    assert core.counters.drops > 0 and core.counters.retransmissions > 0   # dropped, then answered again
    # one verified request per operation that succeeded: the registrar and sipload count the same
    ops = v["registrations.succeeded"] + v["refreshes.succeeded"] + v["unregistrations.succeeded"]
    assert core.counters.auth_ok == ops, (core.counters, v)
    assert core.store.count(trio.current_time()).bindings == 0
    # No response arrives twice. The registrar answers a retransmission again only once its response has
    # left; on this wire (no delay of its own) a response that left has arrived and stopped Timer E, so
    # every retransmission it saw came while the (delayed) response was pending and was absorbed.
    # (With a 200 ms wire delay, 103 retransmissions are answered again and 103 responses are stray.)
    assert report.stray == 0 and report.unparseable == 0 and report.foreign == 0
    assert report.left_bound == 0 and report.internal_errors == 0


REAL_LOSSY = refreshing_run(
    "lossy-udp", "embedded", seed=12, count=30, rate=60, duration="2500ms", timers={"t1": "50ms"},
    registrar={"min_expires": 1, "drop": 0.15, "delay": {"distribution": "uniform", "min": "1ms", "max": "30ms"}})


async def test_loss_and_delay_over_udp_end_in_a_passing_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "_write_report", lambda out, progress: None)
    sc = parse_scenario(REAL_LOSSY, Path("lossy-udp.toml"))
    with trio.fail_after(30):
        outcome = await run_scenario(sc, tmp_path, progress=lambda _: None, handle_signals=False, workers=1)
    r = outcome.result
    assert outcome.exit_code is ExitCode.OK, (r.failures, r.notes)
    assert (r.registrations.attempted, r.registrations.succeeded) == (30, 30)
    assert r.unregistrations.succeeded == 30 and r.refreshes.succeeded >= 30
    assert r.retransmissions > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["retransmissions"] == r.retransmissions and summary["failures"] == {}


# --- Kamailio ------------------------------------------------------------------------------------------

def kamailio_ports() -> tuple[int, int]:
    sip = free_port()
    rpc = free_port()
    while rpc == sip:
        rpc = free_port()
    return sip, rpc


async def start(rundir: Path, sip: int, rpc: int) -> KamailioPeer:
    require_peer("kamailio", have("kamailio"), HOW_TO_INSTALL_KAMAILIO)
    return await trio.to_thread.run_sync(functools.partial(start_kamailio, rundir, sip, rpc))


async def stop(rundir: Path) -> None:
    await trio.to_thread.run_sync(functools.partial(stop_kamailio, rundir))


async def wait_for(what: str, check: object, timeout: float) -> None:
    """Poll the async `check` every 50 ms until true; AssertionError naming `what` after `timeout` s."""
    with trio.move_on_after(timeout):
        while not await check():  # type: ignore[operator]
            await trio.sleep(0.05)
        return
    raise AssertionError(f"{what}: not within {timeout:g} s")


def kamailio_scenario(port: int, name: str, first: int, count: int, *, expires: int, duration: float,
                      t1: str = "50ms", max_retries: int = 0, backoff_max: str = "2s") -> str:
    """Endpoints first.. against Kamailio, intervals of 500 ms, a failed attempt retried after 200 ms and
    then up to `backoff_max`."""
    return interop_kamailio_scenario(
        port, name=name, first=first, count=count, expires=expires, rate=50, duration=duration,
        unregister_timeout=3, t1=t1, max_retries=max_retries, seed=first, interval="500ms",
        timers={"retry_backoff": "200ms", "retry_backoff_max": backoff_max})


@pytest.mark.interop
async def test_kamailio_restarted_mid_run_endpoints_register_again(tmp_path: Path) -> None:
    rundir = tmp_path / "kamailio"
    rundir.mkdir()
    sip, rpc_port = kamailio_ports()
    count, first = 20, 31001
    peer = await start(rundir, sip, rpc_port)
    # expiry 4 s, refresh ~2 s after registering; Timer F 3.2 s; a failed refresh tries again 2 s later
    sc = parse_scenario(kamailio_scenario(peer.port, "restart", first, count, expires=4, duration=60),
                        Path("restart.toml"))
    lines: list[str] = []
    failed_all = trio.Event()
    stop_run = trio.Event()

    shown_again = trio.Event()

    def progress(line: str) -> None:
        lines.append(line)
        if f"failures {count}" in line:
            failed_all.set()
        if failed_all.is_set() and f"registered {count} " in line:
            shown_again.set()                                    # an interval line shows the recovery

    outcomes = []
    try:
        async with trio.open_nursery() as nursery:
            async def run() -> None:
                outcomes.append(await run_scenario(sc, tmp_path / "out", progress=progress, handle_signals=False,
                                                   stop=stop_run, workers=1))

            nursery.start_soon(run)
            async with KamailioRpc(peer.rpc_url) as rpc:
                async def all_held() -> bool:
                    return await rpc.registered_users() == count

                await wait_for("Kamailio holding every endpoint", all_held, 15)
            await stop(rundir)                                   # the registrar goes away ...
            with trio.fail_after(20):
                await failed_all.wait()                          # ... every refresh times out ...
            peer = await start(rundir, sip, rpc_port)            # ... and it comes back, empty
            async with KamailioRpc(peer.rpc_url) as rpc:
                async def all_back() -> bool:
                    return await rpc.registered_users() == count

                await wait_for("every endpoint registered again after the restart", all_back, 20)
                with trio.fail_after(5):
                    await shown_again.wait()
                stop_run.set()
                with trio.fail_after(15):
                    while not outcomes:
                        await trio.sleep(0.05)
                statuses = [await rpc.lookup(f"user{n}") for n in range(first, first + count)]
    finally:
        await stop(rundir)
    [outcome] = outcomes
    assert all(s.state is ProviderState.NOT_REGISTERED for s in statuses), statuses   # none left behind
    r = outcome.result
    assert r.registrations.succeeded == count
    assert r.failures_by_phase.get("refresh", {}).get("timeout", 0) >= count       # the gap, counted
    assert r.refreshes.succeeded >= count                                           # the recovery
    assert r.unregistrations.succeeded == count
    lines = (outcome.out_dir / INTERVALS).read_text().splitlines()[1:]
    held = [json.loads(line)["at_end"]["registered"] for line in lines]
    top = held.index(count)
    gap = next(i for i in range(top, len(held)) if held[i] == 0)
    assert count in held[gap:], held                                                # down to none, then back
    assert (outcome.out_dir / "report.html").exists()


SIGNAL_RUN = 6.0   # seconds of each run (its duration); a signal comes at a random moment of it


@pytest.mark.interop
async def test_signals_at_random_moments_leave_partial_results_and_no_contacts(tmp_path: Path) -> None:
    seed = int(os.environ.get("SIPLOAD_SIGNAL_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    rundir = tmp_path / "kamailio"
    rundir.mkdir()
    peer = await start(rundir, *kamailio_ports())
    plans = [(signal.SIGINT, 1), (signal.SIGTERM, 1), (rng.choice([signal.SIGINT, signal.SIGTERM]), 2)]
    moments = [rng.uniform(0.0, SIGNAL_RUN) for _ in plans]   # drawn here: tasks run in any order
    count = 30
    results: list[tuple[str, int, str, Path, float, int]] = []

    async def one(k: int, signum: signal.Signals, workers: int, at: float) -> None:
        first = 32001 + 100 * k
        path = tmp_path / f"sig{k}.toml"
        path.write_text(kamailio_scenario(peer.port, f"sig{k}", first, count, expires=4, duration=SIGNAL_RUN))
        out = tmp_path / f"out{k}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "sipload", "run", str(path), "--out", str(out), "--workers", str(workers)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        assert proc.stdout is not None
        seen = b""
        with trio.fail_after(60):
            async with proc.stdout:
                while b"results in" not in seen:                     # the run has started
                    chunk = await proc.stdout.receive_some(4096)
                    if not chunk:
                        break
                    seen += chunk
                await trio.sleep(at)
                proc.send_signal(signum)
                while chunk := await proc.stdout.receive_some(4096):
                    seen += chunk
            code = await proc.wait()
        results.append((signum.name, code, seen.decode(errors="replace"), out, at, first))

    try:
        async with trio.open_nursery() as nursery:
            for k, ((signum, workers), at) in enumerate(zip(plans, moments, strict=True)):
                nursery.start_soon(one, k, signum, workers, at)
        async with KamailioRpc(peer.rpc_url) as rpc:
            left = {}
            for *_, first in results:
                for n in range(first, first + count):
                    status = await rpc.lookup(f"user{n}")
                    if status.state is not ProviderState.NOT_REGISTERED:
                        left[f"user{n}"] = status.state.value
    finally:
        await stop(rundir)
    for name, code, output, out, at, _ in results:
        where = f"{name} at {at:.2f} s (SIPLOAD_SIGNAL_SEED={seed}):\n{output}"
        assert "Traceback" not in output, where
        assert code == ExitCode.INTERRUPTED, where
        summary = json.loads((out / "summary.json").read_text())               # whole: written atomically
        assert summary["complete"] is False and summary["interrupted_by"] == name, where
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], where
        rows = (out / "endpoints.csv").read_text().splitlines()
        assert rows[0].startswith("index,") and len(rows) == count + 1, where
        assert summary["registrations"]["attempted"] <= count
        assert "<failure" in (out / "junit.xml").read_text() or "run completed" in (out / "junit.xml").read_text()
    assert not left, f"contacts left in Kamailio (SIPLOAD_SIGNAL_SEED={seed}): {left}"
