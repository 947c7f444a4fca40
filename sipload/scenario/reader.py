"""Reading a scenario document: ScenarioError, the `Table` field reader and the `Ctx` that words errors.

A `Table` is one TOML table. It rejects unknown keys on construction, and its typed getters (text,
integer, number, duration, ...) turn every type or range problem into a ScenarioError whose message names
the file, the dotted field and the offending value (``s.toml: endpoints.count: must be a positive integer,
got -5``). `Ctx` knows the file, the directory that relative paths start from, the fields that command-line
flags set (an error about one of them names the flag instead of the file) and the note appended to other
messages while overrides are in effect. The section modules (target, endpoints, schedule, registrar) read
their tables with these and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sipload.durations import DURATION_HINT, DurationError, parse_duration
from sipload.sip.digest import Algorithm

DIGEST_ALGORITHMS = (Algorithm.MD5, Algorithm.SHA256)  # what endpoints and the embedded registrar may use
SECRET_KEYS = ("password", "api_key")  # values no error message quotes
TOP_KEYS = tuple("name description seed target endpoints groups load timers registrar thresholds crosscheck".split())


class ScenarioError(Exception):
    """An invalid scenario file or override; the message names the file (or flag), the field and the value."""


def show(value: object) -> str:
    """A value as the scenario wrote it: TOML booleans, else repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass(frozen=True, slots=True)
class Ctx:
    file: str
    base: Path  # relative paths in the scenario are relative to this directory
    flags: Mapping[str, str]  # field -> the command-line flag that set it
    note: str  # appended to other messages when overrides are in effect

    def error(self, where: str, message: str) -> ScenarioError:
        flag = self.flags.get(where)
        if flag is not None:
            return ScenarioError(f"{flag}: {message}")
        return ScenarioError(f"{self.file}: {where + ': ' if where else ''}{message}{self.note}")


class Missing:
    pass


MISSING = Missing()


class Table:
    """One TOML table: unknown keys rejected on construction, typed getters with defaults."""

    def __init__(self, ctx: Ctx, prefix: str, data: object, known: Sequence[str]) -> None:
        if not isinstance(data, dict):
            raise ctx.error(prefix, f"must be a table, got {show(data)}")
        for key in data:
            if key not in known:
                hint = ""
                if prefix and "." not in prefix and key in TOP_KEYS:
                    hint = f"; top-level keys such as {key!r} must come before the first [section]"
                raise ctx.error(prefix, f"unknown key {key!r} (known: {', '.join(known)}){hint}")
        self.ctx, self.prefix, self.data = ctx, prefix, data

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def given(self, key: str) -> bool:
        return key in self.data

    def fail(self, key: str, message: str, value: object = MISSING) -> ScenarioError:
        shown = show(self.data.get(key) if value is MISSING else value)
        if key in SECRET_KEYS:  # a password (template) or key is never quoted
            shown = "a secret (not shown)"
        return self.ctx.error(self.name(key), f"{message}, got {shown}")

    def _get(self, key: str, default: object) -> object:
        value = self.data.get(key, default)
        if value is MISSING:
            raise self.ctx.error(self.name(key), "required")
        return value

    def text(
        self, key: str, default: str | Missing = MISSING, *, nonempty: bool = False, multiline: bool = False
    ) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or (nonempty and not value):
            raise self.fail(key, "must be a non-empty string" if nonempty else "must be a string")
        if not multiline and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise self.fail(key, "must not contain control characters")
        return value

    def integer(self, key: str, default: int | Missing = MISSING, *, minimum: int | None = None) -> int:
        value = self._get(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)
        if not ok:
            what = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}.get(
                minimum, f"an integer >= {minimum}"
            )
            raise self.fail(key, f"must be {what}")
        assert isinstance(value, int)
        return value

    def number(
        self,
        key: str,
        default: float | Missing = MISSING,
        *,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
    ) -> float:
        value = self._get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -1e300 < value < 1e300
            or (gt is not None and not value > gt)
            or (ge is not None and not value >= ge)
            or (lt is not None and not value < lt)
            or (le is not None and not value <= le)
        ):
            bounds = [f"{op} {b:g}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None]
            raise self.fail(key, "must be a number" + (" " + " and ".join(bounds) if bounds else ""))
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def duration(self, key: str, default: float | Missing = MISSING, *, positive: bool = False) -> float:
        value = self._get(key, default)
        try:
            seconds = parse_duration(value)
        except DurationError:
            raise self.fail(key, f"must be {DURATION_HINT}" + (" > 0" if positive else "")) from None
        if positive and seconds == 0:
            raise self.fail(key, "must be a duration > 0")
        return seconds

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self._get(key, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}")
        assert isinstance(value, str)
        return value

    def algorithms(self, key: str, default: tuple[Algorithm, ...]) -> tuple[Algorithm, ...]:
        """A list of DIGEST_ALGORITHMS names, any case; no repeats."""
        value = self._get(key, list(default))
        names = value if isinstance(value, list) else []
        result = tuple(Algorithm.parse(v) if isinstance(v, str) else None for v in names)
        if not result or not all(a in DIGEST_ALGORITHMS for a in result):
            raise self.fail(key, f"must be a non-empty list of {', '.join(repr(a.value) for a in DIGEST_ALGORITHMS)}")
        if len(set(result)) != len(result):
            raise self.fail(key, "must not repeat an algorithm")
        return tuple(a for a in result if a is not None)

    def path(self, key: str) -> Path | None:
        if key not in self.data:
            return None
        value = self.text(key, nonempty=True)
        path = self.ctx.base / value
        try:
            found = path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise self.ctx.error(self.name(key), f"file not found: {str(path)!r}")
        return path

    def table(self, key: str, known: Sequence[str]) -> Table:
        return Table(self.ctx, self.name(key), self.data.get(key, {}), known)


def render(t: Table, key: str, template: str, **fields: object) -> str:
    """``template.format(**fields)``; a template that cannot be rendered is an error about ``key``."""
    try:
        return template.format(**fields)
    except KeyError as exc:
        reason = f"unknown field {{{exc.args[0]}}} (fields: {', '.join('{' + f + '}' for f in fields)})"
    except (IndexError, ValueError, AttributeError, TypeError) as exc:
        reason = str(exc)
    raise t.fail(key, f"template cannot be rendered: {reason}")


def read_lines(t: Table, key: str, path: Path) -> list[str]:
    """The lines of a UTF-8 file (a BOM is dropped) that the field ``key`` names."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise t.ctx.error(t.name(key), f"{str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise t.ctx.error(t.name(key), f"cannot read {str(path)!r}: {exc.strerror}") from None
