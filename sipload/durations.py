"""Durations as written in scenario files and on the command line.

Accepted: "500ms", "30s", "2m", "1h", "1.5s", "250us" (or "250µs"), a numeric string ("10"), or a bare
number of seconds (int or float). The result is float seconds, never negative.
"""

from __future__ import annotations

import math
import re

_PATTERN = re.compile(r"\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*(us|µs|ms|s|m|h)?\s*", re.ASCII)

# Multipliers and divisors kept apart so that "300ms" is 300 / 1000 (correctly rounded), not 300 * 0.001.
_MULTIPLY = {"s": 1, "m": 60, "h": 3600}
_DIVIDE = {"ms": 1_000, "us": 1_000_000, "µs": 1_000_000}

DURATION_HINT = "a duration such as '500ms', '30s', '2m', '1h' or a number of seconds"


class DurationError(ValueError):
    """A value that is not a valid duration; the message says why."""


def parse_duration(value: object) -> float:
    """Seconds in ``value`` (see the module docstring); raises DurationError for anything else."""
    if isinstance(value, bool):
        raise DurationError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) if -1e300 < value < 1e300 else math.inf
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


def format_duration(seconds: float) -> str:
    """A short human form for messages: 0.5 -> '500ms', 19.99 -> '19.99s', 0.0005 -> '500us'."""
    if seconds != 0 and abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.6g}us"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:.6g}ms"
    return f"{seconds:.6g}s"
