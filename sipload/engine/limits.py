"""Before a run: does the machine give it the file descriptors and local ports it will open?

A run that runs out of descriptors half-way (EMFILE on the 1,019th socket) or of ephemeral ports
(EADDRINUSE) fails in the middle with a confusing error. `check_resources` says so before anything
starts, with the numbers and the command that fixes it:

* descriptors: each worker process opens, per device group, one socket (UDP) or connection (TCP, TLS,
  WS, WSS: to each registrar of a failover list) per endpoint of its shard with `socket =
  "per-endpoint"`, else one per source address; plus a fixed
  allowance for trio, the interval logs, pipes to the workers and the embedded registrar. When
  the soft RLIMIT_NOFILE is too low but the hard limit is enough, the soft limit is raised (what
  `ulimit -n` does; worker processes inherit it); otherwise the message says `ulimit -n N`.
* ports: each of those sockets binds an ephemeral port on its source address; all workers share
  the range of `net.ipv4.ip_local_port_range` per address.

* addresses: every `source_addresses` (of `[endpoints]` and of each group) must be an address of this host
  (it is bound): one that is not is named, before anything starts.

`time_bound(scenario)` is the longest a run may take once it started: arrivals stop at the
duration and the unregistration is cut at its timeout, whatever the registrar does.
"""

from __future__ import annotations

import math
import resource
from pathlib import Path

from sipload.scenario import Scenario, SocketMode
from sipload.scenario.groups import Group
from sipload.transport.addresses import check_local

BASE_FDS = 64                 # trio, stdio, .hlog and intervals files, the embedded registrar, the probe
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_PORT_RANGE = (32768, 60999)
STOP_MARGIN_S = 15.0          # probe (4 s), worker start and join (10 s), writing results


def _group_sockets(group: Group, workers: int) -> int:
    """The most sockets / connections one worker opens for one device group (to one destination)."""
    ep = group.endpoints
    shard = math.ceil(group.count / max(1, workers))
    if ep.socket is SocketMode.PER_ENDPOINT:
        return shard
    hosts = len(ep.source_addresses) if ep.source_addresses is not None else 1
    return max(1, min(hosts, shard))


def _destinations(scenario: Scenario) -> int:
    """Connection-oriented channels are opened to each registrar of a failover list."""
    return 1 if scenario.target.outbound_proxy is not None else max(1, len(scenario.target.registrars))


def sockets_per_worker(scenario: Scenario, workers: int) -> int:
    """The most sockets / connections one worker process opens, every group together."""
    total = 0
    for group in scenario.fleet:
        if group.count:
            streams = group.transport.value not in ("udp",)
            total += _group_sockets(group, workers) * (_destinations(scenario) if streams else 1)
    return max(1, total)


def fds_needed(scenario: Scenario, workers: int) -> int:
    return sockets_per_worker(scenario, workers) + BASE_FDS + 2 * max(1, workers)


def ports_needed_per_address(scenario: Scenario, workers: int) -> int:
    """Local ports bound on the busiest source address, all workers and groups together (an upper bound)."""
    total = 0
    for group in scenario.fleet:
        if not group.count:
            continue
        ep = group.endpoints
        hosts = len(ep.source_addresses) if ep.source_addresses is not None else 1
        if ep.socket is SocketMode.PER_ENDPOINT:
            total += math.ceil(group.count / hosts)
        else:
            total += max(1, workers) * math.ceil(min(hosts, group.count) / hosts)
    return max(1, total)


def read_port_range(path: Path = PORT_RANGE_FILE) -> tuple[int, int]:
    try:
        low, high = (int(x) for x in path.read_text().split()[:2])
    except (OSError, ValueError):
        return DEFAULT_PORT_RANGE
    return (low, high) if 0 < low <= high <= 65535 else DEFAULT_PORT_RANGE


def check_source_addresses(scenario: Scenario) -> str | None:
    """None when this host has every source address the scenario binds, else which one it lacks."""
    ranges = [("endpoints.source_addresses", scenario.endpoints.source_addresses, scenario.endpoints.count)]
    ranges += [(f"groups[{g.name}].source_addresses", g.endpoints.source_addresses, g.count)
               for g in scenario.fleet if g.own_sources and g.count]
    seen: set[str] = set()
    for field, sources, used in ranges:
        if sources is None:
            continue
        for i in range(min(len(sources), used)):   # (no more addresses than endpoints are bound)
            host = sources[i]
            if host in seen:
                continue
            seen.add(host)
            why = check_local(host)
            if why is not None:
                return (f"{field}: {host} is not an address of this host ({why}); add it to an interface "
                        f"(ip addr add {host}/32 dev IFACE) or leave source_addresses out to send from "
                        f"the address routed toward the registrar")
    return None


def check_resources(
    scenario: Scenario,
    workers: int,
    *,
    nofile: tuple[int, int] | None = None,
    port_range: tuple[int, int] | None = None,
    raise_soft_limit: bool = True,
) -> str | None:
    """None when the run fits (the soft descriptor limit raised if needed and possible), else why not.

    `nofile` (soft, hard) and `port_range` (low, high) default to this process's limit and the
    kernel's range; tests pass their own.
    """
    missing = check_source_addresses(scenario)
    if missing is not None:
        return missing
    problems: list[str] = []
    ep = scenario.endpoints
    transports = {g.transport.value for g in scenario.fleet if g.count}
    what, one = ("sockets", "socket") if transports == {"udp"} else ("connections", "connection")
    if len(transports) > 1 and "udp" in transports:
        what, one = "sockets and connections", "socket or connection"
    per_endpoint = ep.socket is SocketMode.PER_ENDPOINT
    need = fds_needed(scenario, workers)
    soft, hard = nofile if nofile is not None else resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < need:
        if (hard == unlimited or hard >= need) and raise_soft_limit and nofile is None:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
                soft = need
            except (OSError, ValueError):
                pass
        if soft < need:
            sockets = sockets_per_worker(scenario, workers)
            kind = f"{'per-endpoint ' if per_endpoint else ''}{'/'.join(sorted(t.upper() for t in transports))} {what}"
            hard_text = "unlimited" if hard == unlimited else str(hard)
            fixes = [f"raise the limit: `ulimit -n {need}` in the shell that runs sipload"]
            if hard != unlimited and hard < need:
                fixes[0] += (f" (the hard limit is {hard_text}: raise it as root, e.g. `prlimit --nofile={need}` "
                             f"or LimitNOFILE= / /etc/security/limits.conf)")
            if per_endpoint:
                fixes.append("or use more worker processes (--workers) or endpoints.socket = \"shared\"")
            problems.append(
                f"this run needs about {need} file descriptors per process ({sockets} {kind} per worker "
                f"+ {need - sockets} for the rest) but the limit is {soft} (ulimit -n; hard limit {hard_text}): "
                + "; ".join(fixes)
            )
    low, high = port_range if port_range is not None else read_port_range()
    available = high - low + 1
    ports = ports_needed_per_address(scenario, workers)
    if ports > available:
        hosts = len(ep.source_addresses) if ep.source_addresses is not None else 1
        spread = math.ceil(ep.count / available) + 1
        problems.append(
            f"this run binds {ports} local ports on one source address (one per endpoint {one}, "
            f"{hosts} source address{'es' if hosts > 1 else ''}) but the ephemeral port range {low}-{high} "
            f"has {available}: spread the endpoints over more addresses "
            f"(endpoints.source_addresses = \"127.0.0.2-127.0.0.{min(254, 1 + spread)}\") or widen the range: "
            f"`sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\"`"
        )
    return "; ".join(problems) if problems else None


def time_bound(scenario: Scenario) -> float:
    """Seconds a run takes at most once started: the duration, the unregistration, a margin."""
    load = scenario.load
    unregister = load.unregister_timeout if load.unregister else 0.0
    return load.duration + unregister + STOP_MARGIN_S
