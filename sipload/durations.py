"""Durations as written in scenario files and on the command line.

Accepted: "500ms", "30s", "2m", "1h", "1.5s", "250us" (or "250µs"), compounds from the largest unit down
("1m30s", "1h30m", "2s500ms"), a numeric string ("10"), or a bare number of seconds (int or float). The
result is float seconds, never negative.
"""

from __future__ import annotations

import itertools
import math
import re

_PATTERN = re.compile(r"\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*(us|µs|ms|s|m|h)?\s*", re.ASCII)
# "1m30s": two or more parts, each with its unit, units strictly decreasing (checked after matching)
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(us|µs|ms|s|m|h)")
_COMPOUND = re.compile(r"\s*(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:us|µs|ms|s|m|h)){2,}\s*")
_ORDER = ("h", "m", "s", "ms", "us", "µs")

# Multipliers and divisors kept apart so that "300ms" is 300 / 1000 (correctly rounded), not 300 * 0.001.
_MULTIPLY = {"s": 1, "m": 60, "h": 3600}
_DIVIDE = {"ms": 1_000, "us": 1_000_000, "µs": 1_000_000}

DURATION_HINT = "a duration such as '500ms', '30s', '2m', '1m30s', '1h' or a number of seconds"


class DurationError(ValueError):
    """A value that is not a valid duration; the message says why."""


def parse_duration(value: object) -> float:
    """Seconds in ``value`` (see the module docstring); raises DurationError for anything else."""
    if isinstance(value, bool):
        raise DurationError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) if -1e300 < value < 1e300 else math.inf
    elif isinstance(value, str) and _COMPOUND.fullmatch(value):
        seconds = _compound(value)
    elif isinstance(value, str):
        match = _PATTERN.fullmatch(value)
        if match is None:
            raise DurationError(f"expected {DURATION_HINT}, got {value!r}")
        number, unit = float(match.group(1)), match.group(2) or "s"
        seconds = number / _DIVIDE[unit] if unit in _DIVIDE else number * _MULTIPLY[unit]
    else:
        raise DurationError(f"expected {DURATION_HINT}, got {value!r}")
    if not math.isfinite(seconds):
        raise DurationError(f"expected a finite duration, got {value!r}")
    if seconds < 0:
        raise DurationError(f"must not be negative, got {value!r}")
    return seconds


def _compound(value: str) -> float:
    parts = _PART.findall(value)
    ranks = [_ORDER.index(unit) if unit != "µs" else _ORDER.index("us") for _, unit in parts]
    if any(b <= a for a, b in itertools.pairwise(ranks)):
        raise DurationError(f"units must go from the largest down, each once (as in '1m30s'), got {value!r}")
    total = 0.0
    for number, unit in parts:
        total += float(number) / _DIVIDE[unit] if unit in _DIVIDE else float(number) * _MULTIPLY[unit]
    return total


def format_duration(seconds: float) -> str:
    """A short human form for messages: 0.5 -> '500ms', 19.99 -> '19.99s', 0.0005 -> '500us'."""
    if seconds != 0 and abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.6g}us"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:.6g}ms"
    return f"{seconds:.6g}s"
