"""The engine end to end: virtual hours on an in-memory network, and real runs over loopback."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from hdrh.log import HistogramLogReader

from scenarios import PASSING, Table, refreshing_run, scenario_toml
from sipload.cli import main
from sipload.engine.run import ExitCode, RunError, RunInterrupted, run_scenario
from sipload.engine.worker import Worker
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import Scenario, parse_scenario
from sipload.testing.harness import memory_worker

ROOT = Path(__file__).resolve().parent.parent


def scenario(text: str, name: str = "t") -> Scenario:
    return parse_scenario(text, Path(f"{name}.toml"))


def hours(*, count: int = 20, duration: str = "4h") -> Scenario:
    """`count` endpoints (expiry 600 s) against the embedded registrar for virtual hours."""
    return scenario(scenario_toml(
        "t", seed=7, thresholds=["register.success_rate == 100%"],
        target={"registrar": "embedded", "domain": "sipload.test"},
        endpoints={"count": count, "username": "user{n}", "password": "pw-user{n}", "expires": 600,
                   "refresh_at": 0.5, "refresh_jitter": 0.0},
        load={"rate": 10, "duration": duration, "interval": "10m", "unregister_timeout": "40s"},
        # refreshes reuse one nonce (a stale-nonce refresh costs a second request)
        registrar={"min_expires": 60, "nonce_lifetime": "5h"}))


async def test_renewals_over_hours_of_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    sc = hours()
    worker, core, wire, agg = memory_worker(sc)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def run() -> None:
            await worker.run()
            done.set()

        nursery.start_soon(run)
        await trio.sleep(2 * 3600)
        assert core.store.count(trio.current_time()).aors == 20   # all held, mid-run
        await done.wait()
    assert trio.current_time() - start < 4 * 3600 + 60
    report = worker.report
    assert core.store.count(trio.current_time()).bindings == 0    # all unregistered at the end
    assert report.left_bound == 0
    assert all(e.state == "unregistered" for e in report.endpoints)
    # every 300 s for 4 h: 47 or 48 refreshes per endpoint, each a REGISTER on the same Call-ID
    assert all(47 <= e.refreshes <= 48 for e in report.endpoints), [e.refreshes for e in report.endpoints]
    by_call: dict[str, list[int]] = {}
    for _, req in wire.requests:
        by_call.setdefault(req.call_id, []).append(req.cseq[0])
    assert len(by_call) == 20
    for cseqs in by_call.values():
        assert cseqs == sorted(cseqs) and len(set(cseqs)) == len(cseqs)
        assert len(cseqs) == 2 + 47 + 1 or len(cseqs) == 2 + 48 + 1
    agg.flush_interval(1.0)
    values = agg.metric_values()
    assert values["registrations.succeeded"] == 20
    assert values["refreshes.succeeded"] == sum(e.refreshes for e in report.endpoints)
    assert values["unregistrations.succeeded"] == 20
    assert values["retransmissions"] == 0


async def test_lossy_network_recovers_by_retransmission(autojump_clock: trio.testing.MockClock) -> None:
    sc = hours(duration="30m")
    worker, core, _wire, agg = memory_worker(sc, loss=0.2, rng=random.Random(3))
    await worker.run()
    agg.flush_interval(1.0)
    values = agg.metric_values()
    assert values["retransmissions"] > 0
    assert values["registrations.succeeded"] == 20
    assert values["failures"] == 0
    assert core.store.count(trio.current_time()).bindings == 0


async def test_stop_request_unregisters_everything(autojump_clock: trio.testing.MockClock) -> None:
    sc = hours()
    worker, core, _, _ = memory_worker(sc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.run)
        await trio.sleep(1800)
        assert core.store.count(trio.current_time()).aors == 20
        worker.request_stop()
    assert trio.current_time() < 1800 + 60
    assert core.store.count(trio.current_time()).bindings == 0
    assert worker.report.left_bound == 0


async def test_total_loss_ends_in_timeouts_not_a_hang(autojump_clock: trio.testing.MockClock) -> None:
    sc = hours(count=3, duration="10m")
    worker, _core, _, agg = memory_worker(sc, loss=1.0)
    await worker.run()
    agg.flush_interval(1.0)
    values = agg.metric_values()
    assert values["failures.timeout"] == 3
    assert values["registrations.succeeded"] == 0
    assert all(e.failure_reason == "timeout" for e in worker.report.endpoints)


def small(target: str = "embedded", *, name: str | None = "t", seed: int | None = 7, count: int = 30,
          duration: str = "2500ms", thresholds: Sequence[str] = PASSING, timers: Table | None = None,
          registrar: Table | None = None, transport: str | None = None) -> str:
    """`count` endpoints at 60/s registering, refreshing (expiry 2 s) and unregistering over `duration`."""
    return refreshing_run(name, target, seed=seed, count=count, rate=60, duration=duration, thresholds=thresholds,
                          target=None if transport is None else {"transport": transport}, timers=timers,
                          registrar=registrar)


EMBEDDED = {"min_expires": 1}   # the embedded registrar's settings for a 2 s expiry


async def test_real_loopback_run_against_the_embedded_registrar(tmp_path: Path) -> None:
    sc = scenario(small(name="loop", registrar=EMBEDDED), name="loop")
    lines: list[str] = []
    outcome = await run_scenario(sc, tmp_path / "out", progress=lines.append, handle_signals=False)
    assert outcome.exit_code is ExitCode.OK, (outcome.result.notes, outcome.result.failures)
    r = outcome.result
    assert (r.registrations.attempted, r.registrations.succeeded) == (30, 30)
    assert r.refreshes.succeeded >= 30
    assert r.unregistrations.succeeded == 30
    assert r.complete and r.latency_ms["register"]["count"] == 30
    assert any("reg/s" in line for line in lines)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["registrations"] == {"attempted": 30, "succeeded": 30, "failed": 0}
    reader = HistogramLogReader(str(tmp_path / "out" / "register.hlog"), None)
    total = 0
    while (h := reader.get_next_interval_histogram()) is not None:
        total += h.get_total_count()
    assert total == 30
    csv_lines = (tmp_path / "out" / "endpoints.csv").read_text().splitlines()
    assert len(csv_lines) == 31 and all(",unregistered," in line for line in csv_lines[1:])
    assert "pw-" not in (tmp_path / "out" / "endpoints.csv").read_text()


async def test_the_embedded_registrar_says_when_it_answered_423_to_a_too_short_expiry(tmp_path: Path) -> None:
    sc = scenario(small(name="brief", count=10, duration="1s", registrar={"min_expires": 3}), name="brief")
    outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False, workers=1)
    r = outcome.result
    assert r.registrations.succeeded == 10 and r.responses.get("423") == 10, r.responses
    (note,) = [n for n in r.notes if "423" in n]
    assert note.startswith("the embedded registrar answered 423 Interval Too Brief to 10 REGISTERs: expires down "
                           "to 2 s asked, below its min-expires of 3 s"), note
    assert "[registrar] min_expires" in note
    assert note in json.loads((tmp_path / "out" / "summary.json").read_text())["notes"]


async def test_stop_mid_run_leaves_zero_bindings_and_partial_results(tmp_path: Path) -> None:
    core = RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1), now=trio.current_time())
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, RegistrarSettings(), [Listen("udp", "127.0.0.1", 0)],
                                              core=core))
        port = listens[0].port
        sc = scenario(small(f"sip:127.0.0.1:{port}", duration="60s"))
        stop = trio.Event()
        lines: list[str] = []

        def progress(line: str) -> None:
            lines.append(line)
            if "registered 30" in line:
                stop.set()

        with trio.fail_after(30):
            outcome = await run_scenario(sc, tmp_path, progress=progress, handle_signals=False, stop=stop)
        assert outcome.exit_code is ExitCode.INTERRUPTED
        assert core.store.count(trio.current_time()).bindings == 0
        nursery.cancel_scope.cancel()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["complete"] is False
    assert summary["unregistrations"]["succeeded"] == 30


async def test_unreachable_target_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # bound but never answering
        sc = scenario(small(f"sip:127.0.0.1:{port}"))
        with trio.fail_after(20), pytest.raises(RunError, match="no SIP answer"):
            await run_scenario(sc, tmp_path, progress=lambda _: None, handle_signals=False)


async def test_a_bug_handling_a_stream_response_is_counted_and_the_run_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # over TCP as over UDP: an exception while handling one response must not end the run (nor the
    # connection): it is counted and shown in the notes; that endpoint retries after its timeout
    calls = 0
    handle = Worker._on_message

    def buggy(self: Worker, msg: object, now: float, arrived: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("simulated bug")
        handle(self, msg, now, arrived)  # type: ignore[arg-type]

    monkeypatch.setattr(Worker, "_on_message", buggy)
    sc = scenario(small(name="bug", count=5, duration="6s", transport="tcp", timers={"t1": "50ms"},
                        registrar=EMBEDDED), name="bug")
    with trio.fail_after(60):
        outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False, workers=1)
    assert calls > 1
    assert any("1 responses could not be handled" in n and "KeyError" in n for n in outcome.result.notes), \
        outcome.result.notes
    assert outcome.result.registrations.succeeded == 5      # the one whose 401 was lost retried
    assert outcome.result.unregistrations.succeeded == 5


async def test_ctrl_c_while_starting_stops_at_once_as_an_interruption(tmp_path: Path) -> None:
    # SIGINT during the start-up probe (a registrar that never answers): the run ends at once as interrupted
    # (exit 130 on the command line), not after the 4 s probe as a configuration error; nothing is left on disk
    out = tmp_path / "never"
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as s:
        await s.bind(("127.0.0.1", 0))
        sc = scenario(small(f"sip:127.0.0.1:{s.getsockname()[1]}"))

        async def interrupt_on_the_probe() -> None:
            await s.recv(65536)                  # the OPTIONS probe arrived: the run is starting
            os.kill(os.getpid(), signal.SIGINT)

        lines: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(interrupt_on_the_probe)
            with trio.fail_after(20), pytest.raises(RunInterrupted, match="interrupted by SIGINT before the run"):
                await run_scenario(sc, out, progress=lines.append, handle_signals=True)
    assert any("stopping before the run started" in line for line in lines), lines
    assert not out.exists()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_cli_threshold_failure_exits_1_with_junit_failure(tmp_path: Path) -> None:
    path = write(tmp_path, small(name="gate", seed=None, thresholds=["register.p50 < 1us"], registrar=EMBEDDED))
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "[FAIL] register.p50 < 1us" in result.output
    junit = (tmp_path / "o" / "junit.xml").read_text()
    assert "<failure" in junit and "register.p50" in junit


def test_cli_broken_scenario_exits_2_naming_file_field_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, small(name=None, seed=None, count=-5))
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code == 2
    assert "s.toml" in result.output and "endpoints.count" in result.output and "-5" in result.output
    assert "Traceback" not in result.output


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "nope.toml" in result.output and "Traceback" not in result.output


def test_sigint_unregisters_and_writes_partial_results(tmp_path: Path) -> None:
    """A real process, a real Ctrl-C: exit 130, complete=false on disk, every endpoint unregistered."""
    path = write(tmp_path, small(name="sig", seed=None, duration="60s", registrar=EMBEDDED))
    out = tmp_path / "o"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sipload", "run", str(path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen = []
    for line in proc.stdout:   # wait until all 30 are registered (bounded by the deadline)
        seen.append(line)
        if "registered 30" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["interrupted_by"] == "SIGINT"
    assert summary["unregistrations"]["succeeded"] == 30
    rows = (out / "endpoints.csv").read_text().splitlines()[1:]
    assert len(rows) == 30 and all(",unregistered," in row for row in rows)


def test_cli_ctrl_c_while_starting_exits_130(tmp_path: Path) -> None:
    """A real process interrupted during its start-up probe: exit 130 with one line, no traceback, no results."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(30)
        path = write(tmp_path, small(f"sip:127.0.0.1:{s.getsockname()[1]}", name="early", seed=None))
        out = tmp_path / "o"
        proc = subprocess.Popen([sys.executable, "-m", "sipload", "run", str(path), "--out", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            s.recv(65536)                      # its OPTIONS probe: it is starting
        finally:
            proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    assert "interrupted by SIGINT before the run started" in output and "Traceback" not in output
    assert not out.exists()
