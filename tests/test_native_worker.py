"""The native engine as a user meets it: which scenarios it takes, and real runs on both engines.

- `native_refusal` names what the native engine does not do yet; `choose_engine` settles `load.engine`
  (auto: native where it can, else Python with a note; native: refuse with one line; python: Python);
- the same run against a registrar on loopback gives the same counts, failures by reason and bindings on
  both engines, and leaves nothing registered at the end, after a stop request too, with 1 and 2 workers;
- `sipload run --engine` and `load.engine` reach summary.json and the header; a scenario the native engine
  cannot run with `--engine native` is one line and exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from scenarios import scenario_toml
from sipload.cli import main
from sipload.engine.engines import VIRTUAL_CLOCK, choose_engine, make_worker, native_refusal
from sipload.engine.pool import default_workers
from sipload.engine.run import ExitCode, RunOutcome, run_scenario
from sipload.engine.split_worker import SplitWorker
from sipload.engine.worker import WorkerError
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.report.result import EndpointState
from sipload.scenario import Scenario, ScenarioError, parse_scenario

DEST = ("127.0.0.1", 5060)


def scenario(tmp_path: Path, *, registrar: str = "sip:127.0.0.1:5060", count: int = 20, rate: float = 40,
             duration: str = "1500ms", endpoints: dict[str, Any] | None = None,
             load: dict[str, Any] | None = None, groups: tuple[dict[str, Any], ...] = (),
             target: dict[str, Any] | None = None) -> Scenario:
    body = scenario_toml(
        "native", seed=11, thresholds=["failures == 0"],
        target={"registrar": registrar, "domain": "sipload.test", **(target or {})},
        endpoints={"count": count, "expires": 2, "refresh_at": 0.5, "refresh_margin": "200ms",
                   "username": "user{n}", "password": "pw-user{n}", **(endpoints or {})},
        load={"rate": rate, "duration": duration, "interval": "500ms", "unregister_timeout": "5s", **(load or {})},
        groups=groups)
    return parse_scenario(body, tmp_path / "native.toml")


@pytest.mark.parametrize(("change", "why"), [
    ({"registrar": "sip:127.0.0.1:5060;transport=tcp"}, "the scenario uses TCP (the native engine does UDP)"),
    ({"endpoints": {"socket": "per-endpoint"}}, "the scenario has a socket per endpoint"),
    ({"groups": ({"name": "a", "share": 1.0, "keepalive": "10s"},)}, "the scenario uses keepalive"),
    ({"groups": ({"name": "a", "share": 1.0, "outbound": True},)}, "the scenario uses outbound"),
    ({"groups": ({"name": "a", "share": 0.5, "transport": "tcp"},
                 {"name": "b", "share": 0.5, "churn": {"share": 0.5, "every": "60s", "away": "30s"}})},
     "group 'a' uses TCP (the native engine does UDP)"),
    ({"target": {"outbound_proxy": "sip:127.0.0.1:5070"}}, "an outbound proxy is set"),
])
def test_refusal_names_what_the_native_engine_does_not_do(tmp_path: Path, change: dict[str, Any],
                                                          why: str) -> None:
    sc = scenario(tmp_path, **change)
    assert native_refusal(sc, DEST) == why
    settled, note = choose_engine(sc, DEST)
    assert settled.load.engine == "python" and note == f"the Python engine ran: {why}"
    native = scenario(tmp_path, load={"engine": "native"}, **change)
    with pytest.raises(WorkerError) as info:
        choose_engine(native, DEST)
    assert str(info.value) == f"--engine native: {why}; run it with --engine python (or auto)"


def test_plain_udp_settles_on_native_unless_python_is_asked(tmp_path: Path) -> None:
    plain = scenario(tmp_path, groups=({"name": "a", "share": 0.5, "wrong_passwords": 0.2},
                                       {"name": "b", "share": 0.5, "expires": 30}))
    assert native_refusal(plain, DEST) is None
    assert choose_engine(plain, DEST)[0].load.engine == "native"
    assert choose_engine(plain, DEST)[1] is None
    python = scenario(tmp_path, load={"engine": "python"})
    assert choose_engine(python, DEST) == (python, None)
    several = {"UDP": (DEST, ("127.0.0.1", 5061))}
    assert native_refusal(plain, several) == (
        "the target resolves to several UDP servers (failover is done by the Python engine)")


@pytest.mark.parametrize(("rate", "engine", "most"), [
    (5_000, "native", 1), (15_000, "native", 1), (30_000, "native", 2), (5_000, "python", 8)])
def test_the_native_engine_takes_no_more_workers_than_its_rate_needs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rate: float, engine: str, most: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))   # an 8-core machine
    sc = scenario(tmp_path, count=10_000, rate=rate, duration="10s", load={"engine": engine})
    assert default_workers(sc) == most


async def test_a_virtual_clock_keeps_the_python_engine(tmp_path: Path,
                                                       autojump_clock: trio.testing.MockClock) -> None:
    settled, note = choose_engine(scenario(tmp_path), DEST)
    assert settled.load.engine == "python" and note == f"the Python engine ran: {VIRTUAL_CLOCK}"
    with pytest.raises(WorkerError, match="virtual clock"):
        choose_engine(scenario(tmp_path, load={"engine": "native"}), DEST)


def test_an_engine_that_does_not_exist_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario(tmp_path, load={"engine": "rust"})
    assert str(info.value).endswith("native.toml: load.engine: must be one of 'auto', 'native', 'python', got 'rust'")


async def run_against_registrar(tmp_path: Path, sc_of: Any, *, workers: int | None = None,
                                stop_after_registered: bool = False) -> tuple[RunOutcome, int, RegistrarCore]:
    """Run `sc_of(target uri)` against an embedded registrar on loopback; (outcome, bindings left, core)."""
    core = RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1), now=trio.current_time())
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, core.settings, [Listen("udp", "127.0.0.1", 0)],
                                              core=core, out=lambda _: None))
        sc = sc_of(f"sip:127.0.0.1:{listens[0].port}")
        if stop_after_registered:
            async def stop_when_all_bound() -> None:
                while sum(len(b) for _, b in core.store.aors(trio.current_time())) < sc.endpoints.count:
                    await trio.sleep(0.05)
                stop.set()
            nursery.start_soon(stop_when_all_bound)
        with trio.fail_after(60):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                         stop=stop, workers=workers)
        left = sum(len(b) for _, b in core.store.aors(trio.current_time()))
        nursery.cancel_scope.cancel()
    return outcome, left, core


def counts(outcome: RunOutcome) -> dict[str, Any]:
    r = outcome.result
    return {"registrations": (r.registrations.attempted, r.registrations.succeeded, r.registrations.failed),
            "unregistrations": r.unregistrations.succeeded, "failures": r.failures,
            "states": sorted((e.index, e.username, e.state, e.failure_reason) for e in r.endpoint_states)}


@pytest.mark.parametrize("engine", ["native", "python"])
async def test_a_run_registers_refreshes_and_unregisters_every_endpoint(tmp_path: Path, engine: str) -> None:
    outcome, left, _ = await run_against_registrar(
        tmp_path, lambda uri: scenario(tmp_path, registrar=uri, load={"engine": engine}))
    r = outcome.result
    assert outcome.exit_code is ExitCode.OK, r.notes
    assert r.engines == {"default": engine}
    assert (r.registrations.attempted, r.registrations.succeeded) == (20, 20)
    assert r.refreshes.succeeded >= 20   # a 2 s expiry refreshed at ~1 s within a 1.5 s run and its stop
    assert r.unregistrations.succeeded == 20 and left == 0
    assert r.retransmissions == 0 and r.failures == {}
    assert r.responses["401"] >= 20 and r.responses["200"] >= 60
    assert r.latency_ms["register"]["count"] == 20 and r.service_ms["register"]["p50"] > 0
    summary = json.loads((outcome.out_dir / "summary.json").read_text())
    assert summary["engines"] == {"default": engine}
    assert len((outcome.out_dir / "endpoints.csv").read_text().splitlines()) == 21


async def test_both_engines_give_the_same_counts_failures_and_states(tmp_path: Path) -> None:
    """Wrong passwords, and a registrar that wants another password for everybody in one group."""
    groups = ({"name": "good", "share": 0.5, "wrong_passwords": 0.25}, {"name": "bad", "share": 0.5,
                                                                         "password": "nope-{n}"})
    seen = {}
    for engine in ("native", "python"):
        outcome, left, _ = await run_against_registrar(
            tmp_path / engine, lambda uri, e=engine: scenario(tmp_path, registrar=uri, count=24,
                                                              load={"engine": e}, groups=groups))
        assert outcome.result.engines == {"good": engine, "bad": engine}
        assert left == 0
        seen[engine] = counts(outcome)
    assert seen["native"] == seen["python"]
    assert seen["native"]["failures"] == {"auth_rejected": 15}   # 12 of "bad", 3 wrong passwords of "good"


@pytest.mark.parametrize(("workers", "stop"), [(1, False), (2, True)])
async def test_a_fleet_the_native_engine_cannot_run_whole_runs_each_group_on_its_engine(
        tmp_path: Path, workers: int, stop: bool) -> None:
    """A group with keep-alives runs on Python beside a plain one on the native engine, in each worker: one
    run, one result, every endpoint registered and unregistered (at the end, or on a stop request)."""
    groups = ({"name": "plain", "share": 0.5}, {"name": "pinging", "share": 0.5, "keepalive": "10s"})
    outcome, left, _ = await run_against_registrar(
        tmp_path, lambda uri: scenario(tmp_path, registrar=uri, count=24, groups=groups,
                                       duration="60s" if stop else "1500ms",
                                       endpoints={"expires": 60} if stop else None),
        workers=workers, stop_after_registered=stop)
    r = outcome.result
    assert r.engines == {"plain": "native", "pinging": "python"}
    assert "the Python engine ran 'pinging' beside the native one: group 'pinging' uses keepalive" in r.notes
    assert (r.registrations.attempted, r.registrations.succeeded) == (24, 24)
    assert r.unregistrations.succeeded == 24 and left == 0
    assert sorted(e.index for e in r.endpoint_states) == list(range(24))
    assert sorted(e.group for e in r.endpoint_states) == ["pinging"] * 12 + ["plain"] * 12
    assert r.failures == {} and (stop or outcome.exit_code is ExitCode.OK), r.notes
    if stop:
        assert r.duration_s < 30
    else:
        assert r.refreshes.succeeded >= 24


async def test_a_split_worker_holds_once_with_every_endpoint_registered(tmp_path: Path) -> None:
    """The hold hook (a cross-check) is called once, with both engines' endpoints, while all are bound."""
    groups = ({"name": "plain", "share": 0.5}, {"name": "pinging", "share": 0.5, "keepalive": "10s"})
    core = RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1), now=trio.current_time())
    held: list[list[str]] = []
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, core.settings, [Listen("udp", "127.0.0.1", 0)],
                                              core=core, out=lambda _: None))
        sc, _ = choose_engine(scenario(tmp_path, registrar=f"sip:127.0.0.1:{listens[0].port}", count=12,
                                       groups=groups, endpoints={"expires": 60}),
                              ("127.0.0.1", listens[0].port))
        worker = make_worker(sc, ("127.0.0.1", listens[0].port))
        assert isinstance(worker, SplitWorker)

        async def hook(states: list[EndpointState]) -> None:
            bound = sum(len(b) for _, b in core.store.aors(trio.current_time()))
            held.append([f"{s.group}:{s.state}" for s in states] + [f"bound:{bound}"])

        worker.hold_hook = hook
        with trio.fail_after(30):
            report = await worker.run()
        nursery.cancel_scope.cancel()
    assert len(held) == 1
    assert sorted(held[0]) == ["bound:12"] + ["pinging:registered"] * 6 + ["plain:registered"] * 6
    assert sorted(e.index for e in report.endpoints) == list(range(12)) and report.left_bound == 0


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_stop_unregisters_every_bound_endpoint(tmp_path: Path, workers: int) -> None:
    """As Ctrl-C and SIGTERM do: arrivals end, every bound endpoint unregisters, results are written."""
    outcome, left, _ = await run_against_registrar(
        tmp_path, lambda uri: scenario(tmp_path, registrar=uri, count=30, rate=200, duration="60s",
                                       endpoints={"expires": 60}, load={"engine": "native"}),
        workers=workers, stop_after_registered=True)
    r = outcome.result
    assert r.engines == {"default": "native"}
    assert r.registrations.succeeded == 30 and r.unregistrations.succeeded == 30 and left == 0
    assert r.duration_s < 30 and (outcome.out_dir / "summary.json").exists()


async def test_the_loop_runs_in_a_thread_until_its_waker_ends_it() -> None:
    """What `NativeWorker.request_stop` relies on: `run_until` (GIL released, in a trio thread) comes back
    at once when woken from the trio thread, and paces only with valid rates."""
    from sipload import _native
    native = _native.NativeWorker([("127.0.0.1", 0)], ("127.0.0.1", 9), ("constant", 10.0), 10, 1)
    with pytest.raises(ValueError, match="pacing needs rates > 0"):
        native.set_pacing(0.0, 1000.0, 8000.0, 8.0)
    native.set_pacing(4000.0, 1000.0, 8000.0, 8.0)
    native.start()
    waker = native.waker()
    outcomes: list[tuple[int, int, int, bool, bool]] = []

    async def run() -> None:
        outcomes.append(await trio.to_thread.run_sync(native.run_until, native.now() + 60.0))

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await trio.testing.wait_all_tasks_blocked()
            waker.wake()
    assert outcomes and outcomes[0][3:] == (True, True)   # still running, woken
    assert native.counters()["internal_errors"] == 0


def test_the_cli_names_the_engine_and_refuses_what_native_cannot_run(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(scenario_toml(
        "cli", seed=1, target={"registrar": "embedded", "domain": "sipload.test"},
        endpoints={"count": 5, "expires": 30}, load={"rate": 50, "duration": "300ms"},
        registrar={"min_expires": 1}))
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(path), "--engine", "native", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "1 worker, native engine" in res.output
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["engines"] == {"default": "native"}
    tcp = tmp_path / "tcp.toml"
    tcp.write_text(scenario_toml(
        "cli", target={"registrar": "sip:127.0.0.1:1;transport=tcp", "domain": "sipload.test"},
        endpoints={"count": 5}, load={"rate": 50, "duration": "300ms", "engine": "native"}))
    res = runner.invoke(main, ["run", str(tcp), "--out", str(tmp_path / "b")])
    assert res.exit_code == ExitCode.USAGE
    assert res.output.strip().splitlines()[-1].endswith(
        "--engine native: the scenario uses TCP (the native engine does UDP); run it with --engine python (or auto)")


def test_a_source_tree_without_the_extension_runs_on_python_and_says_why(tmp_path: Path) -> None:
    """`python -m sipload` from a checkout that was installed without -e imports the unbuilt tree."""
    shutil.copytree(Path(__file__).parent.parent / "sipload", tmp_path / "sipload",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (tmp_path / "s.toml").write_text(scenario_toml(
        "unbuilt", seed=1, target={"registrar": "embedded", "domain": "sipload.test"},
        endpoints={"count": 5, "expires": 30}, load={"rate": 50, "duration": "300ms"},
        registrar={"min_expires": 1}))
    done = subprocess.run([sys.executable, "-m", "sipload", "run", "s.toml", "--out", "out", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["engines"] == {"default": "python"} and summary["registrations"]["succeeded"] == 5
    assert any(n.startswith("the Python engine ran: the native extension is not built (")
               and n.endswith("pip install -e . builds it") for n in summary["notes"]), summary["notes"]
    refused = subprocess.run([sys.executable, "-m", "sipload", "run", "s.toml", "--out", "out2", "--engine",
                              "native"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert refused.returncode == ExitCode.USAGE and "Traceback" not in refused.stderr
    assert "--engine native: the native extension is not built" in refused.stderr
