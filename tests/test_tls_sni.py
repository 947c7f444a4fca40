"""TLS and WSS: the server name (SNI) sent is the scenario's host; client certificates (mutual TLS)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from scenarios import refreshing_run
from sipload.engine.run import ExitCode, RunError, RunOutcome, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import parse_scenario
from sipload.transport.channels import open_stream_channel
from sipload.transport.stream import TlsOptions

TARGETS = {"tls": "sips:{host}:{port}", "wss": "sips:{host}:{port};transport=wss"}


async def run_tls(tmp_path: Path, transport: str, *, host: str = "localhost", client_cert: bool = False,
                  client_ca: bool = False) -> tuple[RunOutcome, RegistrarCore, list[str | None]]:
    """A run of 6 endpoints (with a certificate of their own: `client_cert`) against a registrar listening
    on `transport` (tls or wss); the SNI names it saw."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = ca.issue_cert(host)
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client = ca.issue_cert("phone-1.sipload.test")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    settings = RegistrarSettings(realm="sipload.test", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    names: list[str | None] = []
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(
            serve_registrar, settings, [Listen(transport, "127.0.0.1", 0)], core=core, out=lambda _: None,
            tls_cert=str(tmp_path / "server.pem"), tls_key=str(tmp_path / "server.key"),
            tls_client_ca=str(tmp_path / "ca.pem") if client_ca else None, on_sni=names.append))
        target = TARGETS[transport].format(host=host, port=listens[0].port)
        tls = {"tls_ca": str(tmp_path / "ca.pem")}
        if client_cert:
            tls |= {"tls_cert": str(tmp_path / "client.pem"), "tls_key": str(tmp_path / "client.key")}
        sc = parse_scenario(refreshing_run(transport, target, seed=9, count=6, rate=30, duration="1s", target=tls),
                            tmp_path / "s.toml")
        error: RunError | None = None
        try:
            with trio.fail_after(30):
                outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)
        except RunError as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return outcome, core, names


@pytest.mark.parametrize("transport", ["tls", "wss"])
async def test_the_sni_name_sent_is_the_scenario_host(tmp_path: Path, transport: str) -> None:
    outcome, _, names = await run_tls(tmp_path, transport, host="localhost")
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    assert names and set(names) == {"localhost"}          # the registrar URI's host, on every handshake
    assert outcome.result.registrations.succeeded == 6


async def test_no_sni_is_sent_when_the_host_is_an_address(tmp_path: Path) -> None:
    """An IP address is never sent as SNI (RFC 6066 §3): the registrar sees none."""
    outcome, _, names = await run_tls(tmp_path, "tls", host="127.0.0.1")
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    assert names and set(names) == {None}


@pytest.mark.parametrize("transport", ["tls", "wss"])
async def test_a_registrar_requiring_client_certificates_accepts_endpoints_that_have_one(
        tmp_path: Path, transport: str) -> None:
    outcome, core, _ = await run_tls(tmp_path, transport, client_cert=True, client_ca=True)
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    assert outcome.result.registrations.succeeded == 6 and outcome.result.unregistrations.succeeded == 6
    assert core.counters.received["REGISTER"] >= 6 * 3


async def test_wss_without_a_client_certificate_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    refused = r"cannot connect over WSS .*(CERTIFICATE_REQUIRED|requires a client certificate)"
    with pytest.raises(RunError, match=refused):
        await run_tls(tmp_path, "wss", client_ca=True)


async def test_tls_without_a_client_certificate_fails_every_registration(tmp_path: Path) -> None:
    """Over TLS 1.3 the client's handshake ends before the server checks its certificate: the refusal
    arrives as an alert on the first read, so no registration gets through (the registrar sees none)."""
    try:
        outcome, core, _ = await run_tls(tmp_path, "tls", client_ca=True)
    except RunError as exc:    # TLS 1.2: the handshake itself fails
        assert "certificate" in str(exc).lower()
        return
    assert outcome.exit_code is ExitCode.THRESHOLD_FAILED
    assert outcome.result.registrations.succeeded == 0 and outcome.result.registrations.failed == 6
    assert core.counters.received["REGISTER"] == 0


async def test_the_tls_channel_names_the_missing_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = ca.issue_cert("localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    settings = RegistrarSettings(realm="sipload.test")
    failures: list[str] = []
    failed = trio.Event()

    def on_failure(reason: str) -> None:
        failures.append(reason)
        failed.set()

    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(
            serve_registrar, settings, [Listen("tls", "127.0.0.1", 0)], out=lambda _: None,
            tls_cert=str(tmp_path / "server.pem"), tls_key=str(tmp_path / "server.key"),
            tls_client_ca=str(tmp_path / "ca.pem")))
        channel = open_stream_channel("TLS", "127.0.0.1", listens[0].port, lambda _: None, on_failure,
                                      tls=TlsOptions(ca_file=tmp_path / "ca.pem", server_name="localhost"))
        await channel.connect()
        nursery.start_soon(channel.run)
        channel.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        with trio.fail_after(10):
            await failed.wait()
        await channel.aclose()
        nursery.cancel_scope.cancel()
    assert "CERTIFICATE_REQUIRED" in failures[0] or "reset" in failures[0].lower(), failures
