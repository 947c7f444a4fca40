"""The start-up probe, as a user meets it: a registrar that ignores OPTIONS is still tested (a warning, then
the run), one that answers nothing fails in seconds saying so, and `--no-probe` / `target.probe = false`
turn the probe off. Real processes (`sipload registrar`, `sipload run`) on loopback."""

from __future__ import annotations

import re
import time
from functools import partial
from pathlib import Path

import pytest
import trio
from interop_helpers import CliRun, RegistrarProcess, run_sipload

from sipload.engine.probe import probe_udp
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import ScenarioError, parse_scenario
from sipload.sip import Request, parse_message

WARNING = re.compile(r"^sipload: warning: target sip:127\.0\.0\.1:\d+: no answer to OPTIONS within 1 s, but a "
                     r"REGISTER was answered \(401 Unauthorized\): going on without the OPTIONS check "
                     r"\(--no-probe or target\.probe = false skips it\)$", re.MULTILINE)


def scenario(port: int, *, probe: bool | None = None, t1: str = "500ms", first: int = 1) -> str:
    return f"""name = "probe"
thresholds = ["register.success_rate == 100%"]
[target]
registrar = "sip:127.0.0.1:{port}"
{"" if probe is None else f"probe = {str(probe).lower()}"}
[endpoints]
count = 3
first = {first}
expires = 60
[load]
rate = 30
duration = "500ms"
unregister_timeout = "3s"
[timers]
t1 = "{t1}"
max_retries = 0
"""


async def test_a_registrar_that_ignores_options_is_tested_after_one_warning(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        registrar = await RegistrarProcess.launch(
            nursery, ["--listen", "udp:127.0.0.1:0", "--ignore-options", "--min-expires", "1", "--quiet"])
        port = int(registrar.lines[0].rsplit(":", 1)[1])
        path = tmp_path / "probe.toml"
        path.write_text(scenario(port))
        # --no-probe and target.probe = false: no probe, hence no warning; the run is the same. The three
        # runs are independent (each its own users and results), so they run at the same time.
        no_probe = tmp_path / "no-probe.toml"
        no_probe.write_text(scenario(port, first=11))
        keyed_path = tmp_path / "keyed.toml"
        keyed_path.write_text(scenario(port, probe=False, first=21))
        runs: dict[str, CliRun] = {}

        async def run(name: str, *args: str) -> None:
            runs[name] = await run_sipload("run", *args, "--workers", "1", timeout=60)

        async with trio.open_nursery() as runners:
            runners.start_soon(run, "probed", str(path), "--out", str(tmp_path / "a"))
            runners.start_soon(run, "quiet", str(no_probe), "--out", str(tmp_path / "b"), "--no-probe")
            runners.start_soon(run, "keyed", str(keyed_path), "--out", str(tmp_path / "c"))
        probed = runs["probed"]
        assert probed.returncode == 0, probed
        assert len(WARNING.findall(probed.stdout)) == 1, probed
        assert "registrations 3/3 ok" in probed.stdout, probed

        quiet = runs["quiet"]
        assert quiet.returncode == 0 and "registrations 3/3 ok" in quiet.stdout, quiet
        assert "warning" not in quiet.stdout + quiet.stderr, quiet
        keyed = runs["keyed"]
        assert keyed.returncode == 0 and "registrations 3/3 ok" in keyed.stdout, keyed
        assert "warning" not in keyed.stdout + keyed.stderr, keyed
        await registrar.stop()


async def test_a_target_that_answers_nothing_fails_fast_and_says_in_how_long(tmp_path: Path) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        path = tmp_path / "probe.toml"
        path.write_text(scenario(port))
        heard: list[Request] = []

        async def listen() -> None:
            while True:
                msg = parse_message(await silent.recv(65536))
                assert isinstance(msg, Request)
                heard.append(msg)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            started = time.monotonic()
            run = await run_sipload("run", str(path), "--out", str(tmp_path / "out"), timeout=60)
            elapsed = time.monotonic() - started
            nursery.cancel_scope.cancel()
    assert run.returncode == 2, run
    assert run.stdout == "" and run.stderr.splitlines() == [
        f"sipload: target sip:127.0.0.1:{port}: no SIP answer from udp 127.0.0.1:{port} within 4 s (to OPTIONS "
        f"nor to a REGISTER): no answer; is the registrar running? (--no-probe or target.probe = false skips "
        f"this check)"], run
    assert elapsed < 15, elapsed                     # the probe's 4 s and a process start, not Timer F
    assert not (tmp_path / "out").exists()
    methods = {m.method for m in heard}
    assert methods == {"OPTIONS", "REGISTER"}, methods
    query = next(m for m in heard if m.method == "REGISTER")   # a query: no Contact, no credentials
    assert "contact" not in query.headers and "authorization" not in query.headers
    assert query.headers.get("to") == "<sip:user1@127.0.0.1>"


async def test_without_the_probe_a_silent_target_runs_into_its_timeouts(tmp_path: Path) -> None:
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        path = tmp_path / "probe.toml"
        path.write_text(scenario(port, probe=False, t1="20ms"))
        run = await run_sipload("run", str(path), "--out", str(tmp_path / "out"), "--workers", "1", timeout=60)
    assert run.returncode == 1, run                   # the run happened and its threshold failed
    assert "no SIP answer" not in run.stdout + run.stderr, run
    assert "registrations 0/3 ok, 3 failed" in run.stdout and "timeout 3" in run.stdout, run


async def test_the_register_query_changes_no_binding_and_a_prompt_options_answer_needs_none() -> None:
    ignoring = RegistrarCore(RegistrarSettings(ignore_options=True), now=trio.current_time())
    answering = RegistrarCore(RegistrarSettings(), now=trio.current_time())
    async with trio.open_nursery() as nursery:
        for core in (ignoring, answering):
            listens = await nursery.start(partial(serve_registrar, core.settings, [Listen("udp", "127.0.0.1", 0)],
                                                  core=core, out=lambda _: None))
            address = (listens[0].host, listens[0].port)
            outcome = await probe_udp(address, "sipload.test", user="alice", timeout=2.0, options_wait=0.2)
            assert outcome.problem is None
            if core is ignoring:
                assert outcome.options is None and outcome.register is not None
                assert outcome.register.status == 401 and outcome.warning(0.2) is not None
            else:
                assert outcome.options is not None and outcome.options.status == 200
                assert outcome.register is None and outcome.warning() is None
            assert core.store.count(trio.current_time()).bindings == 0
        assert answering.counters.received["REGISTER"] == 0       # OPTIONS answered: no REGISTER was sent
        assert ignoring.counters.received["REGISTER"] >= 1
        nursery.cancel_scope.cancel()


def test_target_probe_is_read_checked_and_kept_by_a_target_override(tmp_path: Path) -> None:
    sc = parse_scenario(scenario(5999, probe=False), tmp_path / "s.toml")
    assert sc.target.probe is False
    assert sc.with_overrides(target="sip:127.0.0.1:6000").target.probe is False   # --target keeps it
    assert parse_scenario(scenario(5999), tmp_path / "s.toml").target.probe is True
    with pytest.raises(ScenarioError, match=r"target\.probe.*true or false"):
        parse_scenario(scenario(5999).replace("[endpoints]", 'probe = "no"\n[endpoints]'), tmp_path / "s.toml")
