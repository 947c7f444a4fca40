"""sipload against registrars on other hosts: test hosts in network namespaces (tests/netns.py).

sipload runs in the root namespace (198.18.S.1 on the bridge) or on a load host; the registrar runs on
a registrar host. Each test proves a path loopback cannot show:

- Kamailio on host .10 over UDP, TCP, TLS and WS: every endpoint registers (the start-up probe too),
  Kamailio holds contacts naming the root namespace's routed address, none after the unregistration;
  a cross-check asks Kamailio's JSON-RPC on that host and agrees on every endpoint;
  a range of real (non-loopback) source addresses spreads the contacts over it;
- a wire tap on the path (relay host .20): Via sent-by and Contact are the socket's real address and
  port; with `advertised_address` they name that address (with the real port) and registrations still
  succeed, the registrar answering the real source (rport / received);
- a lossy hop (the relay dropping 1 datagram in 5): retransmissions are counted and every
  registration succeeds;
- the Ultravox emulator's SIP agent registers to the registrar host from the routed address;
- SIPp on host .11 against `sipload registrar --listen udp:198.18.S.12:5060` on host .12;
- an IPv6 registrar host (`sip:[2001:db8:S::c]`) over UDP and TCP;
- README.md's multi-host recipe, as written: a Dask scheduler (host .5) and `dask worker`s on two load
  hosts (.2, .3), `sipload run --cluster` from the root namespace: Kamailio holds contacts from both
  load hosts, the totals agree, and none is left after Ctrl-C (SIGINT).

Users: 31000-31999. Counts and durations are small: the whole module takes about a minute.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from interop_helpers import REPO, LineProcess, kamailio_scenario, line_fields, lookup_all, read_summary, sipload_env
from netns import TestNet, make_test_hosts, stop, write_pem_pair

from peers import HOW_TO_INSTALL_KAMAILIO, KamailioPeer, have, require_peer, run_sipp, start_kamailio, stop_kamailio
from sipload.emulators.ultravox_agent import SipAgent
from sipload.engine.run import ExitCode, RunOutcome, run_scenario
from sipload.providers.kamailio import KamailioRpc
from sipload.providers.status import ProviderState
from sipload.scenario import parse_scenario

pytestmark = pytest.mark.interop
SIP_PORT, RPC_PORT, WS_PORT = 5060, 5071, 5062     # on the registrar host (a namespace: all ports free)


@dataclass
class Site:
    net: TestNet
    kamailio: KamailioPeer
    ca: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Test hosts, and Kamailio on host .10 (udp, tcp, tls, ws) with a certificate for its address."""
    with make_test_hosts() as net:
        require_peer("kamailio", have("kamailio"), HOW_TO_INSTALL_KAMAILIO)
        registrar = net.host(10)
        rundir = tmp_path_factory.mktemp("kamailio-host")
        ca, cert, key = write_pem_pair(rundir, registrar.ipv4)
        peer = start_kamailio(rundir, SIP_PORT, RPC_PORT, ws_port=WS_PORT, host=registrar.ipv4,
                              netns=registrar.netns, tls=(cert, key))
        try:
            yield Site(net, peer, ca)
        finally:
            stop_kamailio(rundir)


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    with trio.move_on_after(timeout):
        while not await check():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"{what}: not within {timeout:g} s")


async def run_holding(site: Site, text: str, tmp_path: Path, users: list[str],
                      ) -> tuple[RunOutcome, dict[str, list[str]]]:
    """Run the scenario in this process; while every user is registered, the contacts Kamailio holds."""
    scenario = parse_scenario(text, tmp_path / "scenario.toml")
    outcomes: list[RunOutcome] = []

    async def run() -> None:
        outcomes.append(await run_scenario(scenario, tmp_path / "out", progress=lambda _: None,
                                           handle_signals=False))

    async with KamailioRpc(site.kamailio.rpc_url) as rpc:
        held: dict[str, list[str]] = {}
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)

                async def all_held() -> bool:
                    statuses = await lookup_all(rpc, users)
                    held.clear()
                    held.update({u: [c.address for c in s.contacts] for u, s in statuses.items()})
                    return all(s.state is ProviderState.REGISTERED for s in statuses.values())

                await wait_until(f"Kamailio holding {len(users)} users", all_held, timeout=20)
        after = await lookup_all(rpc, users)
    assert all(s.state is ProviderState.NOT_REGISTERED for s in after.values()), after
    return outcomes[0], held


def users(first: int, count: int) -> list[str]:
    return [f"user{n}" for n in range(first, first + count)]


@pytest.mark.parametrize(("transport", "first"), [("udp", 31000), ("tcp", 31020), ("tls", 31040), ("ws", 31060)])
async def test_kamailio_on_another_host(site: Site, tmp_path: Path, transport: str, first: int) -> None:
    peer = site.kamailio
    port = {"udp": peer.port, "tcp": peer.port, "tls": peer.tls_port, "ws": peer.ws_port}[transport]
    assert port is not None, f"Kamailio has no {transport} listener"
    # over UDP a cross-check asks the registrar host's JSON-RPC while every endpoint holds
    text = kamailio_scenario(port, name=f"host-{transport}", transport=transport, first=first, count=12,
                             expires=30, rate=40, duration=1.5, host=peer.host,
                             scheme="sips" if transport == "tls" else "sip",
                             target={"tls_ca": str(site.ca)} if transport == "tls" else None,
                             crosscheck={"provider": "kamailio", "base_url": peer.rpc_url, "when": "holding"}
                             if transport == "udp" else None)
    outcome, held = await run_holding(site, text, tmp_path, users(first, 12))
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    if transport == "udp":
        crosscheck = outcome.result.crosscheck
        assert crosscheck is not None and (crosscheck["checked"], crosscheck["agreed"]) == (12, 12), crosscheck
    gateway = re.escape(site.net.gateway)
    for user, contacts in held.items():
        assert len(contacts) == 1 and re.fullmatch(rf"sip:{user}@{gateway}:\d+;transport={transport}",
                                                   contacts[0]), (user, contacts)


async def test_source_addresses_of_this_host_spread_the_contacts(site: Site, tmp_path: Path) -> None:
    net = site.net
    extra = [f"198.18.{net.subnet}.{n}" for n in (201, 202)]
    for address in extra:   # IP aliases on the load host (removed with the bridge)
        subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", net.bridge], check=True)
    text = kamailio_scenario(site.kamailio.port, name="aliases", first=31100, count=10, expires=30, rate=40,
                             duration=1.5, host=site.kamailio.host,
                             endpoints={"source_addresses": f"{extra[0]}-{extra[1]}"})
    outcome, held = await run_holding(site, text, tmp_path, users(31100, 10))
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    hosts = {c.split("@")[1].rsplit(":", 1)[0] for contacts in held.values() for c in contacts}
    assert hosts == set(extra)


class Relay(LineProcess):
    name = "udp relay"


async def relayed(site: Site, tmp_path: Path, nursery: trio.Nursery, text: str, drop_every: int,
                  ) -> tuple[RunOutcome, dict[str, object]]:
    """Run `text` (its target: the relay) through a relay on host .20 to Kamailio; the relay's counts."""
    relay_host = site.net.host(20)
    stats = tmp_path / "relay.json"
    relay = await Relay.start(nursery, [*relay_host.exec_prefix(), sys.executable, str(REPO / "tests/udp_relay.py"),
                                        "--listen", f"{relay_host.ipv4}:5060", "--to", site.kamailio.target,
                                        "--drop-every", str(drop_every), "--stats", str(stats)],
                              ready=lambda line: line == "relaying")
    try:
        scenario = parse_scenario(text.replace(f"{site.kamailio.target};", f"{relay_host.ipv4}:5060;"),
                                  tmp_path / "scenario.toml")
        with trio.fail_after(60):
            outcome = await run_scenario(scenario, tmp_path / "out", progress=lambda _: None,
                                         handle_signals=False)
    finally:
        assert await relay.stop() == 0
    counts = json.loads(stats.read_text())
    assert isinstance(counts, dict)
    return outcome, counts


async def test_via_and_contact_are_true_on_the_wire_and_advertised_address(site: Site, tmp_path: Path) -> None:
    base = kamailio_scenario(site.kamailio.port, name="tap", first=31200, count=8, expires=30, rate=40,
                             duration=1, host=site.kamailio.host)
    async with trio.open_nursery() as nursery:
        outcome, counts = await relayed(site, tmp_path / "plain", nursery, base, 0)
        assert outcome.exit_code is ExitCode.OK, outcome.result.notes
        clients = {k: v for k, v in counts["clients"].items() if "via" in v}   # (the probe sends OPTIONS only)
        assert clients
        for note in clients.values():
            host, port = note["source"]
            assert host == site.net.gateway
            assert note["via"].startswith(f"SIP/2.0/UDP {host}:{port};"), note
            assert f"@{host}:{port};transport=udp" in note["contact"], note
            # the registrar saw the relay's address: it says so, and answered there (RFC 3581)
            assert f"received={site.net.address(20)}" in note["response_via"], note
        natted = base.replace("refresh_at", 'advertised_address = "203.0.113.7"\nrefresh_at', 1)
        outcome, counts = await relayed(site, tmp_path / "advertised", nursery, natted, 0)
        assert outcome.exit_code is ExitCode.OK, outcome.result.notes
        clients = {k: v for k, v in counts["clients"].items() if "via" in v}   # (the probe sends OPTIONS only)
        assert clients
        for note in clients.values():
            host, port = note["source"]
            assert host == site.net.gateway               # bound: the routed address
            assert note["via"].startswith(f"SIP/2.0/UDP 203.0.113.7:{port};"), note
            assert f"@203.0.113.7:{port};transport=udp" in note["contact"], note


async def test_retransmissions_through_a_lossy_hop(site: Site, tmp_path: Path) -> None:
    text = kamailio_scenario(site.kamailio.port, name="lossy", first=31300, count=30, expires=30, rate=60,
                             duration=1, host=site.kamailio.host, t1="100ms", max_retries=3,
                             thresholds=["register.success_rate == 100%", "unregister.success_rate == 100%"])
    async with trio.open_nursery() as nursery:
        outcome, counts = await relayed(site, tmp_path, nursery, text, 5)
    summary = read_summary(outcome.out_dir)
    dropped = int(counts["dropped_up"]) + int(counts["dropped_down"])  # type: ignore[call-overload]
    forwarded = int(counts["forwarded_up"]) + int(counts["forwarded_down"])  # type: ignore[call-overload]
    retransmissions = outcome.result.retransmissions
    print(f"lossy hop: {dropped} of {dropped + forwarded} datagrams dropped "
          f"({counts['dropped_up']} requests, {counts['dropped_down']} responses); "
          f"sipload counted {retransmissions} retransmissions; exit {outcome.exit_code.name}")
    assert dropped == (dropped + forwarded) // 5
    assert outcome.exit_code is ExitCode.OK, (summary.get("notes"), counts)
    # every datagram lost on the way costs the client a retransmission (a lost retransmission: another)
    assert retransmissions >= dropped * 0.6 and retransmissions > 0, (retransmissions, counts)


async def test_the_ultravox_agent_registers_to_another_host(site: Site) -> None:
    peer = site.kamailio
    agent = SipAgent(expires=30)
    async with trio.open_nursery() as nursery, KamailioRpc(peer.rpc_url) as rpc:
        await nursery.start(agent.run)
        agent.start("r1", username="user31400", password="pw-user31400", proxy=f"sip:{peer.host}",
                    outbound_proxy=None, auth_user=None, destination=(peer.host, peer.port))
        with trio.fail_after(10):
            while agent.outcome("r1") is None:
                await trio.sleep(0.05)
        assert agent.outcome("r1") is True, agent.entry("r1")
        local = agent.local_for((peer.host, peer.port))
        assert local[0] == site.net.gateway
        status = await rpc.lookup("user31400")
        assert [c.address for c in status.contacts] == [f"sip:user31400@{local[0]}:{local[1]};transport=udp"]
        agent.stop("r1")
        with trio.fail_after(10):
            while (await rpc.lookup("user31400")).state is ProviderState.REGISTERED:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()


class Registrar(LineProcess):
    name = "sipload registrar"


async def test_sipp_on_another_host_against_sipload_registrar(site: Site, tmp_path: Path) -> None:
    require_peer("sipp", have("sipp"), "run peers/install (installs the Debian package sip-tester)")
    registrar_host, sipp_host = site.net.host(12), site.net.host(11)
    async with trio.open_nursery() as nursery:
        registrar = await Registrar.start(
            nursery, [*registrar_host.exec_prefix(), sys.executable, "-m", "sipload", "registrar",
                      "--listen", f"udp:{registrar_host.ipv4}:5060", "--password", "pw-{user}"],
            ready=lambda line: line.startswith("listening on"))
        try:
            result = await trio.to_thread.run_sync(lambda: run_sipp(
                f"{registrar_host.ipv4}:5060", range(31500, 31700), 200, 200, local_ip=sipp_host.ipv4,
                netns=sipp_host.netns, timeout=30, workdir=tmp_path / "sipp"))
            assert (result.successful, result.failed, result.retransmissions) == (200, 0, 0), result.output_tail
            await registrar.wait_line(lambda line: line_fields(line).get("live") == "200", timeout=5)
        finally:
            await registrar.stop(signal.SIGINT)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_an_ipv6_registrar_host(site: Site, tmp_path: Path, transport: str) -> None:
    host = site.net.host(12)
    async with trio.open_nursery() as nursery:
        registrar = await Registrar.start(
            nursery, [*host.exec_prefix(), sys.executable, "-m", "sipload", "registrar",
                      "--listen", f"{transport}:[{host.ipv6}]:5062", "--password", "pw-{user}"],
            ready=lambda line: line.startswith("listening on"))
        try:
            text = kamailio_scenario(5062, name=f"v6-{transport}", transport=transport, first=31800, count=6,
                                     expires=30, rate=30, duration=0.5, host=f"[{host.ipv6}]")
            scenario = parse_scenario(text, tmp_path / "scenario.toml")
            with trio.fail_after(60):
                outcome = await run_scenario(scenario, tmp_path / "out", progress=lambda _: None,
                                             handle_signals=False)
            assert outcome.exit_code is ExitCode.OK, outcome.result.notes
            contacts = [e.contact for e in outcome.result.endpoint_states]
            assert all(f"@[{site.net.gateway6}]:" in c for c in contacts), contacts
        finally:
            await registrar.stop(signal.SIGINT)


# ---- README.md's multi-host recipe ---------------------------------------------------------------------

def readme_recipe() -> list[str]:
    """The commands of README.md's block tagged `multi-host`, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- multi-host -->\s*```sh\n(.*?)```", text, re.DOTALL)
    assert m is not None, "README.md lost its multi-host recipe"
    commands, current = [], ""
    for line in m.group(1).splitlines():
        line = line.split("  # ", 1)[0].rstrip().removesuffix("&").rstrip()   # (the test keeps the processes)
        if not line:
            continue
        current += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def as_on_this_net(command: str, net: TestNet) -> str:
    """The README's addresses (198.18.0.N, namespaces sl-hN) made this session's."""
    command = re.sub(r"\bsl-h(\d+)\b", lambda m: f"sl-h{m[1]}-{net.tag}", command)
    return command.replace("198.18.0.", f"198.18.{net.subnet}.")


def test_readme_multi_host_recipe_with_two_load_hosts(site: Site, tmp_path: Path) -> None:
    net = site.net
    for n in (2, 3, 5):
        net.host(n)
    commands = [as_on_this_net(c, net) for c in readme_recipe()]
    scheduler, worker, client = commands[0], commands[1], commands[-1]
    assert "dask scheduler" in scheduler and "dask worker" in worker and "--cluster" in client, commands
    assert worker.startswith(f"ip netns exec sl-h2-{net.tag} ") and f"sl-h3-{net.tag}" in commands[2], commands
    env = sipload_env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    if shutil.which("dask", path=env["PATH"]) is None:
        pytest.fail("the dask program is not installed (pip install 'dask[distributed]')")
    procs = [net.start(net.hosts[5], ["bash", "-c", scheduler.removeprefix(f"ip netns exec sl-h5-{net.tag} ")],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for c in commands[1:-1]:
        n = int(re.match(r"ip netns exec sl-h(\d+)-", c)[1])  # type: ignore[index]
        procs.append(net.start(net.hosts[n], ["bash", "-c", c.split(" ", 4)[4]], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_for_workers(scheduler, 2)   # as the README says: once both load hosts' workers have joined
    # the client's scenario: the README names scenarios/kamailio.toml; users of this module
    count = 40
    client = client.replace("scenarios/kamailio.toml", str(tmp_path / "scenario.toml"))
    (tmp_path / "scenario.toml").write_text(
        (REPO / "scenarios/kamailio.toml").read_text()
        .replace("count = 300", f"count = {count}\nfirst = 31900")
        .replace('duration = "25s"', 'duration = "40s"'))
    client_proc = subprocess.Popen(["bash", "-c", f"exec {client} --out {tmp_path / 'out'}"], cwd=REPO, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    try:
        held = trio.run(hold_then_interrupt, site, client_proc, users(31900, count))
        output = client_proc.communicate(timeout=60)[0]   # (a second SIGINT would abandon the unregistration)
    finally:
        stop(client_proc, signal.SIGKILL)
        for proc in procs:
            stop(proc)
    print(output[-3000:])
    per_host = Counter(c.split("@")[1].rsplit(":", 1)[0] for c in held)
    print(f"contacts per load host: {dict(per_host)}")
    assert set(per_host) == {net.address(2), net.address(3)}, held   # contacts from both load hosts
    assert sum(per_host.values()) == count
    assert client_proc.returncode == 130, output
    summary = read_summary(tmp_path / "out")
    assert summary["registrations"]["succeeded"] == count, summary["registrations"]   # totals equal
    assert summary["unregistrations"]["succeeded"] == count, summary["unregistrations"]


def wait_for_workers(scheduler: str, n: int) -> None:
    import distributed

    m = re.search(r"--host (\S+) --port (\d+)", scheduler)
    assert m is not None, scheduler
    client = None
    try:
        client = distributed.Client(f"tcp://{m[1]}:{m[2]}", timeout=30)
        client.wait_for_workers(n, timeout=60)
    finally:
        if client is not None:
            client.close()


async def hold_then_interrupt(site: Site, client: subprocess.Popen[str], names: list[str]) -> list[str]:
    """Once Kamailio holds every user: their contacts; then SIGINT to the client and none may be left."""
    async with KamailioRpc(site.kamailio.rpc_url) as rpc:
        contacts: list[str] = []

        async def all_held() -> bool:
            assert client.poll() is None, "sipload run ended early"
            statuses = await lookup_all(rpc, names)
            contacts[:] = [c.address for s in statuses.values() for c in s.contacts]
            return all(s.state is ProviderState.REGISTERED for s in statuses.values())

        await wait_until("Kamailio holding every user of the cluster run", all_held, timeout=90)
        client.send_signal(signal.SIGINT)

        async def none_left() -> bool:
            return all(s.state is ProviderState.NOT_REGISTERED for s in (await lookup_all(rpc, names)).values())

        await wait_until("no contact left after Ctrl-C", none_left, timeout=30)
    return contacts
