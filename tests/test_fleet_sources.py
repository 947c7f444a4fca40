"""Per-group sockets and source addresses, over real loopback sockets: a PBX's phones each on their own
UDP socket from a range of addresses, other phones sharing one socket, TCP softphones each on their own
connection from another range; the registrar's bindings show where every device's REGISTERs came from."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from functools import partial
from pathlib import Path

import trio

from sipload.engine.run import ExitCode, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import parse_scenario

FLEET = """
name = "sources"
seed = 9
[target]
registrar = ["sip:127.0.0.1:{udp}", "sip:127.0.0.1:{tcp};transport=tcp"]
domain = "sipload.test"
[endpoints]
count = 60
expires = 120
[load]
rate = 60
duration = "2s"
unregister = false
[[groups]]
name = "pbx"
count = 30
transport = "udp"
socket = "per-endpoint"
source_addresses = "127.0.0.2-127.0.0.5"
[[groups]]
name = "shared"
count = 20
transport = "udp"
[[groups]]
name = "soft"
count = 10
transport = "tcp"
socket = "per-endpoint"
source_addresses = "127.0.0.6-127.0.0.7"
"""


def in_range(host: str, first: str, last: str) -> bool:
    return int(ipaddress.ip_address(first)) <= int(ipaddress.ip_address(host)) <= int(ipaddress.ip_address(last))


async def test_each_group_sends_from_its_own_sockets_and_addresses(tmp_path: Path) -> None:
    settings = RegistrarSettings(realm="sipload.test", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, settings, [Listen("udp", "127.0.0.1", 0),
                                                                          Listen("tcp", "127.0.0.1", 0)], core=core))
        udp, tcp = (next(x.port for x in listens if x.transport == t) for t in ("udp", "tcp"))
        sc = parse_scenario(FLEET.format(udp=udp, tcp=tcp), Path("sources.toml"))
        with trio.fail_after(60):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                         workers=1)
        now = trio.current_time()
        bindings = {aor.split(":", 1)[1].split("@")[0]: b for aor, held in core.store.aors(now) for b in held}
        nursery.cancel_scope.cancel()
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    group_of = {e.username: e.group for e in outcome.result.endpoint_states}
    sources: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for user, binding in bindings.items():
        sources[group_of[user]].append((binding.source[0], binding.source[1], binding.transport))
    assert {g: len(s) for g, s in sources.items()} == {"pbx": 30, "shared": 20, "soft": 10}
    pbx, shared, soft = sources["pbx"], sources["shared"], sources["soft"]
    # per-endpoint sockets: a port of its own for every device, spread over the group's four addresses
    assert all(t == "udp" and in_range(h, "127.0.0.2", "127.0.0.5") for h, _, t in pbx)
    assert len({(h, p) for h, p, _ in pbx}) == 30 and len({h for h, _, _ in pbx}) == 4
    # the shared group: one socket, the default source
    assert {(h, t) for h, _, t in shared} == {("127.0.0.1", "udp")} and len({p for _, p, _ in shared}) == 1
    # TCP softphones: a connection each, from their own two addresses, to the TCP URI of the list
    assert all(t == "tcp" and in_range(h, "127.0.0.6", "127.0.0.7") for h, _, t in soft)
    assert len({(h, p) for h, p, _ in soft}) == 10 and len({h for h, _, _ in soft}) == 2
