"""Scenario TOML for tests, built from the values a test sets instead of a pasted body per test.

    scenario_toml("tcp", seed=3, thresholds=PASSING,
                  target={"registrar": uri, "domain": "sipload.test"},
                  endpoints={"count": 12, **REFRESHING},
                  load={"rate": 40, "duration": "1500ms", "interval": "500ms", "unregister_timeout": "5s"})

Tables are written in the order given, with the keys in the order given; values are strings, booleans,
numbers, and lists or inline tables of those. A test whose subject is the TOML itself (the message for a
bad key or value, a file as a user writes it) keeps its body as written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

Value = str | bool | int | float | Sequence["Value"] | Mapping[str, "Value"]
Table = Mapping[str, Value]

PASSING = ("register.success_rate == 100%", "failures == 0")
REFRESHING = {"expires": 2, "refresh_at": 0.5, "refresh_margin": "200ms"}   # refreshed within a 1-2 s run


def toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: the same escapes
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{key} = {toml_value(v)}" for key, v in value.items()) + " }"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def _table(header: str, table: Table) -> list[str]:
    return [header, *(f"{key} = {toml_value(value)}" for key, value in table.items())]


def scenario_toml(name: str | None, *, seed: int | None = None, thresholds: Sequence[str] | None = None,
                  target: Table, endpoints: Table, load: Table, timers: Table | None = None,
                  registrar: Table | None = None, crosscheck: Table | None = None,
                  groups: Sequence[Table] = ()) -> str:
    """A scenario's TOML: the top-level keys given (None: not written), then its tables in file order."""
    lines = [f"{key} = {toml_value(value)}" for key, value in
             (("name", name), ("seed", seed), ("thresholds", thresholds)) if value is not None]
    for header, table in (("target", target), ("endpoints", endpoints), ("load", load), ("timers", timers),
                          ("registrar", registrar), ("crosscheck", crosscheck)):
        if table is not None:
            lines += _table(f"[{header}]", table)
    for group in groups:
        lines += _table("[[groups]]", group)
    return "\n".join(lines) + "\n"


def refreshing_run(name: str | None, uri: str, *, count: int, rate: int, duration: str, seed: int | None = None,
                   thresholds: Sequence[str] = PASSING, target: Table | None = None,
                   endpoints: Table | None = None, timers: Table | None = None,
                   registrar: Table | None = None) -> str:
    """`count` endpoints at `rate`/s against `uri` (domain sipload.test) that register, refresh (expiry 2 s)
    and unregister within `duration`, intervals of 500 ms; `target` and `endpoints`: more keys of those
    tables, `timers` and `registrar` (the embedded registrar's settings): tables of their own."""
    return scenario_toml(
        name, seed=seed, thresholds=thresholds,
        target={"registrar": uri, "domain": "sipload.test", **(target or {})},
        endpoints={"count": count, **REFRESHING, **(endpoints or {})},
        load={"rate": rate, "duration": duration, "interval": "500ms", "unregister_timeout": "5s"},
        timers=timers, registrar=registrar)
