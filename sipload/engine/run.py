"""A whole run: the registrar (embedded or named), the workers, live progress, results on disk.

`run_scenario` is what `sipload run` calls. It never leaves a run half-written: results are
written on every way out (done, threshold failed, Ctrl-C / SIGTERM), with `complete: false` when
the run was interrupted, and endpoints are unregistered before that (bounded by the scenario's
unregister timeout; a second Ctrl-C abandons the unregistration).
"""

from __future__ import annotations

import enum
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from sipload.engine.embedded import start_embedded_registrar
from sipload.engine.worker import Shard, Worker, WorkerReport
from sipload.metrics.aggregate import Aggregate
from sipload.metrics.recorder import IntervalSnapshot
from sipload.report.result import RunResult, build_result
from sipload.report.writers import write_results
from sipload.scenario import Scenario
from sipload.thresholds import evaluate
from sipload.transport.udp import Address


class ExitCode(enum.IntEnum):
    OK = 0
    THRESHOLD_FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


class RunError(Exception):
    """The run could not start (target unreachable, no free port...): a clear message, no traceback."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    result: RunResult
    out_dir: Path
    exit_code: ExitCode


def resolve_destination(scenario: Scenario) -> Address:
    """Where requests go: the outbound proxy if any, else the registrar URI (no DNS SRV yet)."""
    target = scenario.target
    uri = target.outbound_proxy or target.uri
    if uri is None:
        raise RunError("the target has no address")
    port = uri.effective_port
    try:
        infos = socket.getaddrinfo(uri.host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise RunError(f"target.registrar: cannot resolve {uri.host!r}: {exc}") from None
    addr = infos[0][4]
    return (str(addr[0]), int(addr[1]))


def default_out_dir(scenario: Scenario, started_unix: float) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_unix))
    return Path("results") / f"{stamp}-{scenario.name}"


async def run_scenario(
    scenario: Scenario,
    out_dir: Path | None = None,
    *,
    progress: Callable[[str], None] = print,
    handle_signals: bool = True,
    stop: trio.Event | None = None,
) -> RunOutcome:
    started_unix = time.time()
    out = out_dir if out_dir is not None else default_out_dir(scenario, started_unix)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out: cannot create {str(out)!r}: {exc.strerror}") from None
    agg = Aggregate(started_unix)
    agg.open_logs(out)
    interrupted_by: str | None = None
    report = WorkerReport()
    target_text = scenario.target.registrar
    try:
        async with trio.open_nursery() as nursery:
            if scenario.target.embedded:
                destination = await start_embedded_registrar(nursery, scenario)
                target_text = f"embedded (udp {destination[0]}:{destination[1]})"
            else:
                destination = resolve_destination(scenario)

            def sink(snap: IntervalSnapshot) -> None:
                agg.add(snap)

            worker = Worker(scenario, destination, shard=Shard(), sink=sink)
            progress(
                f"sipload: {scenario.name}: {scenario.endpoints.count} endpoints -> {target_text}, "
                f"results in {out}"
            )

            async def watch_signals(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                nonlocal interrupted_by
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    task_status.started()
                    async for signum in signals:
                        if interrupted_by is None:
                            interrupted_by = signal.Signals(signum).name
                            progress(f"sipload: {interrupted_by}: stopping, unregistering endpoints "
                                     f"(again to abandon)")
                            worker.request_stop()
                        else:
                            progress("sipload: abandoning the unregistration")
                            nursery.cancel_scope.cancel()
                            return

            async def watch_stop() -> None:
                nonlocal interrupted_by
                assert stop is not None
                await stop.wait()
                if interrupted_by is None:
                    interrupted_by = "stop request"
                worker.request_stop()

            async def show_progress() -> None:
                while True:
                    await trio.sleep(scenario.load.interval)
                    agg.flush_interval(time.time())
                    progress(agg.progress().line())

            if handle_signals:
                await nursery.start(watch_signals)
            if stop is not None:
                nursery.start_soon(watch_stop)
            nursery.start_soon(show_progress)
            report = await worker.run()
            nursery.cancel_scope.cancel()
    finally:
        ended_unix = time.time()
        agg.flush_interval(ended_unix)
        agg.close_logs()
        result = _result(scenario, agg, report, target_text, ended_unix - started_unix, interrupted_by)
        write_results(result, out)
    code = ExitCode.INTERRUPTED if interrupted_by else (
        ExitCode.OK if result.passed() else ExitCode.THRESHOLD_FAILED
    )
    return RunOutcome(result, out, code)


def _result(
    scenario: Scenario,
    agg: Aggregate,
    report: WorkerReport,
    target: str,
    duration_s: float,
    interrupted_by: str | None,
) -> RunResult:
    load = scenario.load
    count = scenario.endpoints.count
    period = 0.0
    if report.first_arrival is not None and report.last_arrival is not None:
        period = report.last_arrival - report.first_arrival
    last = load.arrival_time(count - 1) if count > 1 else 0.0
    offered = (count - 1) / last if last > 0 else load.rate_at(0.0)
    values = agg.metric_values(arrival_period_s=period or None, offered_rate=offered)
    thresholds = evaluate(scenario.thresholds, values)
    notes: list[str] = []
    if report.arrivals_started < count:
        notes.append(f"only {report.arrivals_started} of {count} endpoints started before the run ended")
    if report.left_bound:
        notes.append(f"{report.left_bound} endpoints may still be registered at the registrar")
    if report.unregister_timed_out:
        notes.append(f"{report.unregister_timed_out} unregistrations had no answer within the timeout")
    if report.stray:
        notes.append(f"{report.stray} responses matched no request in flight (late or duplicated)")
    if report.unparseable:
        notes.append(f"{report.unparseable} datagrams could not be parsed")
    if report.send_errors:
        notes.append(f"{report.send_errors} sends failed (is the registrar listening?)")
    return build_result(
        agg,
        scenario=scenario.name,
        target=target,
        duration_s=duration_s,
        complete=interrupted_by is None,
        endpoints=count,
        offered_rate=offered,
        arrival_period_s=period,
        thresholds=thresholds,
        endpoint_states=report.endpoints,
        interrupted_by=interrupted_by,
        notes=notes,
    )
