"""Writers: RunResult -> summary.json, junit.xml, endpoints.csv. Each file is written atomically
(a temporary file in the same directory, fsync, os.replace): a reader sees the old file or the new one,
never half of one, and an interrupted write leaves no temporary file behind.

Writers only format: every number comes from the RunResult.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from sipload.report.result import RunResult
from sipload.thresholds import MetricKind, ThresholdError, ThresholdResult, metric_kind, parse_threshold

SUMMARY = "summary.json"
JUNIT = "junit.xml"
ENDPOINTS = "endpoints.csv"
ENDPOINT_COLUMNS = (
    "index",
    "username",
    "state",
    "last_status",
    "failure_reason",
    "registrations",
    "refreshes",
    "contact",
    "call_id",
)

_EXPR = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*((?:<=|>=|==|!=|<|>).*?)\s*$")
_UNIT_OF_KIND = {MetricKind.LATENCY: "ms", MetricKind.PERCENT: "%", MetricKind.RATE: "/s"}
# Characters XML 1.0 cannot carry at all.
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_results(result: RunResult, out_dir: Path) -> None:
    """summary.json, junit.xml and endpoints.csv in `out_dir` (created if needed), each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with _atomic(out_dir / SUMMARY) as f:
        f.write(summary_json(result))
    with _atomic(out_dir / JUNIT) as f:
        f.write(junit_xml(result))
    with _atomic(out_dir / ENDPOINTS, newline="") as f:
        write_endpoints_csv(result, f)


def write_summary(result: RunResult, out_dir: Path) -> None:
    """summary.json alone, atomically (written again once a stepped run's capacity is known)."""
    with _atomic(out_dir / SUMMARY) as f:
        f.write(summary_json(result))


def write_partial(result: RunResult, out_dir: Path, interrupted_by: str | None = None) -> None:
    """The same outputs for a run that was stopped early (Ctrl-C): complete=False."""
    by = interrupted_by if interrupted_by is not None else result.interrupted_by
    write_results(replace(result, complete=False, interrupted_by=by), out_dir)


def summary_json(result: RunResult) -> str:
    return json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"


def metric_unit(metric: str) -> str:
    """The unit a metric's value is shown in: "ms", "%", "/s" or "" (a count or an unknown metric)."""
    kind = metric_kind(metric)
    return "" if kind is None else _UNIT_OF_KIND.get(kind, "")


def format_value(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def threshold_message(t: ThresholdResult) -> str:
    """e.g. "register.p99 = 250.3 ms, wanted < 200ms"."""
    m = _EXPR.match(t.expr)
    metric, wanted = (m.group(1), m.group(2)) if m else (t.expr, "")
    if t.value is None:
        shown = f"{metric} has no value" + (f" ({t.why})" if t.why else "")
    else:
        shown = f"{metric} = {threshold_value(t)}"
    return f"{shown}, wanted {wanted}" if wanted else shown


def threshold_value(t: ThresholdResult) -> str:
    """A threshold's value as shown, with its unit: "3.09 ms", "100 %", "0"; "n/a" without one."""
    if t.value is None:
        return "n/a"
    try:
        unit = metric_unit(parse_threshold(t.expr).metric)
    except ThresholdError:
        unit = ""
    return f"{format_value(t.value)}{' ' + unit if unit else ''}"


def junit_xml(result: RunResult) -> str:
    """One <testsuite name="sipload.<scenario>"> with a <testcase> per threshold. A threshold that failed
    on a value is a <failure>; one that could not be evaluated (no value) is an <error>; a run that did
    not complete adds a "run completed" test case with an <error>."""
    suite_name = f"sipload.{result.scenario}"
    cases: list[tuple[str, str | None, str]] = []  # (name, None | "failure" | "error", message)
    for t in result.thresholds:
        if t.passed:
            cases.append((t.expr, None, ""))
        else:
            cases.append((t.expr, "failure" if t.value is not None else "error", threshold_message(t)))
    if not result.complete:
        by = f" by {result.interrupted_by}" if result.interrupted_by else ""
        cases.append(("run completed", "error", f"the run was interrupted{by}"))
    n_fail = sum(1 for _, kind, _ in cases if kind == "failure")
    n_err = sum(1 for _, kind, _ in cases if kind == "error")
    counts = {"tests": str(len(cases)), "failures": str(n_fail), "errors": str(n_err)}
    time = f"{result.duration_s:.3f}"

    root = ET.Element("testsuites", {"name": "sipload", **counts, "time": time})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _x(suite_name),
            **counts,
            "skipped": "0",
            "time": time,
            "timestamp": result.started_at.removesuffix("Z"),
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("target", result.target),
        ("complete", str(result.complete).lower()),
        ("endpoints", str(result.endpoints)),
    ):
        ET.SubElement(props, "property", {"name": name, "value": _x(value)})
    for name, kind, message in cases:
        case = ET.SubElement(suite, "testcase", {"classname": _x(suite_name), "name": _x(name), "time": "0"})
        if kind is not None:
            el = ET.SubElement(
                case, kind, {"message": _x(message), "type": "threshold" if kind == "failure" else kind}
            )
            el.text = _x(message)
    if result.notes:
        ET.SubElement(suite, "system-out").text = _x("\n".join(result.notes))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_endpoints_csv(result: RunResult, f: TextIO) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(ENDPOINT_COLUMNS)
    for e in result.endpoint_states:
        w.writerow(
            (
                e.index,
                e.username,
                e.state,
                "" if e.last_status is None else e.last_status,
                e.failure_reason,
                e.registrations,
                e.refreshes,
                e.contact,
                e.call_id,
            )
        )


def _x(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


@contextmanager
def _atomic(path: Path, newline: str | None = None) -> Iterator[TextIO]:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
