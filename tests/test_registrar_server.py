"""The registrar on trio: real UDP / TCP / TLS sockets on 127.0.0.1, the delay queue under
MockClock, the `registrar` command with click's CliRunner (and once as a process, for SIGTERM)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from peers import HOW_TO_INSTALL_SIPP, have, require_peer, run_sipp
from sipload.cli.registrar import registrar
from sipload.registrar.bindings import ContactChange, RequestInfo, UserState
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import DelayQueue, serve_registrar
from sipload.registrar.settings import DelayKind, DelaySpec, RegistrarSettings
from sipload.sip.digest import DigestClient
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.parser import StreamFramer, parse_message
from sipload.sip.registration import Profile, Registration, RegState

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"


def make_registration(user: str, port: int, transport: str = "UDP", seed: int = 1) -> Registration:
    ids = IdSource(random.Random(seed))
    return Registration(
        Profile(domain="sipload.test", registrar_uri="sip:sipload.test", transport=transport),
        user=user, contact=f"sip:{user}@{LOOPBACK}:{port};transport={transport.lower()}",
        sent_by=f"{LOOPBACK}:{port}", auth=DigestClient(user, f"pw-{user}", cnonce=ids.cnonce), ids=ids,
    )


async def start_registrar(nursery: trio.Nursery, *listens: str, **kwargs: object) -> tuple[RegistrarCore, list[Listen]]:
    settings = RegistrarSettings(seed=1, **kwargs)  # type: ignore[arg-type]
    core = RegistrarCore(settings, now=trio.current_time())
    bound = await nursery.start(partial(serve_registrar, settings, [Listen.parse(x) for x in listens], core=core))
    return core, bound


async def register_over_udp(sock: trio.socket.SocketType, server: tuple[str, int], reg: Registration) -> list[int]:
    """Run one registration (no loss on loopback); the statuses received."""
    statuses: list[int] = []
    reg.start(trio.current_time())
    with trio.fail_after(5):
        for _ in range(10):
            for data in reg.take_outgoing():
                await sock.sendto(data, server)
            if reg.state in (RegState.REGISTERED, RegState.FAILED):
                return statuses
            data, _ = await sock.recvfrom(65535)
            response = parse_message(data)
            assert isinstance(response, Response)
            statuses.append(response.status)
            reg.receive(response, trio.current_time())
    raise AssertionError(f"registration did not finish: {statuses}")


async def test_udp_register_401_register_200_and_ports_from_nursery_start() -> None:
    async with trio.open_nursery() as nursery:
        core, bound = await start_registrar(nursery, "udp:127.0.0.1:0", "tcp:127.0.0.1:0")
        assert [b.transport for b in bound] == ["udp", "tcp"]
        assert all(b.host == LOOPBACK and b.port > 0 for b in bound)
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
            reg = make_registration("alice", port)
            assert await register_over_udp(sock, (LOOPBACK, bound[0].port), reg) == [401, 200]
        assert reg.state is RegState.REGISTERED
        (binding,) = core.store.bindings("sip:alice@sipload.test", trio.current_time())
        assert binding.source == (LOOPBACK, port) and binding.transport == "udp"
        assert core.counters.responses == {401: 1, 200: 1}
        nursery.cancel_scope.cancel()


async def test_udp_garbage_is_counted_not_answered() -> None:
    async with trio.open_nursery() as nursery:
        core, bound = await start_registrar(nursery, "udp:127.0.0.1:0")
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind((LOOPBACK, 0))
            await sock.sendto(b"\x00not sip\r\n\r\n", (LOOPBACK, bound[0].port))
            options = (f"OPTIONS sip:sipload.test SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:1;branch=z9hG4bKo\r\n"
                       "From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\r\n")
            await sock.sendto(options.encode(), (LOOPBACK, bound[0].port))
            with trio.fail_after(5):
                data, _ = await sock.recvfrom(65535)
        response = parse_message(data)
        assert isinstance(response, Response) and response.status == 200  # only the OPTIONS got an answer
        assert core.counters.parse_errors == 1
        nursery.cancel_scope.cancel()


async def _read_messages(stream: trio.abc.Stream, framer: StreamFramer, count: int) -> list[Response]:
    out: list[Response] = []
    with trio.fail_after(5):
        while len(out) < count:
            data = await stream.receive_some(65536)
            assert data, "connection closed early"
            for message in framer.feed(bytes(data)):
                assert isinstance(message, Response)
                out.append(message)
    return out


async def _register_over_stream(stream: trio.abc.Stream, transport: str, port: int) -> tuple[list[int], int]:
    """Ping, then REGISTER / 401 / REGISTER / 200 on one connection; (statuses, pongs seen)."""
    reg = make_registration("bob", port, transport=transport)
    reg.start(trio.current_time())
    framer = StreamFramer()
    (first,) = reg.take_outgoing()
    await stream.send_all(b"\r\n\r\n" + first)  # a keep-alive ping, then the request, in one segment
    statuses: list[int] = []
    for _ in range(2):
        (response,) = await _read_messages(stream, framer, 1)
        statuses.append(response.status)
        reg.receive(response, trio.current_time())
        for data in reg.take_outgoing():
            await stream.send_all(data)
    assert reg.state is RegState.REGISTERED
    return statuses, framer.pongs


async def test_tcp_framing_ping_answered_and_registration() -> None:
    async with trio.open_nursery() as nursery:
        core, bound = await start_registrar(nursery, "tcp:127.0.0.1:0")
        stream = await trio.open_tcp_stream(LOOPBACK, bound[0].port)
        async with stream:
            port = stream.socket.getsockname()[1]
            statuses, pongs = await _register_over_stream(stream, "TCP", port)
            assert statuses == [401, 200] and pongs == 1
            # two requests in one segment, the second split across two writes
            options = [
                (f"OPTIONS sip:sipload.test SIP/2.0\r\nVia: SIP/2.0/TCP {LOOPBACK}:{port};branch=z9hG4bKo{i}\r\n"
                 f"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: o{i}\r\nCSeq: 1 OPTIONS\r\n"
                 "Content-Length: 0\r\n\r\n").encode()
                for i in range(2)
            ]
            await stream.send_all(options[0] + options[1][:20])
            await stream.send_all(options[1][20:])
            replies = await _read_messages(stream, StreamFramer(), 2)
            assert [r.call_id for r in replies] == ["o0", "o1"] and {r.status for r in replies} == {200}
        (binding,) = core.store.bindings("sip:bob@sipload.test", trio.current_time())
        assert binding.transport == "tcp" and binding.source == (LOOPBACK, port)
        nursery.cancel_scope.cancel()


async def test_tcp_garbage_closes_the_connection() -> None:
    async with trio.open_nursery() as nursery:
        core, bound = await start_registrar(nursery, "tcp:127.0.0.1:0")
        stream = await trio.open_tcp_stream(LOOPBACK, bound[0].port)
        async with stream:
            await stream.send_all(b"GARBAGE LINE\r\nno colon here\r\n\r\n")
            with trio.fail_after(5):
                assert await stream.receive_some(100) == b""
        assert core.counters.parse_errors == 1
        nursery.cancel_scope.cancel()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if not have("openssl"):
        pytest.skip("the openssl program is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=sipload.test",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


async def test_tls_registration(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    settings = RegistrarSettings(seed=1)
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_registrar, settings, [Listen("tls", LOOPBACK, 0)], core=core,
                                            tls_cert=str(cert), tls_key=str(key)))
        context = ssl.create_default_context(cafile=str(cert))
        stream = await trio.open_ssl_over_tcp_stream(LOOPBACK, bound[0].port, ssl_context=context)
        async with stream:
            port = stream.transport_stream.socket.getsockname()[1]
            statuses, pongs = await _register_over_stream(stream, "TLS", port)
        assert statuses == [401, 200] and pongs == 1
        assert core.store.bindings("sip:bob@sipload.test", trio.current_time())[0].transport == "tls"
        nursery.cancel_scope.cancel()


async def test_tls_listen_without_files_is_an_error() -> None:
    with pytest.raises(ValueError, match="tls_cert"):
        await serve_registrar(RegistrarSettings(), [Listen("tls", LOOPBACK, 0)])


async def test_delayed_responses_do_not_hold_up_others() -> None:
    """20 requests at once with a 100 ms delay each: all answered after ~100 ms, not 2 s."""
    async with trio.open_nursery() as nursery:
        core, bound = await start_registrar(nursery, "udp:127.0.0.1:0", delay=DelaySpec(DelayKind.FIXED, 0.1))
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        with sock:
            await sock.bind((LOOPBACK, 0))
            start = trio.current_time()
            for i in range(20):
                request = (f"OPTIONS sip:sipload.test SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:1;branch=z9hG4bK{i}\r\n"
                           f"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: d{i}\r\nCSeq: 1 OPTIONS\r\n\r\n")
                await sock.sendto(request.encode(), (LOOPBACK, bound[0].port))
            with trio.fail_after(5):
                for _ in range(20):
                    await sock.recvfrom(65535)
            elapsed = trio.current_time() - start
        assert 0.1 <= elapsed < 1.0
        assert core.counters.responses == {200: 20}
        nursery.cancel_scope.cancel()


async def test_delay_queue_sends_in_time_order_from_one_task(autojump_clock: trio.testing.MockClock) -> None:
    queue = DelayQueue()
    sent: list[tuple[float, bytes]] = []

    def sender(data: bytes) -> None:
        sent.append((trio.current_time(), data))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        await trio.sleep(0)
        for at, name in ((5.0, b"c"), (1.0, b"a"), (3.0, b"b")):
            queue.push(at, sender, name)
        await trio.sleep(2.0)
        queue.push(2.5, sender, b"early")  # earlier than the pending head: re-arms the wait
        await trio.sleep(10.0)
        assert sent == [(1.0, b"a"), (2.5, b"early"), (3.0, b"b"), (5.0, b"c")]
        assert len(queue) == 0
        nursery.cancel_scope.cancel()


async def test_stats_lines_and_expiry_upkeep_on_a_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    settings = RegistrarSettings(seed=1)
    core = RegistrarCore(settings, now=trio.current_time())
    info = RequestInfo("c", 1, (LOOPBACK, 1), "udp")
    core.store.register("sip:u@d", "u", [ContactChange("sip:u@h", 2)], info, trio.current_time())
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_registrar, settings, [Listen("udp", LOOPBACK, 0)], core=core,
                                    stats_interval=1.0, out=lines.append))
        await trio.sleep(1.5)
        assert core.store.stored == 1
        await trio.sleep(2.0)  # the binding expired at 2 s; the upkeep tick at 3 s purged it
        assert core.store.stored == 0
        assert core.store.user_state("u", trio.current_time()).state is UserState.EXPIRED
        nursery.cancel_scope.cancel()
    assert len(lines) == 3
    assert lines[0].startswith("[     1.0s] rx/s=0 200=0 401=0 403=0 423=0 503=0")
    assert "live=1" in lines[0] and "live=0" in lines[2]


async def test_cancelling_closes_every_socket() -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            _, bound = await start_registrar(nursery, "udp:127.0.0.1:0", "tcp:127.0.0.1:0")
            scope.cancel()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with udp, tcp:
        udp.bind((LOOPBACK, bound[0].port))  # would fail with EADDRINUSE if still open
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((LOOPBACK, bound[1].port))
        tcp.listen()


async def test_bind_failure_names_the_address() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((LOOPBACK, 0))
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on udp:127.0.0.1:{port}"):
            await serve_registrar(RegistrarSettings(), [Listen("tcp", LOOPBACK, 0), Listen("udp", LOOPBACK, port)])


# --- the command ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--listen", "sctp:127.0.0.1:5"], "'--listen'"),
        (["--listen", "udp:localhost:5"], "'--listen'"),
        (["--listen", "udp:127.0.0.1:70000"], "'--listen'"),
        (["--drop", "1.5"], "'--drop'"),
        (["--error-503", "-1"], "'--error-503'"),
        (["--delay", "soon"], "'--delay'"),
        (["--delay", "uniform:5ms"], "'--delay'"),
        (["--algorithm", "SHA-1"], "'--algorithm'"),
        (["--duration", "forever"], "'--duration'"),
        (["--users", "/nonexistent/users.csv"], "'--users'"),
        (["--password", "static"], "'--password'"),
        (["--min-expires", "100", "--default-expires", "50"], "--min-expires"),
        (["--listen", "tls:127.0.0.1:0"], "--tls-cert"),
        (["--retry-after", "-3"], "'--retry-after'"),
        (["--realm", 'a"b'], "'--realm'"),
    ],
)
def test_command_bad_options_are_usage_errors(args: list[str], option: str) -> None:
    result = CliRunner().invoke(registrar, args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert "Traceback" not in result.output


def test_command_bad_users_file(tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("alice;pw\nbroken line\n")
    result = CliRunner().invoke(registrar, ["--users", str(users)])
    assert result.exit_code == 2 and "'--users'" in result.output and "users.csv:2" in result.output
    result = CliRunner().invoke(registrar, ["--users", str(users), "--password", "x{user}"])
    assert result.exit_code == 2 and "not both" in result.output


def test_command_runs_for_a_duration_and_prints_totals() -> None:
    result = CliRunner().invoke(
        registrar, ["--listen", "udp:127.0.0.1:0", "--listen", "tcp:127.0.0.1:0", "--duration", "50ms", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("listening on udp:127.0.0.1:") and lines[1].startswith("listening on tcp:")
    assert lines[-1].startswith("totals after") and "received=0" in lines[-1]


def _wait_for_line(proc: subprocess.Popen[str], prefix: str, limit: int = 50) -> str:
    assert proc.stdout is not None
    for _ in range(limit):
        line = proc.stdout.readline()
        if not line or line.startswith(prefix):
            return line
    return ""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_command_stops_cleanly_on_a_signal(signum: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "from sipload.cli.registrar import registrar; registrar()"
    with subprocess.Popen([sys.executable, "-c", code, "--listen", "udp:127.0.0.1:0", "--duration", "60"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert _wait_for_line(proc, "listening on udp:127.0.0.1:")
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "totals after" in out and "Traceback" not in err


# --- a third-party UA ------------------------------------------------------------------------------


@pytest.mark.interop
async def test_sipp_registers_against_the_embedded_registrar() -> None:
    require_peer("sipp", have("sipp"), HOW_TO_INSTALL_SIPP)
    assert shutil.which("sipp")
    async with trio.open_nursery() as nursery:
        core, bound = await start_registrar(nursery, "udp:127.0.0.1:0")
        run: Callable[[], object] = partial(run_sipp, f"{LOOPBACK}:{bound[0].port}", range(1, 21), 200, 20,
                                            timeout=30)
        result = await trio.to_thread.run_sync(run)
        assert getattr(result, "successful", None) == 20, result
        assert core.store.count(trio.current_time()).bindings == 20
        assert core.counters.responses[200] == 20 and core.counters.auth_failures == {}
        nursery.cancel_scope.cancel()
