"""What every command shares: durations as people type them, and usage errors in one line."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import click

from sipload.durations import DurationError, parse_duration


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    """'30s', '1m', '1m30s', '500ms' or a bare number of seconds: the grammar of the scenario files.

    ``positive``: 0 is refused. ``whole_seconds``: the value is rounded up to whole seconds (SIP Expires,
    Retry-After) and must be at least ``minimum``.
    """

    name = "DURATION"

    def __init__(self, *, positive: bool = False, whole_seconds: bool = False, minimum: float = 0.0) -> None:
        self.positive = positive
        self.whole_seconds = whole_seconds
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float | int:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)  # a default given as a number
        else:
            try:
                seconds = parse_duration(value)
            except DurationError as exc:
                self.fail(str(exc), param, ctx)
        if self.positive and seconds == 0:
            self.fail(f"must be more than 0, got {value!r}", param, ctx)
        if seconds < self.minimum:
            self.fail(f"must be at least {self.minimum:g} s, got {value!r}", param, ctx)
        return math.ceil(seconds) if self.whole_seconds else seconds


class Milliseconds(click.ParamType):  # type: ignore[type-arg]  # generic since click 8.2
    """A latency in milliseconds: '2ms', '500us', '0.1s', or a bare number of milliseconds (as these options
    have always read it); refused below 0."""

    name = "LATENCY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            ms = float(value)
        except ValueError:
            try:
                return parse_duration(value) * 1000.0
            except DurationError as exc:
                self.fail(f"{exc} (a bare number is milliseconds)", param, ctx)
        if not (math.isfinite(ms) and ms >= 0):
            self.fail(f"must be a latency >= 0, got {value!r}", param, ctx)
        return ms


DURATION = Duration()
POSITIVE_DURATION = Duration(positive=True)
WHOLE_SECONDS = Duration(whole_seconds=True, minimum=1)


_NO_ARGS_IS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def one_line(exc: click.UsageError) -> str:
    """'sipload run: Invalid value for '-d' / '--duration': ... (see 'sipload run --help')'."""
    where = exc.ctx.command_path if exc.ctx is not None else "sipload"
    return f"{where}: {exc.format_message()} (see '{where} --help')"


class Commands(click.Group):
    """sipload's command group: a usage error (a bad value, an unknown option) is one line on stderr and
    exit code 2, as a bad scenario is; click's usage block is what `--help` is for."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if isinstance(exc, _NO_ARGS_IS_HELP):  # a bare `sipload`: the help, as click shows it
                exc.show()
            else:
                click.echo(one_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
