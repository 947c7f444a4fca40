"""The machine-readable outputs, checked with the tools that read them:

- summary.json against the JSON Schema shipped in the package (sipload/data/summary.schema.json);
- junit.xml against an XSD of what the common JUnit consumers (Ant's XML formatter, Jenkins, GitLab)
  accept, and read back with junitparser;
- the .hlog files with HdrHistogram's own log readers: hdrh's HistogramLogReader and the Java
  HistogramLogProcessor (Debian libhdrhistogram-java, installed by peers/install);
- the Prometheus text exposition with prometheus_client's parser, served over HTTP on loopback.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import trio
import xmlschema
from click.testing import CliRunner
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from junitparser import Error, Failure, JUnitXml
from prometheus_client.parser import text_string_to_metric_families

from peers import require_peer
from sipload.cli.report import metrics_option
from sipload.engine.live import open_live_outputs
from sipload.engine.run import run_scenario
from sipload.metrics import HIGHEST_US, Aggregate, Phase, Recorder
from sipload.metrics.phases import Kind
from sipload.providers.crosscheck import CrossCheckResult
from sipload.report import RunResult, build_result, write_partial
from sipload.report.intervals import read_intervals
from sipload.report.prometheus import CONTENT_TYPE, MetricsExporter, exposition, parse_listen
from sipload.report.schema import intervals_schema, summary_schema
from sipload.report.writers import summary_json
from sipload.scenario import parse_scenario
from sipload.sip.failures import FailureReason
from sipload.thresholds import ThresholdResult

T0 = 1_800_000_000.0
HDRH_JAR = Path("/usr/share/java/hdrhistogram.jar")
HOW_TO_INSTALL_HDRH = "run peers/install (installs libhdrhistogram-java and a JRE)"

SCENARIO = """
name = "machine"
thresholds = ["register.p99 < 500ms", "failures == 0", "unregister.p50 < 0.001ms"]
[target]
registrar = "embedded"
[endpoints]
count = 30
expires = 2
refresh_at = 0.5
refresh_margin = "200ms"
[load]
rate = 30
duration = "2500ms"
unregister_timeout = "3s"
interval = "500ms"
[registrar]
listen = "127.0.0.1:0"
password = "pw-{user}"
min_expires = 1
"""


@dataclasses.dataclass
class MachineRun:
    out: Path
    outcome: Any
    scraped: list[dict[str, Any]]     # /metrics, scraped once during the run after an interval with bindings


@pytest.fixture(scope="module")
def machine_run(tmp_path_factory: pytest.TempPathFactory) -> MachineRun:
    """A real run: 30 endpoints register, refresh and unregister; one threshold fails on purpose. It serves
    live metrics (the exporter only reads the aggregate, it writes nothing), scraped once during the run:
    one run for the files' tests and for test_a_run_serves_live_metrics."""
    out = tmp_path_factory.mktemp("machine") / "out"
    sc = parse_scenario(SCENARIO, out.parent / "s.toml")
    seen: list[str] = []
    got_port = trio.Event()
    interval_done = trio.Event()
    scraped: list[dict[str, Any]] = []

    def progress(line: str) -> None:
        seen.append(line)
        if m := re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
            seen.append(m.group(1))
            got_port.set()
        if (m := re.search(r"registered (\d+)", line)) and int(m.group(1)) > 0:
            interval_done.set()  # an interval with bindings held has been flushed

    async def scrape() -> None:
        await got_port.wait()
        port = int(next(s for s in seen if s.isdigit()))
        await interval_done.wait()
        _, _, body = await http(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        scraped.append(families(body.decode()))

    async def served() -> Any:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scrape)
            return await run_scenario(sc, out, progress=progress, handle_signals=False, workers=1,
                                      metrics=("127.0.0.1", 0))

    outcome = trio.run(served)
    return MachineRun(out, outcome, scraped)


@pytest.fixture(scope="module")
def run_dir(machine_run: MachineRun) -> Path:
    outcome = machine_run.outcome
    assert outcome.result.registrations.succeeded == 30 and outcome.result.refreshes.succeeded > 0
    return machine_run.out


def validator() -> jsonschema.protocols.Validator:
    schema = summary_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def synthetic(complete: bool = True) -> RunResult:
    r = Recorder(0.0)
    for i in range(50):
        r.attempt(Phase.REGISTER)
        r.record(Phase.CHALLENGE, 500 + i, 400 + i)
        r.record(Phase.REGISTER, 2000 + 10 * i, 1500 + i)
        r.success(Phase.REGISTER)
        r.response(401)
        r.response(200)
        r.schedule_lag(100 * i)
    r.attempt(Phase.REFRESH)
    r.failure(Phase.REFRESH, FailureReason.SERVER_ERROR)
    r.response(503)
    r.retransmission()
    agg = Aggregate(T0)
    agg.add(r.take_interval(5.0))
    agg.flush_interval(T0 + 5)
    return build_result(
        agg, scenario="syn", target="sip:127.0.0.1:5070", duration_s=5.0, complete=complete, endpoints=50,
        offered_rate=10.0, arrival_period_s=5.0, interrupted_by=None if complete else "SIGINT",
        thresholds=[ThresholdResult("register.p99 < 1ms", 2.49, False), ThresholdResult("timeouts == 0", 0.0, True),
                    ThresholdResult("auth.p50 < 5ms", None, False)],
    )


# ---------------------------------------------------------------------------------- summary.json

def test_schema_is_valid_and_shipped_as_package_data() -> None:
    schema = summary_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    root = Path(__file__).resolve().parents[1]
    maturin = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["maturin"]
    shipped = {item["path"] for item in maturin["include"] if item.get("format") == "wheel"}
    assert "sipload/data/*" in shipped  # the schema is installed with the package


def test_summaries_validate(run_dir: Path) -> None:
    v = validator()
    real = json.loads((run_dir / "summary.json").read_text())
    assert list(v.iter_errors(real)) == []
    for result in (synthetic(), synthetic(complete=False)):
        assert list(v.iter_errors(json.loads(summary_json(result)))) == []
    checked = CrossCheckResult("kamailio", checked=3, agreed=2, matrix={"registered": {"registered": 2, "missing": 1}},
                               propagation_ms=[1.5, 2.5])
    with_crosscheck = dataclasses.replace(synthetic(), crosscheck=checked.to_dict())
    assert list(v.iter_errors(json.loads(summary_json(with_crosscheck)))) == []
    empty = build_result(Aggregate(T0), scenario="e", target="t", duration_s=0.0, complete=False, endpoints=0,
                         offered_rate=0.0, arrival_period_s=0.0)
    assert list(v.iter_errors(json.loads(summary_json(empty)))) == []


def test_intervals_lines_validate_name_their_fields_and_add_up(run_dir: Path) -> None:
    schema = intervals_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    lines = [json.loads(line) for line in (run_dir / "intervals.jsonl").read_text().splitlines()]
    for line in lines:
        assert list(v.iter_errors(line)) == [], line
    header, rows = lines[0], lines[1:]
    assert header["version"] == 2 and set(header["sections"]) == {"at_end", "cumulative", "in_interval"}
    assert len(rows) >= 5
    # every per-interval figure is the difference of two cumulative lines; the last cumulative line
    # holds the whole run, as summary.json counts it
    before: dict[str, Any] = {"phases": {}, "retransmissions": 0}
    for row in rows:
        for phase, c in row["cumulative"]["phases"].items():
            old = before["phases"].get(phase, {"attempted": 0, "succeeded": 0, "failed": 0})
            assert row["in_interval"]["phases"][phase] == {k: c[k] - old[k] for k in c}
        assert row["in_interval"]["retransmissions"] == row["cumulative"]["retransmissions"] - before["retransmissions"]
        before = row["cumulative"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert rows[-1]["cumulative"]["phases"]["register"]["succeeded"] == summary["registrations"]["succeeded"] == 30
    assert sum(r["in_interval"]["phases"].get("register", {}).get("succeeded", 0) for r in rows) == 30
    assert rows[-1]["at_end"]["registered"] == 0  # all unregistered at the end
    ivs = read_intervals(run_dir)
    assert ivs is not None and ivs.records[-1].counts["register"][1] == 30


def test_intervals_written_by_version_1_are_still_read(tmp_path: Path) -> None:
    (tmp_path / "intervals.jsonl").write_text(
        '{"kind": "header", "format": "sipload-intervals", "version": 1, "started_at_unix": 5.0, '
        '"interval_s": 1.0, "steps": []}\n'
        '{"kind":"interval","t":1.0,"length_s":1.0,"offered_per_s":10,"step":null,"registered":9,'
        '"in_flight":1,"kernel_drops":0,"counts":{"register":[10,9,0]},"failures":{},"responses":{"200":9},'
        '"retransmissions":2}\n')
    ivs = read_intervals(tmp_path)
    assert ivs is not None
    (rec,) = ivs.records
    assert (rec.registered, rec.in_flight, rec.counts, rec.responses, rec.retransmissions) == (
        9, 1, {"register": (10, 9, 0)}, {"200": 9}, 2)


def test_schema_names_every_field_and_enum_of_the_model() -> None:
    schema = summary_schema()
    d = synthetic().to_dict()
    assert set(d) == set(schema["required"])
    assert set(schema["properties"]) == set(d)
    assert schema["$defs"]["phase"]["enum"] == [str(p) for p in Phase]
    assert schema["$defs"]["reason"]["enum"] == [str(r) for r in FailureReason]
    assert set(schema["$defs"]["latency"]["required"]) == set(d["latency_ms"]["register"])


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("registrations", "attempted"), -1, "minimum"),
        (("failures",), {"gremlins": 1}, "reason"),
        (("responses",), {"2000": 1}, "code"),
        (("latency_ms", "register", "p99"), "fast", "type"),
        (("latency_ms", "hold"), {}, "phase"),
        (("started_at",), "yesterday", "format"),
        (("thresholds", 0, "passed"), "yes", "type"),
        (("rate",), {"offered": 1.0}, "required"),
        (("surprise",), 1, "unknown top-level field"),
    ],
)
def test_schema_rejects_broken_summaries(path: tuple[str | int, ...], value: Any, why: str) -> None:
    doc = json.loads(summary_json(synthetic()))
    bad = copy.deepcopy(doc)
    target: Any = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert list(validator().iter_errors(bad)), why
    missing = copy.deepcopy(doc)
    del missing["passed"]
    assert list(validator().iter_errors(missing))


# ------------------------------------------------------------------------------------- junit.xml

JUNIT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<!-- What Ant's XML formatter writes and Jenkins, GitLab and junitparser read (written for these tests). -->
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:simpleType name="timestamp">
    <xs:restriction base="xs:string">
      <xs:pattern value="[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:complexType name="problem" mixed="true">
    <xs:attribute name="message" type="xs:string"/>
    <xs:attribute name="type" type="xs:string" use="required"/>
  </xs:complexType>
  <xs:element name="testsuites">
    <xs:complexType>
      <xs:sequence><xs:element ref="testsuite" minOccurs="0" maxOccurs="unbounded"/></xs:sequence>
      <xs:attribute name="name" type="xs:string"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
      <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
      <xs:attribute name="time" type="xs:decimal"/>
    </xs:complexType>
  </xs:element>
  <xs:element name="testsuite">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="properties" minOccurs="0">
          <xs:complexType>
            <xs:sequence>
              <xs:element name="property" minOccurs="0" maxOccurs="unbounded">
                <xs:complexType>
                  <xs:attribute name="name" type="xs:string" use="required"/>
                  <xs:attribute name="value" type="xs:string" use="required"/>
                </xs:complexType>
              </xs:element>
            </xs:sequence>
          </xs:complexType>
        </xs:element>
        <xs:element name="testcase" minOccurs="0" maxOccurs="unbounded">
          <xs:complexType>
            <xs:sequence>
              <xs:choice minOccurs="0">
                <xs:element name="skipped" type="problem"/>
                <xs:element name="error" type="problem"/>
                <xs:element name="failure" type="problem"/>
              </xs:choice>
              <xs:element name="system-out" type="xs:string" minOccurs="0"/>
              <xs:element name="system-err" type="xs:string" minOccurs="0"/>
            </xs:sequence>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="classname" type="xs:string" use="required"/>
            <xs:attribute name="time" type="xs:decimal" use="required"/>
          </xs:complexType>
        </xs:element>
        <xs:element name="system-out" type="xs:string" minOccurs="0"/>
        <xs:element name="system-err" type="xs:string" minOccurs="0"/>
      </xs:sequence>
      <xs:attribute name="name" type="xs:string" use="required"/>
      <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="failures" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="errors" type="xs:nonNegativeInteger" use="required"/>
      <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
      <xs:attribute name="time" type="xs:decimal" use="required"/>
      <xs:attribute name="timestamp" type="timestamp"/>
      <xs:attribute name="hostname" type="xs:string"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"""


def test_junit_xml_is_valid_and_read_by_junitparser(run_dir: Path, tmp_path: Path) -> None:
    xsd = xmlschema.XMLSchema(JUNIT_XSD)
    xsd.validate(str(run_dir / "junit.xml"))
    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    suites = list(xml)
    assert len(suites) == 1 and suites[0].name == "sipload.machine"
    cases = {c.name: c for c in suites[0]}
    assert set(cases) == {"register.p99 < 500ms", "failures == 0", "unregister.p50 < 0.001ms"}
    assert cases["register.p99 < 500ms"].is_passed and cases["failures == 0"].is_passed
    failed = cases["unregister.p50 < 0.001ms"]
    assert isinstance(failed.result[0], Failure) and "wanted < 0.001ms" in (failed.result[0].message or "")
    assert (suites[0].tests, suites[0].failures, suites[0].errors) == (3, 1, 0)
    # an interrupted run, a threshold with no value: errors; still valid
    write_partial(synthetic(), tmp_path, interrupted_by="SIGINT")
    xsd.validate(str(tmp_path / "junit.xml"))
    suite = next(iter(JUnitXml.fromfile(str(tmp_path / "junit.xml"))))
    kinds = {c.name: type(c.result[0]).__name__ for c in suite if c.result}
    assert kinds == {"register.p99 < 1ms": "Failure", "auth.p50 < 5ms": "Error", "run completed": "Error"}
    assert isinstance(next(c for c in suite if c.name == "run completed").result[0], Error)
    assert (suite.tests, suite.failures, suite.errors) == (4, 1, 2)


# ----------------------------------------------------------------------------------------- .hlog

def hdrh_total(path: Path) -> int:
    reader = HistogramLogReader(str(path), HdrHistogram(1, HIGHEST_US, 3))
    total = 0
    try:
        while (h := reader.get_next_interval_histogram()) is not None:
            total += h.get_total_count()
    finally:
        reader.input_file.close()
    return int(total)


def test_hlog_files_are_read_whole_by_hdrh(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    for kind_key, kind in (("latency_ms", Kind.INTENDED), ("service_ms", Kind.SERVICE)):
        for phase in Phase:
            name = str(phase) if kind is Kind.INTENDED else f"{phase}.service"
            expected = int(summary[kind_key].get(str(phase), {}).get("count", 0))
            assert hdrh_total(run_dir / f"{name}.hlog") == expected, name
    first = (run_dir / "register.hlog").read_text().splitlines()
    start = float(re.search(r"StartTime: ([0-9.]+)", "\n".join(first)).group(1))  # type: ignore[union-attr]
    base = float(re.search(r"BaseTime: ([0-9.]+)", "\n".join(first)).group(1))  # type: ignore[union-attr]
    assert start <= base < start + 0.001  # else HdrHistogram's readers skip the first interval


def test_hlog_files_are_read_whole_by_hdrhistogram_java(run_dir: Path, tmp_path: Path) -> None:
    require_peer("HdrHistogram (Java)", HDRH_JAR.exists() and shutil.which("java") is not None, HOW_TO_INSTALL_HDRH)
    summary = json.loads((run_dir / "summary.json").read_text())
    for name, expected in (("register", summary["latency_ms"]["register"]["count"]),
                           ("refresh.service", summary["service_ms"]["refresh"]["count"]),
                           ("schedule_lag", None)):
        out = tmp_path / name
        proc = subprocess.run(
            ["java", "-cp", str(HDRH_JAR), "org.HdrHistogram.HistogramLogProcessor",
             "-i", str(run_dir / f"{name}.hlog"), "-o", str(out), "-outputValueUnitRatio", "1000"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        hgrm = Path(f"{out}.hgrm").read_text()
        m = re.search(r"Max\s*=\s*([0-9.]+), Total count\s*=\s*(\d+)", hgrm)
        assert m is not None, hgrm[-500:]
        if expected is not None:
            assert int(m.group(2)) == int(expected), name
        else:
            assert int(m.group(2)) > 0
        if name == "register":  # values are in µs; with the ratio 1000 the max is in ms, as in summary.json
            assert float(m.group(1)) == pytest.approx(summary["latency_ms"]["register"]["max"], rel=0.01)


# ------------------------------------------------------------------------------------ Prometheus

def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_parses_and_carries_the_run() -> None:
    agg = Aggregate(T0)
    r = Recorder(0.0)
    for i in range(100):
        r.attempt(Phase.REGISTER)
        r.record(Phase.REGISTER, 1000 * (i + 1), 500 * (i + 1))
        r.success(Phase.REGISTER)
        r.response(200)
    r.attempt(Phase.REGISTER)
    r.failure(Phase.REGISTER, FailureReason.TIMEOUT)
    r.retransmission()
    r.set_gauge("registered", 100)
    agg.add(r.take_interval(1.0))
    agg.flush_interval(T0 + 1)
    text = exposition(agg, scenario='we "quote"\\', now_unix=T0 + 2.5)
    fams = families(text)
    ops = {(s.labels["phase"], s.labels["outcome"]): s.value for s in fams["sipload_operations"].samples}
    assert ops["register", "attempted"] == 101 and ops["register", "succeeded"] == 100
    assert ops["register", "failed"] == 1
    assert fams["sipload_operations"].type == "counter"
    fail = fams["sipload_failures"].samples[0]
    assert fail.labels == {"scenario": 'we "quote"\\', "phase": "register", "reason": "timeout"}
    assert fams["sipload_registered"].samples[0].value == 100
    assert fams["sipload_elapsed_seconds"].samples[0].value == 2.5
    lat = fams["sipload_latency_seconds"]
    assert lat.type == "summary"
    q = {(s.labels.get("kind"), s.labels.get("quantile")): s.value for s in lat.samples
         if s.labels.get("phase") == "register" and s.name == "sipload_latency_seconds"}
    assert q["intended", "0.99"] == pytest.approx(0.099, rel=0.01)
    assert q["service", "0.5"] == pytest.approx(0.025, rel=0.01)
    count = next(s for s in lat.samples if s.name.endswith("_count") and s.labels["kind"] == "intended"
                 and s.labels["phase"] == "register")
    assert count.value == 100
    # before the first interval: only sipload_up
    assert set(families(exposition(None))) == {"sipload_up"}


async def http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


async def test_metrics_endpoint_serves_the_latest_interval(tmp_path: Path) -> None:
    exporter = MetricsExporter("machine")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(exporter.serve, "127.0.0.1", 0)
        status, headers, body = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK" and headers["Content-Type"] == CONTENT_TYPE
        assert set(families(body.decode())) == {"sipload_up"}
        # the run's per-interval hook: intervals.jsonl and the exporter, from one call
        sc = parse_scenario(SCENARIO, tmp_path / "s.toml")
        live = open_live_outputs(sc, tmp_path, T0, exporter)
        agg = Aggregate(T0)
        r = Recorder(0.0)
        r.attempt(Phase.REGISTER)
        r.record(Phase.REGISTER, 3000, 1000)
        r.success(Phase.REGISTER)
        r.set_gauge("registered", 1)
        agg.add(r.take_interval(0.5))
        agg.flush_interval(T0 + 0.5)
        live.interval(agg, T0 + 0.5)
        live.close()
        status, headers, body = await http(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        fams = families(body.decode())
        assert fams["sipload_registered"].samples[0].value == 1
        assert int(headers["Content-Length"]) == len(body)
        record = json.loads((tmp_path / "intervals.jsonl").read_text().splitlines()[1])
        assert record["at_end"]["registered"] == 1 and record["offered_per_s"] == 30.0
        status, headers, body = await http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert status.endswith("200 OK") and body == b"" and int(headers["Content-Length"]) > 0
        status, _, _ = await http(port, b"GET / HTTP/1.1\r\n\r\n")
        assert status == "HTTP/1.1 404 Not Found"
        status, headers, _ = await http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert status == "HTTP/1.1 405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
        assert exporter.scrapes == 3
        nursery.cancel_scope.cancel()



def test_metrics_option_parses_host_and_port() -> None:
    @click.command()
    @metrics_option
    def cmd(metrics: tuple[str, int] | None) -> None:
        click.echo(repr(metrics))

    runner = CliRunner()
    assert runner.invoke(cmd, ["--metrics", "127.0.0.1:9464"]).output.strip() == "('127.0.0.1', 9464)"
    assert runner.invoke(cmd, ["--metrics", "[::1]:0"]).output.strip() == "('::1', 0)"
    assert runner.invoke(cmd, []).output.strip() == "None"
    for bad in ("9464", "127.0.0.1:http", "::1:9464", "127.0.0.1:70000"):
        result = runner.invoke(cmd, ["--metrics", bad])
        assert result.exit_code == 2, bad
        assert "HOST:PORT" in result.output or "brackets" in result.output, bad
    assert parse_listen("localhost:9464") == ("localhost", 9464)


def test_a_run_serves_live_metrics(machine_run: MachineRun) -> None:
    assert machine_run.outcome.result.registrations.succeeded == 30
    fams = machine_run.scraped[0]
    assert fams["sipload_up"].samples[0].labels == {"scenario": "machine"}
    assert fams["sipload_registered"].samples[0].value > 0
    assert any(s.labels.get("phase") == "register" for s in fams["sipload_latency_seconds"].samples)
