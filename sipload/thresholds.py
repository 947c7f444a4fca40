"""Threshold expressions (k6-like): parse them from a scenario, evaluate them on a run's metric values."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    expr: str             # as written in the scenario, e.g. "register.p99 < 200ms"
    value: float | None   # the metric's value in the threshold's base unit (ms, %, count); None if unavailable
    passed: bool
