"""`sipload registrar`: run the embedded registrar standalone (options -> settings -> serve)."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from functools import partial
from typing import Any

import click
import trio

from sipload.cli.options import DURATION, WHOLE_SECONDS, Duration
from sipload.emulators.app import serve_api
from sipload.emulators.knobs import NO_FAULTS, ApiKnobs, parse_knobs
from sipload.gcpolicy import hold_long_lived
from sipload.hostport import parse_host_port
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import TLS_TRANSPORTS, Listen
from sipload.registrar.ratelimit import default_challenge_rate
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import DelaySpec, RegistrarSettings, load_users, parse_delay
from sipload.registrar.stats import totals_line
from sipload.sip.digest import Algorithm

DEFAULT_LISTENS = ("udp:127.0.0.1:5062", "tcp:127.0.0.1:5062")
ALGORITHMS = ("MD5", "SHA-256", "SHA-512-256")


class _ListenType(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    name = "TRANSPORT:HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Listen:
        if isinstance(value, Listen):
            return value
        try:
            return Listen.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _DelayType(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    name = "DELAY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> DelaySpec:
        if isinstance(value, DelaySpec):
            return value
        try:
            return parse_delay(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command("registrar")
@click.option("--listen", "listens", multiple=True, type=_ListenType(), default=DEFAULT_LISTENS,
              show_default=True, help="Where to listen (repeatable): udp|tcp|tls|ws|wss:HOST:PORT (port 0: any).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate for tls/wss listens.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key for tls/wss listens.")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False),
              help="PEM CA file: tls/wss clients must present a certificate it signed.")
@click.option("--password", default=None, metavar="TEMPLATE",
              help="Password template, {user} = the digest username  [default: pw-{user}].")
@click.option("--users", type=click.Path(exists=True, dir_okay=False), help="File of 'user;password' lines.")
@click.option("--realm", default="sipload", show_default=True,
              help="Digest realm of the challenges (what the endpoints' passwords are hashed with).")
@click.option("--algorithm", "algorithms", multiple=True, type=click.Choice(ALGORITHMS, case_sensitive=False),
              help="Digest algorithm offered (repeatable)  [default: MD5].")
@click.option("--default-expires", type=WHOLE_SECONDS, default="3600", show_default=True,
              help="Binding lifetime granted when a REGISTER asks none (1h, 3600, ...).")
@click.option("--min-expires", type=WHOLE_SECONDS, default="60", show_default=True,
              help="Shorter asked expiries are refused with 423 Interval Too Brief (Min-Expires).")
@click.option("--max-expires", type=WHOLE_SECONDS, default="7200", show_default=True,
              help="Longer asked expiries are granted this long instead.")
@click.option("--nonce-lifetime", type=DURATION, default="300s", show_default=True,
              help="How long a nonce is accepted; after it the answer is 401 with stale=true.")
@click.option("--allow-user-mismatch", is_flag=True, help="Let a digest user register another To user.")
@click.option("--ignore-options", is_flag=True,
              help="Answer no OPTIONS (as SBCs that drop them from unknown sources); REGISTER is answered.")
@click.option("--drop", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of requests dropped.")
@click.option("--delay", type=_DelayType(), default="none", show_default=True,
              help="Response delay: 5ms | uniform:1ms:10ms | exp:2ms.")
@click.option("--error-503", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Share of requests answered 503.")
@click.option("--retry-after", type=Duration(whole_seconds=True), default="5", show_default=True,
              help="Retry-After of the injected 503s.")
@click.option("--seed", type=int, default=None, help="Seed of the fault injection and nonces.")
@click.option("-d", "--duration", type=DURATION, default=None,
              help="Stop after this long (30s, 1m, 1m30s; default: until Ctrl-C).")
@click.option("--api", "api", default=None, metavar="HOST:PORT",
              help="Serve the Telnyx, Audian and Ultravox emulators over HTTP, backed by this registrar.")
@click.option("--api-faults", default="", metavar="KNOBS",
              help="Fault knobs of the emulators, e.g. 'rate_limit_every=5,latency=10ms,stale_share=0.5'.")
@click.option("--challenge-rate", type=click.FloatRange(min=0.0), default=None,
              help="401 challenges per second per source IP; over it no answer is sent (0: no limit)  "
                   "[default: no limit when every --listen is loopback, else 100].")
@click.option("--flow-timeout", type=DURATION, default="0", show_default=True,
              help="Close a TCP/TLS/WS connection silent this long (no request, no keep-alive); its outbound "
                   "flows fail (Audian: device.offline). 0: never.")
@click.option("--quiet", is_flag=True, help="No per-second line.")
def registrar(
    listens: Sequence[Listen], tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None,
    password: str | None,
    users: str | None, realm: str, algorithms: Sequence[str], default_expires: int, min_expires: int,
    max_expires: int, nonce_lifetime: float, allow_user_mismatch: bool, ignore_options: bool, drop: float,
    delay: DelaySpec,
    error_503: float, retry_after: int, seed: int | None, duration: float | None, api: str | None,
    api_faults: str, challenge_rate: float | None, flow_timeout: float, quiet: bool,
) -> None:
    """Run the embedded registrar (digest auth, bindings with expiry, fault injection)."""
    if password is not None and users is not None:
        raise click.UsageError("give --password or --users, not both")
    if password is not None and "{user}" not in password:
        raise click.BadParameter("the template must contain {user}", param_hint="'--password'")
    user_table = None
    if users is not None:
        try:
            user_table = load_users(users)
        except (OSError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="'--users'") from None
    if not min_expires <= default_expires <= max_expires:
        raise click.UsageError(f"need --min-expires ({min_expires}) <= --default-expires ({default_expires})"
                               f" <= --max-expires ({max_expires})")
    tls_listens = [listen for listen in listens if listen.transport in TLS_TRANSPORTS]
    if tls_listens and not (tls_cert and tls_key):
        raise click.UsageError(f"--listen {tls_listens[0]} needs --tls-cert and --tls-key")
    if tls_client_ca and not tls_listens:
        raise click.UsageError("--tls-client-ca needs a tls or wss --listen")
    chosen = tuple(Algorithm(next(a for a in ALGORITHMS if a.lower() == name.lower()))
                   for name in algorithms) or (Algorithm.MD5,)
    try:
        settings = RegistrarSettings(
            realm=realm, password_template=password or "pw-{user}", users=user_table, algorithms=chosen,
            default_expires=default_expires, min_expires=min_expires, max_expires=max_expires,
            nonce_lifetime=nonce_lifetime, allow_user_mismatch=allow_user_mismatch,
            ignore_options=ignore_options, drop=drop, delay=delay,
            error_503=error_503, retry_after=retry_after, seed=seed, flow_timeout=flow_timeout,
            challenge_rate=(default_challenge_rate([listen.host for listen in listens])
                            if challenge_rate is None else challenge_rate),
        )
    except ValueError as exc:  # settings name the field: say which option it came from
        field, _, detail = str(exc).partition(": ")
        option = "--" + field.replace("_", "-")
        ctx = click.get_current_context()
        if detail and any(option in p.opts for p in ctx.command.params):
            raise click.BadParameter(detail, param_hint=f"'{option}'") from None
        raise click.UsageError(f"invalid registrar options: {exc}") from None
    api_address: tuple[str, int] | None = None
    knobs = NO_FAULTS
    try:
        if api is not None:
            api_address = parse_host_port(api)
        if api_faults:
            knobs = parse_knobs(api_faults)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--api'" if api_address is None else "'--api-faults'") from None
    failure = trio.run(partial(_run, settings, list(listens), tls_cert, tls_key, duration, quiet, api_address, knobs,
                               tls_client_ca))
    if failure is not None:
        raise click.ClickException(failure)


async def _run(settings: RegistrarSettings, listens: list[Listen], tls_cert: str | None,
               tls_key: str | None, duration: float | None, quiet: bool,
               api: tuple[str, int] | None = None, knobs: ApiKnobs = NO_FAULTS,
               tls_client_ca: str | None = None) -> str | None:
    """Serve until a signal or the duration; the error message when an address cannot be bound."""
    core = RegistrarCore(settings, now=trio.current_time())
    start = trio.current_time()
    failure: str | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                if duration is not None:
                    nursery.cancel_scope.deadline = start + duration
                bound = await nursery.start(partial(
                    serve_registrar, settings, listens, stats_interval=None if quiet else 1.0,
                    out=click.echo, core=core, tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca))
                for listen in bound:
                    click.echo(f"listening on {listen}")
                hold_long_lived()  # for the process's life: start-up objects out of GC, fewer full passes
                if api is not None:
                    port = await nursery.start(partial(
                        serve_api, core.store, api[0], api[1], knobs=knobs, registrar_settings=settings,
                        registrar=core))
                    click.echo(f"provider emulators on http://{api[0]}:{port} "
                               f"(Telnyx /v2, Audian /v1 and /v2, Ultravox /api/sip/registrations)")
                nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
        except* OSError as group:
            failure = "; ".join(str(exc) for exc in _leaves(group))
    if failure is None:
        now = trio.current_time()
        click.echo(totals_line(now - start, core.counters, core.store.count(now)))
    return failure


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


async def _stop_on_signal(signals: Any, scope: trio.CancelScope) -> None:
    async for signum in signals:
        click.echo(f"stopping on {signal.Signals(signum).name}")
        scope.cancel()
        return
