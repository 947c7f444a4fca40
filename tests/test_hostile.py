"""sipload against a registrar that misbehaves on purpose (tests/hostile_registrar.py).

Malformed, truncated and oversized responses, thousands of headers, a wrong Call-ID, branch or CSeq,
duplicate and late 200s, answers from another address, absurd Expires / Min-Expires / Retry-After,
challenges forever, provisional responses forever, floods: the run goes on, each case is counted
under its failure reason (or as stray / unparseable / foreign datagrams), every endpoint sends a
bounded number of requests, memory stays bounded and nothing raises.

Two levels: every case on virtual time (a `Worker` on an in-memory network, trio's MockClock), and
a few cases end to end (whole runs over UDP on 127.0.0.1 against the hostile server): exit code,
summary.json, the printed summary.
"""

from __future__ import annotations

import gc
import json
import math
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing
from hostile_registrar import CASES, REGISTRAR, HostileNetwork, HostileRegistrar, serve_hostile

import sipload.engine.run as run_module
from sipload.cli.run import summary_lines
from sipload.engine.run import ExitCode, RunOutcome, run_scenario
from sipload.engine.worker import Worker, WorkerReport
from sipload.metrics.aggregate import Aggregate
from sipload.scenario import Scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent

VIRTUAL = """
name = "hostile"
seed = 3
[target]
registrar = "sip:127.0.0.1:5060"
domain = "sipload.test"
[endpoints]
count = 3
expires = 60
password = "pw-{username}"
[load]
rate = 10
duration = "3m"
interval = "1m"
unregister_timeout = "40s"
[timers]
max_retries = 1
"""


@dataclass(frozen=True)
class Expect:
    failures: dict[str, int] = field(default_factory=dict)   # reason -> endpoints
    registered: int = 0
    stray: bool = False
    unparseable: bool = False
    foreign: bool = False
    max_requests: int = 30             # per Call-ID: the request count is bounded whatever the registrar does


EXPECT: dict[str, Expect] = {
    "garbage": Expect({"timeout": 3}, unparseable=True),
    "truncated": Expect({"timeout": 3}, unparseable=True, stray=True),
    "oversized": Expect({"timeout": 3}, unparseable=True, stray=True),
    "thousands_of_headers": Expect({"timeout": 3}, unparseable=True),
    "wrong_call_id": Expect({"timeout": 3}, stray=True),
    "wrong_branch": Expect({"timeout": 3}, stray=True),
    "wrong_cseq": Expect({"timeout": 3}, stray=True),
    "duplicate_200": Expect(registered=3, stray=True, max_requests=12),
    "late_200": Expect({"timeout": 3}, stray=True),
    "elsewhere": Expect({"timeout": 3}, foreign=True),
    "absurd_expires": Expect(registered=3, max_requests=2),
    "zero_expires": Expect({"unexpected_status": 3}, max_requests=1),
    "absurd_min_expires": Expect({"interval_too_brief": 3}, max_requests=1),
    "rising_min_expires": Expect({"interval_too_brief": 3}, max_requests=3),
    "absurd_retry_after": Expect({"interrupted": 3}, max_requests=1),
    "retry_after_zero": Expect({"server_error": 3}, max_requests=2),
    "challenge_forever": Expect({"auth_rejected": 3}, max_requests=2),
    "stale_forever": Expect({"auth_rejected": 3}, max_requests=4),
    "unsupported_challenge": Expect({"unsupported_auth": 3}, max_requests=1),
    "malformed_challenge": Expect({"parse_error": 3}, max_requests=1),
    "provisional_forever": Expect({"timeout": 3}),
    "requests_back": Expect({"timeout": 3}, stray=True),
    "flood": Expect(registered=3, stray=True, max_requests=12),
    "unexpected_status": Expect({"server_error": 3}, max_requests=1),
}


def test_every_case_has_an_expectation() -> None:
    assert set(EXPECT) == set(CASES)


def scenario(text: str, **replace: str) -> Scenario:
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_scenario(text, Path("hostile.toml"))


async def run_virtual(case: str, **kwargs: object) -> tuple[WorkerReport, dict[str, float], HostileRegistrar]:
    sc = scenario(VIRTUAL)
    registrar = HostileRegistrar(case, late=40.0, **kwargs)  # type: ignore[arg-type]
    agg = Aggregate(0.0)
    worker = Worker(sc, REGISTRAR, network=HostileNetwork(registrar), sink=agg.add)  # type: ignore[arg-type]
    start = trio.current_time()
    with trio.fail_after(3600):
        report = await worker.run()
    # bounded in time: the duration, then at most the unregister timeout
    assert trio.current_time() - start <= sc.load.duration + sc.load.unregister_timeout + 1
    agg.flush_interval(1.0)
    return report, agg.metric_values(), registrar


@pytest.mark.parametrize("case", sorted(CASES))
async def test_hostile_case_is_counted_and_bounded(case: str, autojump_clock: trio.testing.MockClock) -> None:
    expect = EXPECT[case]
    report, values, registrar = await run_virtual(case)
    failures = {k.removeprefix("failures."): int(v) for k, v in values.items()
                if k.startswith("failures.") and v}
    assert failures == expect.failures, (case, failures)
    assert values["registrations.succeeded"] == expect.registered
    assert report.internal_errors == 0, report.last_internal_error
    assert (report.stray > 0) == expect.stray, report
    assert (report.unparseable > 0) == expect.unparseable, report
    assert (report.foreign > 0) == expect.foreign, report
    assert max(registrar.requests_by_call.values()) <= expect.max_requests, registrar.requests_by_call
    assert len(registrar.requests_by_call) == 3          # one Call-ID per endpoint, kept on every request
    assert report.left_bound == 0
    states = {e.state for e in report.endpoints}
    if expect.registered:
        assert states == {"unregistered"}                 # and every binding undone at the end
    else:
        reason = next(iter(expect.failures))
        assert states <= {f"failed:{reason}", "unregistered"}, states
        assert all(e.failure_reason == reason for e in report.endpoints)


async def test_a_flood_of_large_junk_uses_bounded_memory(autojump_clock: trio.testing.MockClock) -> None:
    """60 junk datagrams of 30 KB per request (about 40 MB in all): the peak does not grow with
    the flood and nothing of it is kept (the baseline is the run's own histograms)."""
    measured: dict[int, tuple[int, int]] = {}
    for flood in (0, 60):
        gc.collect()
        tracemalloc.start()
        try:
            report, values, registrar = await run_virtual("flood", flood=flood)
            gc.collect()
            measured[flood] = tracemalloc.get_traced_memory()   # (kept after the run, peak)
        finally:
            tracemalloc.stop()
        assert values["registrations.succeeded"] == 3
        assert report.stray >= flood * sum(registrar.requests_by_call.values())
    junk = 60 * 30_000 * sum(registrar.requests_by_call.values())
    assert junk > 30_000_000
    assert measured[60][1] - measured[0][1] < 8_000_000, measured
    assert measured[60][0] < 1_000_000, measured


# --- end to end: `sipload run` against the hostile server over UDP ------------------------------

REAL = """
name = "hostile-{case}"
seed = 5
thresholds = ["register.success_rate == 100%"]
[target]
registrar = "sip:127.0.0.1:{port}"
domain = "sipload.test"
[endpoints]
count = 4
expires = 60
password = "pw-{{username}}"
[load]
rate = 20
duration = "2s"
interval = "500ms"
unregister_timeout = "1s"
[timers]
t1 = "20ms"
max_retries = 0
"""

# case -> (failures in summary.json, the note that says what happened)
REAL_CASES: dict[str, tuple[dict[str, int], str]] = {
    "garbage": ({"timeout": 4}, "datagrams could not be parsed"),
    "wrong_branch": ({"timeout": 4}, "responses matched no request in flight"),
    "elsewhere": ({"timeout": 4}, "datagrams came from another address than the registrar's"),
    "duplicate_200": ({}, "responses matched no request in flight"),
    "challenge_forever": ({"auth_rejected": 4}, ""),
    "absurd_expires": ({}, ""),
}


async def test_runs_against_hostile_registrars_end_cleanly_and_say_what_happened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six runs at once over real UDP, each against its own hostile server (report.html, drawn by
    matplotlib for a second or two, is left out: it would stall the other runs' timers)."""
    monkeypatch.setattr(run_module, "_write_report", lambda out, progress: None)
    results: dict[str, tuple[RunOutcome, list[str], HostileRegistrar]] = {}

    async with trio.open_nursery() as servers:
        async def one(case: str) -> None:
            registrar = HostileRegistrar(case, late=10.0)
            addr = await servers.start(serve_hostile, registrar)
            sc = scenario(REAL.format(case=case.replace("_", "-"), port=addr[1]))
            lines: list[str] = []
            with trio.fail_after(30):
                outcome = await run_scenario(sc, tmp_path / case, progress=lines.append, handle_signals=False,
                                             workers=1)
            results[case] = (outcome, lines, registrar)

        async with trio.open_nursery() as runs:
            for case in REAL_CASES:
                runs.start_soon(one, case)
        servers.cancel_scope.cancel()

    for case, (failures, note) in REAL_CASES.items():
        outcome, lines, registrar = results[case]
        text = "\n".join([*lines, summary_lines(outcome.result, outcome.out_dir)])
        assert outcome.exit_code == (ExitCode.OK if not failures else ExitCode.THRESHOLD_FAILED), (case, text)
        summary = json.loads((outcome.out_dir / "summary.json").read_text())
        assert summary["failures"] == failures, (case, summary["failures"], text)
        if failures:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(failures.items()))
            assert f"failures: {reasons}" in text, (case, text)
        if note:
            assert any(note in n for n in summary["notes"]), (case, summary["notes"])
            assert "note: " in text and note in text, (case, text)
        assert not any("could not be handled" in n for n in summary["notes"]), summary["notes"]
        assert registrar.requests_by_call and max(registrar.requests_by_call.values()) < 80, registrar.requests_by_call
        assert not list(outcome.out_dir.glob(".*.tmp")), list(outcome.out_dir.iterdir())
        assert math.isfinite(summary["duration_s"]) and summary["duration_s"] < 15
