"""Test hosts on this machine: network namespaces on a bridge, as in shared/reference/README.md.

A `TestNet` is one bridge in the root namespace (`slbr<tag>`, 198.18.S.1/24 and 2001:db8:S::1/64)
and, per test host N, a namespace `sl-h<N>-<tag>` joined to it by a veth pair, at 198.18.S.N and
2001:db8:S::N. The tag is the pytest process id and the subnet S is one no route of this host uses
yet, so that test sessions running side by side never share a bridge or a subnet. Addresses come
from the benchmarking range 198.18.0.0/15 (RFC 2544) and the IPv6 documentation range 2001:db8::/32:
traffic goes only to hosts the test made. Everything is removed at the end, even on failure
(deleting a namespace removes its end of the veth pair, and the pair with it).

`make_test_hosts()` is the context manager; without root or without `ip` it skips the test with the reason,
and under CI=true it fails instead (CI runs as root: namespaces must work there).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from peers import in_ci


class NetnsError(RuntimeError):
    """An `ip` command failed while building test hosts."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def why_no_namespaces() -> str | None:
    """None when this process can make test hosts; else why not."""
    if shutil.which("ip") is None:
        return "the ip program (iproute2) is not installed: run peers/install"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def require_namespaces() -> None:
    """Skip (elsewhere) or fail (CI=true) the calling test when namespaces cannot be made."""
    reason = why_no_namespaces()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"cannot make test hosts: {reason} (CI=true: network namespace tests must run)", pytrace=False)
    pytest.skip(f"cannot make test hosts: {reason}")


def _used_subnets() -> set[int]:
    """The third octets of 198.18.x.0/24 that a route of the root namespace already covers."""
    used: set[int] = set()
    out = _ip("-4", "route", "show", check=False).stdout
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if net.overlaps(ipaddress.ip_network("198.18.0.0/16")):
            for sub in ipaddress.ip_network("198.18.0.0/16").subnets(new_prefix=24):
                if sub.overlaps(net):
                    used.add(int(sub.network_address.packed[2]))
    return used


@dataclass
class Host:
    """One test host: a namespace and its addresses on the bridge."""

    n: int
    netns: str
    ipv4: str
    ipv6: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def run(self, *cmd: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.exec_prefix(), *cmd], capture_output=True, text=True, timeout=timeout,
                              check=False)

    def popen(self, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """A process on this host (own process group: `stop` signals all of it)."""
        return subprocess.Popen([*self.exec_prefix(), *cmd], text=True, start_new_session=True,
                                **kwargs)  # type: ignore[call-overload]


@dataclass
class TestNet:
    """A bridge and its test hosts (see the module docstring)."""

    tag: str
    subnet: int
    hosts: dict[int, Host] = field(default_factory=dict)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    __test__ = False   # not a pytest class

    @property
    def bridge(self) -> str:
        return f"slbr{self.tag}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (where sipload runs when not on a test host)."""
        return f"198.18.{self.subnet}.1"

    @property
    def gateway6(self) -> str:
        return f"2001:db8:{self.subnet:x}::1"

    def address(self, n: int) -> str:
        return f"198.18.{self.subnet}.{n}"

    def _create_bridge(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("-6", "addr", "add", f"{self.gateway6}/64", "dev", self.bridge, "nodad")
        _ip("link", "set", self.bridge, "up")

    def host(self, n: int) -> Host:
        """Test host N (made on first use) at 198.18.S.N / 2001:db8:S::N."""
        if n in self.hosts:
            return self.hosts[n]
        if not 2 <= n <= 254:
            raise ValueError(f"host number must be 2-254, got {n}")
        netns = f"sl-h{n}-{self.tag}"
        veth = f"slv{self.tag}-{n}"
        host = Host(n, netns, self.address(n), f"2001:db8:{self.subnet:x}::{n:x}")
        _ip("netns", "add", netns)
        self.hosts[n] = host
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "addr", "add", f"{host.ipv4}/24", "dev", "eth0")
        _ip("-n", netns, "-6", "addr", "add", f"{host.ipv6}/64", "dev", "eth0", "nodad")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        return host

    def start(self, host: Host, cmd: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """A process on `host`, stopped (its whole process group) when the net is torn down."""
        proc = host.popen(cmd, **kwargs)
        self.procs.append(proc)
        return proc

    def teardown(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        for host in self.hosts.values():
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal a process started by `Host.popen` (its process group), then kill what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def make_test_hosts() -> Iterator[TestNet]:
    """A fresh bridge for test hosts (skips / fails under CI=true when namespaces cannot be made)."""
    require_namespaces()
    tag = str(os.getpid() % 100000)
    used = _used_subnets()
    subnet = next((s for s in range(2 + os.getpid() % 200, 255) if s not in used), None)
    subnet = subnet if subnet is not None else next(s for s in range(2, 255) if s not in used)
    net = TestNet(tag, subnet)
    _ip("link", "del", net.bridge, check=False)        # left by a killed session of the same pid
    try:
        try:
            net._create_bridge()
        except NetnsError as exc:
            if in_ci():
                raise
            pytest.skip(f"cannot make test hosts: {exc}")
        yield net
    finally:
        net.teardown()


def write_pem_pair(directory: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `host` (an IP address): (ca.pem, server.pem, server.key)."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(host)
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(paths[0]))
    leaf.cert_chain_pems[0].write_to_path(str(paths[1]))
    leaf.private_key_pem.write_to_path(str(paths[2]))
    return paths
