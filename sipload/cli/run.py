"""`sipload run SCENARIO`: parse options, build the configuration, call the engine, map the outcome to an exit code."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click
import trio

from sipload.cli.report import metrics_option
from sipload.engine.cluster import parse_cluster
from sipload.engine.run import ExitCode, RunError, RunInterrupted, run_scenario
from sipload.report.result import RunResult
from sipload.scenario import ScenarioError, load_scenario
from sipload.scenario.schedule import ENGINES


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", multiple=True,
              help="'embedded' or a registrar URI such as sip:127.0.0.1:5070;transport=udp. Repeat it for "
                   "failover (tried in order) or for a group's transport (sip:127.0.0.1:5072;transport=ws).")
@click.option("--endpoints", type=int, help="Number of endpoints (overrides endpoints.count).")
@click.option("--rate", type=float, help="New registrations per second (overrides load.rate).")
@click.option("--duration", type=float, help="Seconds from the first arrival until unregistering starts.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Results directory.")
@click.option("--workers", type=click.IntRange(1, 256), help="Worker processes (default: one per core).")
@metrics_option
@click.option("--cluster", metavar="ADDRESS", callback=lambda _c, _p, v: _check_cluster(v),
              help="Run the shards on a Dask cluster: tcp://SCHEDULER:8786, or local:N (N local processes).")
@click.option("--engine", type=click.Choice(ENGINES),
              help="What runs the UDP fleet (overrides load.engine): auto (default: the compiled engine where the "
                   "scenario allows, else Python, saying why), native (refuse otherwise) or python.")
@click.option("--quiet", is_flag=True, help="No progress lines, only the final summary.")
def run(
    scenario: Path,
    target: tuple[str, ...],
    endpoints: int | None,
    rate: float | None,
    duration: float | None,
    out: Path | None,
    workers: int | None,
    metrics: tuple[str, int] | None,
    cluster: str | None,
    engine: str | None,
    quiet: bool,
) -> None:
    """Run SCENARIO (a TOML file) and write its results.

    Exit code: 0 every threshold passed, 1 a threshold failed, 2 usage or configuration error,
    130 interrupted (results so far are written, endpoints unregistered).
    """
    try:
        sc = load_scenario(scenario).with_overrides(target=list(target) or None, endpoints=endpoints, rate=rate,
                                                    duration=duration)
        if engine is not None:
            sc = replace(sc, load=replace(sc.load, engine=engine))
    except ScenarioError as exc:
        click.echo(f"sipload: {exc}", err=True)
        sys.exit(ExitCode.USAGE)

    def progress(line: str) -> None:
        if not quiet:
            click.echo(line)

    try:
        outcome = trio.run(lambda: run_scenario(sc, out, progress=progress, workers=workers, metrics=metrics,
                                                cluster=cluster))
    except RunInterrupted as exc:
        click.echo(f"sipload: {exc}", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except RunError as exc:
        click.echo(f"sipload: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    click.echo(summary_lines(outcome.result, outcome.out_dir))
    sys.exit(outcome.exit_code)


def _check_cluster(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_cluster(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def summary_lines(result: RunResult, out_dir: Path) -> str:
    reg = result.registrations
    lat = result.latency_ms.get("register", {})
    lines = [
        f"{result.scenario}: {'complete' if result.complete else 'INCOMPLETE'} in {result.duration_s:.1f} s; "
        f"registrations {reg.succeeded}/{reg.attempted} ok, {reg.failed} failed; "
        f"refreshes {result.refreshes.succeeded} ok, {result.refreshes.failed} failed; "
        f"unregistrations {result.unregistrations.succeeded} ok, {result.unregistrations.failed} failed",
    ]
    if lat:
        lines.append(
            f"register latency (from intended start): p50 {lat.get('p50', 0):.2f} ms, "
            f"p99 {lat.get('p99', 0):.2f} ms, max {lat.get('max', 0):.2f} ms; "
            f"retransmissions {result.retransmissions}"
        )
    if result.failures:
        lines.append("failures: " + ", ".join(f"{k} {v}" for k, v in sorted(result.failures.items())))
    for t in result.thresholds:
        value = "n/a" if t.value is None else f"{t.value:g}"
        lines.append(f"  [{'PASS' if t.passed else 'FAIL'}] {t.expr}  (value {value})")
    for note in result.notes:
        lines.append(f"note: {note}")
    lines.append(f"results: {out_dir}")
    return "\n".join(lines)

