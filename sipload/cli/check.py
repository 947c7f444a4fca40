"""`sipload check`: ask a provider about each endpoint and compare with what sipload knows.

    sipload check --provider telnyx --base-url http://127.0.0.1:8089/v2 --users 'user{n}' --count 200
    sipload check --provider audian --account-id acc_1 --results results/20250101T000000Z-smoke

Exit code: 0 when the agreement rate reaches --min-agreement (default 100), 1 when it does not,
2 on usage errors (bad options, missing API key, unreadable results).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import click
import trio

from sipload.cli.options import DURATION, POSITIVE_DURATION
from sipload.providers.crosscheck import CrossCheckResult, OurEndpoint, run_crosscheck
from sipload.providers.crosscheck_text import result_lines
from sipload.providers.event_watch import watch_events
from sipload.providers.events import EventsResult
from sipload.providers.run_endpoints import EndpointsError, load_endpoints, template_endpoints
from sipload.providers.settings import PROVIDERS, CrossCheckConfig
from sipload.providers.sources import AudianSource, UltravoxSource, open_source, refuse_wrong_base_url
from sipload.providers.status import ProviderError
from sipload.providers.ultravox_setup import create_registrations, delete_registrations
from sipload.report.result import EndpointState

EXIT_OK = 0
EXIT_DISAGREE = 1
EXIT_USAGE = 2
LOGGED_DEVICES = 3


@dataclass
class CheckOutcome:
    result: CrossCheckResult
    logs: dict[str, list[str]] = field(default_factory=dict)   # user -> its last device log lines (Audian)
    events: EventsResult | None = None


async def check_endpoints(endpoints: list[OurEndpoint], config: CrossCheckConfig,
                          ultravox: UltravoxSetup | None = None, *, log_lines: int = 0,
                          events_for: float = 0.0) -> CheckOutcome:
    if events_for > 0:
        async with watch_events(config) as watch:
            click.echo(f"sipload check: watching {config.provider} webhooks at {watch.url} for {events_for:g} s")
            await trio.sleep(events_for)
            states = [EndpointState(0, e.username, e.state, None, "", 0, 0, "", "") for e in endpoints]
            events = await watch.finish(states, 0.0)
        outcome = await _check(endpoints, config, ultravox, log_lines)
        outcome.events = events
        return outcome
    return await _check(endpoints, config, ultravox, log_lines)


async def _check(endpoints: list[OurEndpoint], config: CrossCheckConfig, ultravox: UltravoxSetup | None,
                 log_lines: int) -> CheckOutcome:
    source = open_source(config)
    created: dict[str, str] = {}
    try:
        await refuse_wrong_base_url(source)  # one line and exit 2, not a 404 per user
        if ultravox is not None and isinstance(source, UltravoxSource):
            users = [e.username for e in endpoints]
            created, failed = await create_registrations(source.client, users, ultravox.password_template,
                                                         ultravox.proxy, config.concurrency)
            for user, exc in sorted(failed.items())[:5]:
                click.echo(f"sipload check: {user}: {exc}", err=True)
        outcome = CheckOutcome(await run_crosscheck(endpoints, source, config))
        if log_lines and isinstance(source, AudianSource):
            for d in outcome.result.disagreements[:LOGGED_DEVICES]:
                try:
                    outcome.logs[d.username] = await source.device_logs(d.username, log_lines)
                except ProviderError as exc:
                    outcome.logs[d.username] = [f"(no logs: {exc})"]
        return outcome
    finally:
        if created and ultravox is not None and not ultravox.keep and isinstance(source, UltravoxSource):
            await delete_registrations(source.client, list(created.values()), config.concurrency)
        await source.aclose()


def outcome_lines(outcome: CheckOutcome, show: int) -> list[str]:
    lines = result_lines(outcome.result, show)
    for user, logs in outcome.logs.items():
        lines.append(f"device log of {user} (last {len(logs)} lines):")
        lines += [f"  {line}" for line in logs] or ["  (empty)"]
    if outcome.events is not None:
        lines.append(f"webhooks: {outcome.events.total('received')} events received: "
                     + ", ".join(f"{kind} {t.received}" for kind, t in outcome.events.kinds.items())
                     + f"; of unknown devices {outcome.events.unknown_device}")
    return lines


@dataclass(frozen=True)
class UltravoxSetup:
    proxy: str
    password_template: str = field(repr=False)
    keep: bool = False


@click.command("check")
@click.option("--provider", type=click.Choice(PROVIDERS), required=True, help="Which provider to ask.")
@click.option("--base-url", help="API base URL (default: the provider's public API), e.g. http://127.0.0.1:8089/v2.")
@click.option("--account-id", help="Audian account id (/accounts/{accountId}/...).")
@click.option("--api-key-env", help="Environment variable holding the API key "
              "(default TELNYX_API_KEY, AUDIAN_AUTH_TOKEN or ULTRAVOX_API_KEY).")
@click.option("--users", "template", default="user{n}", show_default=True, help="Username template with {n}.")
@click.option("-n", "--count", type=click.IntRange(min=1), help="How many users from the template.")
@click.option("--first", type=int, default=1, show_default=True, help="The first {n}.")
@click.option("--expect", default="registered", show_default=True,
              help="sipload state assumed for template users (registered, unregistered, ...).")
@click.option("--results", type=click.Path(path_type=Path),
              help="A run's results directory: compare with its endpoints.csv instead of a template.")
@click.option("--min-agreement", type=click.FloatRange(0, 100), default=100.0, show_default=True,
              help="Agreement rate (%) needed for exit code 0.")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="API requests in flight at once.")
@click.option("--timeout", type=POSITIVE_DURATION, default="10s", show_default=True,
              help="Deadline of one API request (30s, 1m, 500ms or seconds).")
@click.option("--poll-interval", type=POSITIVE_DURATION, default="500ms", show_default=True,
              help="Pause between two polls of a user not yet shown registered (with --poll-limit).")
@click.option("--poll-limit", type=DURATION, default="0", show_default=True,
              help="Keep polling users not yet shown registered this long (propagation delay; 0: ask once).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result as JSON to this file.")
@click.option("--show", type=click.IntRange(0), default=20, show_default=True, help="Disagreements listed.")
@click.option("--create-registrations", "proxy", metavar="PROXY",
              help="Ultravox: first create a SIP registration per user, registering to PROXY (host:port), "
                   "and delete them afterwards (unless --keep).")
@click.option("--password", "password_template", default="pw-{user}", show_default=True,
              help="Ultravox --create-registrations: password template with {user}.")
@click.option("--keep", is_flag=True, help="Ultravox --create-registrations: keep the registrations.")
@click.option("--logs", "log_lines", type=click.IntRange(0, 1000), default=5, show_default=True,
              help=f"Audian: print the last N device log lines of the first {LOGGED_DEVICES} devices that disagree "
                   "(0: none).")
@click.option("--events-for", type=DURATION, default="0", show_default=True,
              help="Audian: first watch its webhooks this long (sipload's receiver, subscribed, then deleted) "
                   "and count the events that came, per type and of devices not checked.")
@click.option("--events-listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="Where the webhook receiver of --events-for listens.")
@click.option("--events-url", default=None, metavar="URL",
              help="The URL given to the provider for --events-for (default: http://<--events-listen>/...).")
def check(provider: str, base_url: str | None, account_id: str | None, api_key_env: str | None, template: str,
          count: int | None, first: int, expect: str, results: Path | None, min_agreement: float,
          concurrency: int, timeout: float, poll_interval: float, poll_limit: float, json_out: Path | None,
          show: int, proxy: str | None, password_template: str, keep: bool, log_lines: int, events_for: float,
          events_listen: str, events_url: str | None) -> None:
    """Cross-check a provider's registration status with sipload's endpoints.

    Ultravox is a SIP client: with --create-registrations it REGISTERs each user to PROXY first; give
    --poll-limit so that its `successful` has time to become known."""
    try:
        config = CrossCheckConfig(
            provider, base_url, account_id, api_key_env, concurrency=concurrency,
            timeout=timeout, poll_interval=poll_interval, poll_limit=poll_limit, min_agreement=min_agreement,
            events=events_for > 0, events_listen=events_listen, events_url=events_url,
        )
        if results is not None:
            endpoints = load_endpoints(results)
        elif count is None:
            raise click.UsageError("give --count (with --users) or --results")
        else:
            endpoints = template_endpoints(template, count, first, expect)
    except (ValueError, EndpointsError) as exc:
        click.echo(f"sipload check: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    ultravox: UltravoxSetup | None = None
    if proxy is not None:
        if provider != "ultravox":
            raise click.UsageError("--create-registrations is for --provider ultravox")
        if "{user}" not in password_template:
            raise click.UsageError("--password: the template must contain {user}")
        ultravox = UltravoxSetup(proxy, password_template, keep)
    try:
        outcome = trio.run(partial(check_endpoints, endpoints, config, ultravox, log_lines=log_lines,
                                   events_for=events_for))
    except (ProviderError, OSError) as exc:
        click.echo(f"sipload check: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    result = outcome.result
    click.echo("\n".join(outcome_lines(outcome, show)))
    if json_out is not None:
        saved = result.to_dict()
        if outcome.events is not None:
            saved["events"] = outcome.events.to_dict()
        json_out.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    passed = result.passed()
    click.echo(f"{'PASS' if passed else 'FAIL'}: agreement {result.agreement_pct:.1f} % "
               f"(wanted >= {min_agreement:g} %)")
    sys.exit(EXIT_OK if passed else EXIT_DISAGREE)
