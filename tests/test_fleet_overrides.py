"""Fleets meet the command line and the resource check: repeated --target (failover or a URI per
transport) keeps target.dns / ws_path / TLS files, and the descriptor count adds up every group."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipload.engine.limits import check_resources, fds_needed, sockets_per_worker
from sipload.scenario import ScenarioError, Transport, parse_scenario

FLEET = """
name = "f"
[target]
registrar = "sip:127.0.0.1:5070"
dns = "127.0.0.1:5353"
ws_path = "/sip"
transport = "ws"
[endpoints]
count = 100
password = "secret-{n}"
[load]
rate = 10
duration = "10s"
[[groups]]
name = "phones"
share = 0.6
transport = "udp"
[[groups]]
name = "soft"
share = 0.4
transport = "tcp"
socket = "per-endpoint"
"""


def test_repeated_target_is_a_failover_list_and_keeps_dns_and_ws_path() -> None:
    sc = parse_scenario(FLEET, Path("f.toml"))
    new = sc.with_overrides(target=["sip:127.0.0.2:5070;transport=ws", "sip:127.0.0.3:5070;transport=ws"])
    assert [str(u) for u in new.target.registrars] == ["sip:127.0.0.2:5070;transport=ws",
                                                        "sip:127.0.0.3:5070;transport=ws"]
    assert new.target.dns == ("127.0.0.1", 5353)
    assert new.target.ws_path == "/sip"
    assert new.target.transport is Transport.WS
    udp = sc.with_overrides(target="sip:127.0.0.2:5070")
    assert udp.target.dns == ("127.0.0.1", 5353)
    assert udp.target.ws_path == "/"          # not a WebSocket target: the path is not carried
    with pytest.raises(ScenarioError, match=r"--target: 'embedded' cannot be given with other targets"):
        sc.with_overrides(target=["embedded", "sip:127.0.0.2:5070"])
    with pytest.raises(ScenarioError, match=r"--target: .*got 'http://x'"):
        sc.with_overrides(target=["sip:127.0.0.2:5070", "http://x"])


def test_descriptors_add_up_every_group_and_each_failover_destination() -> None:
    one = parse_scenario(FLEET, Path("f.toml"))
    # 60 UDP devices share one socket; 40 TCP devices have a connection each
    assert sockets_per_worker(one, 1) == 1 + 40
    assert sockets_per_worker(one, 2) == 1 + 20
    two = one.with_overrides(target=["sip:127.0.0.2:5070", "sip:127.0.0.3:5070"])
    assert sockets_per_worker(two, 1) == 1 + 2 * 40   # a connection to each registrar of the list
    problem = check_resources(two, 1, nofile=(100, 100), port_range=(30000, 60000))
    assert problem is not None
    assert f"about {fds_needed(two, 1)} file descriptors" in problem
    assert "TCP/UDP sockets and connections" in problem
    assert "secret" not in problem
