"""The engine over TCP and TLS (real sockets on loopback), shared and per-endpoint connections."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from scenarios import PASSING, Table, Value, refreshing_run
from sipload.engine.run import ExitCode, RunError, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import parse_scenario
from sipload.sip import parse_uri


def body(name: str, target: str, socket: str = "shared", tls: Table | None = None, **endpoints: Value) -> str:
    """12 endpoints registering, refreshing and unregistering within 1.5 s; `tls`: more [target] keys."""
    return refreshing_run(name, target, seed=3, count=12, rate=40, duration="1500ms", target=tls,
                          thresholds=[*PASSING, "retransmissions == 0"], endpoints={**endpoints, "socket": socket})


async def run_against(tmp_path: Path, transport: str, socket: str = "shared", tls: Table | None = None,
                      cert: trustme.LeafCert | None = None) -> tuple[object, RegistrarCore]:
    settings = RegistrarSettings(realm="sipload.test", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        tls_files: dict[str, str] = {}
        if cert is not None:
            cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
            cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
            tls_files = {"tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem")}
        listens = await nursery.start(partial(serve_registrar, settings, [Listen(transport, "127.0.0.1", 0)],
                                              core=core, **tls_files))
        port = listens[0].port
        scheme = "sips" if transport == "tls" else "sip"
        uri = f"{scheme}:localhost:{port}" if transport == "tls" else f"sip:127.0.0.1:{port};transport={transport}"
        sc = parse_scenario(body(transport, uri, socket, tls), tmp_path / "s.toml")
        error: RunError | None = None
        with trio.fail_after(30):
            try:
                outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)
            except RunError as exc:
                error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return outcome, core


@pytest.mark.parametrize("socket", ["shared", "per-endpoint"])
async def test_tcp_registers_refreshes_unregisters(tmp_path: Path, socket: str) -> None:
    outcome, core = await run_against(tmp_path, "tcp", socket)
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes  # type: ignore[attr-defined]
    result = outcome.result  # type: ignore[attr-defined]
    assert result.registrations.succeeded == 12 and result.unregistrations.succeeded == 12
    assert result.refreshes.succeeded >= 12
    assert core.store.count(trio.current_time()).bindings == 0
    contacts = {row.contact for row in result.endpoint_states}
    assert all(";transport=tcp" in c for c in contacts)
    ports = {parse_uri(c).port for c in contacts}
    assert len(ports) == (12 if socket == "per-endpoint" else 1)


async def test_tls_with_verification_against_a_trusted_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    outcome, core = await run_against(tmp_path, "tls", tls={"tls_ca": str(tmp_path / "ca.pem")}, cert=cert)
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes  # type: ignore[attr-defined]
    assert outcome.result.registrations.succeeded == 12  # type: ignore[attr-defined]
    assert core.store.count(trio.current_time()).bindings == 0


async def test_tls_verification_failure_is_a_clear_error(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("localhost")   # a CA the client does not trust
    with pytest.raises(RunError, match="certificate verification failed: unable to get local issuer"):
        await run_against(tmp_path, "tls", cert=cert)


async def test_tls_without_verification_when_asked(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("localhost")
    outcome, _ = await run_against(tmp_path, "tls", tls={"tls_verify": False}, cert=cert)
    assert outcome.exit_code is ExitCode.OK  # type: ignore[attr-defined]


async def test_tcp_connection_refused_is_a_clear_error(tmp_path: Path) -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # bound, not listening: connections are refused
        sc = parse_scenario(body("x", f"sip:127.0.0.1:{port};transport=tcp"), tmp_path / "s.toml")
        with trio.fail_after(10), pytest.raises(RunError, match=r"cannot connect over TCP.*refused"):
            await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)


@pytest.mark.parametrize("socket", ["shared", "per-endpoint"])
async def test_udp_source_addresses_spread_over_a_range(tmp_path: Path, socket: str) -> None:
    settings = RegistrarSettings(realm="sipload.test", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    seen: set[tuple[str, int]] = set()
    handle = core.handle

    def spy(request, source, transport, now):  # type: ignore[no-untyped-def]
        if request.method == "REGISTER":
            seen.add(source)
        return handle(request, source, transport, now)

    core.handle = spy  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, settings, [Listen("udp", "127.0.0.1", 0)], core=core))
        sc = parse_scenario(body("src", f"sip:127.0.0.1:{listens[0].port}", socket,
                                 source_addresses="127.0.0.2-127.0.0.4"), tmp_path / "s.toml")
        with trio.fail_after(30):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)
        nursery.cancel_scope.cancel()
    assert outcome.exit_code is ExitCode.OK
    assert {host for host, _ in seen} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    assert len({port for _, port in seen}) == (12 if socket == "per-endpoint" else len(seen))
    contacts = {row.contact for row in outcome.result.endpoint_states}
    assert {parse_uri(c).host for c in contacts} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}


async def test_a_run_that_cannot_start_leaves_no_results_directory(tmp_path: Path) -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        sc = parse_scenario(body("x", f"sip:127.0.0.1:{port};transport=tcp"), tmp_path / "s.toml")
        with pytest.raises(RunError):
            await run_scenario(sc, tmp_path / "never", progress=lambda _: None, handle_signals=False)
    assert not (tmp_path / "never").exists()
