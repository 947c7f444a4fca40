"""`sipload report DIR` and `sipload compare BASE NEW`: click commands over saved results directories.

Exit codes: report 0 written, 2 not a results directory. compare 0 no regression, 1 NEW is worse than
BASE beyond the tolerances, 2 usage error (a directory that cannot be read, a bad option).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sipload.cli.options import Milliseconds
from sipload.report.compare import DEFAULT_PERCENTILES, Tolerance, parse_percent, parse_stats
from sipload.report.compare import compare as compare_runs
from sipload.report.prometheus import parse_listen
from sipload.report.saved import ResultsError, load_run

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2


class _Percent(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    name = "percent"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_percent(str(value))
        except ValueError:
            self.fail(f"must be a percentage >= 0 such as 10 or 10%, got {value!r}", param, ctx)


class _Stats(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    name = "stats"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_stats(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class MetricsListen(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    """HOST:PORT for `sipload run --metrics`."""

    name = "host:port"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_listen(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# For `sipload run`: decorate the command with it and pass `metrics=metrics` to run_scenario.
metrics_option = click.option(
    "--metrics", type=MetricsListen(), default=None,
    help="Serve live metrics in the Prometheus text format on http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).",
)

_DIR = click.Path(exists=False, path_type=Path)


@click.command()
@click.argument("results", type=_DIR)
def report(results: Path) -> None:
    """Render RESULTS/report.html again from the saved results (summary.json, the .hlog files,
    intervals.jsonl); the page is self-contained and opens offline."""
    from sipload.report.capacity import analyze  # matplotlib is imported with html: only here
    from sipload.report.html import write_report

    try:
        path = write_report(results)
        cap = analyze(load_run(results))
    except ResultsError as exc:
        click.echo(f"sipload: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if cap is not None:
        click.echo(f"capacity: {cap.verdict()}")
    click.echo(f"report: {path}")


@click.command(name="compare")
@click.argument("base", type=_DIR)
@click.argument("new", type=_DIR)
@click.option("--tolerance", type=_Percent(), default=10.0, show_default=True,
              help="How much a gated latency percentile (and the failure ratio) may grow, in percent.")
@click.option("--latency-floor", type=Milliseconds(), default="1ms", show_default=True,
              help="A latency increase smaller than this is never a regression (2ms, 500us; a bare number is ms).")
@click.option("--rate-tolerance", type=_Percent(), default=5.0, show_default=True,
              help="How much the achieved registration rate may fall, in percent.")
@click.option("--allow-failures", type=click.IntRange(min=0), default=0, show_default=True,
              help="Failures NEW may have beyond BASE's failure ratio.")
@click.option("--percentiles", type=_Stats(), default=",".join(DEFAULT_PERCENTILES), show_default=True,
              help="Latency statistics that decide (p50, p90, p95, p99, p99.9, max, mean).")
@click.option("--min-tail", type=click.IntRange(min=1), default=10, show_default=True,
              help="Samples each run needs beyond a percentile for it to decide (p99: 100x this); fewer: shown "
                   "with a warning, never a regression.")
@click.option("--phase", "phases", multiple=True,
              help="Only gate these phases (repeatable; default: every phase both runs measured).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the comparison as JSON to this file.")
@click.option("--brief", is_flag=True, help="Show only the metrics that decide, not every change.")
def compare(base: Path, new: Path, tolerance: float, latency_floor: float, rate_tolerance: float,
                    allow_failures: int, percentiles: tuple[str, ...], min_tail: int, phases: tuple[str, ...],
                    json_out: Path | None, brief: bool) -> None:
    """Compare two results directories: print what changed (rate, latency percentiles, failures) and
    exit 1 when NEW is worse than BASE beyond the tolerances (a regression gate for CI), else 0."""
    try:
        b, n = load_run(base), load_run(new)
    except ResultsError as exc:
        click.echo(f"sipload: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    tol = Tolerance(latency_pct=tolerance, latency_floor_ms=latency_floor, rate_pct=rate_tolerance,
                    failures_allowed=allow_failures, failure_pct=tolerance, percentiles=percentiles,
                    phases=phases or None, min_tail=min_tail)
    result = compare_runs(b, n, tol)
    click.echo("\n".join(result.lines(all_metrics=not brief)))
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    sys.exit(EXIT_REGRESSION if result.regressed else EXIT_OK)

