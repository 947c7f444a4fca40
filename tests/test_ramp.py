"""Capacity ramp: per-step numbers from a results directory, the knee and the breaking point.

- exact: a stepped load simulated interval by interval through the real Aggregate, .hlog writer and
  intervals.jsonl writer (no network, no clock), with known latencies and failures per step;
- for real: scenarios/capacity-ramp.toml, scaled down, against the embedded registrar (the knee is set
  by the registrar's response delay and max_in_flight) and against Kamailio (peers/kamailio).
"""

from __future__ import annotations

import html
import json
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from peers import HOW_TO_INSTALL_KAMAILIO, KamailioPeer, free_port, have, require_peer, start_kamailio, stop_kamailio
from sipload.cli.report import report
from sipload.engine.live import load_steps
from sipload.engine.run import run_scenario
from sipload.metrics import Aggregate, Phase, Recorder
from sipload.report import build_result, write_results
from sipload.report.capacity import analyze
from sipload.report.html import write_report
from sipload.report.intervals import INTERVALS, IntervalLog, StepWindow, read_intervals, step_windows
from sipload.report.saved import load_run
from sipload.scenario import load_scenario, parse_scenario
from sipload.sip.failures import FailureReason
from sipload.thresholds import evaluate, parse_threshold

REPO = Path(__file__).resolve().parents[1]
T0 = 1_800_000_000.0


# ------------------------------------------------------------------------------------- step windows

def test_step_windows_follow_the_steps_and_stop_with_the_arrivals() -> None:
    assert step_windows([(10, 2), (0, 1), (30, 2)], arrivals_end_s=100) == [
        StepWindow(0, 10.0, 0.0, 2.0), StepWindow(1, 0.0, 2.0, 3.0), StepWindow(2, 30.0, 3.0, 100.0)]
    # the last arrival comes during the second step: the third never happens
    assert step_windows([(10, 2), (20, 2), (30, 2)], arrivals_end_s=3.5) == [
        StepWindow(0, 10.0, 0.0, 2.0), StepWindow(1, 20.0, 2.0, 3.5)]


def test_load_steps_of_the_shipped_ramp_scenario() -> None:
    sc = load_scenario(REPO / "scenarios" / "capacity-ramp.toml")
    windows = load_steps(sc.load, sc.endpoints.count)
    assert [w.rate for w in windows] == [50, 100, 200, 300, 400, 600, 800]
    assert [w.start_s for w in windows] == [0, 5, 10, 15, 20, 25, 30]
    assert windows[-1].end_s == pytest.approx(35.0, abs=0.01)
    assert sc.registrar is not None and sc.registrar.delay.value == 0.01
    assert sc.with_overrides(target="sip:127.0.0.1:5070").registrar is None  # usable against Kamailio


# ------------------------------------------------------------------------------ exact, simulated

Step = tuple[float, float, float, int]  # rate/s, duration s, register latency ms, timeouts per interval


def simulate(out: Path, steps: Sequence[Step], thresholds: Sequence[str], *,
             interval: float = 1.0, tail: int = 2,
             extra: Callable[[int, Recorder], None] | None = None) -> None:
    """A run with these steps, interval by interval: every interval, `rate * interval` registrations
    finish with the step's latency (service time: a third of it) and `timeouts` fail; then `tail`
    intervals with no arrivals. Writes the .hlog files, intervals.jsonl and summary.json."""
    windows = step_windows([(r, d) for r, d, _, _ in steps], arrivals_end_s=sum(d for _, d, _, _ in steps))
    agg = Aggregate(T0)
    agg.open_logs(out)
    log = IntervalLog(out, T0, interval_s=interval, steps=windows,
                      offered=lambda t: next((w.rate for w in windows if w.start_s <= t < w.end_s), 0.0))
    end = windows[-1].end_s + tail * interval
    n_intervals = round(end / interval)
    registered = 0
    for i in range(n_intervals):
        t0, t1 = i * interval, (i + 1) * interval
        rec = Recorder(t0)
        step = next((k for k, w in enumerate(windows) if w.start_s <= (t0 + t1) / 2 < w.end_s), None)
        if step is not None:
            rate, _, latency_ms, timeouts = steps[step]
            for _ in range(round(rate * interval)):
                rec.attempt(Phase.REGISTER)
                rec.record(Phase.REGISTER, int(latency_ms * 1000), int(latency_ms * 1000 / 3))
                rec.success(Phase.REGISTER)
                rec.response(401)
                rec.response(200)
                registered += 1
            for _ in range(timeouts):
                rec.attempt(Phase.REGISTER)
                rec.failure(Phase.REGISTER, FailureReason.TIMEOUT)
        if extra is not None:
            extra(i, rec)
        rec.set_gauge("registered", registered)
        agg.add(rec.take_interval(t1))
        agg.flush_interval(T0 + t1)
        log.write(agg, T0 + t1)
    agg.close_logs()
    log.close()
    arrivals = windows[-1].end_s
    values = agg.metric_values(arrival_period_s=arrivals, offered_rate=steps[-1][0])
    result = build_result(
        agg, scenario="ramp", target="simulated", duration_s=end, complete=True,
        endpoints=registered, offered_rate=steps[-1][0], arrival_period_s=arrivals,
        thresholds=evaluate([parse_threshold(t) for t in thresholds], values),
    )
    write_results(result, out)


THRESHOLDS = ("register.p99 < 100ms", "register.success_rate >= 99%", "timeouts == 0")


def test_knee_and_breaking_point_from_latency(tmp_path: Path) -> None:
    simulate(tmp_path, [(10, 4, 5, 0), (20, 4, 8, 0), (40, 4, 30, 0), (80, 4, 500, 0), (160, 4, 900, 0)],
             THRESHOLDS)
    cap = analyze(load_run(tmp_path))
    assert cap is not None
    assert [s.offered for s in cap.steps] == [10, 20, 40, 80, 160]
    assert [s.passed for s in cap.steps] == [True, True, True, False, False]
    assert cap.knee is not None and cap.knee.offered == 40 and cap.knee.index == 2
    assert cap.breaking is not None and cap.breaking.offered == 80
    s = cap.steps[2]
    # 4 intervals of 1 s: the first is left out (settling), so 3 s and 3 x 40 registrations
    assert (s.seconds, s.attempted, s.succeeded, s.failed) == (pytest.approx(3.0), 120, 120, 0)
    assert s.achieved == pytest.approx(40.0)
    assert s.latency_ms["p99"] == pytest.approx(30.0, rel=1e-3)
    assert s.service_ms["p99"] == pytest.approx(10.0, rel=1e-3)
    assert cap.breaking.thresholds[0].value == pytest.approx(500.0, rel=1e-3)
    verdict = cap.verdict()
    assert "knee at 40/s offered" in verdict and "breaking point at 80/s" in verdict
    assert "register.p99 < 100ms (value 500" in verdict
    assert json.loads(json.dumps(cap.to_dict()))["knee"] == {"step": 2, "offered": 40.0}


def test_failures_break_a_step_and_a_step_after_the_break_does_not_move_the_knee(tmp_path: Path) -> None:
    # step 2 has timeouts; step 3 is fine again: the knee stays at step 1 (it must hold for every lower step)
    simulate(tmp_path, [(10, 3, 5, 0), (20, 3, 5, 1), (40, 3, 5, 0)], THRESHOLDS)
    cap = analyze(load_run(tmp_path))
    assert cap is not None
    assert [s.passed for s in cap.steps] == [True, False, True]
    assert cap.knee is not None and cap.knee.offered == 10
    assert cap.breaking is not None and cap.breaking.offered == 20
    failed = {t.expr for t in cap.breaking.thresholds if not t.passed}
    # 2 timeouts against 40 successes (first interval left out): 95.2 % success also misses 99 %
    assert failed == {"timeouts == 0", "register.success_rate >= 99%"}
    assert cap.breaking.values["timeouts"] == 2 and cap.breaking.failed == 2
    assert cap.breaking.success_pct == pytest.approx(100 * 40 / 42)


def test_no_knee_when_the_first_step_breaks_and_no_break_when_none_does(tmp_path: Path) -> None:
    simulate(tmp_path / "a", [(10, 3, 500, 0), (20, 3, 5, 0)], THRESHOLDS)
    cap = analyze(load_run(tmp_path / "a"))
    assert cap is not None and cap.knee is None and cap.breaking is not None and cap.breaking.offered == 10
    assert cap.verdict().startswith("no knee: the first step (10/s)")
    simulate(tmp_path / "b", [(10, 3, 5, 0), (20, 3, 5, 0)], THRESHOLDS)
    cap = analyze(load_run(tmp_path / "b"))
    assert cap is not None and cap.breaking is None and cap.knee is not None and cap.knee.offered == 20
    assert "no step broke a threshold: the capacity is at least 20/s" in cap.verdict()


def test_the_first_interval_of_a_step_is_left_out(tmp_path: Path) -> None:
    def late(i: int, rec: Recorder) -> None:  # the tail of step 1 lands in step 2's first interval (i = 4)
        if i == 4:
            rec.attempt(Phase.REGISTER)
            rec.record(Phase.REGISTER, 900_000, 900_000)
            rec.success(Phase.REGISTER)

    simulate(tmp_path, [(10, 4, 5, 0), (20, 4, 5, 0)], THRESHOLDS, extra=late)
    cap = analyze(load_run(tmp_path))
    assert cap is not None and all(s.passed for s in cap.steps)
    assert cap.steps[1].latency_ms["max"] == pytest.approx(5.0, rel=1e-3)


def test_pauses_are_left_out_and_a_constant_load_has_no_capacity_analysis(tmp_path: Path) -> None:
    simulate(tmp_path / "a", [(10, 3, 5, 0), (0, 3, 0, 0), (20, 3, 5, 0)], THRESHOLDS)
    cap = analyze(load_run(tmp_path / "a"))
    assert cap is not None and [s.offered for s in cap.steps] == [10, 20]
    simulate(tmp_path / "b", [(10, 3, 5, 0)], THRESHOLDS)
    assert analyze(load_run(tmp_path / "b")) is None
    (tmp_path / "b" / INTERVALS).unlink()
    assert analyze(load_run(tmp_path / "b")) is None


def test_intervals_file_is_cumulative_and_survives_a_truncated_last_line(tmp_path: Path) -> None:
    simulate(tmp_path, [(10, 3, 5, 0), (20, 3, 5, 1)], THRESHOLDS)
    ivs = read_intervals(tmp_path)
    assert ivs is not None and ivs.started_at_unix == T0 and len(ivs.records) == 8
    assert [r.step for r in ivs.records] == [0, 0, 0, 1, 1, 1, None, None]
    assert [r.offered_per_s for r in ivs.records] == [10, 10, 10, 20, 20, 20, 0, 0]
    deltas = list(ivs.deltas())
    assert [d.counts.get("register", (0, 0, 0))[1] for d in deltas] == [10, 10, 10, 20, 20, 20, 0, 0]
    assert [d.failures.get("timeout", 0) for d in deltas] == [0, 0, 0, 1, 1, 1, 0, 0]
    assert ivs.records[-1].counts["register"] == (93, 90, 3)  # cumulative
    with (tmp_path / INTERVALS).open("a") as f:
        f.write('{"kind":"interval","t":9.0,"len')  # a run killed while writing
    again = read_intervals(tmp_path)
    assert again is not None and len(again.records) == 8


# --------------------------------------------------------------------------- for real: embedded

def ramp_scenario(tmp_path: Path, target: str | None = None, first: int = 1) -> str:
    """scenarios/capacity-ramp.toml scaled down: 30, 60, 400 registrations/s for 1.25 s each, in
    250 ms intervals, at most 3 in flight against 10 ms per response (~150/s at most). p90, not p99: a
    step has ~60 registrations, and one scheduling hiccup on a busy machine must not move the knee."""
    doc = tomllib.loads((REPO / "scenarios" / "capacity-ramp.toml").read_text())
    thresholds = ['"register.p90 < 250ms"', '"register.success_rate >= 99.5%"', '"timeouts == 0"']
    registrar = "" if target is not None else (
        '[registrar]\nlisten = "127.0.0.1:0"\npassword = "pw-{user}"\ndelay = "10ms"\n')
    return f"""
name = "capacity-ramp-small"
thresholds = [{", ".join(thresholds)}]
[target]
registrar = "{target or 'embedded'}"
domain = "{doc['target']['domain']}"
[endpoints]
count = 610
first = {first}
expires = 3600
[load]
steps = [{{ rate = 30, duration = "1250ms" }}, {{ rate = 60, duration = "1250ms" }},
         {{ rate = 400, duration = "1250ms" }}]
max_in_flight = 3
duration = "3750ms"
unregister_timeout = "5s"
interval = "250ms"
[timers]
max_retries = 0
{registrar}"""


async def test_ramp_finds_the_knee_against_the_embedded_registrar(tmp_path: Path) -> None:
    sc = parse_scenario(ramp_scenario(tmp_path), tmp_path / "ramp.toml")
    lines: list[str] = []
    outcome = await run_scenario(sc, tmp_path / "out", progress=lines.append, handle_signals=False, workers=1)
    cap = analyze(load_run(tmp_path / "out"))
    assert cap is not None, lines
    assert [s.offered for s in cap.steps] == [30, 60, 400]
    assert cap.knee is not None and cap.knee.offered == 60, cap.verdict()
    assert cap.breaking is not None and cap.breaking.offered == 400, cap.verdict()
    assert cap.knee.latency_ms["p90"] < 250 < cap.breaking.latency_ms["p90"]
    assert cap.knee.achieved == pytest.approx(60, rel=0.25)
    assert all(s.failed == 0 for s in cap.steps)
    for s in cap.steps:  # every registration a step counts is accounted for, the ones in flight included
        assert s.in_flight_start + s.attempted == s.succeeded + s.failed + s.in_flight_end, s
    assert any(s.in_flight_end for s in cap.steps)  # the cap of 3 is reached: some are always in flight
    # the whole run misses its p99 (the last step broke it), so the run fails
    assert not outcome.result.passed()
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="capacity-verdict"' in page and "knee at 60/s offered" in page and 'data-plot="capacity"' in page
    # the verdict comes first, before the details; the step table says what adds up
    assert page.index('id="capacity-verdict"') < page.index('id="summary"') < page.index('id="capacity"')
    assert "in flight before + started = succeeded + failed + in flight after" in page
    result = CliRunner().invoke(report, [str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "capacity: knee at 60/s offered" in result.output and "breaking point at 400/s" in result.output


# --------------------------------------------------------------------------- for real: Kamailio

@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioPeer]:
    """This module's own Kamailio (private run dir, free ports): the session one on 5070 is shared with
    every other session on the machine, which may restart it in the middle of a ramp."""
    require_peer("kamailio", have("kamailio"), HOW_TO_INSTALL_KAMAILIO)
    rundir = tmp_path_factory.mktemp("kamailio-ramp")
    sip_port = free_port()
    rpc_port = free_port()
    while rpc_port == sip_port:
        rpc_port = free_port()
    peer = start_kamailio(rundir, sip_port, rpc_port)
    try:
        yield peer
    finally:
        stop_kamailio(rundir)


@pytest.mark.interop
async def test_ramp_against_kamailio(kamailio: KamailioPeer, tmp_path: Path) -> None:
    """Kamailio answers in well under a millisecond: 3 in flight carry far more than 400/s, so no step
    breaks and the knee is the highest step."""
    target = f"sip:{kamailio.host}:{kamailio.port}"
    sc = parse_scenario(ramp_scenario(tmp_path, target, first=24001), tmp_path / "ramp.toml")
    lines: list[str] = []
    outcome = await run_scenario(sc, tmp_path / "out", progress=lines.append, handle_signals=False, workers=1)
    assert outcome.result.registrations.failed == 0, outcome.result.failures
    assert outcome.result.unregistrations.succeeded == outcome.result.registrations.succeeded
    cap = analyze(load_run(tmp_path / "out"))
    assert cap is not None and [s.offered for s in cap.steps] == [30, 60, 400]
    # Latency depends on how busy this shared machine is, so which step is the knee is not asserted
    # here (the embedded-registrar test above pins it with an injected delay); the analysis must
    # still see every step carry load with no failure, find a knee, and the report must say so.
    for s in cap.steps:
        assert s.succeeded > 0 and s.failed == 0, s
    assert cap.knee is not None, cap.verdict()
    assert html.escape(cap.verdict()) in write_report(tmp_path / "out").read_text()
