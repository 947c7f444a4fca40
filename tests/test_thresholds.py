"""Tests of threshold expressions: parsing, units, errors, evaluation."""

from __future__ import annotations

import math
import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipload.sip.failures import FailureReason
from sipload.thresholds import (
    METRICS,
    OPERATORS,
    MetricKind,
    Threshold,
    ThresholdError,
    ThresholdResult,
    evaluate,
    metric_kind,
    parse_threshold,
)


@pytest.mark.parametrize(
    ("expr", "metric", "op", "value"),
    [
        ("register.p99 < 200ms", "register.p99", "<", 200.0),
        ("register.p99<200ms", "register.p99", "<", 200.0),
        ("  register.p50 <= 1s ", "register.p50", "<=", 1000.0),
        ("register.p99.9 < 1.5s", "register.p99.9", "<", 1500.0),
        ("auth.max < 500us", "auth.max", "<", 0.5),
        ("auth.max < 500µs", "auth.max", "<", 0.5),
        ("challenge.mean < 20", "challenge.mean", "<", 20.0),  # bare number = ms for latency
        ("refresh.service.p95 < 2.5 ms", "refresh.service.p95", "<", 2.5),
        ("unregister.service.mean >= .5ms", "unregister.service.mean", ">=", 0.5),
        ("schedule_lag.max < 1e2", "schedule_lag.max", "<", 100.0),
        ("register.success_rate > 99.9%", "register.success_rate", ">", 99.9),
        ("unregister.success_rate == 100 %", "unregister.success_rate", "==", 100.0),
        ("refresh.success_rate != 0%", "refresh.success_rate", "!=", 0.0),
        ("timeouts == 0", "timeouts", "==", 0.0),
        ("failures < 5", "failures", "<", 5.0),
        ("failures.auth_rejected <= 1", "failures.auth_rejected", "<=", 1.0),
        ("registrations.failed == 0", "registrations.failed", "==", 0.0),
        ("registrations.succeeded >= 200", "registrations.succeeded", ">=", 200.0),
        ("register.count >= 200", "register.count", ">=", 200.0),
        ("register.service.count >= 200", "register.service.count", ">=", 200.0),
        ("responses.503 == 0", "responses.503", "==", 0.0),
        ("responses.200 > 10", "responses.200", ">", 10.0),
        ("retransmissions < 10", "retransmissions", "<", 10.0),
        ("kernel_drops == 0", "kernel_drops", "==", 0.0),
        ("rate.achieved >= 95", "rate.achieved", ">=", 95.0),
        ("rate.offered >= 100/s", "rate.offered", ">=", 100.0),
    ],
)
def test_parse(expr: str, metric: str, op: str, value: float) -> None:
    t = parse_threshold(expr)
    assert t == Threshold(expr, metric, op, value)


def test_kinds() -> None:
    assert parse_threshold("register.p99 < 1").kind is MetricKind.LATENCY
    assert parse_threshold("register.success_rate > 1%").kind is MetricKind.PERCENT
    assert parse_threshold("responses.404 < 1").kind is MetricKind.COUNT
    assert parse_threshold("rate.achieved > 1").kind is MetricKind.RATE
    assert metric_kind("responses.699") is MetricKind.COUNT
    assert metric_kind("responses.099") is None and metric_kind("responses.20") is None
    assert metric_kind("nope") is None


def test_every_failure_reason_and_phase_is_a_metric() -> None:
    for reason in FailureReason:
        assert METRICS[f"failures.{reason.value}"] is MetricKind.COUNT
    for phase in ("register", "challenge", "auth", "refresh", "unregister"):
        for stat in ("p50", "p90", "p95", "p99", "p99.9", "max", "mean"):
            assert METRICS[f"{phase}.{stat}"] is MetricKind.LATENCY
            assert METRICS[f"{phase}.service.{stat}"] is MetricKind.LATENCY
        assert METRICS[f"{phase}.count"] is MetricKind.COUNT
    assert "challenge.success_rate" not in METRICS


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        (
            "register.p99 < 5%",
            "'register.p99 < 5%': unit mismatch: register.p99 is a latency: give ms, s or us "
            "(a bare number means ms), got '%'",
        ),
        ("timeouts < 2ms", "'timeouts < 2ms': unit mismatch: timeouts is a count: give a plain number, got 'ms'"),
        (
            "register.success_rate > 99.9",
            "register.success_rate is a percentage: give a value with %, e.g. 99.9%, got 'a bare number'",
        ),
        ("register.success_rate > 99ms", "unit mismatch"),
        ("rate.achieved > 5%", "rate.achieved is a rate per second: give a plain number or /s, got '%'"),
        ("failures == 1/s", "unit mismatch: failures is a count"),
        ("register.p99 < 200xs", "unknown unit 'xs'"),
        ("register.p99 < 200 ms ms", "expected"),
        ("register.p99 < -5ms", "the value must not be negative, got -5"),
        ("register.success_rate > 101%", "a percentage must be between 0% and 100%, got 101%"),
        ("register.p99 < 1e999", "is too large"),
        ("register.p98 < 5ms", "unknown metric 'register.p98'; did you mean register.p99"),
        ("Register.p99 < 5ms", "unknown metric 'Register.p99'"),
        ("bogus < 5", "known metrics include register.p99"),
        ("responses.999 == 0", "unknown metric 'responses.999'"),
        ("responses.xyz == 0", "unknown metric"),
        ("register.p99 = 5ms", "expected '<metric> <op> <value>'"),
        ("register.p99 = 5ms", "(use == for equality)"),
        ("register.p99 =< 5ms", "op one of <, <=, >, >=, ==, !="),
        ("register.p99 < ", "expected '<metric> <op> <value>'"),
        ("< 5ms", "expected"),
        ("", "expected"),
        ("register.p99", "expected"),
        ("register.p99 << 5", "expected"),
        ("register.p99 < 5 < 6", "expected"),
        ("register.p99 < ٣ms", "expected"),  # non-ASCII digits are not numbers here
    ],
)
def test_parse_errors(expr: str, fragment: str) -> None:
    with pytest.raises(ThresholdError) as info:
        parse_threshold(expr)
    assert fragment in str(info.value), str(info.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ThresholdError, match="must be a string"):
        parse_threshold(5)  # type: ignore[arg-type]


@settings(max_examples=1000, deadline=None)
@given(st.text())
def test_parse_never_raises_anything_but_threshold_error(text: str) -> None:
    try:
        t = parse_threshold(text)
    except ThresholdError:
        return
    assert t.expr == text and t.op in OPERATORS and math.isfinite(t.value) and t.value >= 0


_ALPHABET = st.sampled_from(list("registr.p99<>=!% 0123456789msu/ecfail_"))


@settings(max_examples=1000, deadline=None)
@given(st.lists(_ALPHABET, max_size=30).map("".join))
def test_parse_near_misses_raise_only_threshold_error(text: str) -> None:
    try:
        parse_threshold(text)
    except ThresholdError:
        pass


_UNITS = {
    MetricKind.LATENCY: [("", 1.0), ("ms", 1.0), ("s", 1000.0), ("us", 0.001)],
    MetricKind.PERCENT: [("%", 1.0)],
    MetricKind.COUNT: [("", 1.0)],
    MetricKind.RATE: [("", 1.0), ("/s", 1.0)],
}


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(METRICS)),
    st.sampled_from(sorted(OPERATORS)),
    st.data(),
    st.decimals(min_value=0, max_value=100, places=3),
    st.sampled_from(["", " ", "  "]),
)
def test_generated_valid_expressions(metric: str, op: str, data: st.DataObject, number: object, space: str) -> None:
    unit, factor = data.draw(st.sampled_from(_UNITS[METRICS[metric]]))
    expr = f"{metric}{space}{op}{space}{number}{unit}"
    t = parse_threshold(expr)
    assert (t.metric, t.op) == (metric, op)
    assert t.value == pytest.approx(float(str(number)) * factor)


# -------------------------------------------------------------------------------------------- evaluate


def test_evaluate() -> None:
    ts = [
        parse_threshold(e)
        for e in (
            "register.p99 < 200ms",
            "register.success_rate >= 99.9%",
            "timeouts == 0",
            "failures.timeout == 0",
            "kernel_drops == 0",
            "register.p50 < 1s",
        )
    ]
    results = evaluate(
        ts,
        {
            "register.p99": 150.0,
            "register.success_rate": 99.5,
            "failures.timeout": 0,
            "timeouts": 3,
            "kernel_drops": math.nan,
            "register.p50": 1000.0,
        },
    )
    assert results == [
        ThresholdResult("register.p99 < 200ms", 150.0, True),
        ThresholdResult("register.success_rate >= 99.9%", 99.5, False),
        ThresholdResult("timeouts == 0", 3.0, False),
        ThresholdResult("failures.timeout == 0", 0.0, True),
        ThresholdResult("kernel_drops == 0", None, False),  # not a number: unavailable
        ThresholdResult("register.p50 < 1s", 1000.0, False),
    ]


def test_evaluate_missing_metric_and_alias() -> None:
    ts = [
        parse_threshold("timeouts == 0"),
        parse_threshold("failures.timeout < 1"),
        parse_threshold("rate.achieved > 1"),
    ]
    assert evaluate(ts, {}) == [ThresholdResult(t.expr, None, False) for t in ts]
    assert evaluate(ts[:1], {"failures.timeout": 0}) == [ThresholdResult("timeouts == 0", 0.0, True)]
    assert evaluate(ts[1:2], {"timeouts": 2}) == [ThresholdResult("failures.timeout < 1", 2.0, False)]
    assert evaluate([], {"timeouts": 1}) == []


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(OPERATORS)), st.integers(0, 1000), st.floats(0, 2000, allow_nan=False))
def test_evaluate_matches_python_operators(op: str, limit: int, actual: float) -> None:
    expected = {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
        "==": operator.eq,
        "!=": operator.ne,
    }[op](actual, float(limit))
    [result] = evaluate([parse_threshold(f"failures {op} {limit}")], {"failures": actual})
    assert result == ThresholdResult(f"failures {op} {limit}", actual, expected)
