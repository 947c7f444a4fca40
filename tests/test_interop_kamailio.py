"""sipload -> a real Kamailio registrar (peers/kamailio), seen through Kamailio's own JSON-RPC.

- 500 endpoints over UDP (2 worker processes) and over TCP (1 worker): Kamailio holds exactly those
  500 AoRs with the contacts and Call-IDs sipload used; refreshes keep the Call-ID and raise the
  CSeq (``ul.lookup``); at the end Kamailio holds none of them.
- wrong passwords: counted as auth_rejected, each such endpoint sends exactly two REGISTERs (no
  retry), the CLI reports it and exits 1.
- nothing listening at the target (a stopped Kamailio): `sipload run` exits 2 at once with a clear message.
- Kamailio stopped in the middle of a run: the refreshes fail as timeouts within the run, exit 1.
- scenarios/kamailio.toml itself passes against Kamailio.

This module starts its own Kamailio (peers/kamailio/start with a private run dir and free ports), so
that counting AoRs is exact whatever else runs on the machine (another pytest session restarting the
default instance on 5070 included). User ranges: 1-100 (scenarios/kamailio.toml), 20001-20500 (UDP),
21001-21500 (TCP), 22001-22040 (wrong passwords); every test leaves Kamailio as it found it. The
mid-run stop has a Kamailio of its own (23001-23050).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
from interop_helpers import (
    kamailio_scenario,
    lookup_all,
    read_endpoints,
    read_summary,
    run_sipload,
)

from peers import (
    HOW_TO_INSTALL_KAMAILIO,
    KamailioPeer,
    free_port,
    have,
    private_kamailio,
    require_peer,
    start_kamailio,
    stop_kamailio,
)
from sipload.engine.run import ExitCode, RunOutcome, run_scenario
from sipload.providers.kamailio import KamailioRpc
from sipload.providers.status import ProviderState, RegistrationStatus
from sipload.scenario import parse_scenario

COUNT = 500
FIRST = {"udp": 20001, "tcp": 21001}


def two_free_ports() -> tuple[int, int]:
    sip_port = free_port()
    rpc_port = free_port()
    while rpc_port == sip_port:
        rpc_port = free_port()
    return sip_port, rpc_port


async def start_private_kamailio(rundir: Path) -> KamailioPeer:
    require_peer("kamailio", have("kamailio"), HOW_TO_INSTALL_KAMAILIO)
    return await trio.to_thread.run_sync(functools.partial(start_kamailio, rundir, *two_free_ports()))


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioPeer]:
    """This module's own Kamailio: peers/kamailio/start with a private run dir and free ports (overrides
    the session fixture of conftest.py, which shares peers/run/kamailio and 5070 with every session)."""
    with private_kamailio(tmp_path_factory.mktemp("kamailio-interop")) as peer:
        yield peer


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.1) -> None:
    """Poll `check` until it is true; AssertionError naming `what` after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while not await check():
            await trio.sleep(every)
        return
    raise AssertionError(f"{what}: not within {timeout:g} s")


def assert_one_contact(statuses: dict[str, RegistrationStatus]) -> None:
    for user, status in statuses.items():
        assert status.state is ProviderState.REGISTERED, (user, status)
        assert len(status.contacts) == 1, (user, status)


@pytest.mark.interop
@pytest.mark.parametrize(("transport", "workers"), [("udp", 2), ("tcp", 1)])
async def test_500_endpoints_register_refresh_and_unregister_on_kamailio(
    kamailio: KamailioPeer, tmp_path: Path, transport: str, workers: int
) -> None:
    first = FIRST[transport]
    users = [f"user{n}" for n in range(first, first + COUNT)]
    # 500 arrivals in 1 s; each refreshes ~5 s after registering (expiry 10 s); unregister at 10 s.
    text = kamailio_scenario(
        kamailio.port, name=f"kamailio-{transport}", transport=transport, first=first, count=COUNT,
        expires=10, rate=500, duration=10,
        thresholds=["register.success_rate == 100%", "refresh.success_rate == 100%",
                    "unregister.success_rate == 100%", "timeouts == 0", "failures == 0"],
    )
    scenario = parse_scenario(text, tmp_path / "scenario.toml")
    lines: list[str] = []
    outcomes: list[RunOutcome] = []

    async def run() -> None:
        outcomes.append(await run_scenario(scenario, tmp_path / "out", progress=lines.append,
                                           handle_signals=False, workers=workers))

    async with KamailioRpc(kamailio.rpc_url) as rpc:
        before = await rpc.registered_users()
        assert all(s.state is ProviderState.NOT_REGISTERED for s in (await lookup_all(rpc, users)).values())
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)

                async def all_held() -> bool:
                    return await rpc.registered_users() == before + COUNT

                await wait_until("Kamailio holding 500 more AoRs", all_held, timeout=20)
                held = await lookup_all(rpc, users)
                assert_one_contact(held)
                aors = await rpc.dump_aors()
                assert len(aors) == before + COUNT and set(users) <= set(aors)
                ports = set()
                for user, status in held.items():
                    contact = status.contacts[0]
                    m = re.fullmatch(rf"sip:{user}@127\.0\.0\.1:(\d+);transport={transport}", contact.address)
                    assert m is not None, contact
                    ports.add(m.group(1))
                    assert contact.cseq == 2, contact  # REGISTER (CSeq 1) -> 401 -> REGISTER (CSeq 2) -> 200
                    assert contact.call_id, contact
                    assert contact.expires_in is not None and 1 <= contact.expires_in <= 10, contact
                assert len(ports) == workers  # one shared socket (UDP) / connection (TCP) per worker
                assert len({s.contacts[0].call_id for s in held.values()}) == COUNT

                refreshed: dict[str, RegistrationStatus] = {}

                async def all_refreshed() -> bool:
                    pending = [u for u in users if u not in refreshed]
                    for user, status in (await lookup_all(rpc, pending)).items():
                        if status.contacts and (status.contacts[0].cseq or 0) > 2:
                            refreshed[user] = status
                    return len(refreshed) == COUNT

                await wait_until("every endpoint refreshed (CSeq > 2 in ul.lookup)", all_refreshed, timeout=12,
                                 every=0.2)
                for user, status in refreshed.items():
                    [contact] = status.contacts
                    [first_contact] = held[user].contacts
                    assert contact.call_id == first_contact.call_id, (user, contact, first_contact)
                    assert contact.address == first_contact.address
        [outcome] = outcomes
        after = await rpc.registered_users()
        final = await lookup_all(rpc, users)
        remaining = [u for u, s in final.items() if s.state is not ProviderState.NOT_REGISTERED]

    result = outcome.result
    assert outcome.exit_code is ExitCode.OK, [t for t in result.thresholds if not t.passed]
    assert (result.registrations.succeeded, result.unregistrations.succeeded) == (COUNT, COUNT)
    assert result.refreshes.succeeded >= COUNT and result.refreshes.failed == 0
    assert result.failures == {}
    assert any(f"registered {COUNT} " in line for line in lines), lines
    # sipload's own record of each endpoint is what Kamailio held
    assert len(result.endpoint_states) == COUNT
    for state in result.endpoint_states:
        [contact] = held[state.username].contacts
        assert (state.contact, state.call_id, state.state) == (contact.address, contact.call_id, "unregistered")
    # and at the end Kamailio holds none of them
    assert after == before
    assert remaining == []


def wrong_password_csv(path: Path, users: range, wrong: set[int]) -> None:
    """A SIPp-style injection file: SEQUENTIAL, then `userN;password;` (a wrong password for `wrong`)."""
    rows = [f"user{n};{'not-the-password' if n in wrong else f'pw-user{n}'};" for n in users]
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")


@pytest.mark.interop
async def test_wrong_passwords_are_auth_rejected_once_and_reported(kamailio: KamailioPeer, tmp_path: Path) -> None:
    users = range(22001, 22041)
    wrong = {n for n in users if n % 5 == 0}  # 8 of 40
    wrong_password_csv(tmp_path / "users.csv", users, wrong)
    # 40 arrivals in 0.4 s, held 4 s: a wrong password retried after a 1 s backoff would show up here.
    (tmp_path / "wrong.toml").write_text(
        kamailio_scenario(kamailio.port, name="wrong-passwords", csv_file="users.csv", rate=100, duration=4)
    )
    out = tmp_path / "out"
    good = [f"user{n}" for n in users if n not in wrong]
    bad = [f"user{n}" for n in sorted(wrong)]
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        before = await rpc.registered_users()
        runs = []

        async def run() -> None:
            runs.append(await run_sipload("run", str(tmp_path / "wrong.toml"), "--out", str(out), timeout=60))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)

            async def good_ones_held() -> bool:
                return await rpc.registered_users() == before + len(good)

            await wait_until("Kamailio holding the 32 endpoints with the right password", good_ones_held, timeout=20)
            held = await lookup_all(rpc, good + bad)
            assert all(held[u].state is ProviderState.REGISTERED for u in good)
            assert all(held[u].state is ProviderState.NOT_REGISTERED for u in bad)
        [cli] = runs
        assert await rpc.registered_users() == before

    assert cli.returncode == 1, cli
    assert cli.elapsed < 30, cli
    assert "failures: auth_rejected 8" in cli.stdout, cli
    assert "[FAIL] register.success_rate == 100%  (value 80)" in cli.stdout, cli
    assert "Traceback" not in cli.stderr, cli
    summary = read_summary(out)
    assert summary["registrations"] == {"attempted": 40, "succeeded": 32, "failed": 8}
    assert summary["failures"] == {"auth_rejected": 8}
    assert summary["failures_by_phase"] == {"register": {"auth_rejected": 8}}
    # Every endpoint got one challenge; each wrong one got exactly one more (its credentials rejected)
    # and then stopped: two REGISTERs each, never retried during the 4 s it was held.
    assert summary["responses"] == {"401": 40 + 8, "200": 32 + 32}
    assert summary["unregistrations"]["succeeded"] == 32
    states = {row["username"]: row for row in read_endpoints(out)}
    for user in bad:
        row = states[user]
        assert (row["state"], row["failure_reason"], row["last_status"], row["registrations"]) == (
            "failed:auth_rejected", "auth_rejected", "401", "0"
        ), row
    assert all(states[u]["state"] == "unregistered" for u in good)


@pytest.mark.interop
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_nothing_listening_exits_2_at_once_with_a_clear_message(tmp_path: Path, transport: str) -> None:
    port = free_port()  # as after `peers/kamailio/stop`: nothing answers there
    (tmp_path / "gone.toml").write_text(
        kamailio_scenario(port, name="gone", transport=transport, first=24001, count=10, rate=10, duration=1)
    )
    cli = await run_sipload("run", str(tmp_path / "gone.toml"), "--out", str(tmp_path / "out"), timeout=40)
    assert cli.returncode == ExitCode.USAGE, cli
    assert "Traceback" not in cli.stderr, cli
    if transport == "udp":
        # the probe (OPTIONS, then a REGISTER query: 4 s) says so before any endpoint is created
        assert cli.elapsed < 20, cli
        assert re.search(
            rf"^sipload: target sip:127\.0\.0\.1:{port};transport=udp: no SIP answer from udp "
            rf"127\.0\.0\.1:{port} within 4 s \(to OPTIONS nor to a REGISTER\): .*; is the registrar running\? "
            rf"\(--no-probe or target\.probe = false skips this check\)$",
            cli.stderr, re.MULTILINE,
        ), cli
    else:
        assert cli.elapsed < 20, cli
        assert f"sipload: cannot connect over TCP to 127.0.0.1:{port}: connection refused" in cli.stderr, cli


@pytest.mark.interop
async def test_kamailio_stopped_mid_run_gives_timeouts_not_a_hang(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A Kamailio of its own, stopped once every endpoint is registered.
    rundir = tmp_path_factory.mktemp("kamstop")
    tmp_path = tmp_path_factory.mktemp("kamstop-run")
    peer = await start_private_kamailio(rundir)
    # 50 arrivals in 0.5 s; refreshes due ~2 s after registering; T1 50 ms: Timer F (64*T1) = 3.2 s.
    (tmp_path / "stop.toml").write_text(kamailio_scenario(
        peer.port, name="kamailio-stopped", first=23001, count=50, expires=4, rate=100, duration=7,
        t1="50ms", max_retries=0, unregister_timeout=2,
        thresholds=["register.success_rate == 100%", "refresh.success_rate == 100%"],
    ))
    out = tmp_path / "out"
    runs = []

    async def run() -> None:
        runs.append(await run_sipload("run", str(tmp_path / "stop.toml"), "--out", str(out), timeout=60))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            async with KamailioRpc(peer.rpc_url) as rpc:

                async def all_held() -> bool:
                    return await rpc.registered_users() == 50

                await wait_until("the private Kamailio holding 50 AoRs", all_held, timeout=20, every=0.05)
            await trio.to_thread.run_sync(functools.partial(stop_kamailio, rundir))
    finally:
        await trio.to_thread.run_sync(functools.partial(stop_kamailio, rundir))
    [cli] = runs
    assert cli.returncode == ExitCode.THRESHOLD_FAILED, cli
    assert cli.elapsed < 30, cli
    summary = read_summary(out)
    assert summary["registrations"]["succeeded"] == 50
    assert summary["failures"] == {"timeout": 50}, cli
    assert summary["failures_by_phase"]["refresh"] == {"timeout": 50}
    assert summary["retransmissions"] > 0
    assert "failures: timeout 50" in cli.stdout, cli
    assert "[FAIL] refresh.success_rate == 100%" in cli.stdout, cli
    assert all(row["state"] == "failed:timeout" for row in read_endpoints(out))


@pytest.mark.interop
async def test_the_kamailio_scenario_file_passes_against_kamailio(kamailio: KamailioPeer, tmp_path: Path) -> None:
    # scenarios/kamailio.toml as shipped (users 1..N, 10 s expiry), shortened: 100 endpoints in 1 s,
    # each refreshes once (~5 s after registering), then unregisters.
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        before = await rpc.registered_users()
        cli = await run_sipload(
            "run", "scenarios/kamailio.toml", "--target", f"sip:127.0.0.1:{kamailio.port}",
            "--endpoints", "100", "--rate", "100", "--duration", "7.5", "--out", str(tmp_path / "out"),
            timeout=40,
        )
        assert await rpc.registered_users() == before
    assert cli.returncode == ExitCode.OK, cli
    assert "kamailio: complete in" in cli.stdout and "registrations 100/100 ok, 0 failed" in cli.stdout, cli
    assert "unregistrations 100 ok, 0 failed" in cli.stdout, cli
    assert "[FAIL]" not in cli.stdout, cli
    summary = read_summary(tmp_path / "out")
    assert summary["refreshes"]["succeeded"] >= 100 and summary["refreshes"]["failed"] == 0
