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
from pathlib import Path

import click
import trio

from sipload.cli.options import DURATION, POSITIVE_DURATION
from sipload.providers.crosscheck import CrossCheckResult, OurEndpoint, run_crosscheck
from sipload.providers.crosscheck_text import result_lines
from sipload.providers.run_endpoints import EndpointsError, load_endpoints, template_endpoints
from sipload.providers.settings import PROVIDERS, CrossCheckConfig
from sipload.providers.sources import UltravoxSource, open_source, refuse_wrong_base_url
from sipload.providers.status import ProviderError
from sipload.providers.ultravox_setup import create_registrations, delete_registrations

EXIT_OK = 0
EXIT_DISAGREE = 1
EXIT_USAGE = 2


async def check_endpoints(endpoints: list[OurEndpoint], config: CrossCheckConfig,
                          ultravox: UltravoxSetup | None = None) -> CrossCheckResult:
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
        return await run_crosscheck(endpoints, source, config)
    finally:
        if created and ultravox is not None and not ultravox.keep and isinstance(source, UltravoxSource):
            await delete_registrations(source.client, list(created.values()), config.concurrency)
        await source.aclose()


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
def check(provider: str, base_url: str | None, account_id: str | None, api_key_env: str | None, template: str,
          count: int | None, first: int, expect: str, results: Path | None, min_agreement: float,
          concurrency: int, timeout: float, poll_interval: float, poll_limit: float, json_out: Path | None,
          show: int, proxy: str | None, password_template: str, keep: bool) -> None:
    """Cross-check a provider's registration status with sipload's endpoints.

    Ultravox is a SIP client: with --create-registrations it REGISTERs each user to PROXY first; give
    --poll-limit so that its `successful` has time to become known."""
    try:
        config = CrossCheckConfig(
            provider, base_url, account_id, api_key_env, concurrency=concurrency,
            timeout=timeout, poll_interval=poll_interval, poll_limit=poll_limit, min_agreement=min_agreement,
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
        result = trio.run(check_endpoints, endpoints, config, ultravox)
    except ProviderError as exc:
        click.echo(f"sipload check: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo("\n".join(result_lines(result, show)))
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    passed = result.passed()
    click.echo(f"{'PASS' if passed else 'FAIL'}: agreement {result.agreement_pct:.1f} % "
               f"(wanted >= {min_agreement:g} %)")
    sys.exit(EXIT_OK if passed else EXIT_DISAGREE)
