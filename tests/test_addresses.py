"""Which address sipload binds and what it writes in Via and Contact (loopback; test hosts: test_netns.py).

- the kernel's routed source toward a loopback destination is loopback (IPv4 and IPv6);
- a run to `sip:[::1]:PORT` binds ::1 and registers `sip:user@[::1]:PORT` with the socket's real port;
- `advertised_address` changes what Via and Contact say, not what is bound: the registrar answers the
  real source (it honours rport), stores the advertised host with the real port;
- `source_addresses` naming an address this host does not have: one line naming it, exit 2.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
from interop_helpers import run_sipload

from sipload.engine.run import ExitCode, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import ScenarioError, parse_scenario
from sipload.transport.addresses import check_local, hostport, routed_source

BODY = """
name = "addresses"
thresholds = ["register.success_rate == 100%", "failures == 0"]
[target]
registrar = "{target}"
domain = "sipload.test"
[endpoints]
count = 6
expires = 30
{extra}
[load]
rate = 30
duration = "1s"
interval = "500ms"
unregister = false
"""


def test_loopback_destinations_are_routed_from_loopback() -> None:
    assert routed_source(("127.0.0.1", 5060)) == "127.0.0.1"
    assert routed_source(("127.0.0.9", 5060)).startswith("127.")
    assert routed_source(("::1", 5060)) == "::1"
    assert hostport("::1", 5080) == "[::1]:5080" and hostport("198.18.0.1", 5080) == "198.18.0.1:5080"
    assert check_local("127.0.0.1") is None
    assert check_local("192.0.2.77") == "this host has no such address"   # TEST-NET-1: no host has it


async def registered(tmp_path: Path, host: str, extra: str = "") -> list[tuple[str, tuple[str, int]]]:
    """Run 6 endpoints against a registrar on `host`; (contact, source) of every binding it holds."""
    core = RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1), now=trio.current_time())
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, core.settings, [Listen("udp", host, 0)], core=core,
                                              out=lambda _: None))
        target = f"sip:{hostport(host, listens[0].port)}"
        sc = parse_scenario(BODY.format(target=target, extra=extra), tmp_path / "s.toml")
        with trio.fail_after(30):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)
        assert outcome.exit_code is ExitCode.OK, outcome.result.notes
        held = [(b.contact, b.source) for _, bindings in core.store.aors(trio.current_time()) for b in bindings]
        nursery.cancel_scope.cancel()
    assert len(held) == 6
    return held


async def test_an_ipv6_target_binds_ipv6_and_says_so(tmp_path: Path) -> None:
    for contact, source in await registered(tmp_path, "::1"):
        assert source[0] == "::1"
        assert contact.endswith(f"@[::1]:{source[1]};transport=udp"), (contact, source)


async def test_advertised_address_is_written_not_bound(tmp_path: Path) -> None:
    held = await registered(tmp_path, "127.0.0.1", 'advertised_address = "203.0.113.7"')
    for contact, source in held:
        assert source[0] == "127.0.0.1"          # bound: loopback (routed toward the registrar)
        assert contact.endswith(f"@203.0.113.7:{source[1]};transport=udp"), (contact, source)


@pytest.mark.parametrize(("value", "why"), [
    ("203.0.113.7:5060", "no port"),
    ("not an address", "IP address or a host name"),
    ("", "IP address or a host name"),
])
def test_advertised_address_is_validated(tmp_path: Path, value: str, why: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BODY.format(target="sip:127.0.0.1:5060", extra=f'advertised_address = "{value}"'),
                       tmp_path / "s.toml")
    assert "endpoints.advertised_address" in str(info.value) and why in str(info.value)


def test_advertised_address_per_group(tmp_path: Path) -> None:
    text = BODY.format(target="sip:127.0.0.1:5060", extra='advertised_address = "[2001:db8::7]"') + """
[[groups]]
name = "natted"
share = 0.5
advertised_address = "pbx.example.com"
[[groups]]
name = "plain"
share = 0.5
"""
    sc = parse_scenario(text, tmp_path / "s.toml")
    assert sc.endpoints.advertised_address == "2001:db8::7"
    assert {g.name: g.endpoints.advertised_address for g in sc.fleet} == {
        "natted": "pbx.example.com", "plain": "2001:db8::7"}


async def test_a_source_address_this_host_lacks_is_one_line_and_exit_2(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(BODY.format(target="sip:127.0.0.1:9", extra='source_addresses = "127.0.0.2-127.0.0.3"')
                        .replace('source_addresses = "127.0.0.2-127.0.0.3"',
                                 'source_addresses = "192.0.2.77"'))
    run = await run_sipload("run", str(scenario), "--out", str(tmp_path / "out"), timeout=60)
    assert run.returncode == 2, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run
    assert "endpoints.source_addresses: 192.0.2.77 is not an address of this host" in lines[0], run
    assert not (tmp_path / "out").exists()
