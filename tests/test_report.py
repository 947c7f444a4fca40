"""Report: RunResult and its outputs (summary.json, junit.xml, endpoints.csv)."""

from __future__ import annotations

import csv
import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

import pytest

from sipload.metrics import Aggregate, Phase, Recorder
from sipload.report import EndpointState, RunResult, build_result, write_partial, write_results, writers
from sipload.report.writers import ENDPOINT_COLUMNS, threshold_message
from sipload.sip.failures import FailureReason
from sipload.thresholds import ThresholdResult

T0 = 1_700_000_000.0
PASSWORD = "hunter2-S3cret!"  # the scenario's password: must never reach an output


def make_aggregate() -> Aggregate:
    r = Recorder(now=0.0)
    for i in range(1, 201):
        r.attempt(Phase.REGISTER)
        r.record(Phase.CHALLENGE, 1000 + i, 900 + i)
        r.record(Phase.AUTH, 2000 + i, 1900 + i)
        r.record(Phase.REGISTER, 3000 + 10 * i, 2800 + 10 * i)
        r.success(Phase.REGISTER)
        r.response(401)
        r.response(200)
        r.schedule_lag(i * 5000)  # up to 1000 ms late
    for _ in range(4):
        r.attempt(Phase.REGISTER)
        r.failure(Phase.REGISTER, FailureReason.TIMEOUT)
    r.attempt(Phase.REFRESH)
    r.failure(Phase.REFRESH, FailureReason.AUTH_REJECTED)
    r.response(403)
    r.retransmission()
    r.set_gauge("kernel_drops", 2)
    r.set_gauge("registered", 200)
    agg = Aggregate(T0)
    agg.add(r.take_interval(10.0))
    agg.flush_interval(T0 + 10.0)
    return agg


def endpoint(i: int, username: str) -> EndpointState:
    return EndpointState(
        index=i,
        username=username,
        state="registered",
        last_status=200,
        failure_reason="",
        registrations=1,
        refreshes=0,
        contact=f"<sip:{username}@127.0.0.2:5070>",
        call_id=f"call-{i}@127.0.0.2",
    )


THRESHOLDS = [
    ThresholdResult("register.p99 < 200ms", 250.3, False),
    ThresholdResult("register.success_rate > 99%", 98.06, False),
    ThresholdResult("failures.timeout < 10", 4.0, True),
    ThresholdResult("unregister.p50 < 50ms", None, False),
]


def make_result(*, complete: bool = True, thresholds: list[ThresholdResult] | None = None) -> RunResult:
    return build_result(
        make_aggregate(),
        scenario="smoke",
        target="udp:127.0.0.1:5060",
        duration_s=12.5,
        complete=complete,
        endpoints=3,
        offered_rate=25.0,
        arrival_period_s=8.0,
        thresholds=THRESHOLDS if thresholds is None else thresholds,
        endpoint_states=[endpoint(0, "alice"), endpoint(1, PASSWORD.upper()), endpoint(2, "bob,\"x\"")],
        interrupted_by=None if complete else "SIGINT",
    )


def test_build_result_numbers() -> None:
    r = make_result()
    assert r.started_at == "2023-11-14T22:13:20.000Z"
    assert (r.registrations.attempted, r.registrations.succeeded, r.registrations.failed) == (204, 200, 4)
    assert r.refreshes.failed == 1 and r.unregistrations.attempted == 0
    assert r.failures == {"auth_rejected": 1, "timeout": 4}
    assert r.failures_by_phase == {"refresh": {"auth_rejected": 1}, "register": {"timeout": 4}}
    assert r.responses == {"200": 200, "401": 200, "403": 1}
    assert r.rate.achieved == 200 / 8.0 and r.rate.offered == 25.0
    assert set(r.latency_ms) == {"challenge", "auth", "register"}
    assert r.latency_ms["register"]["count"] == 200
    assert r.latency_ms["register"]["max"] == pytest.approx(5.0, rel=1e-3)
    assert r.service_ms["register"]["max"] == pytest.approx(4.8, rel=1e-3)
    assert set(r.schedule_lag_ms) == {"p50", "p99", "max"}
    assert r.kernel_drops == 2
    assert any("fell behind its schedule by up to 1000 ms" in n for n in r.notes)  # ~1000 ms
    assert any("dropped 2 datagrams" in n for n in r.notes)
    assert not r.passed()
    assert make_result(thresholds=[ThresholdResult("failures < 10", 5.0, True)]).passed()
    assert make_result(thresholds=[]).passed()
    assert not make_result(complete=False, thresholds=[]).passed()


def test_summary_json_fields_and_types(tmp_path: Path) -> None:
    write_results(make_result(), tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    types = {
        "scenario": str,
        "target": str,
        "started_at": str,
        "duration_s": float,
        "complete": bool,
        "endpoints": int,
        "registrations": dict,
        "refreshes": dict,
        "unregistrations": dict,
        "failures": dict,
        "failures_by_phase": dict,
        "responses": dict,
        "retransmissions": int,
        "latency_ms": dict,
        "service_ms": dict,
        "rate": dict,
        "schedule_lag_ms": dict,
        "kernel_drops": int,
        "thresholds": list,
        "notes": list,
        "passed": bool,
    }
    for key, typ in types.items():
        assert isinstance(s[key], typ), key
    assert s["interrupted_by"] is None
    assert "endpoint_states" not in s
    assert s["registrations"] == {"attempted": 204, "succeeded": 200, "failed": 4}
    assert s["failures"] == {"auth_rejected": 1, "timeout": 4}
    assert s["responses"] == {"200": 200, "401": 200, "403": 1}
    reg = s["latency_ms"]["register"]
    assert {"p50", "p90", "p99", "p99.9", "max", "count"} <= set(reg)
    assert all(isinstance(x, float) for x in reg.values())
    assert s["rate"] == {"offered": 25.0, "achieved": 25.0}
    assert s["thresholds"][0] == {"expr": "register.p99 < 200ms", "value": 250.3, "passed": False, "why": ""}
    assert s["thresholds"][3]["value"] is None
    assert s["passed"] is False


def test_junit_structure(tmp_path: Path) -> None:
    write_results(make_result(), tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "sipload.smoke"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [t.expr for t in THRESHOLDS]
    failures = [f for c in cases for f in c.findall("failure")]
    errors = [e for c in cases for e in c.findall("error")]
    for el in (root, suite):
        assert el.get("tests") == str(len(cases)) == "4"
        assert el.get("failures") == str(len(failures)) == "2"
        assert el.get("errors") == str(len(errors)) == "1"
    assert suite.get("skipped") == "0" and suite.get("time") == "12.500"
    assert failures[0].get("message") == "register.p99 = 250.3 ms, wanted < 200ms"
    assert failures[1].get("message") == "register.success_rate = 98.06 %, wanted > 99%"
    assert errors[0].get("message") == "unregister.p50 has no value, wanted < 50ms"
    assert cases[2].find("failure") is None and cases[2].find("error") is None
    assert all(c.get("classname") == "sipload.smoke" for c in cases)
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["target"] == "udp:127.0.0.1:5060"
    out = suite.find("system-out")
    assert out is not None and out.text is not None and "fell behind" in out.text


def test_junit_incomplete_run_and_odd_characters(tmp_path: Path) -> None:
    r = dataclasses.replace(make_result(thresholds=[]), scenario="a\x01<b>&")
    write_partial(r, tmp_path, interrupted_by="SIGINT")
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert suite.get("name") == "sipload.a\ufffd<b>&"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "0", "1")
    err = suite.find("testcase/error")
    assert err is not None and err.get("message") == "the run was interrupted by SIGINT"
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["complete"] is False and s["interrupted_by"] == "SIGINT" and s["passed"] is False


def test_threshold_messages() -> None:
    assert threshold_message(ThresholdResult("failures == 0", 12.0, False)) == "failures = 12, wanted == 0"
    assert (
        threshold_message(ThresholdResult("rate.achieved >= 100", 87.25, False))
        == "rate.achieved = 87.25 /s, wanted >= 100"
    )
    assert (
        threshold_message(ThresholdResult("schedule_lag.max<5ms", 12.0, False))
        == "schedule_lag.max = 12 ms, wanted <5ms"
    )
    assert threshold_message(ThresholdResult("nonsense", 1.5, False)) == "nonsense = 1.5"


def test_endpoints_csv_has_no_password(tmp_path: Path) -> None:
    names = {f.name for f in dataclasses.fields(EndpointState)}
    assert not any(w in n for n in names for w in ("pass", "secret", "credential", "ha1", "auth"))
    with pytest.raises(TypeError):
        EndpointState(**{**dataclasses.asdict(endpoint(0, "a")), "password": PASSWORD})

    write_results(make_result(), tmp_path)
    with (tmp_path / "endpoints.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == ENDPOINT_COLUMNS
    assert not any("pass" in col for col in rows[0])
    assert len(rows) == 4
    assert rows[1] == [
        "0", "alice", "registered", "200", "", "1", "0", "<sip:alice@127.0.0.2:5070>", "call-0@127.0.0.2"
    ]
    assert rows[2][1] == PASSWORD.upper()  # a username that looks like a password is just a username
    assert rows[3][1] == 'bob,"x"'  # quoting round-trips
    for name in ("endpoints.csv", "summary.json", "junit.xml"):
        assert PASSWORD not in (tmp_path / name).read_text()


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_results(make_result(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["endpoints.csv", "junit.xml", "summary.json"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken(result: RunResult, f: TextIO) -> None:
        f.write("index,half a row")
        raise OSError("disk full")

    monkeypatch.setattr(writers, "write_endpoints_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_results(make_result(thresholds=[]), tmp_path)
    # the old endpoints.csv is intact, no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["endpoints.csv", "junit.xml", "summary.json"]
    assert (tmp_path / "endpoints.csv").read_bytes() == before["endpoints.csv"]
    # the files written before the failure were replaced whole
    assert json.loads((tmp_path / "summary.json").read_text())["thresholds"] == []


def test_write_results_creates_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "1"
    write_results(make_result(), out)
    assert (out / "summary.json").is_file()
