"""Threshold expressions (k6-like): parse them from a scenario, evaluate them on a run's metric values.

An expression is ``<metric> <op> <value>[unit]``, e.g. ``register.p99 < 200ms`` (k6's ``p(99) < 200ms``,
``avg`` and ``med`` are read too: `k6_metric`). Each metric has a kind
that fixes its base unit: latency in milliseconds (``200ms``, ``1s`` -> 1000, ``500us`` -> 0.5, a bare
number is ms), percentages (``99.9%`` -> 99.9, the ``%`` is required), counts (plain numbers) and rates per
second (plain numbers or ``/s``). A unit that does not fit the metric's kind is an error, as is an unknown
metric. ``parse_threshold`` raises nothing but ThresholdError.
"""

from __future__ import annotations

import difflib
import enum
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sipload.sip.failures import FailureReason


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    expr: str  # as written in the scenario, e.g. "register.p99 < 200ms"
    value: float | None  # the metric's value in the threshold's base unit (ms, %, count); None: unavailable
    passed: bool
    why: str = ""  # why there was no value (e.g. "no refresh happened: ..."), when there was none


class ThresholdError(ValueError):
    """An expression that cannot be parsed; the message quotes it and says what is wrong."""


class MetricKind(enum.StrEnum):
    LATENCY = "latency"  # milliseconds
    PERCENT = "percent"  # 0..100
    COUNT = "count"
    RATE = "rate"  # per second


PHASES = ("register", "challenge", "auth", "refresh", "unregister")
LATENCY_STATS = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean")
OPERATORS: Mapping[str, Callable[[float, float], bool]] = MappingProxyType(
    {
        "<": operator.lt,
        "<=": operator.le,
        ">": operator.gt,
        ">=": operator.ge,
        "==": operator.eq,
        "!=": operator.ne,
    }
)
# Metrics known under two names; evaluate() looks a value up under either.
ALIASES: Mapping[str, str] = MappingProxyType({"timeouts": "failures.timeout", "failures.timeout": "timeouts"})


def _fixed_metrics() -> dict[str, MetricKind]:
    metrics: dict[str, MetricKind] = {}
    for phase in PHASES:
        for prefix in (phase, f"{phase}.service"):
            for stat in LATENCY_STATS:
                metrics[f"{prefix}.{stat}"] = MetricKind.LATENCY
            metrics[f"{prefix}.count"] = MetricKind.COUNT
    for phase in ("register", "refresh", "unregister"):
        metrics[f"{phase}.success_rate"] = MetricKind.PERCENT
    for outcome in ("attempted", "succeeded", "failed"):
        metrics[f"registrations.{outcome}"] = MetricKind.COUNT
    metrics["failures"] = MetricKind.COUNT
    for reason in FailureReason:
        metrics[f"failures.{reason.value}"] = MetricKind.COUNT
    metrics.update(
        {
            "timeouts": MetricKind.COUNT,
            "retransmissions": MetricKind.COUNT,
            "kernel_drops": MetricKind.COUNT,
            "rate.achieved": MetricKind.RATE,
            "rate.offered": MetricKind.RATE,
            "schedule_lag.max": MetricKind.LATENCY,
            "crosscheck.agreement": MetricKind.PERCENT,   # only with a [crosscheck] section
            "crosscheck.disagreements": MetricKind.COUNT,
        }
    )
    return metrics


# Every metric name with a fixed spelling; ``responses.<code>`` (100..699) is known too.
METRICS: Mapping[str, MetricKind] = MappingProxyType(_fixed_metrics())
_RESPONSES = re.compile(r"responses\.[1-6][0-9][0-9]", re.ASCII)
_EXAMPLES = (
    "register.p99",
    "register.service.p99",
    "register.success_rate",
    "registrations.failed",
    "failures",
    "failures.<reason>",
    "timeouts",
    "retransmissions",
    "responses.<code>",
    "rate.achieved",
    "schedule_lag.max",
    "kernel_drops",
)


def metric_kind(name: str) -> MetricKind | None:
    """The kind of a known metric, None for an unknown name."""
    kind = METRICS.get(name)
    if kind is None and _RESPONSES.fullmatch(name):
        return MetricKind.COUNT
    return kind


# Units per kind, with the factor to the base unit ("" = a bare number).
_UNITS: Mapping[MetricKind, Mapping[str, float]] = MappingProxyType(
    {
        MetricKind.LATENCY: {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3},
        MetricKind.PERCENT: {"%": 1.0},
        MetricKind.COUNT: {"": 1.0},
        MetricKind.RATE: {"": 1.0, "/s": 1.0},
    }
)
_UNIT_HINT = {
    MetricKind.LATENCY: "a latency: give ms, s or us (a bare number means ms)",
    MetricKind.PERCENT: "a percentage: give a value with %, e.g. 99.9%",
    MetricKind.COUNT: "a count: give a plain number",
    MetricKind.RATE: "a rate per second: give a plain number or /s",
}
_ALL_UNITS = frozenset(unit for units in _UNITS.values() for unit in units)

_EXPR = re.compile(
    r"\s*(?P<metric>[^\s<>=!]+)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<number>[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(?P<unit>\S*)\s*",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class Threshold:
    expr: str  # as written
    metric: str  # e.g. "register.p99"
    op: str  # one of OPERATORS
    value: float  # in the metric's base unit (ms, %, count, per second)
    # k6's abortOnFail / delayAbortEval: checked at every interval from `abort_delay` seconds into the run;
    # a miss (on a value: no data never aborts) stops the run, which still unregisters and writes results
    abort: bool = False
    abort_delay: float = 0.0

    @property
    def kind(self) -> MetricKind:
        kind = metric_kind(self.metric)
        assert kind is not None, self.metric
        return kind

    def check(self, actual: float) -> bool:
        """Whether ``actual`` (in the base unit) satisfies the threshold."""
        return OPERATORS[self.op](actual, self.value)


_K6_PERCENTILE = re.compile(r"p\(\s*([0-9]+(?:\.[0-9]+)?)\s*\)", re.ASCII)
_K6_STATS = {"avg": "mean", "med": "p50"}


def k6_metric(metric: str) -> str:
    """A metric as k6 users write it, in sipload's spelling: ``p(99)`` -> ``register.p99``,
    ``refresh.p(95)`` -> ``refresh.p95``, ``avg`` -> ``register.mean``, ``med`` -> ``register.p50``
    (no phase: register's). A name that is none of these is returned as it is."""
    m = _K6_PERCENTILE.sub(lambda x: f"p{x.group(1)}", metric)
    head, dot, last = m.rpartition(".")
    if last in _K6_STATS:
        m = f"{head}{dot}{_K6_STATS[last]}"
    for candidate in (m, f"register.{m}"):
        if metric_kind(candidate) is not None:
            return candidate
    return metric


def _unknown_metric(expr: str, metric: str) -> ThresholdError:
    close = difflib.get_close_matches(metric, list(METRICS), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    if _K6_PERCENTILE.search(metric) or re.search(r"(^|\.)p[0-9]", metric):
        known = ", ".join(s for s in LATENCY_STATS if s.startswith("p"))
        hint += f" (the percentiles are {known}; k6's p(99) is read as p99)"
    return ThresholdError(f"{expr!r}: unknown metric {metric!r}{hint} (known metrics include {', '.join(_EXAMPLES)})")


def parse_threshold(expr: str) -> Threshold:
    """Parse ``<metric> <op> <value>[unit]``; raises ThresholdError (only) when it is not valid."""
    if not isinstance(expr, str):
        raise ThresholdError(f"a threshold must be a string such as 'register.p99 < 200ms', got {expr!r}")
    match = _EXPR.fullmatch(expr)
    if match is None:
        hint = " (use == for equality)" if re.search(r"(?<![<>=!])=(?!=)", expr) else ""
        raise ThresholdError(
            f"{expr!r}: expected '<metric> <op> <value>', e.g. 'register.p99 < 200ms', "
            f"with op one of {', '.join(OPERATORS)}{hint}"
        )
    metric, op, unit = k6_metric(match.group("metric")), match.group("op"), match.group("unit")
    kind = metric_kind(metric)
    if kind is None:
        raise _unknown_metric(expr, metric)
    number = float(match.group("number"))
    if not math.isfinite(number):
        raise ThresholdError(f"{expr!r}: the value {match.group('number')} is too large")
    if unit not in _UNITS[kind]:
        what = "unit mismatch" if unit in _ALL_UNITS else f"unknown unit {unit!r}"
        raise ThresholdError(f"{expr!r}: {what}: {metric} is {_UNIT_HINT[kind]}, got {unit or 'a bare number'!r}")
    if number < 0:
        raise ThresholdError(f"{expr!r}: the value must not be negative, got {match.group('number')}")
    if kind is MetricKind.PERCENT and number > 100:
        raise ThresholdError(f"{expr!r}: a percentage must be between 0% and 100%, got {number:g}%")
    return Threshold(expr=expr, metric=metric, op=op, value=number * _UNITS[kind][unit])


def evaluate(thresholds: Iterable[Threshold], values: Mapping[str, float]) -> list[ThresholdResult]:
    """Check each threshold against ``values`` (metric name -> value in the base unit).

    A metric missing from ``values`` (under its name or its alias) or not finite fails with value None.
    """
    results = []
    for threshold in thresholds:
        value = values.get(threshold.metric)
        if value is None and threshold.metric in ALIASES:
            value = values.get(ALIASES[threshold.metric])
        if value is None or not math.isfinite(value):
            results.append(ThresholdResult(threshold.expr, None, False))
        else:
            results.append(ThresholdResult(threshold.expr, float(value), threshold.check(float(value))))
    return results
