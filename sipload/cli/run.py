"""`sipload run SCENARIO`: parse options, build the configuration, call the engine, map the outcome to an exit code."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import click
import trio

from sipload.cli.options import POSITIVE_DURATION
from sipload.cli.report import metrics_option
from sipload.engine.cluster import parse_cluster
from sipload.engine.run import ExitCode, RunError, RunInterrupted, run_scenario
from sipload.report.result import RunResult
from sipload.scenario import ScenarioError, load_scenario
from sipload.scenario.schedule import ENGINES


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-t", "--target", multiple=True,
              help="'embedded' or a registrar URI such as sip:127.0.0.1:5070;transport=udp. Repeat it for "
                   "failover (tried in order) or for a group's transport (sip:127.0.0.1:5072;transport=ws).")
@click.option("-n", "--endpoints", type=click.IntRange(min=1), help="Number of endpoints (overrides endpoints.count).")
@click.option("-r", "--rate", type=click.FloatRange(min=0, min_open=True),
              help="New registrations per second (overrides load.rate and load.steps with a constant rate).")
@click.option("-d", "--duration", type=POSITIVE_DURATION,
              help="How long from the first arrival until unregistering starts (overrides load.duration): "
                   "30s, 1m, 1m30s, 500ms, or a number of seconds.")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path),
              help="Results directory  [default: results/TIMESTAMP-SCENARIO]. One that holds files already "
                   "is refused unless --force is given.")
@click.option("--force", is_flag=True, help="Write into a non-empty --out directory (over an earlier run's files).")
@click.option("-w", "--workers", type=click.IntRange(1, 256),
              help="Worker processes  [default: one per CPU core, at most one per 200 endpoints and, on the "
                   "native engine, one per 20,000 arrivals/s; with --cluster, one shard per Dask worker process].")
@metrics_option
@click.option("--cluster", metavar="ADDRESS", callback=lambda _c, _p, v: _check_cluster(v),
              help="Run the shards on a Dask cluster: tcp://SCHEDULER:8786, or local:N (N local processes).")
@click.option("--engine", type=click.Choice(ENGINES),
              help="What runs the UDP fleet (overrides load.engine): auto (default: the compiled engine where the "
                   "scenario allows, else Python, saying why), native (refuse otherwise) or python.")
@click.option("--no-probe", is_flag=True,
              help="Skip the start-up check that something answers SIP at a UDP target (as target.probe = false).")
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
    force: bool,
    no_probe: bool,
    quiet: bool,
) -> None:
    """Run SCENARIO (a TOML file) and write its results.

    Exit code: 0 every threshold passed, 1 a threshold failed, 2 usage or configuration error,
    130 interrupted (results so far are written, endpoints unregistered).
    """
    if out is not None and not force and _holds_files(out):
        click.echo(f"sipload: --out {out}: the directory is not empty (an earlier run's results?); "
                   f"give --force to write over it, or name a new directory", err=True)
        sys.exit(ExitCode.USAGE)
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
                                                cluster=cluster, probe=not no_probe))
    except RunInterrupted as exc:
        click.echo(f"sipload: {exc}", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except RunError as exc:
        click.echo(f"sipload: {exc}", err=True)
        sys.exit(ExitCode.USAGE)
    click.echo(summary_lines(outcome.result, outcome.out_dir))
    sys.exit(outcome.exit_code)


def _holds_files(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:  # unreadable: run_scenario says why when it cannot write there
        return False


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
        value = ("n/a" + (f": {t.why}" if t.why else "")) if t.value is None else f"{t.value:g}"
        lines.append(f"  [{'PASS' if t.passed else 'FAIL'}] {t.expr}  (value {value})")
    if result.capacity is not None:
        lines.append(f"capacity: {result.capacity['verdict']}")
    for note in result.notes:
        lines.append(f"note: {note}")
    lines.append(f"results: {out_dir}")
    return "\n".join(lines)

