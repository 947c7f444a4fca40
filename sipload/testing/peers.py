"""Real peers for tests and benchmarks: Kamailio and SIPp, which the project installs (peers/install) and
starts with its own scripts (peers/kamailio/start, stop), and free ports for them.

- ``start_kamailio`` / ``stop_kamailio``: wrap peers/kamailio/start and stop (fresh usrloc each start).
- ``run_sipp``: one bounded SIPp run of peers/sipp/register-digest.xml (REGISTER -> 401 -> REGISTER
  with digest -> 200) with an injection CSV, parsed from SIPp's own statistics file; ``prepare_sipp``
  lays out such a run (scenario, users) and gives its command line, for callers that run SIPp their own
  way (bench/ measures its CPU and round trips).
- ``in_ci``: CI=true, where a missing peer fails instead of being skipped.

Only loopback addresses and test hosts of tests/netns.py (198.18.0.0/15) are ever targets. The peers/
scripts are those of the source checkout this package is imported from.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "peers"
KAMAILIO_START = PEERS / "kamailio" / "start"
KAMAILIO_STOP = PEERS / "kamailio" / "stop"
SIPP_SCENARIO = PEERS / "sipp" / "register-digest.xml"
HOW_TO_INSTALL_KAMAILIO = "run peers/install (installs the Debian package kamailio)"
HOW_TO_INSTALL_SIPP = "run peers/install (installs the Debian package sip-tester)"


class PeerError(RuntimeError):
    """A peer could not be started, stopped or run; the message carries its output."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def have(program: str) -> bool:
    return shutil.which(program) is not None


def distinct_free_ports(n: int) -> list[int]:
    """`n` different ports, each free for TCP and UDP right now."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` right now (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise PeerError("no port free for both TCP and UDP")


def free_ports_in_a_row(n: int, host: str = "127.0.0.1") -> int:
    """The first of `n` consecutive ports, each free for TCP and UDP on `host` right now (Kamailio's SIP
    port, its JSON-RPC port next to it, ...)."""
    for _ in range(50):
        first = free_port(host)
        if first + n <= 65536 and all(_free_for_both(host, port) for port in range(first + 1, first + n)):
            return first
    raise PeerError(f"no {n} consecutive ports free for both TCP and UDP")


def _free_for_both(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            tcp.bind((host, port))
            udp.bind((host, port))
        except OSError:
            return False
    return True


TEST_HOSTS = ipaddress.ip_network("198.18.0.0/15")   # the benchmarking range tests/netns.py's test hosts use


def check_loopback(host: str) -> None:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
        loopback = address.is_loopback or address in TEST_HOSTS
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"only loopback targets or test hosts (198.18.0.0/15) are allowed, got {host!r}")


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Kamailio
# ---------------------------------------------------------------------------------------------

_START_LINE = re.compile(
    r"kamailio: pid (?P<pid>\d+) sip udp\+tcp (?P<host>[\d.]+):(?P<sip>\d+) rpc (?P<url>\S+) "
    r"rundir (?P<rundir>.+) \(up in (?P<ms>\d+) ms\)(?:; ws [\d.]+:(?P<ws>\d+))?(?:; tls [\d.]+:(?P<tls>\d+))?"
)


@dataclass(frozen=True, slots=True)
class KamailioPeer:
    """A running Kamailio started by peers/kamailio/start."""

    host: str
    port: int  # SIP, udp and tcp
    rpc_url: str  # http://127.0.0.1:5071/RPC
    rundir: Path
    pid: int
    startup_ms: int  # from launch to the first JSON-RPC answer
    ws_port: int | None = None  # SIP over WebSocket, when the websocket module is installed
    tls_port: int | None = None  # SIP over TLS, when started with a certificate

    @property
    def target(self) -> str:
        """host:port, as SIPp takes it."""
        return f"{self.host}:{self.port}"


def _kamailio_env(rundir: Path | None, sip_port: int | None, rpc_port: int | None,
                  ws_port: int | None = None, host: str | None = None,
                  tls: tuple[Path, Path] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if host is not None:
        env["SIPLOAD_KAMAILIO_HOST"] = host
    if tls is not None:
        env["SIPLOAD_KAMAILIO_TLS_CERT"], env["SIPLOAD_KAMAILIO_TLS_KEY"] = str(tls[0]), str(tls[1])
    if ws_port is not None:
        env["SIPLOAD_KAMAILIO_WS_PORT"] = str(ws_port)
    if rundir is not None:
        env["SIPLOAD_KAMAILIO_RUNDIR"] = str(rundir)
    if sip_port is not None:
        env["SIPLOAD_KAMAILIO_PORT"] = str(sip_port)
    if rpc_port is not None:
        env["SIPLOAD_KAMAILIO_RPC_PORT"] = str(rpc_port)
    return env


def start_kamailio(
    rundir: Path | None = None,
    sip_port: int | None = None,
    rpc_port: int | None = None,
    timeout: float = 60.0,
    ws_port: int | None = None,
    host: str | None = None,
    netns: str | None = None,
    tls: tuple[Path, Path] | None = None,
) -> KamailioPeer:
    """Run peers/kamailio/start (defaults: peers/run/kamailio, 5070, 5071 or the SIPLOAD_KAMAILIO_* env).

    `host` (with `netns`, the network namespace of a test host, see tests/netns.py) makes every listener
    bind that address; `tls` (certificate, key) adds SIP over TLS on SIP port + 1."""
    if ws_port is None and sip_port is not None:  # on ports of its own: a WS port of its own too, never SIP+2
        ws_port = next(p for p in iter(free_port, None) if p not in (sip_port, rpc_port, sip_port + 1))
    env = _kamailio_env(rundir, sip_port, rpc_port, ws_port, host, tls)
    command = [str(KAMAILIO_START)] if netns is None else ["ip", "netns", "exec", netns, str(KAMAILIO_START)]
    try:
        proc = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"peers/kamailio/start did not finish within {timeout:g} s") from exc
    m = _START_LINE.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        raise PeerError(
            f"peers/kamailio/start failed (exit {proc.returncode}):\n{_tail(proc.stdout)}\n{_tail(proc.stderr)}"
        )
    return KamailioPeer(
        host=m["host"],
        port=int(m["sip"]),
        rpc_url=m["url"],
        rundir=Path(m["rundir"]),
        pid=int(m["pid"]),
        startup_ms=int(m["ms"]),
        ws_port=int(m["ws"]) if m["ws"] else None,
        tls_port=int(m["tls"]) if m["tls"] else None,
    )


def stop_kamailio(rundir: Path | None = None, timeout: float = 30.0) -> str:
    """Run peers/kamailio/stop; returns its one-line report."""
    try:
        proc = subprocess.run(
            [str(KAMAILIO_STOP)],
            env=_kamailio_env(rundir, None, None),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"peers/kamailio/stop did not finish within {timeout:g} s") from exc
    if proc.returncode != 0:
        raise PeerError(f"peers/kamailio/stop failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip()


# ---------------------------------------------------------------------------------------------
# SIPp
# ---------------------------------------------------------------------------------------------

# SIPp exit codes (sipp(1)): 0 all calls succeeded, 1 at least one failed, others are errors.
_SIPP_EXIT = {
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


@dataclass(frozen=True, slots=True)
class SippResult:
    """What one SIPp run did, from its statistics file (cumulative counters)."""

    successful: int
    failed: int
    retransmissions: int
    created: int
    returncode: int
    local_port: int
    counters: Mapping[str, str] = field(default_factory=dict)  # the last stat row, "(C)" columns
    output_tail: str = ""


def user_name(user: int | str) -> str:
    return f"user{user}" if isinstance(user, int) else user


def write_injection_csv(path: Path, users: Iterable[int | str]) -> int:
    """SIPp -inf file: SEQUENTIAL, then `userN;pw-userN;[authentication username=userN password=pw-userN]`.

    The whole [authentication ...] keyword is a field: SIPp 3.6.1 garbles nested [fieldN] in it.
    """
    lines = ["SEQUENTIAL"]
    for user in users:
        name = user_name(user)
        password = f"pw-{name}"
        lines.append(f"{name};{password};[authentication username={name} password={password}]")
    if len(lines) == 1:
        raise ValueError("no users for the injection file")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def parse_sipp_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp -trace_stat CSV (`;`-separated, one header line), by column name."""
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=";") if row]
    if len(rows) < 2:
        raise PeerError(f"SIPp statistics file {path} has no data rows")
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


SIPP_STAT = "stat.csv"   # the -trace_stat file of a run laid out by prepare_sipp


def prepare_sipp(
    run_dir: Path,
    target: str,
    users: Iterable[int | str],
    rate: float,
    total: int,
    *extra_args: str,
    expires: int = 3600,
    transport: str = "u1",
    local_port: int,
    timeout: float,
    local_ip: str = "127.0.0.1",
    netns: str | None = None,
) -> list[str]:
    """Lay out a SIPp run in `run_dir` (the scenario, users.csv) and return its command line, to be run
    with `run_dir` as working directory: `total` digest registrations at `rate`/s against `target`
    (host:port, loopback or a test host), statistics in `SIPP_STAT`, ended by SIPp itself after
    `timeout` s. PeerError when sipp is not installed; ValueError for a target that is not allowed."""
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"target must be host:port, got {target!r}")
    check_loopback(host)
    sipp = shutil.which("sipp")
    if sipp is None:
        raise PeerError(f"sipp not found: {HOW_TO_INSTALL_SIPP}")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SIPP_SCENARIO, run_dir / SIPP_SCENARIO.name)
    write_injection_csv(run_dir / "users.csv", users)
    return [
        *(["ip", "netns", "exec", netns] if netns is not None else []),
        sipp, target,
        "-sf", SIPP_SCENARIO.name, "-inf", "users.csv",
        "-i", local_ip, "-p", str(local_port), "-t", transport,
        "-r", f"{rate:g}", "-rp", "1000", "-m", str(total), "-l", "4000",
        "-buff_size", "4194304",
        "-nostdin", "-trace_stat", "-stf", SIPP_STAT, "-fd", "1",
        "-timeout", f"{max(1, int(timeout))}", "-timeout_error",
        "-key", "expires", str(expires),
        *extra_args,
    ]  # fmt: skip


def run_sipp(
    target: str,
    users: Iterable[int | str],
    rate: float,
    total: int,
    *extra_args: str,
    expires: int = 3600,
    transport: str = "u1",
    local_port: int | None = None,
    timeout: float = 60.0,
    workdir: Path | None = None,
    local_ip: str = "127.0.0.1",
    netns: str | None = None,
) -> SippResult:
    """Run SIPp once: `total` digest registrations at `rate`/s against `target` (host:port, loopback).

    Users are ints (-> userN) or names; passwords are pw-<name>. Contact is
    sip:<name>@127.0.0.1:<local_port>;transport=UDP (TCP for -t t1). `expires` fills the scenario's
    Expires (0 unregisters). SIPp runs in a temp dir (or `workdir`), bounded by `timeout` twice:
    its own -timeout, and a hard kill 10 s later. `netns` runs it on a test host (tests/netns.py),
    sending from `local_ip`.
    """
    if local_port is None:
        local_port = free_port() if netns is None else 5080   # a test host's namespace has every port free
    with tempfile.TemporaryDirectory(prefix="sipload-sipp-") as tmp:
        run_dir = workdir if workdir is not None else Path(tmp)
        cmd = prepare_sipp(run_dir, target, users, rate, total, *extra_args, expires=expires, transport=transport,
                           local_port=local_port, timeout=timeout, local_ip=local_ip, netns=netns)
        stat = run_dir / SIPP_STAT
        out = run_dir / "sipp.out"
        with out.open("w") as out_f:
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=run_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out_f,
                    stderr=subprocess.STDOUT,
                    timeout=timeout + 10,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise PeerError(
                    f"sipp did not finish within {timeout + 10:g} s (killed):\n{_tail(out.read_text())}"
                ) from exc
        output_tail = _tail(out.read_text(errors="replace"))
        if proc.returncode not in (0, 1) or not stat.exists():
            meaning = _SIPP_EXIT.get(proc.returncode, "unexpected exit code")
            raise PeerError(f"sipp exited {proc.returncode} ({meaning}): {' '.join(cmd)}\n{output_tail}")
        row = parse_sipp_stats(stat)

    def count(name: str) -> int:
        value = row.get(name)
        if value is None or not value.strip().isdigit():
            raise PeerError(f"SIPp statistics lack an integer {name!r}")
        return int(value)

    return SippResult(
        successful=count("SuccessfulCall(C)"),
        failed=count("FailedCall(C)"),
        retransmissions=count("Retransmissions(C)"),
        created=count("TotalCallCreated"),
        returncode=proc.returncode,
        local_port=local_port,
        counters={k: v for k, v in row.items() if k.endswith("(C)")},
        output_tail=output_tail,
    )
