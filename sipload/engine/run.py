"""A whole run: the registrar (embedded or named), the workers, live progress, results on disk.

`run_scenario` is what `sipload run` calls. It never leaves a run half-written: results are
written on every way out (done, threshold failed, Ctrl-C / SIGTERM), with `complete: false` when
the run was interrupted, and endpoints are unregistered before that (bounded by the scenario's
unregister timeout; a second Ctrl-C abandons the unregistration).
"""

from __future__ import annotations

import enum
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

from sipload.engine.cluster import ClusterPool
from sipload.engine.embedded import embedded_core, scenario_transports, start_embedded, too_brief_note
from sipload.engine.engines import choose_engine, engines_of
from sipload.engine.limits import check_resources
from sipload.engine.live import LiveOutputs, open_live_outputs
from sipload.engine.nodata import why_no_value
from sipload.engine.pool import WorkerPool, default_workers
from sipload.engine.probe import probe_udp
from sipload.engine.resolve import ResolveError, resolve_target
from sipload.engine.worker import Destinations, WorkerError, WorkerReport
from sipload.metrics.aggregate import Aggregate
from sipload.registrar.core import RegistrarCore
from sipload.report.prometheus import MetricsExporter
from sipload.report.result import EndpointState, RunResult, build_result
from sipload.report.runinfo import run_info
from sipload.report.writers import write_results, write_summary
from sipload.scenario import Scenario, SipUri, Transport
from sipload.thresholds import evaluate
from sipload.transport.addresses import AddressError
from sipload.transport.udp import Address


class ExitCode(enum.IntEnum):
    OK = 0
    THRESHOLD_FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


class RunError(Exception):
    """The run could not start (target unreachable, no free port...): a clear message, no traceback."""


class RunInterrupted(RunError):
    """Ctrl-C / SIGTERM before the endpoints started: nothing ran, nothing is written (exit 130)."""


@dataclass(frozen=True, slots=True)
class RunOutcome:
    result: RunResult
    out_dir: Path
    exit_code: ExitCode


async def resolve_destinations(scenario: Scenario, transports: Sequence[str] = ()) -> dict[str, tuple[Address, ...]]:
    """Where requests go, per transport (upper case), in failover order, resolved once.

    The outbound proxy if any, else the URIs of ``target.registrar`` in the order written. For each
    transport a group uses: the URIs that name it (``;transport=ws``), else those that name none; each
    resolved by RFC 3263 (engine/resolve.py: NAPTR -> SRV -> A/AAAA through ``target.dns`` or the
    system's resolver; a numeric IP as it is), so a name's SRV records give the failover order.
    """
    target = scenario.target
    uris = (target.outbound_proxy,) if target.outbound_proxy is not None else target.registrars
    if not uris:
        raise RunError("the target has no address")
    field = "target.outbound_proxy" if target.outbound_proxy is not None else "target.registrar"
    out: dict[str, tuple[Address, ...]] = {}
    for name in transports or scenario_transports(scenario):
        transport = Transport(name.lower())
        named = [u for u in uris if _names_transport(u) and u.transport is transport]
        chosen = named or [u for u in uris if not _names_transport(u)]
        if not chosen:
            raise RunError(f"{field}: no URI for the {transport.value} transport a group uses "
                           f"(add one such as 'sip:HOST:PORT;transport={transport.value}')")
        try:
            found = await resolve_target(chosen, (transport,), nameserver=target.dns, seed=scenario.seed)
        except ResolveError as exc:
            raise RunError(f"{field}: {exc}") from None
        addresses = tuple(dict.fromkeys(d.address for d in found if d.transport is transport))
        if not addresses:
            raise RunError(f"{field}: no {transport.value} destination found for {', '.join(map(str, chosen))}")
        out[transport.value.upper()] = addresses
    return out


def _names_transport(uri: SipUri) -> bool:
    return uri.scheme == "sips" or "transport" in dict(uri.params)


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
    probe: bool = True,
    workers: int | None = None,
    metrics: tuple[str, int] | None = None,  # serve Prometheus text on http://HOST:PORT/metrics
    cluster: str | None = None,  # shards on a Dask cluster: tcp://SCHEDULER:8786 or local:N
) -> RunOutcome:
    """Run the scenario; results are written on every way out once the endpoints were created."""
    # fds and ports first, on this machine; a remote cluster's shards check their own hosts
    remote = cluster is not None and not cluster.startswith("local:")
    problem = None if remote else check_resources(scenario, workers or default_workers(scenario))
    if problem is not None:
        raise RunError(problem)
    started_unix = time.time()
    out = out_dir if out_dir is not None else default_out_dir(scenario, started_unix)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out: cannot create {str(out)!r}: {exc.strerror}") from None
    state = _RunState(scenario, out, progress, workers)
    state.metrics = metrics
    state.cluster = cluster
    try:
        async with trio.open_nursery() as nursery:
            try:
                await state.run(nursery, handle_signals=handle_signals, stop=stop, probe=probe)
            except (RunError, WorkerError, AddressError, OSError) as exc:
                state.error = str(exc) if not isinstance(exc, OSError) else f"cannot start: {exc}"
            nursery.cancel_scope.cancel()
    finally:
        if state.worker_started and state.error is None:
            result = state.finish()
            write_results(result, out)
            if scenario.load.steps:
                result = _with_capacity(result, out, progress)
            _write_report(out, progress)
        else:  # the run never started: leave no empty results behind
            state.discard(remove_dir=created and (state.error is not None or state.interrupted_by is not None))
    if not state.worker_started and state.interrupted_by is not None:
        raise RunInterrupted(f"interrupted by {state.interrupted_by} before the run started")
    if state.error is not None:
        raise RunError(state.error)
    code = ExitCode.THRESHOLD_FAILED if state.aborted else ExitCode.INTERRUPTED if state.interrupted_by else (
        ExitCode.OK if result.passed() else ExitCode.THRESHOLD_FAILED
    )
    return RunOutcome(result, out, code)


class _RunState:
    """What one run holds while it goes: the aggregate, the worker, how it was stopped."""

    def __init__(self, scenario: Scenario, out: Path, progress: Callable[[str], None], workers: int | None) -> None:
        self.scenario = scenario
        self.out = out
        self.progress = progress
        self.agg = Aggregate(time.time())
        self.interrupted_by: str | None = None
        self.aborted = False  # an abort_on_fail threshold missed: interrupted_by says which
        self.error: str | None = None
        self.report = WorkerReport()
        self.target_text = scenario.target.registrar
        self.pool: WorkerPool | ClusterPool | None = None
        self.cluster: str | None = None
        self.workers = workers
        self.lost: list[str] = []
        self.worker_started = False
        self.metrics: tuple[str, int] | None = None
        self.live: LiveOutputs | None = None
        self.crosscheck: dict[str, Any] | None = None
        self.crosscheck_error: str | None = None
        self.engines: dict[str, str] = {}
        self.engine_note: str | None = None
        self.engine_requested = scenario.load.engine
        self.run_workers = 1  # worker processes (or cluster shards) that ran
        self.embedded: RegistrarCore | None = None  # the embedded registrar, when the target is embedded

    async def run(self, nursery: trio.Nursery, *, handle_signals: bool, stop: trio.Event | None,
                  probe: bool) -> None:
        scenario = self.scenario
        if handle_signals:
            await nursery.start(self._watch_signals, nursery.cancel_scope)
        exporter: MetricsExporter | None = None
        if self.metrics is not None:
            exporter = MetricsExporter(scenario.name)
            port = await nursery.start(exporter.serve, self.metrics[0], self.metrics[1])
            self.progress(f"sipload: metrics on http://{self.metrics[0]}:{port}/metrics")
        destinations: Destinations
        if scenario.target.embedded:
            self.embedded = embedded_core(scenario)
            bound = await start_embedded(nursery, scenario, self.embedded)
            destinations = {t: (a,) for t, a in bound.items()}
            listening = ", ".join(f"{t.lower()} {a[0]}:{a[1]}" for t, a in bound.items())
            self.target_text = f"embedded registrar ({listening})"
        else:
            destinations = await resolve_destinations(scenario)
            udp = destinations.get("UDP", ())
            if probe and scenario.target.probe and len(udp) == 1:  # with several, the failover is the point
                await self._probe(udp[0])
        if scenario.crosscheck is not None:
            await self._crosscheck_preflight()
        if self.interrupted_by is not None:
            raise RunInterrupted(f"interrupted by {self.interrupted_by} before the run started")
        try:
            scenario, why_python = choose_engine(scenario, destinations)
        except WorkerError as exc:
            raise RunError(str(exc)) from None
        self.scenario = scenario
        self.engines = engines_of(scenario)
        if why_python is not None:
            self.engine_note = why_python
        workers = self.workers or default_workers(scenario)
        holding = scenario.crosscheck is not None and scenario.crosscheck.when == "holding"
        if holding and workers > 1:
            self.progress("sipload: a cross-check while holding runs with one worker")
            workers = 1
        cap = scenario.load.max_in_flight
        if workers > cap:  # each worker holds its share of the run-wide max_in_flight, at least 1
            self.progress(f"sipload: {workers} workers for load.max_in_flight = {cap}: running {cap}")
            workers = cap
        self.agg = Aggregate(time.time())
        if self.cluster is not None:  # one shard per Dask worker process unless --workers says
            self.pool = ClusterPool(scenario, destinations, self.workers or 0, self.agg.add, address=self.cluster)
        else:
            self.pool = WorkerPool(scenario, destinations, workers, self.agg.add)
            self.run_workers = workers
        if holding:
            self.pool.hold_hook = self._crosscheck
        self.agg.open_logs(self.out)
        self.live = open_live_outputs(scenario, self.out, self.agg.started_at_unix, exporter)
        how = f"Dask cluster {self.cluster}" if self.cluster else f"{workers} worker{'s' if workers > 1 else ''}"
        how += (f", native engine, Python for {', '.join(scenario.load.python_groups)}" if scenario.load.python_groups
                else f", {scenario.load.engine} engine")
        self.progress(
            f"sipload: {scenario.name}: {scenario.endpoints.count} endpoints -> {self.target_text}; "
            f"{how}; results in {self.out}"
        )
        if stop is not None:
            nursery.start_soon(self._watch_stop, stop)
        nursery.start_soon(self._show_progress)
        self.worker_started = True
        outcome = await self.pool.run()
        self.report = outcome.report
        self.lost = outcome.lost
        if scenario.crosscheck is not None and not holding and self.interrupted_by is None:
            await self._crosscheck(self.report.endpoints)

    async def _probe(self, destination: Address) -> None:
        """Stop at once when nothing answers at the target; warn when only a REGISTER was answered."""
        target = self.scenario.target
        outcome = await probe_udp(destination, target.domain, user=self.scenario.endpoints.credentials(0).username)
        if outcome.problem is not None:
            raise RunError(f"target {target.registrar}: {outcome.problem}; is the registrar running? "
                           f"(--no-probe or target.probe = false skips this check)")
        warning = outcome.warning()
        if warning is not None:
            self.progress(f"sipload: warning: target {target.registrar}: {warning} "
                          f"(--no-probe or target.probe = false skips it)")

    async def _crosscheck_preflight(self) -> None:
        """Refuse the run before its load when the cross-check's base URL is not the provider's API;
        anything else (a key missing, a provider not answering) is left to the cross-check, as before."""
        from sipload.providers.errors import ProviderConfigError
        from sipload.providers.sources import open_source, refuse_wrong_base_url
        from sipload.providers.status import ProviderError

        assert self.scenario.crosscheck is not None
        try:
            source = open_source(self.scenario.crosscheck.config)
        except ProviderError:
            return  # a missing key: said by the cross-check at the end, as before
        try:
            await refuse_wrong_base_url(source)
        except ProviderConfigError as exc:
            raise RunError(f"crosscheck: {exc}") from None
        finally:
            await source.aclose()

    async def _crosscheck(self, states: list[EndpointState]) -> None:
        """Ask the provider about every endpoint; the outcome goes into the results, never fails the run."""
        # imported here: the provider SDKs take seconds to import, and most runs have no cross-check
        from sipload.providers.crosscheck import OurEndpoint, run_crosscheck
        from sipload.providers.sources import open_source
        from sipload.providers.status import ProviderError

        assert self.scenario.crosscheck is not None
        config = self.scenario.crosscheck.config
        self.progress(f"sipload: cross-checking {len(states)} endpoints with {config.provider}")
        ours = [OurEndpoint(s.username, s.state, None) for s in states]
        try:
            source = open_source(config)
            try:
                result = await run_crosscheck(ours, source, config)
            finally:
                await source.aclose()
        except ProviderError as exc:
            self.crosscheck_error = f"cross-check with {config.provider} failed: {exc}"
            self.progress(f"sipload: {self.crosscheck_error}")
            return
        self.crosscheck = result.to_dict()
        self.progress(f"sipload: cross-check: {result.agreement_pct:.1f} % agreement, "
                      f"{result.disagreements_total} disagreements")

    async def _watch_signals(self, scope: trio.CancelScope,
                             task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if self.interrupted_by is None:
                    self.interrupted_by = signal.Signals(signum).name
                    if self.pool is None:  # still starting (probe, DNS, registrar): nothing to unregister
                        self.progress(f"sipload: {self.interrupted_by}: stopping before the run started")
                        scope.cancel()
                        return
                    self.progress(f"sipload: {self.interrupted_by}: stopping; unregistering endpoints "
                                  f"(send it again to abandon the unregistration)")
                    self.pool.request_stop()
                else:
                    self.progress("sipload: abandoning the unregistration")
                    scope.cancel()
                    return

    async def _watch_stop(self, stop: trio.Event) -> None:
        await stop.wait()
        if self.interrupted_by is None:
            self.interrupted_by = "stop request"
        if self.pool is not None:
            self.pool.request_stop()

    async def _show_progress(self) -> None:
        interval = self.scenario.load.interval
        started = time.time()
        while True:
            await trio.sleep(interval)
            now = time.time()
            self.agg.flush_interval(now)
            if self.live is not None:
                self.live.interval(self.agg, now)
            self.progress(self.agg.progress().line())
            self._check_aborts(now - started)

    def _check_aborts(self, elapsed: float) -> None:
        """Stop the run at the first abort_on_fail threshold missed on a value, past its delay."""
        watched = [t for t in self.scenario.thresholds if t.abort and elapsed >= t.abort_delay]
        if not watched or self.interrupted_by is not None:
            return
        for t, r in zip(watched, evaluate(watched, self.agg.metric_values()), strict=True):
            if r.value is not None and not r.passed:   # no data never aborts
                self.interrupted_by = f"abort_on_fail: {t.expr} (value {r.value:g} after {elapsed:.0f} s)"
                self.aborted = True
                self.progress(f"sipload: threshold {t.expr} missed ({t.metric} = {r.value:g}) after "
                              f"{elapsed:.1f} s: aborting the run (abort_on_fail); unregistering endpoints")
                if self.pool is not None:
                    self.pool.request_stop()
                return

    def discard(self, remove_dir: bool) -> None:
        self.agg.close_logs()
        if self.live is not None:
            self.live.close()
        if remove_dir:
            shutil.rmtree(self.out, ignore_errors=True)

    def finish(self) -> RunResult:
        ended = time.time()
        self.agg.flush_interval(ended)
        self.agg.close_logs()
        if self.live is not None:
            self.live.interval(self.agg, ended)
            self.live.close()
        partial = self.pool.partial_report() if self.pool is not None else None
        report = partial if partial is not None else self.report  # also when the run was cancelled
        notes = [*self.lost, *([self.crosscheck_error] if self.crosscheck_error else []),
                 *([self.engine_note] if self.engine_note else [])]
        too_brief = too_brief_note(self.embedded) if self.embedded is not None else None
        if too_brief is not None:
            notes.append(too_brief)
        result = _result(self.scenario, self.agg, report, self.target_text,
                         ended - self.agg.started_at_unix, self.interrupted_by, notes, self.crosscheck)
        result.engines = self.engines
        if isinstance(self.pool, ClusterPool):  # the shards placed, else those asked for
            self.run_workers = len(self.pool.assignments) or self.pool.workers
        placement = (f"dask:{self.cluster}" if self.cluster is not None
                     else "processes" if self.run_workers > 1 else "in-process")
        result.run = run_info(self.scenario, workers=self.run_workers, placement=placement,
                              engine_requested=self.engine_requested)
        return result


def _with_capacity(result: RunResult, out: Path, progress: Callable[[str], None]) -> RunResult:
    """A stepped run's result with its capacity analysis, summary.json written again with it."""
    from sipload.report.capacity import analyze
    from sipload.report.saved import ResultsError, load_run

    try:
        cap = analyze(load_run(out))
    except ResultsError as exc:  # the results are on disk; say why there is no analysis and go on
        progress(f"sipload: no capacity analysis: {exc}")
        return result
    if cap is None:
        return result
    result = replace(result, capacity=cap.to_dict())
    write_summary(result, out)
    return result


def _write_report(out: Path, progress: Callable[[str], None]) -> None:
    """report.html from the files just written; a report that cannot be drawn never fails the run."""
    from sipload.report.html import write_report  # matplotlib: imported only when a run ends

    try:
        write_report(out)
    except Exception as exc:  # the results are on disk; say why there is no report and go on
        progress(f"sipload: report.html not written: {type(exc).__name__}: {exc}")


def _result(
    scenario: Scenario,
    agg: Aggregate,
    report: WorkerReport,
    target: str,
    duration_s: float,
    interrupted_by: str | None,
    lost: list[str],
    crosscheck: dict[str, Any] | None = None,
) -> RunResult:
    load = scenario.load
    count = scenario.endpoints.count
    period = report.arrival_period
    last = load.arrival_time(count - 1) if count > 1 else 0.0
    offered = (count - 1) / last if last > 0 else load.rate_at(0.0)
    values = agg.metric_values(arrival_period_s=period or None, offered_rate=offered)
    if crosscheck is not None:
        values["crosscheck.agreement"] = float(crosscheck["agreement_pct"])
        values["crosscheck.disagreements"] = float(crosscheck["disagreements_total"])
    thresholds = [t if t.value is not None else replace(t, why=why_no_value(th.metric, scenario, agg, duration_s))
                  for th, t in zip(scenario.thresholds, evaluate(scenario.thresholds, values), strict=True)]
    notes: list[str] = list(lost)
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
    if report.foreign:
        notes.append(f"{report.foreign} datagrams came from another address than the registrar's (dropped)")
    if report.internal_errors:
        notes.append(f"{report.internal_errors} responses could not be handled (a sipload bug, please report): "
                     f"{report.last_internal_error}")
    if report.send_errors:
        notes.append(f"{report.send_errors} sends failed (is the registrar listening?)")
    if report.transport_failures or report.last_transport_error:  # e.g. a refused client certificate
        notes.append(f"{report.transport_failures} connection failures (lost, refused or a missed keep-alive pong); "
                     f"the last: {report.last_transport_error or 'unknown'}")
    result = build_result(
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
        stream_keepalives=report.stream_keepalives,
        stream_keepalive_total=report.stream_keepalive_total,
    )
    result.crosscheck = crosscheck
    return result
